"""``fnnet train``: train an MLP from flags, show progress, print a summary, write metrics.json.

    fnnet train                                   # MNIST-1D, 40-100-100-10 ReLU MLP, the paper's recipe
    fnnet train --data mnist1d --hidden 100,100 --activation relu --init he_normal --batch-size 64 \\
                --optimizer sgd --lr 0.1 --epochs 50 --grad manual --seed 0 --out run/

The defaults follow the MLP baseline of the MNIST-1D paper: two hidden layers of 100 ReLU units,
Adam with learning rate 1e-2, batch 100, 6000 steps (150 epochs of 40 steps).

Every flag is checked before any work starts (``--batch-size`` against the number of examples
right after the data is loaded); a bad value, or an ``--out`` that cannot be written, exits with
status 2 and one line on stderr. ``--clip 0`` and ``--clip inf`` both mean no clipping; seeds are
32-bit, in [0, 2**32 - 1]. Ctrl-C exits with status 130 and one line.

With ``--out DIR`` it writes, each atomically and readable as ``open`` would create it (mode 0o666
less the umask): ``DIR/run.json`` (the flags and their fingerprint) before training starts,
``DIR/checkpoint.npz`` after every epoch (params, optimizer state, key, step, history) and
``DIR/metrics.json`` at the end. A run's configuration is every flag except ``--epochs`` and the
flags that only steer output (``--out``, ``--no-resume``, ``--no-progress``, ``--overwrite``).
A rerun into the same ``DIR``:

* same configuration, more ``--epochs``: resumes from the checkpoint and ends with the same result
  as an uninterrupted run; a damaged checkpoint is ignored with one line and the run starts over;
* same configuration and ``--epochs`` as a finished run: prints its result, trains nothing;
* same configuration, fewer ``--epochs`` than the run in ``DIR`` already has: refused (exit 2),
  since a run cannot be shortened and the longer one is not thrown away;
* another configuration: refused (exit 2) with one line naming the flags that differ (old -> new),
  whether the run is finished or partial, also for folders written before ``run.json`` existed;
* same configuration, a checkpoint of another params layout version (an older fnnet): refused
  (exit 2) with one line, since it cannot be resumed;
* ``--no-resume`` starts the same configuration over (never replacing a run of other flags or a
  longer run); ``--overwrite`` deletes the run in ``DIR`` and starts this one.

References:
  Greydanus 2020, "Scaling down deep learning" (arXiv:2011.14439), table 1 (MNIST-1D, the MLP baseline).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from fnnet import activations, optim
from fnnet._io import atomic_write, dumps, from_jsonable, probe_writable, remove_stale_temporaries
from fnnet.cli.parser import UsageParser, plain
from fnnet.grad import GRAD_SOURCES

DATASETS = ("mnist1d", "mnist", "fashion_mnist", "spirals", "xor")
GRADS = tuple(GRAD_SOURCES)
PROG = "fnnet train"
HINT = f"see {PROG} --help"
RUN_FILE, METRICS_FILE, CHECKPOINT_FILE = "run.json", "metrics.json", "checkpoint.npz"
SEED_MAX = 2**32 - 1  # jax.random.key folds a seed onto 32 bits: -1 and 2**32 - 1 give one key
STEP_MAX = 2**31 - 1  # the int32 step counter of TrainState
_ABSENT = object()  # a flag missing from an older run's config


class UsageError(Exception):
    """A bad flag value: reported on one line, exit status 2."""


def configure(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the flags of ``fnnet train`` to ``p``."""
    a = p.add_argument
    a("--data", default="mnist1d", choices=DATASETS, help="dataset (default: mnist1d, generated offline)")
    a("--data-dir", default=None, help="folder with the MNIST/Fashion-MNIST files (default: $FNNET_DATA/<name>)")
    a("--hidden", default="100,100", help="hidden layer widths, comma-separated; '' for none (default: 100,100)")
    a("--activation", default="relu", help=f"one of {', '.join(sorted(activations.LAYERS))} (default: relu)")
    a("--init", default="he_normal", help="weight initializer, e.g. he_normal, glorot_uniform (default: he_normal)")
    a("--optimizer", default="adam", choices=optim.OPTIMIZERS, help="(default: adam)")
    a("--lr", type=float, default=1e-2, help="learning rate, positive and finite (default: 0.01)")
    a("--momentum", type=float, default=0.9, help="in [0, 1), for --optimizer momentum/nesterov (default: 0.9)")
    a("--weight-decay", type=float, default=0.0, help="L2 penalty coefficient λ >= 0 (default: 0)")
    a("--clip", type=float, default=0.0, help="clip gradients to this global norm; 0 or inf = off (default: 0)")
    a("--batch-size", type=int, default=100, help="B: N for full-batch GD, 1 for SGD (default: 100)")
    a("--epochs", type=int, default=150, help="passes over the training set (default: 150)")
    a("--grad", default="manual", choices=GRADS, help="gradient source (default: manual, the hand-written rules)")
    a("--seed", type=int, default=0, help=f"seed of the init and the batch order, in [0, {SEED_MAX}] (default: 0)")
    a("--record", default="epoch", choices=("epoch", "step"), help="metrics per epoch or per step too")
    a("--per-layer-grad-norms", action="store_true", help="record the gradient norm of every layer")
    a(
        "--out",
        default=None,
        help="folder for run.json, checkpoint.npz and metrics.json; a rerun with the same flags "
        "and more --epochs resumes, one with other flags is refused (default: none written)",
    )
    a(
        "--no-resume",
        action="store_true",
        help="start this configuration over instead of resuming its checkpoint (never replaces a run of other flags)",
    )
    a("--overwrite", action="store_true", help="delete the run in --out, whatever its flags, and start this one")
    a("--no-progress", action="store_true", help="hide the progress bar")
    return p


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``train`` on an ``add_subparsers()`` object; returns its parser (call ``run(args)``)."""
    p = subparsers.add_parser("train", help="train an MLP from flags", description=plain(__doc__), hint=HINT)
    configure(p)
    p.set_defaults(run=run)
    return p


# ---------------------------------------------------------------------------------------------- flags


def _validate(args: argparse.Namespace) -> list[int]:
    """Check every flag that needs no data; returns the hidden widths. Raises UsageError."""
    from fnnet import initializers

    text = args.hidden.strip()
    try:
        hidden = [int(h) for h in text.split(",")] if text else []
    except ValueError:
        raise UsageError(
            f"--hidden takes comma-separated widths such as 100,100 (or '' for none), got {args.hidden!r}"
        ) from None
    if any(h <= 0 for h in hidden):
        raise UsageError(f"--hidden widths must be positive, got {args.hidden!r}")
    try:
        activations.get(args.activation)
    except ValueError as e:
        raise UsageError(str(e)) from None
    try:
        initializers.get(args.init)
    except (ValueError, TypeError) as e:
        raise UsageError(str(e)) from None
    if not (args.lr > 0 and math.isfinite(args.lr)):
        raise UsageError(f"--lr must be a positive, finite learning rate, got {args.lr:g}")
    if not 0 <= args.momentum < 1:
        raise UsageError(f"--momentum must be in [0, 1), got {args.momentum:g}")
    if args.optimizer == "nesterov" and args.momentum == 0:
        raise UsageError("--optimizer nesterov needs --momentum > 0, got 0")
    if not (args.weight_decay >= 0 and math.isfinite(args.weight_decay)):
        raise UsageError(f"--weight-decay must be >= 0 and finite, got {args.weight_decay:g}")
    if not args.clip >= 0:
        raise UsageError(f"--clip must be >= 0 (0 or inf = off), got {args.clip:g}")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be positive, got {args.batch_size}")
    if not 1 <= args.epochs <= STEP_MAX:
        limit = f" (at most {STEP_MAX})" if args.epochs > 0 else ""
        raise UsageError(f"--epochs must be a positive number of passes, got {args.epochs}{limit}")
    if not 0 <= args.seed <= SEED_MAX:  # jax folds larger or negative seeds onto these 2**32 keys
        raise UsageError(f"--seed must be an integer in [0, {SEED_MAX}], got {args.seed}")
    return hidden


def _check_against_data(args: argparse.Namespace, n: int) -> None:
    if args.batch_size > n:
        raise UsageError(f"--batch-size {args.batch_size} is larger than the {n} training examples of {args.data}")
    steps = n // args.batch_size
    if args.epochs * steps > STEP_MAX:
        raise UsageError(
            f"--epochs {args.epochs} x {steps} steps per epoch is more than the {STEP_MAX} "
            "optimizer steps the int32 step counter holds"
        )


def _load(args) -> tuple[Any, Any]:
    import jax

    from fnnet import data

    if args.data == "mnist1d":
        return data.mnist1d()
    if args.data in ("mnist", "fashion_mnist"):
        loader = getattr(data, args.data)
        try:
            return (loader(args.data_dir, "train", flatten=True), loader(args.data_dir, "test", flatten=True))
        except data.DataFileError as e:
            raise UsageError(str(e)) from None
    key = jax.random.key(args.seed + 10_000)
    if args.data == "spirals":
        return data.two_spirals(key, 1000, noise=0.02), data.two_spirals(jax.random.fold_in(key, 1), 1000, noise=0.02)
    return data.xor(), data.xor()


def _build(args, hidden: list[int], in_dim: int, classes: int):
    import fnnet as fn
    from fnnet import initializers

    init = initializers.get(args.init)
    layers = []
    for h in hidden:
        layers += [fn.Dense(h, w_init=init), activations.get(args.activation)]
    net = fn.serial(*layers, fn.Dense(classes, w_init=init))
    parts = []
    if args.weight_decay:
        parts.append(optim.add_weight_decay(args.weight_decay))
    if args.clip and math.isfinite(args.clip):  # 0 and inf: no clipping
        parts.append(optim.clip_by_global_norm(args.clip))
    parts.append(optim.get(args.optimizer, args.lr, momentum=args.momentum))
    opt = parts[0] if len(parts) == 1 else optim.chain(*parts)
    return net, opt, [in_dim, *hidden, classes]


def _config(args) -> dict:
    skip = {"out", "no_resume", "no_progress", "overwrite", "run", "command", "func"}
    return {k: v for k, v in sorted(vars(args).items()) if k not in skip}


def _fingerprint(config: dict) -> str:
    """The configuration's hash: every flag of ``config`` except ``--epochs``.

    Plain ``json.dumps`` (``--clip inf`` hashed as ``Infinity``), not :func:`fnnet._io.dumps`: the
    hash is stored in checkpoints, and a changed encoding would orphan them.
    """
    return hashlib.sha1(
        json.dumps({k: v for k, v in config.items() if k != "epochs"}, sort_keys=True).encode()
    ).hexdigest()


# ------------------------------------------------------------------------------------- the run folder


class _Found(NamedTuple):
    """What ``--out`` holds from earlier runs."""

    stamp: dict | None  # run.json's config, if readable
    metrics: dict | None  # metrics.json, if it is one of ours (a dict with a config dict)
    foreign_metrics: bool  # a metrics.json that is unreadable or not from fnnet train
    ckpt: Any  # checkpoint.CheckpointInfo, or None
    ckpt_damaged: bool  # checkpoint.npz exists but cannot be read

    def finished(self) -> int | None:
        """Epochs of the finished run in metrics.json, or None."""
        if self.metrics is None:
            return None
        epochs = self.metrics["config"].get("epochs")
        return epochs if isinstance(epochs, int) else None

    def what(self) -> str:
        if self.finished() is not None:
            return f"a finished run ({self.finished()} epochs)"
        if self.ckpt is not None:
            return f"a partial run (checkpoint after epoch {self.ckpt.epochs})"
        if self.ckpt_damaged:
            return "a partial run (its checkpoint is damaged)"
        return "a run that stopped before its first checkpoint"

    def any(self) -> bool:
        return bool(self.stamp or self.metrics or self.foreign_metrics or self.ckpt or self.ckpt_damaged)


def _read_json(path: Path) -> tuple[bool, Any]:
    """(exists, content); content is None when the file is unreadable or not JSON."""
    if not path.exists():
        return False, None
    try:
        return True, from_jsonable(json.loads(path.read_bytes()))
    except (OSError, ValueError):
        return True, None


def _inspect(out: Path) -> _Found:
    from fnnet import checkpoint

    _, stamp = _read_json(out / RUN_FILE)
    has_metrics, metrics = _read_json(out / METRICS_FILE)
    ours = isinstance(metrics, dict) and isinstance(metrics.get("config"), dict)
    ckpt_path = out / CHECKPOINT_FILE
    ckpt = checkpoint.info(ckpt_path) if ckpt_path.exists() else None
    return _Found(
        stamp=stamp["config"] if isinstance(stamp, dict) and isinstance(stamp.get("config"), dict) else None,
        metrics=metrics if ours else None,
        foreign_metrics=has_metrics and not ours,
        ckpt=ckpt,
        ckpt_damaged=ckpt_path.exists() and ckpt is None,
    )


def _show(v: Any) -> str:
    if v is _ABSENT:
        return "(absent)"
    if v is None:
        return "(unset)"
    if isinstance(v, bool):
        return "on" if v else "off"
    return str(v) if v != "" else "''"


def _differences(old: dict, new: dict) -> str:
    keys = sorted((set(old) | set(new)) - {"epochs"})
    diff = [k for k in keys if old.get(k, _ABSENT) != new.get(k, _ABSENT)]
    return ", ".join(
        f"--{k.replace('_', '-')} {_show(old.get(k, _ABSENT))} -> {_show(new.get(k, _ABSENT))}" for k in diff
    )


def _plan(args, out: Path, config: dict, found: _Found) -> str:
    """'fresh', 'resume' or 'report' for this run in ``out``; raises UsageError rather than replace a run."""
    from fnnet import checkpoint

    if args.overwrite:
        return "fresh"
    replace = "choose another --out, or pass --overwrite to replace it"
    if found.foreign_metrics:
        raise UsageError(f"--out {out} holds a {METRICS_FILE} that fnnet train did not write or cannot read; {replace}")
    fp = _fingerprint(config)
    for old in (found.stamp, found.metrics["config"] if found.metrics else None):
        if old is not None and _fingerprint(old) != fp:
            diff = _differences(old, config) or "the same flags, another fingerprint"
            raise UsageError(
                f"--out {out} holds {found.what()} of another configuration ({diff}); "
                f"rerun with its flags to resume or report it, {replace}"
            )
    if found.ckpt is not None and found.ckpt.fingerprint != fp:
        raise UsageError(
            f"--out {out} holds {found.what()} of another configuration (fingerprint "
            f"{found.ckpt.fingerprint[:12] or '(none)'}; its flags were not recorded); {replace}"
        )
    finished = found.finished()
    done = max(finished or 0, found.ckpt.epochs if found.ckpt else 0)
    if done > args.epochs:
        more = "to report it (or more to continue it)" if finished == done else "or more to continue it"
        held = f"a finished run of {done} epochs" if finished == done else f"a partial run of {done} epochs"
        hint = f"--epochs {done} {more}"
        raise UsageError(
            f"--out {out} holds {held} with these flags; "
            f"--epochs {args.epochs} would cut it short: pass {hint}, {replace}"
        )
    if found.ckpt is not None and found.ckpt.version != checkpoint.LAYOUT_VERSION:  # resuming would misread it
        raise UsageError(
            f"--out {out}: checkpoint {out / CHECKPOINT_FILE} was written by fnnet's params layout version "
            f"{found.ckpt.version}; this fnnet reads version {checkpoint.LAYOUT_VERSION} — pass --overwrite to "
            "replace the run"
        )
    if args.no_resume:
        return "fresh"
    if finished == args.epochs:
        return "report"
    return "resume" if found.ckpt is not None or found.ckpt_damaged else "fresh"


def _write_stamp(out: Path, config: dict) -> None:
    import fnnet as fn

    stamp = {
        "format": 1,
        "command": PROG,
        "fingerprint": _fingerprint(config),
        "config": config,
        "fnnet": fn.__version__,
    }
    atomic_write(out / RUN_FILE, (dumps(stamp, indent=1) + "\n").encode())


# ---------------------------------------------------------------------------------------------- run


def run(args: argparse.Namespace) -> int:
    """Run ``fnnet train`` with parsed ``args``; returns the exit status (2 for a bad flag, 130 on Ctrl-C)."""
    saved: dict = {}  # _run notes here the checkpoint that holds the latest epoch, for the Ctrl-C line
    try:
        return _run(args, saved)
    except UsageError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        where = f"; {saved['path']} holds epoch {saved['epoch']}: rerun the same command to resume" if saved else ""
        print(f"{PROG}: interrupted{where}", file=sys.stderr)
        return 130


def _run(args, saved: dict) -> int:
    hidden = _validate(args)
    config = _config(args)
    out = Path(args.out) if args.out else None
    ckpt = out / CHECKPOINT_FILE if out else None
    plan, found = "fresh", None
    if out is not None:
        try:
            probe_writable(out)
        except OSError as e:
            raise UsageError(f"--out {out} is not a writable folder: {e.strerror or e}") from None
        remove_stale_temporaries(out)  # a run killed mid-write leaves one; finished files are never .tmp
        found = _inspect(out)
        plan = _plan(args, out, config, found)
        if plan == "report":
            try:
                line = _summary_line(found.metrics["summary"])
            except (KeyError, TypeError, ValueError):
                plan = "resume" if found.ckpt is not None else "fresh"
            else:
                print(
                    f"{PROG}: the run in {out} already finished its {args.epochs} epochs; its result "
                    "(more --epochs continue it, --no-resume redoes it):",
                    file=sys.stderr,
                )
                print(line)
                return 0
    import jax

    import fnnet as fn
    from fnnet import checkpoint
    from fnnet.training import train

    train_ds, test_ds = _load(args)
    n, in_dim = int(train_ds.x.shape[0]), int(np.prod(train_ds.x.shape[1:]))
    _check_against_data(args, n)
    classes = int(np.max(np.asarray(train_ds.y))) + 1
    net, opt, widths = _build(args, hidden, in_dim, classes)
    k_init, k_train = jax.random.split(jax.random.key(args.seed))
    _, params = net.init(k_init, (in_dim,))
    fp = _fingerprint(config)
    resume = None
    if out is not None:
        if args.overwrite and found.any():
            for name in (METRICS_FILE, CHECKPOINT_FILE, RUN_FILE):
                (out / name).unlink(missing_ok=True)
            print(f"{PROG}: --overwrite: deleted {found.what()} in {out}", file=sys.stderr)
        _write_stamp(out, config)
        if plan == "resume":
            resume = checkpoint.load(ckpt, params, opt, k_train, fp)
            if resume is not None:
                saved.update(path=ckpt, epoch=len(resume.history["loss"]))
                print(f"{PROG}: resuming from {ckpt} after epoch {saved['epoch']}", file=sys.stderr)
            elif found.ckpt_damaged:
                print(f"{PROG}: ignored the damaged checkpoint {ckpt}; starting over", file=sys.stderr)
            else:
                print(
                    f"{PROG}: ignored the checkpoint {ckpt}: it does not fit this model (written by another "
                    "fnnet version?); starting over",
                    file=sys.stderr,
                )

    def save(epoch: int, result) -> None:
        checkpoint.save(ckpt, result, fp)
        saved.update(path=ckpt, epoch=epoch + 1)

    print(
        f"{PROG}: {args.data} ({n} train / {int(test_ds.x.shape[0])} test), MLP {'-'.join(map(str, widths))} "
        f"{args.activation} {args.init}, {args.optimizer} lr {args.lr:g}, batch {args.batch_size}, "
        f"{args.epochs} epochs x {n // args.batch_size} steps, grad {args.grad}, on {jax.default_backend()}",
        file=sys.stderr,
    )
    t0 = time.perf_counter()
    result = train(
        net,
        fn.softmax_cross_entropy,
        params,
        train_ds,
        optimizer=opt,
        batch_size=args.batch_size,
        epochs=args.epochs,
        key=k_train,
        grad=args.grad,
        record=args.record,
        per_layer_grad_norms=args.per_layer_grad_norms,
        test_data=test_ds,
        progress=not args.no_progress,
        resume=resume,
        callback=save if ckpt else None,
    )
    wall = time.perf_counter() - t0
    summary = _summary(result, wall)
    print(_summary_line(summary))
    if out is not None:
        metrics = {
            "config": config,
            "summary": summary,
            "history": result.history,
            "step_history": result.step_history,
            "backend": jax.default_backend(),
            "devices": jax.device_count(),
            "versions": {"fnnet": fn.__version__, "jax": jax.__version__, "python": platform.python_version()},
        }
        atomic_write(out / METRICS_FILE, dumps(metrics, indent=1).encode())
        print(f"wrote {out / METRICS_FILE}")
    return 0


def _summary(result, wall: float) -> dict:
    h = result.history
    last = lambda k: float(h[k][-1]) if k in h and len(h[k]) else None  # noqa: E731  (NaN after divergence)
    test_acc = np.asarray(h.get("test_accuracy", []), float)
    best = int(np.nanargmax(test_acc)) if test_acc.size and not np.all(np.isnan(test_acc)) else None
    return {
        "epochs": int(len(h["loss"])),
        "steps": int(result.state.step),
        "diverged": bool(result.diverged),
        "diverged_step": int(result.diverged_step),
        "train_loss": last("train_loss"),
        "train_accuracy": last("train_accuracy"),
        "test_loss": last("test_loss"),
        "test_accuracy": last("test_accuracy"),
        "best_test_accuracy": None if best is None else float(test_acc[best]),
        "best_epoch": None if best is None else best + 1,
        "wall_time_s": round(wall, 3),
        "train_time_s": round(float(result.wall_time), 3),
    }


def _summary_line(s: dict) -> str:
    pct = lambda v: "n/a" if v is None else f"{100 * v:.1f}%"  # noqa: E731  (None: no accuracy; NaN: diverged)
    num = lambda v: "n/a" if v is None else f"{v:.4g}"  # noqa: E731
    head = f"diverged at step {s['diverged_step']}; " if s["diverged"] else ""
    best = f" (best {pct(s['best_test_accuracy'])} at epoch {s['best_epoch']})" if s["best_epoch"] else ""
    return (
        f"{head}{s['epochs']} epochs, {s['steps']} steps: train loss {num(s['train_loss'])} "
        f"acc {pct(s['train_accuracy'])} | test loss {num(s['test_loss'])} acc {pct(s['test_accuracy'])}{best} "
        f"| wall time {s['wall_time_s']:.1f} s"
    )


def main(argv: list[str] | None = None) -> int:
    """``fnnet train ...`` without the ``fnnet`` dispatcher (for tests and scripts)."""
    parser = configure(UsageParser(prog=PROG, description=plain(__doc__), hint=HINT))
    try:
        return run(parser.parse_args(argv))
    except KeyboardInterrupt:  # while parsing; run() reports its own
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
