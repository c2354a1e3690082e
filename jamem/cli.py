"""The `jamem` command: `jamem capacity ...`, `jamem xor`."""

from __future__ import annotations

import argparse
import json
import sys


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _print_table(rows: list[dict], columns: list[str]) -> None:
    cells = [[_fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths)))
    for row in cells:
        print("  ".join(v.rjust(w) for v, w in zip(row, widths)))


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _capacity(args) -> int:
    import jax

    from . import capacity as cap

    grid = [
        dict(dim=n_dim, num_memories=k, degree=n, kind=kind, seed=args.seed)
        for kind in args.kind
        for n in args.degrees
        for n_dim in args.dims
        for k in args.memories
    ]
    rows = cap.capacity_sweep(
        jax.random.key(args.seed),
        grid,
        num_sets=args.sets,
        starts_per_set=args.starts,
        flip_fraction=args.flip_fraction,
        max_sweeps=args.max_sweeps,
    )
    for r in rows:
        r["a5_perfect_recall_K"] = cap.perfect_recall_capacity(r["dim"], r["degree"]) if r["degree"] >= 2 else None
    _print_table(
        rows,
        ["kind", "degree", "dim", "num_memories", "trials", "recall_fraction", "mean_sweeps", "a5_perfect_recall_K"],
    )
    if args.json:
        from .provenance import save_json

        save_json(args.json, {"rows": rows, "flip_fraction": args.flip_fraction}, argv=["jamem", *sys.argv[1:]])
        print(f"wrote {args.json}")
    return 0


def _xor(args) -> int:
    from . import capacity as cap

    rows = []
    for kind in ("power", "rectified"):
        for n in range(1, args.max_degree + 1):
            sep = cap.make_separation(kind, n)
            z = {(x, y): cap.xor_readout(sep, x, y)[0] for x in (-1.0, 1.0) for y in (-1.0, 1.0)}
            rows.append(
                dict(
                    kind=kind,
                    degree=n,
                    **{f"z({int(x):+d},{int(y):+d})": int(v) for (x, y), v in z.items()},
                    solves_xor=cap.solves_xor(sep),
                )
            )
    _print_table(rows, list(rows[0]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jamem", description="Dense Associative Memory in JAX.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("capacity", help="retrieval trials over a grid of (N, K, n, F), vmap-batched")
    p.add_argument("--dims", type=_ints, default=[100], help="N values, comma-separated (default 100)")
    p.add_argument("--memories", type=_ints, default=[100, 200, 400, 800], help="K values")
    p.add_argument("--degrees", type=_ints, default=[3], help="n values")
    p.add_argument("--kind", choices=["power", "rectified"], nargs="+", default=["power"], help="separation F")
    p.add_argument("--sets", type=int, default=5, help="random memory sets per point")
    p.add_argument("--starts", type=int, default=100, help="starts per memory set")
    p.add_argument(
        "--flip-fraction",
        type=float,
        default=None,
        help="start from memories with this fraction of bits flipped (default: random starts)",
    )
    p.add_argument("--max-sweeps", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the table (with provenance) to this JSON file")
    p.set_defaults(run=_capacity)

    p = sub.add_parser("xor", help="the XOR readout of section 3 (A7), by exact enumeration")
    p.add_argument("--max-degree", type=int, default=6)
    p.add_argument("--json", help="write the table to this JSON file")
    p.set_defaults(run=_xor)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
