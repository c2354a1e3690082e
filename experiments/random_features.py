"""DrDAM (Hoover et al. NeurIPS 2024, arXiv:2410.24153): how well random
features approximate the Gaussian-kernel energy, and whether retrieval with the approximate
gradient reaches the same memory as retrieval with the exact one.

(a) Error against Y: mean |E_approx(v) - E(v)| and mean |grad E_approx(v) - grad E(v)| over
    queries near the memories and several feature seeds, for Y = 16 .. 16384, both feature maps;
    the log-log slope is fitted (arXiv:2410.24153: about -0.5).
(b) Error against beta and N at fixed Y (arXiv:2410.24153: it grows with both).
(c) Retrieval: from starts near a memory, gradient descent on the exact energy and on the
    approximate one (same step size and number of steps); the rate at which both end closest to
    the same memory, against Y.

Writes results/random_features.json and results/random_features.png. Usage:

    python experiments/random_features.py           # about a minute on 2 CPU cores
    python experiments/random_features.py --quick   # smaller, a few seconds
"""

from __future__ import annotations

import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from _common import experiment_parser, result_stem

import jamem as jm
from jamem.networks.random_features import RandomFeatureMemory
from jamem.tooling.plots import save_figure
from jamem.tooling.provenance import save_json


def make_problem(key, *, dim, num_memories, scale, noise, num_queries):
    """Memories xi ~ Normal(0, scale^2 I); queries = a random memory + Normal(0, noise^2 I)."""
    k1, k2, k3 = jax.random.split(key, 3)
    xi = scale * jax.random.normal(k1, (num_memories, dim))
    which = jax.random.randint(k2, (num_queries,), 0, num_memories)
    queries = xi[which] + noise * jax.random.normal(k3, (num_queries, dim))
    return xi, queries, which


@eqx.filter_jit
def _errors(empty, xi, queries, keys):
    energy = jm.GaussianKernelEnergy(empty.beta)
    exact = jax.vmap(energy, in_axes=(0, None))(queries, xi)
    exact_grad = jax.vmap(jax.grad(energy), in_axes=(0, None))(queries, xi)
    exact_sum = jnp.exp(-empty.beta * exact)

    def one(key):
        rf = eqx.tree_at(lambda m: m.projection, empty, jax.random.normal(key, empty.projection.shape))
        rf = rf.add_memories(xi)
        e = jax.vmap(rf)(queries)
        g = jax.vmap(rf.gradient)(queries)
        s = jax.vmap(rf.kernel_sum)(queries)
        return jnp.abs(s - exact_sum) / exact_sum, s <= 0, jnp.abs(e - exact), jnp.linalg.norm(g - exact_grad, axis=-1)

    sum_err, clipped, e_err, g_err = jax.lax.map(one, keys)
    return sum_err, clipped, e_err, g_err, jnp.linalg.norm(exact_grad, axis=-1)


def approximation_errors(empty, xi, queries, keys) -> dict:
    """Errors of the random-feature memory `empty` (fixing Y, beta and the feature map) filled
    with `xi`, over one feature draw per key and all `queries`:

    - kernel_sum_error: mean |S_approx - S| / S, S = sum_mu exp(-beta/2 |v - xi^mu|^2), the
      quantity whose standard deviation is exactly proportional to Y^(-1/2);
    - energy_error (mean) and energy_error_median of |E_approx - E|: the mean is dominated by
      the queries where a Fourier estimate S_approx <= 0 had to be clipped (clipped_fraction);
    - gradient_error: mean |grad E_approx - grad E|, and relative to mean |grad E|.
    """
    sum_err, clipped, e_err, g_err, g_norm = (np.asarray(a) for a in _errors(empty, xi, queries, keys))
    return dict(
        kernel_sum_error=float(sum_err.mean()),
        clipped_fraction=float(clipped.mean()),
        energy_error=float(e_err.mean()),
        energy_error_median=float(np.median(e_err)),
        gradient_error=float(g_err.mean()),
        gradient_error_median=float(np.median(g_err)),
        relative_gradient_error=float(g_err.mean() / g_norm.mean()),
    )


def fit_slope(x, y):
    slope, intercept = np.polyfit(np.log(x), np.log(y), 1)
    return float(slope), float(intercept)


