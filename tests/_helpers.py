"""Small helpers shared by the tests: random inputs, relative errors, the experiments' contract."""

import jax
import jax.numpy as jnp
import numpy as np


def normals(key, shapes, dtype):
    """Standard normal arrays of the given shapes, carved from one fixed-size draw (one compile)."""
    pool, out, i = np.asarray(jax.random.normal(key, (4096,), jnp.float32)), [], 0
    for shape in shapes:
        n = int(np.prod(shape))
        out.append(jnp.asarray(pool[i : i + n].reshape(shape), dtype))
        i += n
    assert i <= pool.size
    return out


def rel(a, b):
    """‖a − b‖ / max(‖a‖, ‖b‖), in float64."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / max(np.linalg.norm(a), np.linalg.norm(b), 1e-300)


def assert_keeps_the_contract(module, result, out) -> None:
    """A tiny run of an experiment keeps the contract the runner and the report rely on.

    The module satisfies :class:`experiments._common.Experiment` with hashable configs that carry a
    seed; the run drew its figures as PNGs with captions of at most two lines; every claim is
    complete, and its source cites a work of the bibliography or says it is fnnet's own contract;
    metrics and claims go into standard JSON.
    """
    from experiments._common import check_experiment
    from experiments._sources import cited_in
    from fnnet._io import dumps

    check_experiment(module, module.NAME)
    for preset in module.PRESETS.values():
        assert hasattr(preset, "seed"), preset
        hash(preset)  # the runner hashes configs
    assert result.figures, "every experiment draws at least one figure"
    for fig in result.figures:
        assert (out / fig.file).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", fig.file
        assert fig.caption and fig.caption.count("\n") <= 1, fig
    assert result.claims
    for c in result.claims:
        assert c.claim and c.tolerance is not None and isinstance(c.holds, bool), c
        assert c.expected is not None and c.measured is not None, c
        assert cited_in([c.source]) or c.source.startswith("fnnet's own contract"), c.source
    dumps(result.metrics)
    dumps(result.claims)
