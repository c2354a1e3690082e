"""The `jamem` command: `jamem mnist ...`, `jamem attack ...`, `jamem capacity ...`, `jamem xor`."""

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


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


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

    from .._checks import check_writable
    from ..core import capacity as cap

    for name, path in (("--json", args.json), ("--csv", args.csv)):
        if path:
            check_writable(path, name=name)

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
        steps=args.steps,
    )
    for r in rows:
        r["a5_perfect_recall_K"] = cap.perfect_recall_capacity(r["dim"], r["degree"]) if r["degree"] >= 2 else None
    _print_table(
        rows,
        [
            "kind",
            "degree",
            "dim",
            "num_memories",
            "trials",
            "recall_fraction",
            "mirror_fraction",
            "mean_sweeps",
            "a5_perfect_recall_K",
        ],
    )
    if args.json:
        from .provenance import save_json

        save_json(args.json, {"rows": rows, "flip_fraction": args.flip_fraction}, argv=["jamem", *sys.argv[1:]])
        print(f"wrote {args.json}")
    if args.csv:
        _write_csv(args.csv, rows)
        print(f"wrote {args.csv}")
    return 0


def _write_csv(path, rows: list[dict]) -> None:
    import csv

    columns = list(dict.fromkeys(key for row in rows for key in row if not isinstance(row[key], (list, dict))))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _xor(args) -> int:
    from .._checks import check_writable
    from ..core import capacity as cap

    if args.json:
        check_writable(args.json, name="--json")

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


def _mnist(args) -> int:
    if args.dtype == "float64":  # for the whole process, before any array is made
        import jax

        jax.config.update("jax_enable_x64", True)
    from ..classifier import mnist

    if args.evaluate:
        summary = mnist.evaluate(args.evaluate, dataset=args.dataset, data_dir=args.data_dir, source=args.source)
        config = summary["config"]
        print(
            f"{args.evaluate}: n = {config['degree']}, K = {config['num_memories']}, {summary['epochs_run']} of "
            f"{config['epochs']} epochs; {args.dataset} test error {100 * summary['test_error']:.2f}% (recorded at "
            f"the last epoch: {_percent(summary['final_error'])})"
        )
        voting = 100 * summary["fraction_of_memories_voting_for_one_class"]
        print(
            f"prototypes: {voting:.1f}% of memories vote for one class; "
            f"{summary['images_with_second_ratio_below_0.9']} of {len(summary['second_ratio'])} test images have no "
            f"second memory above 0.9 of the largest contribution"
        )
        active = summary["fraction_of_active_memories_voting_for_one_class"]
        print(
            f"{summary['memories_silent_on_eval_images']} of {config['num_memories']} memories add to no class on any "
            f"test image; of the others, {_percent(active)} vote for one class"
        )
        return 0
    overrides = {
        key: value
        for key, value in dict(
            epochs=args.epochs,
            num_memories=args.memories,
            batch_size=args.batch_size,
            batch_sampling=args.batch_sampling,
            learning_rate=args.learning_rate,
            momentum=args.momentum,
            temperature_ramp_epochs=args.ramp_epochs,
            seed=args.seed,
            dtype=args.dtype,
        ).items()
        if value is not None
    }
    if args.quick:  # under a minute of training on a 2-core CPU: fewer memories, a faster step and ramp
        overrides = {"epochs": 10, "num_memories": 400, "learning_rate": 0.1, "temperature_ramp_epochs": 5, **overrides}
    summary = mnist.run(
        degree=args.n,
        dataset=args.dataset,
        out_dir=args.out,
        data_dir=args.data_dir,
        source=args.source,
        train_size=args.train_size,
        validation=args.validation,
        resume=args.resume,
        checkpoint_every=args.checkpoint_every,
        eval_every=args.eval_every,
        progress=not args.no_progress,
        schedule=args.schedule,
        **overrides,
    )
    split = summary["eval_split"]
    print(
        f"{args.dataset}, n = {args.n}, K = {summary['config']['num_memories']}, {summary['epochs_run']} epochs: "
        f"{split} error {_percent(summary['final_error'])}"
    )
    print(
        f"memories voting for one class: {100 * summary['fraction_of_memories_voting_for_one_class']:.1f}%; "
        f"results in {args.out}/"
    )
    return 0