def part_a(key, *, dim, num_memories, beta, ys, seeds, num_queries):
    xi, queries, _ = make_problem(
        key, dim=dim, num_memories=num_memories, scale=0.5, noise=0.2, num_queries=num_queries
    )
    keys = jax.random.split(jax.random.fold_in(key, 1), seeds)
    rows, fits = [], {}
    for kind in ("fourier", "positive"):
        for y in ys:
            t0 = time.perf_counter()
            empty = RandomFeatureMemory(dim, y, beta=beta, kind=kind, key=key)
            errs = approximation_errors(empty, xi, queries, keys)
            rows.append(dict(kind=kind, num_features=y, **errs, seconds=time.perf_counter() - t0))
            print(
                f"(a) {kind:8s} Y={y:6d}: |dS|/S = {errs['kernel_sum_error']:.4g}, "
                f"|dE| mean {errs['energy_error']:.4g} median {errs['energy_error_median']:.4g}, "
                f"|d grad| {errs['gradient_error']:.4g}, clipped {errs['clipped_fraction']:.3f}",
                flush=True,
            )
        mine = [r for r in rows if r["kind"] == kind]
        ys_fit = [r["num_features"] for r in mine]
        fits[kind] = {
            f"{q}_slope": fit_slope(ys_fit, [r[q] for r in mine])[0]
            for q in ("kernel_sum_error", "energy_error", "energy_error_median", "gradient_error_median")
        }
        # the asymptotic regime: the upper half of the Y range
        upper = mine[len(mine) // 2 :]
        fits[kind]["energy_error_median_slope_upper_half"] = fit_slope(
            [r["num_features"] for r in upper], [r["energy_error_median"] for r in upper]
        )[0]
        print(f"(a) {kind}: log-log slopes {fits[kind]}", flush=True)
    setup = dict(
        dim=dim,
        num_memories=num_memories,
        beta=beta,
        memory_scale=0.5,
        query_noise=0.2,
        seeds=seeds,
        num_queries=num_queries,
    )
    return dict(setup=setup, rows=rows, fits=fits)


def part_b(key, *, num_features, betas, dims, num_memories, seeds, num_queries):
    rows = []
    keys = jax.random.split(jax.random.fold_in(key, 2), seeds)
    for dim in dims:
        # memories and queries scaled with 1/sqrt(dim) so distances stay comparable across N
        scale, noise = 2.0 / np.sqrt(dim), 0.8 / np.sqrt(dim)
        xi, queries, _ = make_problem(
            key, dim=dim, num_memories=num_memories, scale=scale, noise=noise, num_queries=num_queries
        )
        for beta in betas:
            empty = RandomFeatureMemory(dim, num_features, beta=beta, key=key)
            errs = approximation_errors(empty, xi, queries, keys)
            rows.append(dict(dim=dim, beta=beta, num_features=num_features, **errs))
            print(
                f"(b) N={dim:3d} beta={beta:4.1f}: |dS|/S = {errs['kernel_sum_error']:.4g}, "
                f"|dE| median {errs['energy_error_median']:.4g}, clipped {errs['clipped_fraction']:.3f}",
                flush=True,
            )
    return rows


def part_c(key, *, dim, num_memories, beta, ys, seeds, num_starts, steps, step_size, noise):
    xi, starts, which = make_problem(
        jax.random.fold_in(key, 3), dim=dim, num_memories=num_memories, scale=1.0, noise=noise, num_queries=num_starts
    )
    solver = jm.GradientDescent(step_size)

    def nearest(states):
        return jnp.argmin(jnp.sum((states[:, None, :] - xi[None, :, :]) ** 2, axis=-1), axis=-1)

    exact = jax.jit(
        jax.vmap(lambda s: jm.retrieve(jm.GaussianKernelEnergy(beta), s, xi, solver=solver, steps=steps).state)
    )(starts)
    exact_end = nearest(exact)
    exact_on_start = float(jnp.mean(exact_end == which))
    print(f"(c) exact descent ends nearest the start's memory for {exact_on_start:.3f} of starts", flush=True)

    @eqx.filter_jit
    def approx_run(empty, key):
        rf = eqx.tree_at(lambda m: m.projection, empty, jax.random.normal(key, empty.projection.shape))
        rf = rf.add_memories(xi)
        final = jax.vmap(lambda s: jm.retrieve(lambda v, _: rf(v), s, xi, solver=solver, steps=steps).state)(starts)
        return final

    rows = []
    for y in ys:
        t0 = time.perf_counter()
        same, dist = [], []
        for s in range(seeds):
            final = approx_run(RandomFeatureMemory(dim, y, beta=beta, key=key), jax.random.fold_in(key, 100 + s))
            same.append(float(jnp.mean(nearest(final) == exact_end)))
            dist.append(float(jnp.mean(jnp.linalg.norm(final - exact, axis=-1))))
        rows.append(
            dict(
                num_features=y,
                same_memory_rate=float(np.mean(same)),
                same_memory_rate_per_seed=same,
                mean_distance_to_exact_endpoint=float(np.mean(dist)),
                seconds=time.perf_counter() - t0,
            )
        )
        print(
            f"(c) Y={y:6d}: same memory {rows[-1]['same_memory_rate']:.3f}, |x - x_exact| = {np.mean(dist):.3f}",
            flush=True,
        )
    setup = dict(
        dim=dim,
        num_memories=num_memories,
        beta=beta,
        memory_scale=1.0,
        start_noise=noise,
        num_starts=num_starts,
        seeds=seeds,
        steps=steps,
        step_size=step_size,
        exact_ends_on_start_memory=exact_on_start,
    )
    return dict(setup=setup, rows=rows)


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.6))
    ax = axes[0]
    for kind, marker in (("fourier", "o"), ("positive", "s")):
        rows = [r for r in results["error_vs_features"]["rows"] if r["kind"] == kind]
        y = np.array([r["num_features"] for r in rows])
        fits = results["error_vs_features"]["fits"][kind]
        for q, ls in (("kernel_sum_error", "-"), ("energy_error_median", ":")):
            err = np.array([r[q] for r in rows])
            label = f"{kind}, {'|dS|/S' if q == 'kernel_sum_error' else 'median |dE|'} (slope {fits[q + '_slope']:.2f})"
            ax.loglog(y, err, marker=marker, ls=ls, label=label)
    ref = results["error_vs_features"]["rows"][0]
    ax.loglog(y, ref["kernel_sum_error"] * (y / y[0]) ** -0.5, "k--", lw=0.8, label="Y^-1/2")
    ax.set_xlabel("features Y")
    ax.set_ylabel("error")
    ax.set_title("(a) error of the kernel sum and the energy")
    ax.legend(fontsize=7)
    ax = axes[1]
    rows = results["retrieval"]["rows"]
    ax.semilogx([r["num_features"] for r in rows], [r["same_memory_rate"] for r in rows], "o-")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("features Y")
    ax.set_ylabel("same memory as exact descent")
    ax.set_title("(c) retrieval agreement")
    fig.tight_layout()
    save_figure(fig, path)


