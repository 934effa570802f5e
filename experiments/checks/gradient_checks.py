"""Every hand-written rule of the catalog against jax.grad and float64 finite differences.

The same checks as ``fnnet check`` and ``tests/test_catalog.py``, recorded in the report: for each
entry, the relative error of the manual rule vs autodiff, vs central finite differences, and of the
adjoint identity ⟨J t, c⟩ = ⟨t, Jᵀ c⟩ (layers; a loss has no input cotangent to pair).

Its claims are fnnet's own contract (kind ``fnnet``), from one fixed seed (``seeds = 1``: the inputs,
parameters and probes are drawn from it, so the run is deterministic), with bars from floating-point
rounding (``fnnet.checking.TOLERANCES``). Each can fail: a wrong rule (a factor, a sign, a transpose, a
lost term) is off by O(1), far above every bar.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np

from experiments._common import Claim, Result, pyplot, save_figure
from fnnet import catalog
from fnnet.checking import TOLERANCES, x64_available

NAME = "gradient_checks"
TITLE = "Every hand-written rule checked three ways"


@dataclasses.dataclass(frozen=True)
class Config:
    dtypes: tuple[str, ...] = ("float64",)
    transforms: tuple[str, ...] = ("jit",)
    only: tuple[str, ...] = ()  # entry names; empty = all
    seed: int = 0


PRESETS = {
    "tiny": Config(only=("Dense(4)", "Relu", "softmax_cross_entropy[labels]")),
    "quick": Config(),
    "full": Config(dtypes=("float32", "float64"), transforms=("jit", "vmap")),
}

SOURCE = "fnnet's own contract (every hand-written rule checked three ways); bars: fnnet.checking.TOLERANCES"

#: Why each bar is what it is: the rule and its reference compute the same exact derivative.
BASIS = {
    "autodiff": "rounding: the rule and jax.grad differ only by the rounding of the {dtype} arithmetic "
    "(fnnet.checking.TOLERANCES[{dtype!r}].autodiff)",
    "fd": "rounding: central differences in float64 carry O(h^2) truncation plus rounding over h "
    "(h = fd_eps; fnnet.checking.TOLERANCES[{dtype!r}].fd), and the rule its {dtype} rounding",
    "adjoint": "rounding: <J t, c> = <t, J^T c> is exact mathematics; both sides differ by the rounding of "
    "{dtype} sums (fnnet.checking.TOLERANCES[{dtype!r}].adjoint)",
}


def _bar_claim(reference: str, what: str, worst: float, bar: float, dtype: str) -> Claim:
    """The claim that the worst error against ``reference`` (a key of :data:`BASIS`) is within ``bar``."""
    return Claim(
        what,
        SOURCE,
        f"<= {bar:g}",
        worst,
        bar,
        bool(worst <= bar),
        "" if worst <= bar else "at least one rule breaks its bar: see metrics.json's rows for which",
        "fnnet",
        1,  # one fixed seed draws every input: a deterministic computation
        BASIS[reference].format(dtype=dtype),
    )


def run(config: Config, out_dir: Path) -> Result:
    dtypes = [d for d in config.dtypes if d != "float64" or x64_available()]
    entries = [e for e in catalog.entries() if not config.only or e.name in config.only]
    rows = [
        {k: v for k, v in row._asdict().items() if k != "failures"}
        for row in catalog.check_all(entries, tuple(dtypes), tuple(config.transforms), seed=config.seed)
    ]
    claims = []
    for dtype in dtypes:
        sub = [r for r in rows if r["dtype"] == dtype]
        bars = TOLERANCES[dtype]
        worst_ad = max(r["rel_autodiff"] for r in sub)
        worst_fd = max(r["rel_fd"] for r in sub if r["rel_fd"] is not None)  # None: FD skipped at a kink
        worst_adj = max(r["adjoint"] for r in sub if r["adjoint"] is not None)  # None: a loss (no adjoint check)
        n = len(sub)
        claims += [
            _bar_claim(
                "autodiff",
                f"every hand-written rule matches jax.grad ({dtype}, {n} checks)",
                worst_ad,
                bars.autodiff,
                dtype,
            ),
            _bar_claim(
                "fd",
                f"every hand-written rule matches central finite differences ({dtype} rule, FD in float64)",
                worst_fd,
                bars.fd,
                dtype,
            ),
            _bar_claim(
                "adjoint",
                f"every layer's rule keeps the adjoint identity <J t, c> = <t, J^T c> ({dtype})",
                worst_adj,
                bars.adjoint_bar,
                dtype,
            ),
        ]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.22 * len(entries) + 1.5))
    sub = [r for r in rows if r["dtype"] == dtypes[-1] and r["transform"] == config.transforms[0]]
    y = np.arange(len(sub))
    tiny = np.finfo(np.float64).tiny
    ax.scatter([max(r["rel_autodiff"], 1e-18) for r in sub], y, label="vs jax.grad", marker="o")
    fd = [(i, max(r["rel_fd"], tiny)) for i, r in zip(y, sub) if r["rel_fd"] is not None]
    ax.scatter(
        [v for _, v in fd], [i for i, _ in fd], label="vs finite differences (where the entry takes them)", marker="x"
    )
    ax.axvline(TOLERANCES[dtypes[-1]].autodiff, color="C0", ls=":", label="bar vs autodiff")
    ax.axvline(TOLERANCES[dtypes[-1]].fd, color="C1", ls=":", label="bar vs FD")
    ax.set_yticks(y, [r["entry"] for r in sub], fontsize=7)
    ax.set_xscale("log")
    ax.set_xlim(1e-18, 1e-3)
    ax.set_xlabel(f"relative error ({dtypes[-1]}); exact zeros drawn at 1e-18")
    ax.legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2)  # above the axes, off the rows
    fig_ = save_figure(
        fig,
        out_dir,
        "errors",
        f"Relative error of each hand-written rule ({dtypes[-1]}). "
        "Dotted lines are the pass bars; every point must sit left of its bar.",
    )
    return Result(metrics={"rows": rows, "backend": jax.default_backend()}, claims=claims, figures=[fig_])
