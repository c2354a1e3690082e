"""Epanechnikov (log-sum-ReLU) energy (Hoover et al. 2025, arXiv:2506.10801):

    E(q) = - (1/beta) log( sum_mu ReLU(1 - beta/2 |q - xi^mu|^2) + eps ).

Each memory's kernel has compact support, a ball of radius r = sqrt(2 / beta).

(a) Exact retrieval at finite beta: random memories in N = 32 dimensions, starts at distance
    0.4 r from a memory, gradient descent to convergence. When no other memory lies inside a
    memory's support (r below the smallest pairwise distance) the start lands on the memory to
    float32 precision; the Gaussian-kernel log-sum-exp energy (arXiv:2410.24153) at the same beta is biased
    towards the other memories. As beta falls and the supports start to overlap, exactness is lost.
(b) Emergent minima in 2-D: K memories closer than 2r but farther than r apart (each an exact
    minimum, overlapping supports). The minima are counted three ways: strict local minima of E
    on a fine grid; gradient descent from a grid of starts inside the supports, end points
    clustered; and the exact enumeration: where the active set of memories is A, the kernel sum is
    a concave quadratic with its peak at the centroid of A, so the minima are the centroids of
    the subsets A that lie inside the supports of A and outside all others. There are more
    minima than memories.

Writes results/epanechnikov.json and results/epanechnikov.png. Usage:

    python experiments/epanechnikov.py           # about a minute on 2 CPU cores
    python experiments/epanechnikov.py --quick
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from _common import experiment_parser, result_stem

import jamem as jm
from jamem.tooling.plots import save_figure
from jamem.tooling.provenance import save_json

# part (a): small enough that descent stays stable where many supports overlap (the Hessian of
# E grows like (active memories) / (kernel sum)); tol = 0 runs until a step changes nothing
STEP_SIZE, MAX_STEPS = 0.1, 3000


def pairwise_distances(x):
    x = np.asarray(x, np.float64)
    d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    return d


def descend(energy, starts, memories, *, step_size, steps, tol):
    run = lambda x0: jm.retrieve(energy, x0, memories, solver=jm.GradientDescent(step_size), steps=steps, tol=tol)
    sol = jax.jit(jax.vmap(run))(starts)
    return sol.state, sol.converged


def part_a(key, *, dim, num_memories, radius_fractions, starts_per_memory, start_fraction, eps):
    k1, k2 = jax.random.split(key)
    xi = jax.random.normal(k1, (num_memories, dim)) / np.sqrt(dim)
    dist = pairwise_distances(xi)
    d_min = float(dist.min())
    which = jnp.repeat(jnp.arange(num_memories), starts_per_memory)
    direction = jax.random.normal(k2, (which.size, dim))
    direction = direction / jnp.linalg.norm(direction, axis=1, keepdims=True)
    rows = []
    for frac in radius_fractions:
        radius = frac * d_min  # support radius as a fraction of the smallest pairwise distance
        beta = 2.0 / radius**2
        starts = xi[which] + start_fraction * radius * direction
        row = dict(radius_over_min_distance=frac, beta=beta, support_radius=radius)
        # memories with another memory inside their support
        row["memories_with_overlapping_support"] = int((dist.min(axis=1) < radius).sum())
        for name, energy, step in (
            ("log_sum_relu", jm.LogSumReLUEnergy(beta, eps), STEP_SIZE),
            ("gaussian_lse", jm.GaussianKernelEnergy(beta), STEP_SIZE),
        ):
            final, converged = descend(energy, starts, xi, step_size=step, steps=MAX_STEPS, tol=0.0)
            err = np.asarray(jnp.linalg.norm(final - xi[which], axis=1))
            scale = np.asarray(jnp.linalg.norm(xi[which], axis=1))
            row[name] = dict(
                exact_fraction=float(np.mean(err <= 1e-6 * np.maximum(scale, 1.0))),
                median_error=float(np.median(err)),
                max_error=float(err.max()),
                converged_fraction=float(np.asarray(converged).mean()),
            )
        rows.append(row)
        print(
            f"(a) r = {frac:.2f} d_min (beta {beta:.1f}): overlapping {row['memories_with_overlapping_support']:3d}; "
            f"LSR exact {row['log_sum_relu']['exact_fraction']:.3f} (max err {row['log_sum_relu']['max_error']:.1e}); "
            f"Gaussian exact {row['gaussian_lse']['exact_fraction']:.3f} "
            f"(median err {row['gaussian_lse']['median_error']:.1e})",
            flush=True,
        )
    setup = dict(
        dim=dim,
        num_memories=num_memories,
        min_pairwise_distance=d_min,
        starts_per_memory=starts_per_memory,
        start_distance_over_radius=start_fraction,
        eps=eps,
        exact_criterion="|q - xi| <= 1e-6 max(|xi|, 1) (float32)",
        step_size=STEP_SIZE,
        tol=0.0,
        steps=MAX_STEPS,
    )
    return dict(setup=setup, rows=rows)


def two_d_memories(rng, num_memories, radius, box):
    """Rejection sampling: pairwise distances in (1.05 r, 1.9 r) for at least one neighbour each,
    never below 1.05 r (so every memory is an exact minimum)."""
    while True:
        pts = [rng.uniform(0, box, 2)]
        tries = 0
        while len(pts) < num_memories and tries < 10_000:
            tries += 1
            p = rng.uniform(0, box, 2)
            d = np.linalg.norm(np.asarray(pts) - p, axis=1)
            if d.min() > 1.05 * radius and d.min() < 1.9 * radius:
                pts.append(p)
        if len(pts) == num_memories:
            return np.asarray(pts)


def centroid_minima(xi, radius):
    """Exact minima: centroids c of subsets A with |c - xi_a| < r for a in A and > r otherwise."""
    found = []
    for size in range(1, len(xi) + 1):
        for subset in itertools.combinations(range(len(xi)), size):
            c = xi[list(subset)].mean(0)
            d = np.linalg.norm(xi - c, axis=1)
            inside = np.zeros(len(xi), bool)
            inside[list(subset)] = True
            if np.all(d[inside] < radius) and np.all(d[~inside] > radius):
                found.append(dict(subset=list(subset), point=c.tolist()))
    return found


def cluster(points, tol):
    centres = []
    for p in points:
        if not any(np.linalg.norm(p - c) < tol for c in centres):
            centres.append(p)
    return np.asarray(centres)


def part_b(seed, *, num_memories, grid_size, starts_grid, eps):
    beta = 2.0
    radius = np.sqrt(2.0 / beta)
    rng = np.random.default_rng(seed)
    xi = two_d_memories(rng, num_memories, radius, box=2.6)
    energy = jm.LogSumReLUEnergy(beta, eps)
    memories = jnp.asarray(xi, jnp.float32)
    lo, hi = xi.min(0) - 1.2 * radius, xi.max(0) + 1.2 * radius

    # (1) grid: strict local minima among the 8 neighbours, inside the supports
    gx, gy = np.linspace(lo[0], hi[0], grid_size), np.linspace(lo[1], hi[1], grid_size)
    pts = np.stack(np.meshgrid(gx, gy, indexing="xy"), -1).reshape(-1, 2)
    e_grid = np.asarray(jax.jit(jax.vmap(energy, in_axes=(0, None)))(jnp.asarray(pts, jnp.float32), memories))
    e_grid = e_grid.astype(np.float64).reshape(grid_size, grid_size)
    kernel = np.maximum(1 - 0.5 * beta * ((pts[:, None, :] - xi[None]) ** 2).sum(-1), 0).sum(1)
    support = kernel.reshape(grid_size, grid_size) > 0
    inner = e_grid[1:-1, 1:-1]
    is_min = np.ones_like(inner, bool)
    for dx, dy in itertools.product((-1, 0, 1), repeat=2):
        if dx or dy:
            is_min &= inner < e_grid[1 + dy : grid_size - 1 + dy, 1 + dx : grid_size - 1 + dx]
    is_min &= support[1:-1, 1:-1]
    iy, ix = np.nonzero(is_min)
    grid_minima = np.stack([gx[ix + 1], gy[iy + 1]], -1)

    # (2) descent from a grid of starts inside the supports (kernel sum > 0.05 keeps the first
    # steps small: the gradient grows like 1 / kernel sum near the support's edge)
    sx, sy = np.linspace(lo[0], hi[0], starts_grid), np.linspace(lo[1], hi[1], starts_grid)
    starts = np.stack(np.meshgrid(sx, sy, indexing="xy"), -1).reshape(-1, 2)
    k_starts = np.maximum(1 - 0.5 * beta * ((starts[:, None, :] - xi[None]) ** 2).sum(-1), 0).sum(1)
    starts = starts[k_starts > 0.05]
    final, converged = descend(
        energy, jnp.asarray(starts, jnp.float32), memories, step_size=0.01, steps=20_000, tol=1e-7
    )
    final = np.asarray(final, np.float64)
    descent_minima = cluster(final[np.asarray(converged)], tol=1e-3)

    # (3) exact enumeration
    exact = centroid_minima(xi, radius)
    exact_pts = np.asarray([m["point"] for m in exact])

    def matched(found):
        return int(sum(np.min(np.linalg.norm(exact_pts - p, axis=1)) < 2 * (hi - lo).max() / grid_size for p in found))

    result = dict(
        beta=beta,
        support_radius=float(radius),
        eps=eps,
        memories=xi.tolist(),
        pairwise_distance_over_radius=(pairwise_distances(xi) / radius)[np.triu_indices(num_memories, 1)].tolist(),
        num_memories=num_memories,
        num_minima_exact=len(exact),
        num_emergent_exact=sum(len(m["subset"]) > 1 for m in exact),
        exact_minima=exact,
        num_minima_grid=len(grid_minima),
        grid_minima_matching_exact=matched(grid_minima),
        grid_size=grid_size,
        num_minima_descent=len(descent_minima),
        descent_minima_matching_exact=matched(descent_minima),
        descent_starts=len(starts),
        descent_converged_fraction=float(np.asarray(converged).mean()),
        descent_minima=descent_minima.tolist(),
    )
    print(
        f"(b) K = {num_memories}: minima exact {len(exact)} ({result['num_emergent_exact']} emergent), "
        f"grid {len(grid_minima)} ({result['grid_minima_matching_exact']} match), "
        f"descent {len(descent_minima)} ({result['descent_minima_matching_exact']} match; "
        f"{result['descent_converged_fraction']:.3f} of {len(starts)} starts converged)",
        flush=True,
    )
    landscape = dict(x=gx, y=gy, energy=e_grid, support=support)
    return result, landscape


def plot(results, landscape, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), gridspec_kw=dict(width_ratios=[1.25, 1, 1]))
    ax = axes[0]
    b = results["emergent_minima_2d"]
    e = np.where(landscape["support"], landscape["energy"], np.nan)
    lo = np.nanmin(e)
    # E runs up to -(1/beta) log(eps) at the support's edge: show the part where the minima are
    im = ax.contourf(
        landscape["x"], landscape["y"], e, levels=np.linspace(lo, lo + 1.5, 31), cmap="viridis", extend="max"
    )
    fig.colorbar(im, ax=ax, label="E (inside the supports)")
    xi = np.asarray(b["memories"])
    for p in xi:
        ax.add_patch(plt.Circle(p, b["support_radius"], fill=False, color="w", lw=0.6, ls="--"))
    ex = np.asarray([m["point"] for m in b["exact_minima"]])
    ax.plot(ex[:, 0], ex[:, 1], "o", mfc="none", mec="r", ms=9, label=f"minima ({len(ex)})")
    ax.plot(xi[:, 0], xi[:, 1], "kx", ms=7, label=f"memories ({len(xi)})")
    ax.set_aspect("equal")
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title("(b) log-sum-ReLU landscape, beta = 2")
    ax = axes[1]
    rows = results["exact_retrieval"]["rows"]
    frac = [r["radius_over_min_distance"] for r in rows]
    ax.plot(frac, [r["log_sum_relu"]["exact_fraction"] for r in rows], "o-", label="log-sum-ReLU")
    ax.plot(frac, [r["gaussian_lse"]["exact_fraction"] for r in rows], "s-", label="Gaussian LSE")
    ax.axvline(1.0, color="k", lw=0.6, ls=":")
    ax.set_xlabel("support radius / smallest memory distance")
    ax.set_ylabel("fraction landing exactly on the memory")
    ax.set_title("(a) exact retrieval, N = 32")
    ax.legend(fontsize=8)
    ax = axes[2]
    for name, marker, label in (("log_sum_relu", "o", "log-sum-ReLU"), ("gaussian_lse", "s", "Gaussian LSE")):
        ax.semilogy(frac, [max(r[name]["median_error"], 1e-9) for r in rows], marker=marker, label=label)
    ax.axvline(1.0, color="k", lw=0.6, ls=":")
    ax.set_xlabel("support radius / smallest memory distance")
    ax.set_ylabel("median |q_final - xi|")
    ax.set_title("(a) distance to the start's memory")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def main(argv=None):
    parser = experiment_parser(__doc__)
    args = parser.parse_args(argv)
    out = Path(args.out)
    name = result_stem(args, "epanechnikov").name
    t0 = time.perf_counter()
    exact = part_a(
        jax.random.key(args.seed),
        dim=32,
        num_memories=64,
        radius_fractions=(0.5, 0.8, 0.95, 1.1, 1.5, 2.0),
        starts_per_memory=2 if args.quick else 8,
        start_fraction=0.4,
        eps=1e-6,
    )
    emergent, landscape = part_b(
        args.seed, num_memories=6, grid_size=201 if args.quick else 601, starts_grid=30 if args.quick else 60, eps=1e-6
    )
    results = dict(exact_retrieval=exact, emergent_minima_2d=emergent, seconds=time.perf_counter() - t0)
    save_json(out / f"{name}.json", results, argv=argv)
    plot(results, landscape, out / f"{name}.png")
    print(f"wrote {out / name}.json and .png in {results['seconds']:.0f}s")


if __name__ == "__main__":
    main()
