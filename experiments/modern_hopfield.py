"""Modern Hopfield networks (Ramsauer et al. 2020, arXiv:2008.02217).

(a) The update x <- Xi^T softmax(beta Xi x) is one gradient step of size 1 on the log-sum-exp
    energy E(x) = -(1/beta) log sum_mu exp(beta xi^mu . x) + 1/2 x . x (`jamem.LogSumExpEnergy`
    with `jamem.GradientDescent(1.0)`): the largest difference between the two over random
    queries, and the energy along repeated updates (CCCP: it never increases).
(b) One-step retrieval error against separation (arXiv:2008.02217): for a memory xi_i with
    Delta_i = xi_i . xi_i - max_{j != i} xi_i . xi_j, the error |x_1 - xi_i| after one update
    from x_0 = xi_i (and from a perturbed start) decays like exp(-beta Delta_i). Random memory
    sets of varying scale give a spread of Delta; the slope of log(error) against Delta is fitted
    for several beta and compared with -beta.

Runs in float64 (errors down to 1e-11 are measured). Writes results/modern_hopfield.json and
results/modern_hopfield.png. Usage:

    python experiments/modern_hopfield.py           # under a minute on 2 CPU cores
    python experiments/modern_hopfield.py --quick
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
from _common import experiment_parser, result_stem

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jamem as jm  # noqa: E402
from jamem.tooling.plots import save_figure  # noqa: E402
from jamem.tooling.provenance import save_json  # noqa: E402


def one_step(beta, x0, memories):
    """One gradient step of size 1 on the LSE energy, through `jamem.retrieve`."""
    return jm.retrieve(jm.LogSumExpEnergy(beta), x0, memories, solver=jm.GradientDescent(1.0), steps=1).state


def softmax_update(beta, x, memories):
    return memories.T @ jax.nn.softmax(beta * (memories @ x))


def part_a(key, *, dim, num_memories, betas, num_queries, steps):
    k1, k2 = jax.random.split(key)
    xi = jax.random.normal(k1, (num_memories, dim)) / np.sqrt(dim) * 3.0
    queries = jax.random.normal(k2, (num_queries, dim))
    rows = []
    for beta in betas:
        gd = jax.jit(jax.vmap(lambda x: one_step(beta, x, xi)))(queries)
        sm = jax.vmap(lambda x: softmax_update(beta, x, xi))(queries)
        diff = float(jnp.max(jnp.abs(gd - sm)))
        scale = float(jnp.max(jnp.abs(sm)))
        # repeated updates: the energy along the trajectory (CCCP descent)
        traj = jax.jit(
            jax.vmap(
                lambda x: (
                    jm.retrieve(
                        jm.LogSumExpEnergy(beta),
                        x,
                        xi,
                        solver=jm.GradientDescent(1.0),
                        steps=steps,
                        saveat=jm.SaveAt(every=1),
                    ).trajectory_energy
                )
            )
        )(queries)
        increases = np.diff(np.asarray(traj), axis=1)
        rows.append(
            dict(
                beta=beta,
                max_abs_difference=diff,
                max_abs_update=scale,
                max_energy_increase=float(increases.max()),
                energy_never_increases=bool(np.all(increases <= 1e-12 * np.abs(np.asarray(traj[:, :-1])).max())),
                mean_energy_first_steps=np.asarray(traj).mean(0)[:6].tolist(),
            )
        )
        print(
            f"(a) beta={beta}: max |GD step - softmax update| = {diff:.2e} (updates up to {scale:.2f}); "
            f"largest energy increase over {steps} steps {increases.max():.2e}",
            flush=True,
        )
    return dict(setup=dict(dim=dim, num_memories=num_memories, num_queries=num_queries, steps=steps), rows=rows)


def separations(memories):
    gram = memories @ memories.T
    own = jnp.diag(gram)
    others = jnp.where(jnp.eye(memories.shape[0], dtype=bool), -jnp.inf, gram)
    return own - jnp.max(others, axis=1)


def part_b(key, *, dim, num_memories, betas, num_scales, sets_per_scale, noise, target_range):
    """For each beta, memory sets xi = s u (u random unit vectors) with s^2 spread so that
    beta * Delta covers `target_range`."""
    rows, fits = [], []
    lo, hi = target_range
    for b_index, beta in enumerate(betas):
        # Delta ~ s^2 (1 - max cosine); a first guess of the cosine sets the scale range
        scales = np.sqrt(np.geomspace(lo / beta / 0.6, hi / beta / 0.6, num_scales))
        keys = jax.random.split(jax.random.fold_in(key, b_index), num_scales * sets_per_scale)

        @jax.jit
        def one_set(k, s, beta=beta):
            k1, k2 = jax.random.split(k)
            u = jax.random.normal(k1, (num_memories, dim))
            xi = s * u / jnp.linalg.norm(u, axis=1, keepdims=True)
            start = jax.vmap(lambda x: one_step(beta, x, xi))(xi)
            # perturbed start: |x0 - xi_i| = noise * |xi_i|
            e = jax.random.normal(k2, xi.shape)
            x0 = xi + noise * s * e / jnp.linalg.norm(e, axis=1, keepdims=True)
            near = jax.vmap(lambda x: one_step(beta, x, xi))(x0)
            return separations(xi), jnp.linalg.norm(start - xi, axis=1), jnp.linalg.norm(near - xi, axis=1)

        per_set = jax.lax.map(lambda a: one_set(*a), (keys, jnp.repeat(jnp.asarray(scales), sets_per_scale)))
        deltas, errors, near_errors = (np.asarray(a).reshape(-1) for a in per_set)
        keep = (beta * deltas >= lo) & (beta * deltas <= hi) & (errors > 0)
        slope, intercept = np.polyfit(deltas[keep], np.log(errors[keep]), 1)
        keep_near = keep & (near_errors > 0)
        slope_near, intercept_near = np.polyfit(deltas[keep_near], np.log(near_errors[keep_near]), 1)
        fits.append(
            dict(
                beta=beta,
                slope=float(slope),
                intercept=float(intercept),
                slope_over_minus_beta=float(-slope / beta),
                slope_perturbed_start=float(slope_near),
                slope_perturbed_over_minus_beta=float(-slope_near / beta),
                points_fitted=int(keep.sum()),
                delta_range=[float(deltas[keep].min()), float(deltas[keep].max())],
            )
        )
        print(
            f"(b) beta={beta}: slope of log error vs Delta {slope:.3f} (-beta = {-beta}), ratio {-slope / beta:.3f}; "
            f"perturbed start ({noise:.0%}) {slope_near:.3f}, ratio {-slope_near / beta:.3f}; "
            f"{keep.sum()} points",
            flush=True,
        )
        # a thinned copy of the points for the plot
        idx = np.flatnonzero(keep)[:: max(1, keep.sum() // 400)]
        rows.append(
            dict(
                beta=beta, delta=deltas[idx].tolist(), error=errors[idx].tolist(), error_near=near_errors[idx].tolist()
            )
        )
    setup = dict(
        dim=dim,
        num_memories=num_memories,
        num_scales=num_scales,
        sets_per_scale=sets_per_scale,
        perturbation=noise,
        beta_delta_range=list(target_range),
        start="x0 = xi_i (and x0 = xi_i + noise |xi_i| e, e a random unit vector)",
    )
    return dict(setup=setup, fits=fits, points=rows)


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fits = {f["beta"]: f for f in results["error_vs_separation"]["fits"]}
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for row in results["error_vs_separation"]["points"]:
        beta = row["beta"]
        f = fits[beta]
        d = np.asarray(row["delta"])
        (line,) = ax.semilogy(d, row["error"], ".", ms=3, alpha=0.5)
        grid = np.linspace(d.min(), d.max(), 50)
        ax.semilogy(
            grid,
            np.exp(f["intercept"] + f["slope"] * grid),
            "-",
            color=line.get_color(),
            label=f"beta = {beta}: slope {f['slope']:.2f}",
        )
    ax.set_xlabel("separation Delta_i")
    ax.set_ylabel("one-step error |x_1 - xi_i|")
    ax.set_title("Modern Hopfield one-step retrieval (arXiv:2008.02217)")
    ax.legend(fontsize=8)
    save_figure(fig, path)


def main(argv=None):
    parser = experiment_parser(__doc__)
    args = parser.parse_args(argv)
    key = jax.random.key(args.seed)
    out = Path(args.out)
    name = result_stem(args, "modern_hopfield").name
    t0 = time.perf_counter()
    results = dict(
        one_step_equivalence=part_a(key, dim=64, num_memories=32, betas=(0.5, 1.0, 4.0), num_queries=256, steps=20),
        error_vs_separation=part_b(
            jax.random.fold_in(key, 1),
            dim=64,
            num_memories=16,
            betas=(0.5, 1.0, 2.0),
            num_scales=8 if args.quick else 24,
            sets_per_scale=2 if args.quick else 6,
            noise=0.05,
            target_range=(3.0, 25.0),
        ),
    )
    results["seconds"] = time.perf_counter() - t0
    save_json(out / f"{name}.json", results, argv=argv)
    plot(results, out / f"{name}.png")
    print(f"wrote {out / name}.json and .png in {results['seconds']:.0f}s")


if __name__ == "__main__":
    main()
