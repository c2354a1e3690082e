"""Matplotlib figures for the experiments (saved as PNG; headless-safe)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    if matplotlib.get_backend().lower() not in ("module://matplotlib_inline.backend_inline", "nbagg"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path) -> Path:
    """Save `fig` as a PNG at `path` (folders created), then close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def plot_overlap_histograms(rows: list[dict], path) -> Path:
    """Appendix B (a): final overlap with the closest memory, one panel per degree."""
    plt = _pyplot()
    degrees = sorted({r["degree"] for r in rows})
    fig, axes = plt.subplots(1, len(degrees), figsize=(3.2 * len(degrees), 2.8), sharey=True)
    axes = np.atleast_1d(axes)
    for ax, n in zip(axes, degrees):
        for r in (r for r in rows if r["degree"] == n):
            counts = np.asarray(r["overlap_counts"], float)
            ax.step(r["overlap_values"], counts / counts.sum(), where="mid", label=r["kind"])
        ax.set_title(f"n = {n}")
        ax.set_xlabel("max overlap with a memory")
    axes[0].set_ylabel("fraction of starts")
    axes[0].legend(fontsize=8)
    r0 = rows[0]
    fig.suptitle(f"N = {r0['dim']}, K = {r0['num_memories']}, {r0['starts']} random starts", fontsize=10)
    return save_figure(fig, path)


def plot_k_half(k_halves: list[dict], path) -> Path:
    """Appendix B (b): K_1/2 against N beside the perfect-recall formula (arXiv:1606.01164, sec. 2)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 3.4))
    for kind, marker in (("power", "o"), ("rectified", "s")):
        pts = sorted((r["dim"], r["k_half"]) for r in k_halves if r["kind"] == kind)
        if pts:
            ax.plot(*zip(*pts), marker=marker, ls="-", label=f"K_1/2, {kind} F")
    dims = sorted({r["dim"] for r in k_halves})
    theory = sorted((r["dim"], r["theory_a5"]) for r in k_halves if r["kind"] == k_halves[0]["kind"])
    ax.plot(*zip(*theory), "k--", label="perfect recall (arXiv:1606.01164): N^(n-1) / (2 (2n-3)!! ln N)")
    ax.set_xlabel("N")
    ax.set_ylabel("K")
    ax.set_title(f"n = {k_halves[0]['degree']}")
    ax.set_xticks(dims)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_trajectory(energies, path=None, *, ax=None, label=None):
    """Energy along a retrieval trajectory (one curve per query)."""
    plt = _pyplot()
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot(np.asarray(energies).T if np.ndim(energies) > 1 else energies, label=label)
    ax.set_xlabel("saved step")
    ax.set_ylabel("energy")
    if own and path is not None:
        return save_figure(fig, path)
    return ax


def plot_error_curves(histories: dict[str, list[dict]], path, *, mark: float = 0.02) -> Path:
    """Test error (%) against epoch for each run (Fig. 1B style), with the `mark` level drawn."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, rows in histories.items():
        points = [(r["epoch"], 100 * r["test_error"]) for r in rows if r.get("test_error") is not None]
        if points:
            ax.plot(*zip(*points), label=label)
    ax.axhline(100 * mark, color="grey", ls="--", lw=0.8)
    ax.set(xlabel="epoch", ylabel="test error (%)", yscale="log")
    ax.legend()
    return save_figure(fig, path)


