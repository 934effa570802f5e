"""Strict numerics for every test: rank promotion raises, so a missing batch sum fails loudly.

The suite's time goes into XLA compilation of many small programs, not into running them, so the
tests ask XLA's CPU backend for LLVM -O0 (about 40 % less time on this suite); set XLA_FLAGS with
your own ``--xla_backend_optimization_level`` to override. Results are compared within one setting.
"""

import os

if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

import jax  # noqa: E402  (after XLA_FLAGS)
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def key():
    """A fresh, fixed PRNG key per test: random inputs are drawn from keys, never zeros or ones."""
    return jax.random.key(0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Each experiment's tiny preset, run once per test module: ``tiny(name) -> (module, result, out_dir)``."""
    import experiments

    done = {}

    def get(name: str):
        if name not in done:
            module = experiments.load(name)
            out = tmp_path_factory.mktemp(name)
            done[name] = (module, module.run(module.PRESETS["tiny"], out), out)
        return done[name]

    return get


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """After each test module, drop the checker's kept programs and JAX's caches: a module's programs are
    rarely another's, and an xdist worker that kept them all grew past 7 GiB over the suite."""
    yield
    from fnnet.checking import clear_compiled

    clear_compiled()
    jax.clear_caches()
