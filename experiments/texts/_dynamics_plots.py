"""Figures of the dynamics experiments (rnn_bptt, dead_relu, loss_landscape), kept out of their modules."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from experiments._common import pyplot, save_figure

# ----------------------------------------------------------------------------------------------
# dead_relu


def dead_fraction(config, groups, stats, alive, out_dir: Path):
    plt = pyplot()
    fig, axes = plt.subplots(1, len(groups) + 1, figsize=(5.6 * (len(groups) + 1), 4.4), squeeze=False)
    epochs = np.arange(config.epochs + 1)
    for ax, (opt, lrs) in zip(axes[0], groups.items()):
        for i, lr in enumerate(lrs):
            c = f"C{i}"
            ax.plot(epochs, 100 * np.asarray(stats[opt]["relu"][i]["dead_fraction"]), "-o", ms=3, color=c,
                    label=f"ReLU lr={lr:g}")  # fmt: skip
            ax.plot(epochs, 100 * np.asarray(stats[opt]["leaky_relu"][i]["dead_fraction"]), "--", color=c,
                    label=f"leaky lr={lr:g}")  # fmt: skip
        ax.axhspan(5, 15, color="0.85", zorder=0, label="text: 5-15%")
        ax.axvline(config.few_epochs, color="0.5", ls=":", lw=1)
        ax.set_xlabel("epoch (0 = initialization)")
        ax.set_ylabel("hidden units inactive on every training example (%)")
        ax.set_title(f"MNIST-1D MLP, {opt}, mean of {config.seeds} seeds", fontsize=10)
        ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.14))
    # the ReLU run (seed 0) with the most revivals: which units are dead after each epoch
    best, best_n = None, -1
    for opt, lrs in groups.items():
        a = np.asarray(alive[opt]["relu"]) == 0  # (E + 1, K, U)
        for i, lr in enumerate(lrs):
            d = a[:, i * config.seeds]
            n = int((d[:-1] & ~d[1:]).sum())
            if n > best_n:
                best, best_n = (opt, lr, d), n
    ax = axes[0][-1]
    opt, lr, d = best
    units = np.flatnonzero(d.any(axis=0))
    if units.size:
        ax.imshow(d[:, units].T, aspect="auto", cmap="Greys", interpolation="nearest", vmin=0, vmax=1,
                  extent=(-0.5, config.epochs + 0.5, units.size - 0.5, -0.5))  # fmt: skip
    ax.set_xlabel("epoch")
    ax.set_ylabel("hidden units that were ever dead (unit order)")
    ax.set_title(f"ReLU, {opt} lr={lr:g}, seed 0: black = dead; {best_n} revivals", fontsize=10)
    return save_figure(
        fig, out_dir, "dead_fraction",
        "Left: share of hidden units with pre-activation ≤ 0 on all training inputs, per epoch (solid ReLU, dashed "
        "leaky); grey band the text's 5-15%. Right: which units are dead when; white gaps after black are revivals.",
    )  # fmt: skip


def born_dead(config, born, born_theory, out_dir: Path):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    depth = np.arange(1, config.born_max_depth + 1)
    for i, n in enumerate(config.born_widths):
        c = f"C{i}"
        ax.plot(depth, born_theory(n, depth), "-", color=c, lw=1.2, label=f"N={n}")
        ax.plot(depth, born["normal"][n]["p_at_x"], "o", color=c, ms=3, mfc="none")
        ax.plot(depth, born["uniform"][n]["p_at_x"], "x", color=c, ms=3)
        ax.plot(depth, born["normal"][n]["p_on_domain"], ":", color=c, lw=1)
    ax.plot([], [], "k-", lw=1.2, label="1 − (1 − 2^−N)^L")
    ax.plot([], [], "ko", mfc="none", ms=3, label="MC, N(0,1) weights")
    ax.plot([], [], "kx", ms=3, label="MC, U[-1,1] weights")
    ax.plot([], [], "k:", label=f"MC, zero on all {config.born_domain_points} inputs")
    ax.set_xlabel("hidden layers L")
    ax.set_ylabel("P(network output ≡ 0)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"Born dead at initialization (zero biases, {config.born_samples} nets per width)")
    ax.legend(fontsize=7, loc="lower right")
    return save_figure(
        fig, out_dir, "born_dead",
        "Probability that a bias-free ReLU net of width N is identically 0 at an input, vs depth: lines the formula, "
        "markers Monte Carlo. Dotted: zero on every sampled input, rarer than at one input.",
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------
# loss_landscape


def landscape_slice(config, sl, out_dir: Path):
    plt = pyplot()
    from matplotlib.colors import LogNorm

    fig, axes = plt.subplots(1, 2, figsize=(12.5, 4.8), layout="constrained")
    pca, rnd = sl["pca"], sl["random"]
    z = np.asarray(pca["loss"])
    norm = LogNorm(vmin=max(z.min(), 1e-6), vmax=z.max())
    ax = axes[0]
    cs = ax.contourf(pca["a"], pca["b"], z, levels=np.geomspace(norm.vmin, norm.vmax, 25), norm=norm, cmap="viridis")
    path = np.asarray(pca["path"])
    ax.plot(path[:, 0], path[:, 1], "-o", color="w", ms=2.5, lw=1, label="SGD path (one dot per epoch)")
    ax.plot(path[0, 0], path[0, 1], "r^", ms=8, label="start (×3 init)")
    ax.plot(path[-1, 0], path[-1, 1], "r*", ms=11, label="end")
    ev = np.asarray(pca["explained"])
    ax.set_xlabel(f"1st principal direction of the path ({100 * ev[0]:.1f}% of variance)")
    ax.set_ylabel(f"2nd principal direction ({100 * ev[1]:.1f}%)")
    ax.set_title(f"PCA plane of the path, width-{config.slice_width} tanh net", fontsize=10)
    ax.legend(fontsize=7, loc="best")
    fig.colorbar(cs, ax=ax, label="training loss (MSE, log scale)", format="%.0e")
    ax = axes[1]
    z = np.asarray(rnd["loss"])
    norm = LogNorm(vmin=max(z.min(), 1e-6), vmax=z.max())
    cs = ax.contourf(rnd["r"], rnd["r"], z, levels=np.geomspace(norm.vmin, norm.vmax, 25), norm=norm, cmap="viridis")
    ax.plot(0, 0, "r*", ms=11, label="end of SGD")
    ax.set_xlabel("filter-normalized random direction 1 (α)")
    ax.set_ylabel("filter-normalized random direction 2 (β)")
    ax.set_title("random plane around the end point (Li et al. 2018)", fontsize=10)
    ax.legend(fontsize=7)
    fig.colorbar(cs, ax=ax, label="training loss (MSE, log scale)", format="%.0e")
    return save_figure(
        fig, out_dir, "landscape",
        "Loss on two planes through the end of an SGD run: the plane of the path's two principal directions (left, "
        "with the path) and two filter-normalized random directions (right). Log colour scale.",
    )  # fmt: skip


def critical_points(config, cp, rows, out_dir: Path):
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.4))
    ax = axes[0]
    for i, h in enumerate(config.widths):
        ok = np.asarray(cp["grad_norm"][i]) <= config.gtol
        idx = np.asarray(cp["index"][i])[ok] / (4 * h + 1)
        loss = np.asarray(cp["loss"][i])[ok]
        ax.scatter(loss, idx, s=16 + 6 * i, color=f"C{i}", alpha=0.6, label=f"h={h} (P={4 * h + 1})")
    ax.set_xscale("log")
    ax.set_xlabel("training loss at the critical point (MSE, log scale)")
    ax.set_ylabel("index / P (share of negative Hessian eigenvalues)")
    ax.set_title("critical points found by descent on ½‖∇L‖²", fontsize=10)
    ax.legend(fontsize=7)
    ax = axes[1]
    w = np.arange(len(rows))
    conv = np.array([r["converged"] for r in rows])
    sad = np.array([r["saddles"] for r in rows])
    ax.bar(w, sad / np.maximum(conv, 1), color="C3", label="saddles (index > 0)")
    ax.bar(w, (conv - sad) / np.maximum(conv, 1), bottom=sad / np.maximum(conv, 1), color="C0", label="minima")
    for i, r in enumerate(rows):
        ax.text(i, 1.02, f"{r['converged']}/{config.starts}", ha="center", fontsize=7)
    ax.set_xticks(w, [f"h={r['width']}\nP={r['params']}" for r in rows], fontsize=8)
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("share of critical points found")
    ax.set_title("saddles vs minima by width (numbers: searches that converged)", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    return save_figure(
        fig, out_dir, "critical_points",
        "Left: index share vs loss of every critical point found (‖∇L‖ ≤ 1e-8, float64). Right: share of saddles "
        "and minima per width; searches that stalled are not counted (see the claims' notes).",
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------
# rnn_bptt


def gradient_over_time(config, curves, out_dir: Path):
    plt = pyplot()
    acts = list(dict.fromkeys(v["act"] for v in curves.values()))
    fig, axes = plt.subplots(1, len(acts), figsize=(6 * len(acts), 4.4), squeeze=False, layout="constrained")
    for ax, act in zip(axes[0], acts):
        items = [v for v in curves.values() if v["act"] == act]
        for i, v in enumerate(items):
            j = np.arange(len(v["rel"]))
            ax.plot(j, v["rel"], "-", color=f"C{i}", label=f"‖∂E_T/∂h_k‖/‖∂E_T/∂h_T‖, g={v['gain']:g}")
            ax.plot(j, v["jac"], ":", color=f"C{i}", lw=1.5, label=f"‖∂h_T/∂h_k‖₂, g={v['gain']:g}")
            if act == "sigmoid":
                ax.plot(j, (0.25 * v["gain"]) ** j, "--", color=f"C{i}", lw=0.8, alpha=0.6)
        ax.set_yscale("log")
        lo = min(min(np.min(np.asarray(v["rel"])), np.min(np.asarray(v["jac"]))) for v in items)
        hi = max(max(np.max(np.asarray(v["rel"])), np.max(np.asarray(v["jac"]))) for v in items)
        ax.set_ylim(max(lo / 10, 1e-300), hi * 1e3)
        ax.set_xlabel("steps back in time, T − k")
        ax.set_ylabel("gradient norm relative to step T (log scale)")
        title = f"{act} RNN, H={config.hidden}, U = g·orthogonal"
        ax.set_title(title + (" (dashed: bound (g/4)^(T−k))" if act == "sigmoid" else ""), fontsize=10)
        ax.legend(fontsize=6.5, ncol=2)
    return save_figure(
        fig, out_dir, "gradient_over_time",
        "Norm of the BPTT signal ∂E_T/∂h_k (solid) and of the Jacobian ∂h_T/∂h_k (dotted) vs distance T−k, log scale: "
        "it vanishes at g ≤ 1 and explodes for tanh at large g.",
    )  # fmt: skip


def clipping(config, clip, out_dir: Path):
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.2), layout="constrained")
    ax = axes[0]
    raw = np.asarray(clip["raw_norms"]).ravel()
    cl = np.asarray(clip["clipped_norms"]).ravel()
    bins = np.geomspace(min(raw.min(), cl.min()) / 2, raw.max() * 2, 40)
    ax.hist(raw, bins=bins, color="C3", alpha=0.7, label="manual BPTT gradient ‖g‖")
    ax.hist(cl, bins=bins, color="C0", alpha=0.7, label=f"after clip_by_global_norm({config.clip:g})")
    ax.axvline(config.clip, color="k", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("global gradient norm per minibatch (log scale)")
    ax.set_ylabel("minibatches")
    ax.set_title(f"tanh RNN, g={config.clip_gain:g}, adding task T={config.task_T}", fontsize=10)
    ax.legend(fontsize=7)
    ax = axes[1]
    loss = np.asarray(clip["train_loss"], np.float64)
    is_clip = np.asarray(clip["clipped_run"], bool)
    epochs = np.arange(1, loss.shape[1] + 1)
    for k in range(loss.shape[0]):
        lab = "clipped" if is_clip[k] else "not clipped"
        ax.plot(
            epochs,
            loss[k],
            "-o",
            ms=3,
            color="C0" if is_clip[k] else "C3",
            label=lab if k in (0, loss.shape[0] - 1) else None,
        )
        if not is_clip[k] and np.asarray(clip["diverged"])[k]:
            ax.plot(
                [],
                [],
                "x",
                color="C3",
                label=f"not clipped: diverged at step {int(np.asarray(clip['diverged_step'])[k])}",
            )
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (MSE, log scale)")
    ax.set_xticks(epochs)
    ax.set_title(f"SGD η={config.clip_lr:g}; NaN after divergence is not drawn", fontsize=10)
    ax.legend(fontsize=7)
    return save_figure(
        fig, out_dir, "clipping",
        "Left: gradient norms of a tanh RNN at an exploding scale, raw and after global-norm clipping. Right: SGD with "
        "and without clipping; unclipped runs diverge (non-finite) and stop.",
    )  # fmt: skip


def lstm_vs_rnn(config, task, out_dir: Path):
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.2), layout="constrained")
    ax = axes[0]
    for i, m in enumerate(("rnn", "lstm")):
        for stage, ls in (("reach_init", "-"), ("reach_trained", "--")):
            r = np.asarray(task[m][stage])
            ax.plot(np.arange(len(r))[::-1], r, ls, color=f"C{i}", label=f"{m.upper()}, {stage.split('_')[1]}")
    ax.set_yscale("log")
    ax.set_xlabel("steps before the end, T − k")
    ax.set_ylabel("‖∂E/∂x_k‖ (geometric mean, log scale)")
    ax.set_title(f"how far back the gradient reaches (adding task, T={config.task_T})", fontsize=10)
    ax.legend(fontsize=7)
    ax = axes[1]
    for i, m in enumerate(("rnn", "lstm")):
        loss = np.asarray(task[m]["test_loss"], np.float64)
        for k in range(loss.shape[0]):
            ax.plot(np.arange(1, loss.shape[1] + 1), loss[k], color=f"C{i}", label=m.upper() if k == 0 else None)
    ax.axhline(task["baseline"], color="k", ls=":", label="predict the mean (½Var y)")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("test loss (MSE, log scale)")
    ax.set_title(f"H={config.hidden}, Adam + clipping, {config.seeds} seeds", fontsize=10)
    ax.legend(fontsize=7)
    return save_figure(
        fig, out_dir, "lstm_vs_rnn",
        "Left: gradient reaching input step k, before (solid) and after (dashed) training. Right: test loss on the "
        "adding task; the LSTM solves it, the tanh RNN stays at the mean-prediction baseline.",
    )  # fmt: skip
