"""Small helpers shared by the layer tests."""

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
