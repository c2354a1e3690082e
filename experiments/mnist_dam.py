"""The MNIST classifiers of Krotov & Hopfield 2016 (arXiv:1606.01164, eq. 9) for several n, side by side.

    python experiments/mnist_dam.py --degrees 2,3,20,30 --memories 400 --epochs 40 --out results/mnist_k400
    python experiments/mnist_dam.py --aggregate-only --out results/mnist_cpu     # plots from finished runs
    # the compressed schedule (jamem.train.preset): chosen on the 50k/10k split, then retrained on 60k
    python experiments/mnist_dam.py --schedule compressed --validation --ramp-epochs 27 \
        --out results/mnist_paper/validation/ramp27
    python experiments/mnist_dam.py --schedule compressed --out results/mnist_paper/compressed

Each degree is one `jamem mnist` run (`jamem.mnist.run`, resumable, its own JSON, checkpoint and
memory grid); then `<out>/summary.json`, `<out>/error_curves.png` (Fig. 1B style) and
`<out>/prototype_stats.png` (arXiv:1606.01164, Figs. 2, 4) compare them. All degrees share every setting but n and the
preset's temperature and loss power.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from jamem import mnist, plots, train
from jamem.tooling.provenance import save_json


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--degrees", default="2,3,20,30")
    parser.add_argument("--dataset", default="mnist", choices=["mnist", "fashion_mnist"])
    parser.add_argument("--schedule", choices=["paper", "compressed"], default="paper")
    parser.add_argument("--memories", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=None, help="default: the schedule's")
    parser.add_argument("--learning-rate", type=float, default=None, help="default: each preset's")
    parser.add_argument("--momentum", type=float, default=None, help="default: the preset's")
    parser.add_argument("--ramp-epochs", type=int, default=None, help="default: the schedule's")
    parser.add_argument("--temperature-initial", type=float, default=None, help="T_i; default: the preset's")
    parser.add_argument("--temperature-final", type=float, default=None, help="T_f; default: the preset's")
    parser.add_argument("--loss-power", type=int, default=None, help="m in (c - t)^(2m); default: the preset's")
    parser.add_argument("--seed", type=int, default=None, help="default: 0")
    parser.add_argument("--batch-sampling", choices=["shuffled", "class_balanced"], help="default: shuffled")
    parser.add_argument(
        "--validation", action="store_true", help="train on 50k, report on the held-out 10k (arXiv:1606.01164, App. A)"
    )
    parser.add_argument("--eval-every", type=int, default=1)
    parser.add_argument("--source", choices=["auto", "tfds", "idx"], default="auto")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default="results/mnist")
    parser.add_argument("--aggregate-only", action="store_true", help="only combine the runs already in --out")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--quick", action="store_true", help="K = 50, 3 epochs on 2000 images (the test suite)")
    args = parser.parse_args(argv)
    degrees = [int(d) for d in args.degrees.split(",")]
    quick = dict(train_size=2000, num_memories=50, epochs=3, checkpoint_every=1) if args.quick else {}
    out = Path(args.out)
    if not args.aggregate_only:
        for degree in degrees:
            chosen = dict(
                epochs=args.epochs,
                learning_rate=args.learning_rate,
                momentum=args.momentum,
                temperature_ramp_epochs=args.ramp_epochs,
                temperature_initial=args.temperature_initial,
                temperature_final=args.temperature_final,
                loss_power=args.loss_power,
                seed=args.seed,
                batch_sampling=args.batch_sampling,
            )
            overrides = {k: v for k, v in chosen.items() if v is not None}
            mnist.run(
                degree=degree, dataset=args.dataset, out_dir=out, data_dir=args.data_dir, source=args.source,
                resume="auto", validation=args.validation, eval_every=args.eval_every, progress=not args.no_progress,
                schedule=args.schedule, **{"num_memories": args.memories, **overrides, **quick},
            )  # fmt: skip
    runs = {}
    for degree in degrees:
        path = out / f"{args.dataset}_n{degree}.json"
        if path.is_file():
            runs[f"n = {degree}"] = json.loads(path.read_text())
    if not runs:
        raise SystemExit(f"no runs found in {out}")
    plots.plot_error_curves({k: r["history"] for k, r in runs.items()}, out / "error_curves.png")
    analysed = {k: r for k, r in runs.items() if "second_ratio" in r}
    if analysed:
        plots.plot_prototype_stats(analysed, out / "prototype_stats.png")
    table = []
    for label, r in runs.items():
        errors = [row["test_error"] for row in r["history"] if row.get("test_error") is not None]
        table.append(
            {
                "model": label,
                "eval_split": r.get("eval_split", "test"),
                "epochs_run": len(r["history"]),
                "complete": r.get("complete"),
                "final_error": errors[-1] if errors else None,
                "first_epoch_at_or_below_2pct": train.History(r["history"]).first_epoch_below(0.02),
                "first_epoch_at_or_below_3pct": train.History(r["history"]).first_epoch_below(0.03),
                "fraction_of_memories_voting_for_one_class": r.get("fraction_of_memories_voting_for_one_class"),
                "images_with_second_ratio_below_0.9": r.get("images_with_second_ratio_below_0.9"),
            }
        )
        print(table[-1])
    save_json(out / "summary.json", {"dataset": args.dataset, "runs": table})


if __name__ == "__main__":
    main()
