"""Character language modelling with fnnet's rules: batches, a training loop as ``lax.scan``, held-out loss.

A batch is ``B`` windows of ``T + 1`` consecutive characters at uniform random offsets of the training
ids: inputs the first ``T``, labels the last ``T`` (next-character prediction). Training runs
``steps`` AdamW updates (``fn.optim.adamw``) of the gradients of ``fn.sequence_cross_entropy``
(the mean over the B·T positions), taken by the hand-written rules (``fn.value_and_grad``) or by
autodiff of the same forward (``fn.autodiff_value_and_grad``). Held-out loss: the mean cross-entropy
over non-overlapping windows of the held-out ids, every position predicted from the window before it.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

import fnnet as fn

LN2 = float(np.log(2.0))


def batch(key: jax.Array, ids: jax.Array, batch_size: int, seq_len: int) -> tuple[jax.Array, jax.Array]:
    """``(x, y)``: ``batch_size`` random windows of ``ids``, y shifted one character ahead of x, both (B, T)."""
    start = jax.random.randint(key, (batch_size,), 0, ids.shape[0] - seq_len - 1)
    win = jax.vmap(lambda s: jax.lax.dynamic_slice(ids, (s,), (seq_len + 1,)))(start)
    return win[:, :-1], win[:, 1:]


def grad_fn(net: fn.Layer, grads: str) -> Callable:
    """``(params, x, y) -> (loss, grads)`` by the hand-written rules (``"manual"``) or by autodiff (``"autodiff"``)."""
    if grads == "manual":
        return fn.value_and_grad(net, fn.sequence_cross_entropy)
    if grads == "autodiff":
        return fn.autodiff_value_and_grad(net, fn.sequence_cross_entropy)
    raise ValueError(f"grads must be 'manual' or 'autodiff', got {grads!r}")


def train_fn(net: fn.Layer, opt: Any, ids: jax.Array, batch_size: int, seq_len: int, grads: str = "manual"):
    """``(params, opt_state, keys) -> (params, opt_state, losses)``: one AdamW step per key, as a ``lax.scan``.

    ``losses[i]`` is the training loss of step ``i``'s batch before its update (llm.c's convention).
    """
    vg = grad_fn(net, grads)

    def step(carry, key):
        params, state = carry
        x, y = batch(key, ids, batch_size, seq_len)
        loss, g = vg(params, x, y)
        updates, state = opt.update(g, state, params)
        return (optax.apply_updates(params, updates), state), loss

    def run(params, state, keys):
        (params, state), losses = jax.lax.scan(step, (params, state), keys)
        return params, state, losses

    return run


def windows(ids: np.ndarray, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping ``(x, y)`` windows covering ``ids`` (the ragged tail dropped), each (n, T)."""
    n = (len(ids) - 1) // seq_len
    x = ids[: n * seq_len].reshape(n, seq_len)
    y = ids[1 : n * seq_len + 1].reshape(n, seq_len)
    return x, y


def eval_fn(net: fn.Layer, x: np.ndarray, y: np.ndarray, chunk: int = 64):
    """``params -> mean cross-entropy (nats)`` over the windows ``x, y``, in chunks of ``chunk`` windows."""
    n = (len(x) // chunk) * chunk
    xs = jnp.asarray(x[:n].reshape(-1, chunk, x.shape[1]))
    ys = jnp.asarray(y[:n].reshape(-1, chunk, y.shape[1]))

    def ev(params):
        def one(_, xy):
            pred, _ = net.forward(params, xy[0], train=False)
            value, _ = fn.sequence_cross_entropy.forward(pred, xy[1])
            return None, value

        _, vals = jax.lax.scan(one, None, (xs, ys))
        return jnp.mean(vals)

    return ev


def sample_fn(net: fn.Layer, seq_len: int, n_prompt: int, n_new: int, temperature: float):
    """``(params, prompt ids (n_prompt,), key) -> ids (n_prompt + n_new,)``: temperature sampling, one character a step.

    The window fed to the causal GPT is the last ``seq_len`` characters (fewer at the start: the
    window then begins at 0 and the positions after the current one are ignored by the causal mask).
    """

    def sample(params, prompt, key):
        buf = jnp.zeros((n_prompt + n_new + seq_len,), jnp.int32).at[:n_prompt].set(prompt)

        def body(i, buf):
            start = jnp.maximum(0, i + 1 - seq_len)
            window = jax.lax.dynamic_slice(buf, (start,), (seq_len,))[None]
            logits, _ = net.forward(params, window, train=False)
            nxt = jax.random.categorical(jax.random.fold_in(key, i), logits[0, i - start] / temperature)
            return buf.at[i + 1].set(nxt.astype(jnp.int32))

        buf = jax.lax.fori_loop(n_prompt - 1, n_prompt + n_new - 1, body, buf)
        return buf[: n_prompt + n_new]

    return sample
