"""Diffusion as associative memory on MNIST (Ambrogioni 2023, arXiv:2309.17290; Hoover et al. 2023,
arXiv:2309.16750).

K MNIST training images (pixels in [-1, 1]) are the memories of a Gaussian-kernel DenseAM, whose
energy at beta = 1 / sigma^2 is - sigma^2 log p_sigma of the noised data, so its one-step retrieval
D_sigma is the ideal denoiser of a diffusion model trained on those K images. Two measurements:

1. Sampling is annealed retrieval. `jamem.networks.diffusion.generate` (probability-flow Euler
   steps sigma = 80 -> 0.002, then a last denoising) from --samples noise vectors: the fraction
   of samples that are a stored image (within 1e-3 of one), the number of distinct images reached
   against the K (1 - (1 - 1/K)^S) of uniform sampling, and a chi-square test of uniform landing
   where every image expects at least 5 samples. The same starts descended at the final
   temperature alone (`retrieve` with `GradientDescent(1)`) show what the annealing adds.
2. Denoising is retrieval from a noisy cue. For a stored xi and x = xi + sigma eps, the softmax of
   D_sigma(x) weighs xi most iff xi is the memory nearest x. Against the noise level, per K: the
   measured fraction, and prod_nu Phi(d_nu / (2 sigma)) from the distances d_nu of xi to the other
   memories: |x - xi_nu|^2 - |x - xi|^2 = d_nu^2 + 2 sigma d_nu z_nu with z_nu standard normal,
   correlated through eps as (xi_nu - xi) . (xi_nu' - xi); where all those covariances are >= 0
   the product is a lower bound (Slepian's inequality), tight while retrieval holds. The fraction
   of negative covariances is recorded, on the first 20 cues (the Gram matrices cost K^2 N each).
   The larger K, the closer the nearest neighbours and the less noise the memory corrects:
   sigma_1/2, where half the cues are retrieved, falls with K.

Writes results/diffusion_memory.json and .png. Usage:

    python experiments/diffusion_memory.py          # 3 minutes of CPU; 7 on 2 shared cores
    python experiments/diffusion_memory.py --quick
"""

from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import numpy as np
from _common import experiment_parser, result_stem

import jamem as jm
from jamem.networks import diffusion
from jamem.tooling import data
from jamem.tooling.plots import save_figure
from jamem.tooling.provenance import save_json

SIGMA_MAX, SIGMA_MIN = 80.0, 0.002  # EDM's range for images in [-1, 1] (arXiv:2206.00364)


def sampling(memories, noise, steps):
    """Where the diffusion sampler and one-temperature retrieval land from the same starts."""
    nearest = jax.jit(jax.vmap(diffusion.nearest_memory, (0, None)))
    flow = jax.jit(
        jax.vmap(lambda z: diffusion.generate(z, memories, sigma_max=SIGMA_MAX, sigma_min=SIGMA_MIN, steps=steps))
    )
    energy = jm.GaussianKernelEnergy(1 / SIGMA_MIN**2)
    fixed = jax.jit(
        jax.vmap(
            lambda z: jm.retrieve(energy, SIGMA_MAX * z, memories, solver=jm.GradientDescent(1.0), steps=steps).state
        )
    )
    count, samples = memories.shape[0], noise.shape[0]
    row = dict(num_memories=count, samples=samples, steps=steps)
    for name, run in (("diffusion", flow), ("one_temperature", fixed)):
        tic = time.time()
        index, distance = nearest(run(noise), memories)
        counts = np.bincount(np.asarray(index), minlength=count)
        expected = samples / count
        row[name] = dict(
            fraction_stored=float(np.mean(np.asarray(distance) < 1e-3)),
            max_distance_to_nearest=float(jnp.max(distance)),
            distinct_reached=int(np.sum(counts > 0)),
            largest_share=float(counts.max() / samples),
            chi_square=float(np.sum((counts - expected) ** 2 / expected)) if expected >= 5 else None,
            chi_square_dof=count - 1,
            landings=counts.tolist(),
            seconds=time.time() - tic,
        )
    row["distinct_expected_uniform"] = count * (1 - (1 - 1 / count) ** samples)
    return row


def denoising(memories, sigmas, probes, key):
    """P(the softmax of D_sigma picks the clean memory) against sigma, measured and predicted."""
    count = memories.shape[0]
    picked = jax.random.choice(key, count, (probes,), replace=probes > count)  # several noisy cues per memory
    clean = memories[picked]
    gaps = np.sqrt(np.maximum(np.sum((np.asarray(clean)[:, None] - np.asarray(memories)[None]) ** 2, axis=-1), 0))
    gaps[np.arange(len(picked)), np.asarray(picked)] = np.inf  # a memory does not compete with itself
    nearest = jax.jit(jax.vmap(diffusion.nearest_memory, (0, None)))
    rows = []
    for i, sigma in enumerate(sigmas):
        noisy = clean + sigma * jax.random.normal(jax.random.fold_in(key, i), clean.shape)
        index, _ = nearest(noisy, memories)
        denoised = jax.vmap(lambda x: diffusion.denoise(x, memories, sigma=sigma))(noisy)
        log_normal_cdf = jax.scipy.stats.norm.logcdf(jnp.asarray(gaps / (2 * sigma)))
        rows.append(
            dict(
                sigma=float(sigma),
                retrieved=float(jnp.mean(index == picked)),
                retrieved_lower_bound=float(jnp.mean(jnp.exp(jnp.sum(log_normal_cdf, axis=1)))),
                denoised_rms_error=float(jnp.sqrt(jnp.mean((denoised - clean) ** 2))),
            )
        )
    return dict(
        num_memories=count,
        probes=len(picked),
        nearest_neighbour_distance=float(np.median(gaps.min(1))),
        sigma_half=_crossing([r["sigma"] for r in rows], [r["retrieved"] for r in rows], 0.5),
        fraction_negative_covariances=_negative_covariances(memories, picked[:20]),
        rows=rows,
    )