def _percent(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _attack(args) -> int:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from ..classifier import adversarial as adv
    from ..classifier.mnist import attack_target
    from . import data

    scores, loss, config, _ = attack_target(args.checkpoint)
    images, labels = data.load(args.dataset, split="test", data_dir=args.data_dir)
    images, labels = jnp.asarray(images[: args.images]), jnp.asarray(labels[: args.images])

    correct = jnp.argmax(scores(images), -1) == labels
    x, y = images[correct], labels[correct]
    if args.method == "descend":
        result = adv.descend(scores, x, y, loss_fn=loss, step_size=args.step_size, steps=args.steps)
        attacked, steps = result.images, f", mean steps {float(jnp.mean(result.steps)):.1f}"
    elif args.method == "fgsm":
        attacked, steps = adv.fgsm(scores, x, y, loss_fn=loss, epsilon=args.epsilon), ""
    else:
        attacked = adv.pgd(scores, x, y, loss_fn=loss, epsilon=args.epsilon, steps=args.steps, key=jax.random.key(0))
        steps = ""
    flipped = np.asarray(jnp.argmax(scores(attacked), -1) != y)
    linf = float(jnp.mean(jnp.max(jnp.abs(attacked - x), axis=1)))
    print(
        f"n = {config.degree}, {args.method}: {100 * flipped.mean():.1f}% of {len(y)} correctly classified test "
        f"images misclassified after the attack (mean L-inf change {linf:.3f}{steps})"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jamem", description="Dense Associative Memory in JAX.")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    parser.add_argument(
        "--distributed",
        action="store_true",
        help="one of several processes (jax.distributed): JAMEM_COORDINATOR, JAMEM_NUM_PROCESSES and "
        "JAMEM_PROCESS_ID, or a cluster JAX detects; see jamem.tooling.distributed",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("mnist", help="train the DenseAM classifier of Krotov & Hopfield 2016 on MNIST")
    p.add_argument("--n", type=int, choices=[2, 3, 8, 20, 30], default=3, help="degree of F (a preset of the paper)")
    p.add_argument("--dataset", choices=["mnist", "fashion_mnist"], default="mnist")
    p.add_argument(
        "--schedule",
        choices=["paper", "compressed"],
        default="paper",
        help="paper: App. A as published (3000 epochs, eps0 0.998^t, T ramp over 200 epochs); compressed: the same "
        "total decay and a ramp shrunk in proportion (n = 2: over 1/8 of the run) over --epochs (default 400; "
        "jamem.train.preset)",
    )
    p.add_argument("--epochs", type=int, help="default: the schedule's (3000 paper, 400 compressed)")
    p.add_argument("--memories", type=int, help="K (default 2000)")
    p.add_argument("--batch-size", type=int, help="minibatch (default 1000)")
    p.add_argument(
        "--batch-sampling",
        choices=["shuffled", "class_balanced"],
        help="class_balanced: batch-size / 10 per class (default: shuffled)",
    )
    p.add_argument("--learning-rate", type=float, help="eps0 of App. A (preset default)")
    p.add_argument("--momentum", type=float, help="p of App. A (default 0.9)")
    p.add_argument("--ramp-epochs", type=int, help="epochs of the temperature ramp (default: the schedule's)")
    p.add_argument("--seed", type=int)
    p.add_argument(
        "--dtype",
        choices=["float32", "float64"],
        help="training arithmetic (default float32); float64, as the authors' code, turns on 64-bit JAX for this "
        "process; --evaluate of a float64 model needs it too",
    )
    p.add_argument("--quick", action="store_true", help="K = 400, 10 epochs, faster schedule: about a minute on a CPU")
    p.add_argument("--train-size", type=int, help="use the first images of the training set only")
    p.add_argument("--validation", action="store_true", help="report on a 50k/10k split of the training set")
    p.add_argument("--data-dir", help="folder with mnist/ and fashion_mnist/ IDX files (else JAMEM_DATA_DIR)")
    p.add_argument("--out", default="results/mnist", help="folder for the JSON, checkpoint and plots")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--checkpoint-every", type=int, default=10)
    p.add_argument("--eval-every", type=int, default=1, help="evaluate every this many epochs (and the last)")
    p.add_argument("--source", choices=["auto", "tfds", "idx"], default="auto", help="jamem.data.load's source")
    p.add_argument(
        "--evaluate",
        metavar="CKPT",
        help="print a saved model's test error and feature-to-prototype statistics (arXiv:1606.01164, Figs. 2, 4)",
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=_mnist)

    p = sub.add_parser("attack", help="attack a trained DenseAM classifier (checkpoint from jamem mnist)")
    p.add_argument("--checkpoint", required=True, help="e.g. results/mnist/mnist_n3.ckpt")
    p.add_argument("--method", choices=["descend", "fgsm", "pgd"], default="descend")
    p.add_argument("--images", type=int, default=100, help="first test images to attack")
    p.add_argument("--epsilon", type=float, default=0.1, help="L-inf budget for fgsm / pgd")
    p.add_argument("--step-size", type=float, default=0.01)
    p.add_argument("--steps", type=int, default=500, help="descend: step budget; pgd: steps")
    p.add_argument("--dataset", choices=["mnist", "fashion_mnist"], default="mnist")
    p.add_argument("--data-dir")
    p.set_defaults(run=_attack)

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
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the table (with provenance) to this JSON file")
    p.add_argument("--csv", help="write the table to this CSV file")
    p.set_defaults(run=_capacity)

    p = sub.add_parser("xor", help="the XOR readout of section 3 (arXiv:1606.01164, sec. 3), by exact enumeration")
    p.add_argument("--max-degree", type=_positive_int, default=6)
    p.add_argument("--json", help="write the table to this JSON file")
    p.set_defaults(run=_xor)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.distributed:
            from .distributed import initialize

            initialize()
        return args.run(args)
    except (ValueError, TypeError, OSError, FloatingPointError, RuntimeError) as err:
        if args.debug:
            raise
        message = " ".join(str(err).split()) or type(err).__name__  # one line
        print(f"jamem {args.command}: error: {message} (--debug shows the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
