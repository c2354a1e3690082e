"""Sequence capacity of Dense Associative Memory (Chaudhry et al. 2023, arXiv:2306.04532) against its theory.

A cycle of K random +-1 patterns of N = 64 bits is stored as the transitions xi^mu -> xi^(mu+1)
of `jamem.SequenceMemory` with F(z) = z^n. For each n and K, over --seeds random sequences:

- the measured transition error: the fraction of bits wrong one step after each stored pattern,
  against the Gaussian signal-to-noise prediction P = Phi_c( sqrt(N^n / ((2n-1)!! (K-1))) )
  (`jamem.networks.sequence.transition_error_probability`);
- the fraction of sequences recalled whole: K steps from xi^1 through `jamem.retrieve` with
  `Iterate()` visit every pattern in order, against (1 - P)^(N K) (bits treated as independent).

n = 1 is the classical asymmetric rule (capacity a fraction of N); each degree multiplies the
number of transitions held by about N / (2n+1). F = exp(z) (`Exponential`) is shown at the largest
K of the sweep. Writes results/sequence_capacity.json and .png. Usage:

    python experiments/sequence_capacity.py          # about 10 minutes on 2 CPU cores
    python experiments/sequence_capacity.py --quick
"""

from __future__ import annotations

import time

import jax
import numpy as np
from _common import experiment_parser, result_stem

import jamem as jm
from jamem.core.capacity import random_patterns
from jamem.networks import sequence
from jamem.tooling.plots import save_figure
from jamem.tooling.provenance import save_json


def measure(memory, dim, count, seeds, key):
    """(mean transition bit error, fraction of whole cycles recalled) over `seeds` random sequences."""
    errors, recalled = [], []
    for k in jax.random.split(jax.random.fold_in(key, count), seeds):
        patterns = random_patterns(k, num_patterns=count, dim=dim)
        errors.append(float(sequence.transition_bit_errors(memory, patterns)))
        recalled.append(bool(sequence.cycle_recalled(memory, patterns)))
    return float(np.mean(errors)), float(np.mean(recalled))


def main(argv=None):
    parser = experiment_parser(__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--degrees", default="1,2,3")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--points", type=int, default=10, help="values of K per degree (log-spaced)")
    args = parser.parse_args(argv)
    if args.quick:
        args.dim, args.degrees, args.seeds, args.points = 40, "1,2", 2, 3
    stem = result_stem(args, "sequence_capacity")
    key = jax.random.key(args.seed)
    dim = args.dim
    curves = []
    for degree in [int(d) for d in args.degrees.split(",")]:
        memory = sequence.SequenceMemory(jm.Power(degree))
        # K from where whole cycles are recalled (P ~ 1e-6) to where one bit in 20 fails
        low = _count_at(dim, degree, 1e-6)
        high = _count_at(dim, degree, 0.05)
        counts = sorted({int(c) for c in np.geomspace(low, high, args.points).round()})
        rows = []
        for count in counts:
            tic = time.time()
            error, whole = measure(memory, dim, count, args.seeds, key)
            theory = sequence.transition_error_probability(dim, count, degree)
            rows.append(
                dict(
                    num_memories=count, transition_error=error, transition_error_theory=theory,
                    cycles_recalled=whole, cycles_recalled_theory=(1 - theory) ** (dim * count),
                    seconds=time.time() - tic,
                )
            )  # fmt: skip
            print(
                f"n {degree} K {count:6d}: bit error {error:.4f} (theory {theory:.4f}), cycles {whole:.2f}", flush=True
            )
        curves.append(dict(degree=degree, rows=rows))
    largest = max(row["num_memories"] for curve in curves for row in curve["rows"])
    error, whole = measure(sequence.SequenceMemory(jm.Exponential(1.0)), dim, largest, args.seeds, key)
    exponential = dict(num_memories=largest, transition_error=error, cycles_recalled=whole)
    print(f"exp    K {largest:6d}: bit error {error:.4f}, cycles {whole:.2f}")
    record = dict(settings=vars(args) | {"quick": args.quick}, dim=dim, curves=curves, exponential=exponential)
    save_json(stem.with_suffix(".json"), record)
    _plot(record, stem.with_suffix(".png"))
    print(f"wrote {stem.with_suffix('.json')}")


def _count_at(dim, degree, probability):
    """The K at which the theory's transition error reaches `probability` (bisection on log K)."""
    low, high = 2.0, 1e9
    for _ in range(60):
        middle = np.sqrt(low * high)
        if sequence.transition_error_probability(dim, int(middle), degree) < probability:
            low = middle
        else:
            high = middle
    return max(2, int(low))


def _plot(record, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for curve in record["curves"]:
        rows = curve["rows"]
        k = [r["num_memories"] for r in rows]
        (line,) = left.loglog(k, [max(r["transition_error"], 1e-6) for r in rows], "o", label=f"n = {curve['degree']}")
        left.loglog(k, [max(r["transition_error_theory"], 1e-6) for r in rows], "-", color=line.get_color())
        right.semilogx(
            k, [r["cycles_recalled"] for r in rows], "o", color=line.get_color(), label=f"n = {curve['degree']}"
        )
        right.semilogx(k, [r["cycles_recalled_theory"] for r in rows], "-", color=line.get_color())
    left.set(
        xlabel="K (transitions stored)",
        ylabel="bit error after one step",
        title=f"N = {record['dim']}: measured (dots), theory (lines)",
    )
    right.set(xlabel="K", ylabel="fraction of cycles recalled whole", title="(1 - P)^(N K) (lines)")
    left.set_ylim(5e-7, 1)  # measured zeros sit on the floor at 1e-6
    left.legend()
    save_figure(fig, path)


if __name__ == "__main__":
    main()