def _negative_covariances(memories, picked):
    """The fraction of pairs nu != nu' (both != mu) with (xi_nu - xi_mu) . (xi_nu' - xi_mu) < 0."""
    negative = total = 0
    for mu in np.asarray(picked):
        others = np.delete(np.asarray(memories, np.float64), mu, axis=0) - np.asarray(memories[mu], np.float64)
        gram = others @ others.T
        off = ~np.eye(len(others), dtype=bool)
        negative, total = negative + int(np.sum(gram[off] < 0)), total + int(off.sum())
    return negative / total if total else 0.0


def _crossing(xs, ys, level):
    """The first x (log-interpolated) where ys falls to `level`, or None."""
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if y0 >= level > y1:
            return float(np.exp(np.log(x0) + (y0 - level) / (y0 - y1) * (np.log(x1) - np.log(x0))))
    return None


def main(argv=None):
    parser = experiment_parser(__doc__.splitlines()[0])
    parser.add_argument("--memories", default="10,100,1000", help="values of K")
    parser.add_argument("--samples", type=int, default=1000, help="noise vectors per K (part 1)")
    parser.add_argument("--steps", type=int, default=100, help="Euler steps from sigma_max to sigma_min")
    parser.add_argument("--probes", type=int, default=500, help="noisy cues per noise level (part 2)")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.memories, args.samples, args.steps, args.probes = "10,50", 100, 40, 50
    stem = result_stem(args, "diffusion_memory")
    images, _ = data.load("mnist", split="train", data_dir=args.data_dir)
    key_order, key_noise, key_probe = jax.random.split(jax.random.key(args.seed), 3)
    order = np.asarray(jax.random.permutation(key_order, images.shape[0]))
    sigmas = np.geomspace(0.3, 30.0, 4 if args.quick else 15)
    sampled, denoised = [], []
    for count in [int(k) for k in args.memories.split(",")]:
        memories = jnp.asarray(images[order[:count]])
        noise = jax.random.normal(jax.random.fold_in(key_noise, count), (args.samples, memories.shape[1]))
        row = sampling(memories, noise, args.steps)
        sampled.append(row)
        d, f = row["diffusion"], row["one_temperature"]
        print(
            f"K {count:5d}: diffusion {d['fraction_stored']:.3f} stored, {d['distinct_reached']} distinct "
            f"(uniform {row['distinct_expected_uniform']:.0f}), chi2 {d['chi_square']}; one temperature "
            f"{f['distinct_reached']} distinct, largest share {f['largest_share']:.2f}",
            flush=True,
        )
        denoised.append(denoising(memories, sigmas, args.probes, jax.random.fold_in(key_probe, count)))
        print(
            f"         denoising retrieves half the cues up to sigma = {denoised[-1]['sigma_half']} "
            f"(nearest neighbour at {denoised[-1]['nearest_neighbour_distance']:.1f})",
            flush=True,
        )
    record = dict(
        settings=vars(args) | {"quick": args.quick},
        sigma_max=SIGMA_MAX,
        sigma_min=SIGMA_MIN,
        chi_square_critical_0_001={r["num_memories"]: _chi_square_critical(r["num_memories"] - 1) for r in sampled},
        sampling=sampled,
        denoising=denoised,
    )
    save_json(stem.with_suffix(".json"), record)
    _plot(record, stem.with_suffix(".png"))
    print(f"wrote {stem.with_suffix('.json')}")


def _chi_square_critical(dof, tail=1e-3):
    """The upper `tail` point of chi-square with `dof` degrees of freedom: P(X > c) = Q(dof/2, c/2)
    (the regularised upper incomplete gamma function), solved by bisection."""
    low, high = 0.0, dof + 100.0 * math.sqrt(2.0 * dof) + 100.0
    for _ in range(100):
        middle = 0.5 * (low + high)
        if float(jax.scipy.special.gammaincc(dof / 2, middle / 2)) > tail:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)


def _plot(record, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    # the landings of the K whose memories expect about 10 samples each: uniform or not is plain to see
    row = min(record["sampling"], key=lambda r: abs(r["samples"] / r["num_memories"] - 10))
    for name, label in (("diffusion", "diffusion sampler"), ("one_temperature", "one-temperature descent")):
        landings = sorted(row[name]["landings"], reverse=True)
        left.step(np.arange(1, len(landings) + 1), landings, where="mid", label=label)
    left.axhline(row["samples"] / row["num_memories"], color="k", ls=":", label="uniform: S / K")
    left.set(
        xlabel="memories, by samples landed", ylabel="samples landed",
        title=f"sampling = annealed retrieval (K = {row['num_memories']}, S = {row['samples']})",
    )  # fmt: skip
    left.legend(fontsize=8)
    for curve in record["denoising"]:
        sig = [r["sigma"] for r in curve["rows"]]
        (line,) = right.semilogx(
            sig, [r["retrieved"] for r in curve["rows"]], "o", label=f"K = {curve['num_memories']}"
        )
        right.semilogx(sig, [r["retrieved_lower_bound"] for r in curve["rows"]], "-", color=line.get_color())
    right.set(
        xlabel="noise sigma",
        ylabel="softmax picks the clean memory",
        title="denoising = retrieval (Slepian bound: lines)",
    )
    right.legend(fontsize=8)
    save_figure(fig, path)


if __name__ == "__main__":
    main()
