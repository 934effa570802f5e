"""The sweep-layout benchmark's block-diagonal candidate trains the very models the vmap trains."""

import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import fnnet as fn

_SPEC = importlib.util.spec_from_file_location(
    "sweep_packing", Path(__file__).parents[1] / "benchmarks" / "sweep_packing.py"
)
sp = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(sp)


def test_block_diagonal_packing_is_the_same_models(key):
    """4 models packed 2 per block: the packed net's logits are the models' own, and S SGD steps of the
    packed nets (gradient masked to the blocks) end at the models' own params, unpacked."""
    kx, ki, kb = jax.random.split(key, 3)
    x = jax.random.normal(kx, (64, sp.DIMS[0]))
    y = jax.random.randint(kx, (64,), 0, sp.DIMS[-1])
    net, g = sp._mlp(1), 2
    params = fn.init_params(net, (sp.DIMS[0],), jax.random.split(ki, 4))
    packed = sp.pack(params, g)
    logits = jax.vmap(lambda p: net.forward(p, x)[0])(params)  # (4, 64, 10)
    wide = jax.vmap(lambda p: sp._mlp(g).forward(p, x)[0])(packed)  # (2, 64, 2·10)
    np.testing.assert_allclose(wide.reshape(2, 64, g, -1).transpose(0, 2, 1, 3).reshape(4, 64, -1), logits, atol=1e-5)

    idx = jax.random.randint(kb, (3, 16), 0, 64)
    masks = sp._block_masks(fn.pick(packed, 0), g)
    end, _ = jax.vmap(sp._sgd_scan(net, x, y), in_axes=(0, None))(params, idx)
    end_packed, _ = jax.vmap(sp._sgd_scan(sp._mlp(g), x, y, g, masks), in_axes=(0, None))(packed, idx)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), sp.pack(end, g), end_packed)
    assert float(jnp.max(jnp.abs(end_packed[2]["W"] * (1 - masks[2]["W"][None])))) == 0.0  # off-diagonal blocks stay 0


def test_the_kernel_listing_finds_every_product_of_the_step_once():
    """From the compiled HLO: 3 forward products, 2 input gradients and 3 weight gradients per step, inside the
    scan (trips = S), whose FLOPs add up to K models' analytic step FLOPs; each names the kernel that runs it."""
    from fnnet.bench.models import dense_macs, step_flops

    models, steps = 2, 3
    listing = sp.kernels(models, steps, jax.random.key(0))
    assert set(listing) == {sp.LOOP, "vmap, K batch orders", "vmap, one batch order"}
    one_model = step_flops(dense_macs(sp.BATCH, list(sp.DIMS)))
    for name, dots in listing.items():
        assert len(dots) == 8 and all(d["trips"] == steps for d in dots), name
        assert sum(d["flops"] for d in dots) == (1 if name == sp.LOOP else models) * one_model, name
        assert all(d["kernel"] for d in dots)
