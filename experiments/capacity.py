"""Appendix B of Krotov & Hopfield 2016 (arXiv:1606.01164, sec. 2, App. B and sec. 3): capacity of the DenseAM.

(a) N = 100, K = 2000 random memories, 10,000 random starts run to convergence under the
    asynchronous rule, n = 2..5, power and rectified F: histogram of the final overlap with the
    closest memory.
(b) K_1/2 against N for n = 3 (power and rectified): for each (N, K), 1000 random starts; K_1/2 is
    where half of them end exactly on a stored memory; compared with the perfect-recall formula of sec. 2.
(c) XOR by exact enumeration for n = 1..6.

Writes results/capacity_appendix_b.json and PNG plots. Usage:

    python experiments/capacity.py            # the full run (an hour on 2 CPU cores; --dims/--starts trim it)
    python experiments/capacity.py --quick    # small sizes, a minute
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import numpy as np
from _common import experiment_parser, result_stem

from jamem import capacity as cap
from jamem.tooling.plots import plot_k_half, plot_overlap_histograms
from jamem.tooling.provenance import save_json


def part_a(key, *, dim, num_memories, starts, degrees):
    rows = []
    for kind in ("power", "rectified"):
        for n in degrees:
            t0 = time.perf_counter()
            out = cap.capacity_trials(
                jax.random.fold_in(key, 10 * n + (kind == "rectified")),
                dim=dim,
                num_memories=num_memories,
                separation=cap.make_separation(kind, n),
                num_sets=1,
                starts_per_set=starts,
                steps=200,
                pool_size=1024,
            )
            hist, edges = np.histogram(out["max_overlap"], bins=np.arange(-dim, dim + 3, 2) - 1)
            rows.append(
                dict(
                    kind=kind,
                    degree=n,
                    dim=dim,
                    num_memories=num_memories,
                    starts=starts,
                    on_memory_fraction=float(out["on_memory"].mean()),
                    converged_fraction=float(out["converged"].mean()),
                    mean_sweeps=float(out["sweeps"].mean()),
                    overlap_values=(edges[:-1] + 1).astype(int).tolist(),
                    overlap_counts=hist.tolist(),
                    seconds=time.perf_counter() - t0,
                )
            )
            print(
                f"(a) {kind:9s} n={n}: {rows[-1]['on_memory_fraction']:.4f} end on a memory, "
                f"{rows[-1]['mean_sweeps']:.1f} sweeps, {rows[-1]['seconds']:.1f}s",
                flush=True,
            )
    return rows


def part_b(key, *, dims, degree, factors, num_sets, starts_per_set):
    rows, k_halves = [], []
    for kind in ("power", "rectified"):
        for dim in dims:
            theory = cap.perfect_recall_capacity(dim, degree)
            ks = sorted({max(10, int(round(theory * f))) for f in factors})
            grid = [dict(dim=dim, num_memories=k, degree=degree, kind=kind, seed=dim * 7919 + k) for k in ks]
            found = cap.capacity_sweep(
                key,
                grid,
                num_sets=num_sets,
                starts_per_set=starts_per_set,
                steps=200,
                pool_size=64,
                progress=False,
            )
            rows += found
            kh = cap.k_half([r["num_memories"] for r in found], [r["on_memory_fraction"] for r in found])
            k_halves.append(
                dict(kind=kind, dim=dim, degree=degree, k_half=kh, theory_a5=theory, ratio_to_a5=kh / theory)
            )
            print(f"(b) {kind:9s} N={dim}: K_1/2 = {kh:.0f} (theory {theory:.0f}, ratio {kh / theory:.2f})", flush=True)
    return rows, k_halves


def part_c(degrees):
    rows = []
    for kind in ("power", "rectified"):
        for n in degrees:
            table = {
                f"{int(x):+d},{int(y):+d}": cap.xor_readout(cap.make_separation(kind, n), x, y)
                for x in (-1.0, 1.0)
                for y in (-1.0, 1.0)
            }
            rows.append(
                dict(
                    kind=kind,
                    degree=n,
                    solves=cap.solves_xor(cap.make_separation(kind, n)),
                    readout={k: dict(z=v[0], gap=v[1]) for k, v in table.items()},
                )
            )
    return rows


def main(argv=None):
    parser = experiment_parser(__doc__)
    parser.add_argument("--dims", default="50,75,100,125,150,175,200", help="N values of part (b)")
    parser.add_argument("--sets", type=int, default=5, help="memory sets per (N, K) in part (b)")
    parser.add_argument("--starts", type=int, default=200, help="random starts per memory set in part (b)")
    parser.add_argument(
        "--only-b", action="store_true", help="run part (b) only, keeping parts (a) and (c) of an existing JSON"
    )
    args = parser.parse_args(argv)
    key = jax.random.key(args.seed)
    out = Path(args.out)
    name = result_stem(args, "capacity_appendix_b").name
    if args.only_b:
        previous = json.loads((out / f"{name}.json").read_text())
        results = {k: previous[k] for k in ("xor", "part_a") if k in previous}
    else:
        results = dict(xor=part_c(range(1, 7)))
        if args.quick:
            results["part_a"] = part_a(key, dim=50, num_memories=300, starts=500, degrees=(2, 3, 4, 5))
        else:
            results["part_a"] = part_a(key, dim=100, num_memories=2000, starts=10_000, degrees=(2, 3, 4, 5))
        # saved after each part: a long run that is stopped keeps what it finished
        save_json(out / f"{name}.json", results, argv=argv)
        plot_overlap_histograms(results["part_a"], out / f"{name}_overlaps.png")
    if args.quick:
        b, kh = part_b(key, dims=(50, 100), degree=3, factors=(0.6, 1.0, 1.4, 2.0), num_sets=2, starts_per_set=100)
    else:
        dims = tuple(int(d) for d in args.dims.split(","))
        b, kh = part_b(
            key,
            dims=dims,
            degree=3,
            factors=(0.8, 1.0, 1.2, 1.4, 1.6, 1.8, 2.1),
            num_sets=args.sets,
            starts_per_set=args.starts,
        )
    results.update(part_b=b, k_half=kh)
    save_json(out / f"{name}.json", results, argv=argv)
    plot_k_half(kh, out / f"{name}_k_half.png")
    print(f"wrote {out / name}.json and plots")


if __name__ == "__main__":
    main()
