"""Clustering as associative memory (ClAM, Saha et al. 2023, arXiv:2306.03209) against k-means on MNIST.

K = 10 prototypes for 10,000 training images (pixels in [0, 1]), no labels. ClAM
(`jamem.networks.clustering`): prototypes are the memories of a Gaussian-kernel energy, each
image settles by a few gradient steps through `jamem.retrieve`, and the prototypes are trained by
Adam through those steps on the reconstruction loss, for each kernel width in --betas; the width
kept is the one with the best silhouette (a label-free choice). k-means: Lloyd's iterations from the same
starting prototypes. Both are scored with labels only afterwards: normalised mutual information,
purity (each cluster votes its majority digit), the k-means objective (mean squared distance to
the nearest prototype) and the silhouette on a 3,000-image sample.

Writes results/clustering.json and results/clustering.png (both sets of prototypes). Usage:

    python experiments/clustering.py            # about a minute on 2 CPU cores
    python experiments/clustering.py --quick
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from _common import experiment_parser, result_stem

from jamem.networks import clustering
from jamem.tooling import data
from jamem.tooling.plots import save_figure
from jamem.tooling.provenance import save_json


def lloyd(points, prototypes, iterations):
    """k-means: assign every point to its nearest prototype, move each prototype to its points' mean."""

    @jax.jit
    def step(prototypes):
        nearest = jnp.argmin(clustering.squared_distances(points, prototypes), axis=-1)
        one_hot = jax.nn.one_hot(nearest, prototypes.shape[0])
        counts = one_hot.sum(0)[:, None]
        return jnp.where(counts > 0, one_hot.T @ points / jnp.maximum(counts, 1), prototypes)

    for _ in range(iterations):
        prototypes = step(prototypes)
    return prototypes


def scores(points, labels, clusters, prototypes, *, sample):
    labels, clusters = np.asarray(labels), np.asarray(clusters)
    k, c = clusters.max() + 1, labels.max() + 1
    table = np.zeros((k, c))
    np.add.at(table, (clusters, labels), 1)
    p = table / table.sum()
    pk, pc = p.sum(1, keepdims=True), p.sum(0, keepdims=True)
    nz = p > 0
    mutual = np.sum(p[nz] * np.log(p[nz] / (pk @ pc)[nz]))
    entropy = lambda q: -np.sum(q[q > 0] * np.log(q[q > 0]))  # noqa: E731
    x, a = np.asarray(points)[:sample], clusters[:sample]
    d = np.sqrt(np.maximum(np.asarray(clustering.squared_distances(jnp.asarray(x), jnp.asarray(x))), 0))
    silhouettes = []
    for i in range(len(x)):
        own = a == a[i]
        if own.sum() < 2:
            silhouettes.append(0.0)
            continue
        inside = d[i, own].sum() / (own.sum() - 1)
        outside = min(d[i, a == j].mean() for j in np.unique(a) if j != a[i])
        silhouettes.append((outside - inside) / max(inside, outside))
    return dict(
        nmi=float(2 * mutual / (entropy(pk) + entropy(pc))),
        purity=float(table.max(1).sum() / table.sum()),
        kmeans_objective=float(clustering.kmeans_objective(prototypes, points)),
        silhouette=float(np.mean(silhouettes)),
        cluster_sizes=np.bincount(clusters, minlength=k).tolist(),
    )


def main(argv=None):
    parser = experiment_parser(__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--clusters", type=int, default=10)
    parser.add_argument(
        "--betas", default="0.1,0.5,1,2", help="inverse widths of the Gaussian kernel to try (pixels^-2)"
    )
    parser.add_argument("--steps", type=int, default=3, help="settling steps")
    parser.add_argument("--step-size", type=float, default=1.0)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--learning-rate", type=float, default=0.02)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.epochs, args.betas = 2000, 3, "0.5"
    stem = result_stem(args, "clustering")
    images, labels = data.load("mnist", split="train", data_dir=args.data_dir)
    points = jnp.asarray((np.asarray(images[: args.images]) + 1) / 2)
    labels = np.asarray(labels[: args.images])
    key = jax.random.key(args.seed)
    sample = min(3000, args.images)
    sweep = {}
    for beta in [float(b) for b in args.betas.split(",")]:
        tic = time.time()
        prototypes, losses = clustering.fit_prototypes(
            points, num_clusters=args.clusters, beta=beta, steps=args.steps, step_size=args.step_size,
            epochs=args.epochs, learning_rate=args.learning_rate, key=key,
        )  # fmt: skip
        settle = dict(beta=beta, steps=args.steps, step_size=args.step_size)
        found = clustering.assign(prototypes, points, **settle)
        sweep[beta] = (prototypes, scores(points, labels, found, prototypes, sample=sample))
        sweep[beta][1].update(beta=beta, losses=losses, seconds=time.time() - tic)
        print(f"beta {beta}: silhouette {sweep[beta][1]['silhouette']:.3f}", flush=True)
    chosen = max(sweep, key=lambda b: sweep[b][1]["silhouette"])
    clam = sweep[chosen][0]
    # k-means from the same start: fit_prototypes draws its start from the first half of the split key
    start = points[jax.random.choice(jax.random.split(key)[0], points.shape[0], (args.clusters,), replace=False)]
    tic = time.time()
    kmeans = lloyd(points, start, iterations=100)
    kmeans_seconds = time.time() - tic
    record = dict(
        settings=vars(args) | {"quick": args.quick},
        chosen_beta=chosen,
        clam=sweep[chosen][1],
        clam_sweep=[r for _, r in sweep.values()],
        kmeans=scores(
            points, labels, jnp.argmin(clustering.squared_distances(points, kmeans), -1), kmeans, sample=sample
        )
        | dict(iterations=100, seconds=kmeans_seconds),
        start=scores(points, labels, jnp.argmin(clustering.squared_distances(points, start), -1), start, sample=sample),
    )
    for name in ("clam", "kmeans", "start"):
        r = record[name]
        print(f"{name:7s} NMI {r['nmi']:.3f}  purity {r['purity']:.3f}  silhouette {r['silhouette']:.3f}")
    save_json(stem.with_suffix(".json"), record)
    _plot(clam, kmeans, record, stem.with_suffix(".png"))
    print(f"wrote {stem.with_suffix('.json')}")


def _plot(clam, kmeans, record, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = clam.shape[0]
    fig, axes = plt.subplots(2, k, figsize=(1.1 * k, 2.8))
    for row, (name, protos) in enumerate((("clam", clam), ("kmeans", kmeans))):
        for ax, proto in zip(np.atleast_1d(axes[row]), np.asarray(protos)):
            ax.imshow(proto.reshape(28, 28), cmap="gray_r", vmin=0, vmax=1)
            ax.axis("off")
        r = record[name]
        axes[row][0].set_title(f"{name}: NMI {r['nmi']:.2f}, purity {r['purity']:.2f}", loc="left", fontsize=8)
    save_figure(fig, path)


if __name__ == "__main__":
    main()
