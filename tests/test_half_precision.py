"""float16 and bfloat16: every catalog rule runs forward and backward and meets its documented bars.

The bars are the float16 and bfloat16 rows of ``fnnet.gradcheck.TOLERANCES`` (see the README).
"""

import jax.numpy as jnp
import pytest

from fnnet import catalog
from fnnet.gradcheck import TOLERANCES

ENTRIES = catalog.entries()


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
def test_half_precision(entry, dtype):
    report = catalog.check_entry(entry, jnp.dtype(dtype), "jit")
    assert report.dtype == dtype
    assert report.rel_autodiff <= TOLERANCES[dtype].autodiff, str(report)
    assert report.rel_fd <= TOLERANCES[dtype].fd, str(report)
