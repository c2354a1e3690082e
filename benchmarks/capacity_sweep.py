"""Capacity sweep speed: jamem's vmap-batched, jit-compiled sweep against a straightforward
per-trial NumPy loop of the same algorithm (the asynchronous rule, arXiv:1606.01164 eq. 3, sequential order, random
starts run until a sweep flips nothing), on the same grid, in one run.

    python benchmarks/capacity_sweep.py            # Appendix-B sizes: N = 100, K = 200..1600, n = 3
    python benchmarks/capacity_sweep.py --quick

Writes results/bench_capacity_sweep.json. The ratio compares wall time per trial; both sides
also report the mean sweeps per trial, which must agree (same algorithm, same statistics).
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from jamem import capacity as cap
from jamem.tooling.provenance import save_json

# Starts swept at once per memory set: 5 sets x 32 slots keeps the (slots, K) overlaps of
# K = 1600 in the CPU's cache; a pool of 64 was about 1.3x slower at K = 1600.
POOL_SIZE = 32


def numpy_trial(memories: np.ndarray, sigma: np.ndarray, degree: int, steps: int) -> tuple[np.ndarray, int]:
    """The reference: one start, one neuron at a time, overlaps kept up to date."""
    columns = np.ascontiguousarray(memories.T)
    for sweep in range(1, steps + 1):
        overlaps = memories @ sigma
        flips = 0
        for i in range(sigma.size):
            col = columns[i]
            rest = overlaps - col * sigma[i]
            gap = np.sum((rest + col) ** degree - (rest - col) ** degree)
            new = 1.0 if gap > 0 else (-1.0 if gap < 0 else sigma[i])
            flips += new != sigma[i]
            sigma[i] = new
            overlaps = rest + col * new
        if flips == 0:
            return sigma, sweep
    return sigma, steps


def jamem_trials(key, dim, num_memories, degree, num_sets, starts_per_set):
    """jamem's capacity trials for one K, as the sweep times them."""
    return cap.capacity_trials(
        key,
        dim=dim,
        num_memories=num_memories,
        separation=cap.make_separation("power", degree),
        num_sets=num_sets,
        starts_per_set=starts_per_set,
        pool_size=POOL_SIZE,
    )


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="results/bench_capacity_sweep.json")
    args = parser.parse_args(argv)
    dim, degree = 100, 3
    ks = [200, 400] if args.quick else [200, 400, 800, 1600]
    trials_numpy = 20 if args.quick else 50
    sets, starts = (2, 100) if args.quick else (5, 200)
    rows = []
    for k in ks:
        # jamem: compile once (timed apart), then the timed run on fresh random numbers
        t0 = time.perf_counter()
        jamem_trials(jax.random.key(1), dim, k, degree, sets, starts)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = jamem_trials(jax.random.key(2), dim, k, degree, sets, starts)
        jamem_s = time.perf_counter() - t0
        rng = np.random.default_rng(k)
        sweeps, on_memory = [], []
        t0 = time.perf_counter()
        for _ in range(trials_numpy):
            memories = rng.choice(np.array([-1.0, 1.0], np.float32), size=(k, dim))
            sigma = rng.choice(np.array([-1.0, 1.0], np.float32), size=dim)
            final, n_sweeps = numpy_trial(memories, sigma, degree, 100)
            sweeps.append(n_sweeps)
            on_memory.append(np.max(memories @ final) == dim)
        numpy_s = time.perf_counter() - t0
        row = dict(
            dim=dim,
            num_memories=k,
            degree=degree,
            pool_size=POOL_SIZE,
            jamem_trials=int(out["sweeps"].size),
            jamem_seconds=jamem_s,
            jamem_compile_and_first_run_s=first,
            jamem_ms_per_trial=1e3 * jamem_s / out["sweeps"].size,
            jamem_mean_sweeps=float(out["sweeps"].mean()),
            jamem_on_memory=float(out["on_memory"].mean()),
            numpy_trials=trials_numpy,
            numpy_seconds=numpy_s,
            numpy_ms_per_trial=1e3 * numpy_s / trials_numpy,
            numpy_mean_sweeps=float(np.mean(sweeps)),
            numpy_on_memory=float(np.mean(on_memory)),
        )
        row["speedup"] = row["numpy_ms_per_trial"] / row["jamem_ms_per_trial"]
        rows.append(row)
        print(
            f"K={k}: jamem {row['jamem_ms_per_trial']:.3f} ms/trial, numpy {row['numpy_ms_per_trial']:.1f} ms/trial, "
            f"speed-up x{row['speedup']:.0f} (sweeps {row['jamem_mean_sweeps']:.2f} vs {row['numpy_mean_sweeps']:.2f})",
            flush=True,
        )
    save_json(args.out, dict(benchmark="capacity sweep, async rule, random starts", rows=rows), argv=argv)


if __name__ == "__main__":
    main()