def plot_memory_grid(memories, path, *, rows: int = 10, cols: int = 10, title: str | None = None) -> Path:
    """The first rows*cols memories' visible parts as 28x28 images (Fig. 2 style), colour in [-1, 1]."""
    plt = _pyplot()
    memories = np.asarray(memories)[: rows * cols, :784]
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.8, rows * 0.8))
    for ax, memory in zip(np.ravel(axes), memories):
        ax.imshow(memory.reshape(28, 28), cmap="bwr", vmin=-1, vmax=1)
    for ax in np.ravel(axes):
        ax.axis("off")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_prototype_stats(stats: dict[str, dict], path) -> Path:
    """The feature-to-prototype statistics (arXiv:1606.01164, Figs. 2, 4): classes per memory and
    second/largest contribution ratio, one row per model."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(stats), 2, figsize=(8, 2.2 * len(stats)), squeeze=False)
    for (label, s), (left, right) in zip(stats.items(), axes):
        counts = np.asarray(s["classes_per_memory_histogram"])
        left.bar(np.arange(len(counts)), counts / max(counts.sum(), 1))
        left.set(xlabel="classes a memory votes for", ylabel="fraction", title=label)
        right.hist(np.asarray(s["second_ratio"]), bins=40, range=(0, 1))
        right.axvline(0.9, color="grey", ls="--", lw=0.8)
        right.set(xlabel="2nd largest / largest contribution", ylabel="images", title=label)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_transfer_matrix(matrix, path):
    plt = _pyplot()
    names = list(matrix)
    cols = list(next(iter(matrix.values())))
    values = np.array([[matrix[r][c] for c in cols] for r in names])
    fig, ax = plt.subplots(figsize=(1 + 1.1 * len(cols), 1 + 0.8 * len(names)))
    ax.imshow(values, cmap="viridis", vmin=0, vmax=1)
    for i in range(len(names)):
        for j in range(len(cols)):
            ax.text(
                j, i, f"{100 * values[i, j]:.0f}%", ha="center", va="center", color="w" if values[i, j] < 0.6 else "k"
            )
    ax.set(xticks=range(len(cols)), xticklabels=cols, yticks=range(len(names)), yticklabels=names)
    ax.set(xlabel="evaluated on", ylabel="made on", title="adversarial images misclassified")
    return save_figure(fig, path)


def plot_robust_accuracy(epsilons, robust, path):
    """Robust accuracy against epsilon, one line per model: `robust[model] = [accuracy, ...]`."""
    return plot_robust_accuracy_panels(epsilons, {"PGD robust accuracy": robust}, path)


def plot_robust_accuracy_panels(epsilons, panels, path):
    """One panel per attack, `panels[attack][model] = [accuracy at each epsilon]`, shared y axis."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.5), sharey=True, squeeze=False)
    for ax, (title, robust) in zip(axes[0], panels.items()):
        for name, acc in robust.items():
            ax.plot(epsilons, acc, marker="o", label=name)
        ax.set(xlabel="L-inf epsilon (pixels in [-1, 1])", title=title if len(panels) > 1 else None)
    axes[0, 0].set_ylabel("robust accuracy" if len(panels) > 1 else next(iter(panels)))
    axes[0, -1].legend()
    return save_figure(fig, path)


def plot_adversarial_examples(examples, path):
    plt = _pyplot()
    fig, axes = plt.subplots(len(examples), 12, figsize=(12, 1.15 * len(examples)), squeeze=False)
    for row, (name, (orig, advx, pred)) in zip(axes, examples.items()):
        for i in range(4):
            for j, (img, cmap) in enumerate([(orig, "gray"), (advx, "gray"), (advx - orig, "bwr")]):
                ax = row[3 * i + j]
                if i < len(orig):
                    lim = (-1, 1)
                    ax.imshow(img[i].reshape(28, 28), cmap=cmap, vmin=lim[0], vmax=lim[1])
                    if j == 1:
                        ax.set_title(f"-> {int(pred[i])}", fontsize=7)
                ax.axis("off")
        row[0].text(-0.5, 0.5, name, transform=row[0].transAxes, ha="right", va="center", fontsize=8)
    fig.suptitle("original / adversarial / difference", fontsize=9)
    return save_figure(fig, path)


def plot_rubbish_images(images, path, *, per_class: int = 1):
    plt = _pyplot()
    fig, axes = plt.subplots(len(images), 10, figsize=(10, 1.1 * len(images)), squeeze=False)
    for row, (name, imgs) in zip(axes, images.items()):
        for c in range(10):
            row[c].imshow(imgs[per_class * c].reshape(28, 28), cmap="gray", vmin=-1, vmax=1)
            row[c].axis("off")
        row[0].text(-0.5, 0.5, name, transform=row[0].transAxes, ha="right", va="center", fontsize=8)
    fig.suptitle("descent from noise toward classes 0-9", fontsize=9)
    return save_figure(fig, path)