def main(argv=None):
    parser = experiment_parser(__doc__)
    args = parser.parse_args(argv)
    key = jax.random.key(args.seed)
    out = Path(args.out)
    name = result_stem(args, "random_features").name
    t0 = time.perf_counter()
    if args.quick:
        ys_a, ys_c, seeds, queries, starts = (16, 64, 256, 1024), (16, 256, 1024), 2, 32, 64
    else:
        ys_a, ys_c, seeds, queries, starts = tuple(2**k for k in range(4, 15)), (16, 64, 256, 1024, 4096), 8, 128, 256
    results = dict(
        error_vs_features=part_a(key, dim=16, num_memories=32, beta=1.0, ys=ys_a, seeds=seeds, num_queries=queries),
        error_vs_beta_and_dim=part_b(
            key,
            num_features=1024,
            betas=(0.5, 1.0, 2.0, 4.0),
            dims=(4, 16, 64),
            num_memories=32,
            seeds=seeds,
            num_queries=queries,
        ),
        retrieval=part_c(
            key,
            dim=16,
            num_memories=32,
            beta=1.0,
            ys=ys_c,
            seeds=min(seeds, 4),
            num_starts=starts,
            steps=50,
            step_size=0.5,
            noise=0.25,
        ),
    )
    results["seconds"] = time.perf_counter() - t0
    save_json(out / f"{name}.json", results, argv=argv)
    plot(results, out / f"{name}.png")
    print(f"wrote {out / name}.json and .png in {results['seconds']:.0f}s")


if __name__ == "__main__":
    main()
