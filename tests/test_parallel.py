"""Data-parallel SPMD: sharded training equals single-device training (4 forced host devices)."""

import os
import subprocess
import sys
import textwrap

import jax

from fnnet import parallel

SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_numpy_rank_promotion", "raise")
    import fnnet as fn
    from fnnet import optim, parallel
    from fnnet.data import Dataset
    from fnnet.training import train

    assert jax.device_count() == 4, jax.devices()
    key = jax.random.key(0)
    net = fn.serial(fn.Dense(16), fn.Relu(), fn.Dense(3))

    @jax.jit
    def problem(key):  # one compiled call instead of many eager ones
        kx, kw, kp = jax.random.split(key, 3)
        x = jax.random.normal(kx, (96, 6))
        y = jnp.argmax(x @ jax.random.normal(kw, (6, 3)), axis=1).astype(jnp.int32)
        return Dataset(x, y), net.init(kp, (6,))[1]

    ds, params = problem(key)
    mesh = parallel.data_mesh()
    kw_ = dict(optimizer=optim.sgd(0.1, momentum=0.9), batch_size=16, epochs=2, key=key, record="step",
               test_data=ds, progress=False)
    single = train(net, fn.softmax_cross_entropy, params, ds, **kw_)
    sharded = train(net, fn.softmax_cross_entropy, params, ds, mesh=mesh, **kw_)
    np.testing.assert_allclose(sharded.step_history["loss"], single.step_history["loss"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sharded.history["test_loss"], single.history["test_loss"], rtol=1e-5, atol=1e-6)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                           sharded.params, single.params)
    assert len(sharded.params[0]["W"].sharding.device_set) == 4
    try:
        parallel.batch_sharding(mesh, 6)
        raise AssertionError("a batch of 6 over 4 devices must be refused")
    except ValueError as e:
        assert "does not divide" in str(e)

    # the compiled manual step really is SPMD: XLA inserted the all-reduce for the hand-written dW = x^T dy
    vg = jax.jit(fn.value_and_grad(net, fn.softmax_cross_entropy))
    batch = parallel.shard_batch(Dataset(ds.x[:16], ds.y[:16]), mesh)
    hlo = vg.lower(parallel.replicate(params, mesh), *batch).compile().as_text()
    assert "all-reduce" in hlo
    print("SHARDED OK")
    """
)


def test_sharded_training_equals_single_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "SHARDED OK" in out.stdout


def test_mesh_helpers_on_this_host():
    mesh = parallel.data_mesh()
    assert mesh.axis_names == ("data",) and mesh.size == jax.device_count()
    assert tuple(parallel.batch_sharding(mesh, mesh.size * 3).spec) == ("data",)
