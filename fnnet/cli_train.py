"""``fnnet train``: train an MLP from flags, show progress, print a summary, write metrics.json.

    fnnet train                                   # MNIST-1D, 40-100-100-10 ReLU MLP, the paper's recipe
    fnnet train --data mnist1d --hidden 100,100 --activation relu --init he_normal --batch-size 64 \\
                --optimizer sgd --lr 0.1 --epochs 50 --grad manual --seed 0 --out run/

The defaults follow the MLP baseline of the MNIST-1D paper (Greydanus 2020): two hidden layers of
100 ReLU units, Adam with learning rate 1e-2, batch 100, 6000 steps (150 epochs of 40 steps).
With ``--out DIR`` it writes ``DIR/metrics.json`` (atomically) and, after every epoch, a checkpoint
``DIR/checkpoint.npz`` (params, optimizer state, key, step, history); rerunning the same command
resumes from it and ends with the same result as an uninterrupted run (``--no-resume`` starts over).
Bad flags exit with status 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from fnnet._io import atomic_write, remove_stale_temporaries

DATASETS = ("mnist1d", "mnist", "fashion_mnist", "spirals", "xor")
GRADS = ("manual", "autodiff", "custom_vjp")
PROG = "fnnet train"


class UsageError(Exception):
    """A bad flag value: reported on one line, exit status 2."""


def _one_line_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    def error(message: str):
        print(f"{PROG}: error: {message} (see {PROG} --help)", file=sys.stderr)
        sys.exit(2)

    parser.error = error  # argparse's own errors: one line, no usage block
    return parser


def configure(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the flags of ``fnnet train`` to ``p``."""
    a = p.add_argument
    a("--data", default="mnist1d", choices=DATASETS, help="dataset (default: mnist1d, generated offline)")
    a("--data-dir", default=None, help="folder with the MNIST/Fashion-MNIST files (default: $FNNET_DATA/<name>)")
    a("--hidden", default="100,100", help="hidden layer widths, comma-separated (default: 100,100)")
    a("--activation", default="relu", help="relu, tanh, sigmoid, gelu, swish, leaky_relu, ... (default: relu)")
    a("--init", default="he_normal", help="weight initializer, e.g. he_normal, glorot_uniform (default: he_normal)")
    a("--optimizer", default="adam", choices=("sgd", "momentum", "nesterov", "adam"), help="(default: adam)")
    a("--lr", type=float, default=1e-2, help="learning rate (default: 0.01)")
    a("--momentum", type=float, default=0.9, help="for --optimizer momentum/nesterov (default: 0.9)")
    a("--weight-decay", type=float, default=0.0, help="L2 penalty coefficient λ (default: 0)")
    a("--clip", type=float, default=0.0, help="clip gradients to this global norm; 0 = off (default: 0)")
    a("--batch-size", type=int, default=100, help="B: N for full-batch GD, 1 for SGD (default: 100)")
    a("--epochs", type=int, default=150, help="passes over the training set (default: 150)")
    a("--grad", default="manual", choices=GRADS, help="gradient source (default: manual, the hand-written rules)")
    a("--seed", type=int, default=0, help="seed of the init and the batch order (default: 0)")
    a("--record", default="epoch", choices=("epoch", "step"), help="metrics per epoch or per step too")
    a("--per-layer-grad-norms", action="store_true", help="record the gradient norm of every layer")
    a("--out", default=None, help="folder for metrics.json and the checkpoint (default: none written)")
    a("--no-resume", action="store_true", help="ignore a checkpoint in --out and start over")
    a("--no-progress", action="store_true", help="hide the progress bar")
    return p


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``train`` on an ``add_subparsers()`` object; returns its parser (call ``run(args)``)."""
    p = subparsers.add_parser("train", help="train an MLP from flags", description=__doc__.split("\n\n")[0])
    configure(p)
    p.set_defaults(run=run)
    return _one_line_errors(p)


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


def _build(args, in_dim: int, classes: int):
    import fnnet as fn
    from fnnet import activations, initializers, optim

    try:
        hidden = [int(h) for h in args.hidden.split(",") if h.strip()] if args.hidden.strip() else []
    except ValueError:
        raise UsageError(f"--hidden takes comma-separated widths such as 100,100, got {args.hidden!r}") from None
    if any(h <= 0 for h in hidden):
        raise UsageError(f"--hidden widths must be positive, got {args.hidden!r}")
    try:
        activations.get(args.activation)
    except ValueError as e:
        raise UsageError(str(e)) from None
    try:
        init = initializers.get(args.init)
    except (ValueError, TypeError) as e:
        raise UsageError(str(e)) from None
    if not args.lr > 0:
        raise UsageError(f"--lr must be a positive learning rate, got {args.lr}")
    if not 0 <= args.momentum < 1:
        raise UsageError(f"--momentum must be in [0, 1), got {args.momentum}")
    if args.weight_decay < 0 or args.clip < 0:
        raise UsageError("--weight-decay and --clip must be >= 0")
    if args.epochs < 1:
        raise UsageError(f"--epochs must be a positive number of passes, got {args.epochs}")
    layers = []
    for h in hidden:
        layers += [fn.Dense(h, w_init=init), activations.get(args.activation)]
    net = fn.serial(*layers, fn.Dense(classes, w_init=init))
    parts = []
    if args.weight_decay:
        parts.append(optim.add_weight_decay(args.weight_decay))
    if args.clip:
        parts.append(optim.clip_by_global_norm(args.clip))
    parts.append(optim.get(args.optimizer, args.lr, momentum=args.momentum))
    opt = parts[0] if len(parts) == 1 else optim.chain(*parts)
    return net, opt, [in_dim, *hidden, classes]


def _config(args) -> dict:
    skip = {"out", "no_resume", "no_progress", "run", "command", "func"}
    return {k: v for k, v in sorted(vars(args).items()) if k not in skip}


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    arr = np.asarray(x)
    if arr.dtype == bool:
        return arr.tolist()
    if arr.ndim == 0:
        v = float(arr)
        return v if np.isfinite(v) else None
    return [_jsonable(v) for v in arr]


def _fingerprint(config: dict) -> str:
    return hashlib.sha1(
        json.dumps({k: v for k, v in config.items() if k != "epochs"}, sort_keys=True).encode()
    ).hexdigest()


def run(args: argparse.Namespace) -> int:
    """Run ``fnnet train`` with parsed ``args``; returns the exit status (2 for a bad flag)."""
    try:
        return _run(args)
    except UsageError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2


def _run(args) -> int:
    if args.batch_size <= 0:
        raise UsageError(f"--batch-size must be positive, got {args.batch_size}")
    if not args.lr > 0:
        raise UsageError(f"--lr must be a positive learning rate, got {args.lr}")
    import jax

    import fnnet as fn
    from fnnet import checkpoint
    from fnnet.train import train

    train_ds, test_ds = _load(args)
    n, in_dim = int(train_ds.x.shape[0]), int(np.prod(train_ds.x.shape[1:]))
    if args.batch_size > n:
        raise UsageError(f"--batch-size {args.batch_size} is larger than the {n} training examples of {args.data}")
    classes = int(np.max(np.asarray(train_ds.y))) + 1
    net, opt, widths = _build(args, in_dim, classes)
    k_init, k_train = jax.random.split(jax.random.key(args.seed))
    _, params = net.init(k_init, (in_dim,))
    config = _config(args)
    out = Path(args.out) if args.out else None
    ckpt = out / "checkpoint.npz" if out else None
    resume = None
    if out is not None:
        remove_stale_temporaries(out)  # a run killed mid-write leaves one; finished files are never .tmp
    if ckpt is not None and ckpt.exists() and not args.no_resume:
        resume = checkpoint.load(ckpt, params, opt, k_train, _fingerprint(config))
        if resume is not None:
            print(f"{PROG}: resuming from {ckpt} after epoch {len(resume.history['loss'])}", file=sys.stderr)

    def save(epoch: int, result) -> None:
        checkpoint.save(ckpt, result, _fingerprint(config))

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
            "history": _jsonable(result.history),
            "step_history": _jsonable(result.step_history),
            "backend": jax.default_backend(),
            "devices": jax.device_count(),
            "versions": {"fnnet": fn.__version__, "jax": jax.__version__, "python": platform.python_version()},
        }
        atomic_write(out / "metrics.json", json.dumps(metrics, indent=1).encode())
        print(f"wrote {out / 'metrics.json'}")
    return 0


def _summary(result, wall: float) -> dict:
    h = result.history
    last = lambda k: _jsonable(h[k][-1]) if k in h and len(h[k]) else None  # noqa: E731
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
    pct = lambda v: "n/a" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    num = lambda v: "nan" if v is None else f"{v:.4g}"  # noqa: E731
    head = f"diverged at step {s['diverged_step']}; " if s["diverged"] else ""
    best = f" (best {pct(s['best_test_accuracy'])} at epoch {s['best_epoch']})" if s["best_epoch"] else ""
    return (
        f"{head}{s['epochs']} epochs, {s['steps']} steps: train loss {num(s['train_loss'])} "
        f"acc {pct(s['train_accuracy'])} | test loss {num(s['test_loss'])} acc {pct(s['test_accuracy'])}{best} "
        f"| wall time {s['wall_time_s']:.1f} s"
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m fnnet.cli_train ...``: the same command without the ``fnnet`` dispatcher."""
    parser = _one_line_errors(configure(argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
