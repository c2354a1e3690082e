"""Does float32 change the training path of arXiv:1606.01164? One MNIST run in float32 and in float64.

    python experiments/mnist_precision.py                  # n = 30, compressed preset, 50k/10k split, 200 epochs
    python experiments/mnist_precision.py --degree 3 --epochs 100
    python experiments/mnist_precision.py --quick          # the test suite: K = 50, 2 epochs on 2000 images

The update of App. A moves every memory a full step eps along its velocity divided by the velocity's
largest entry, however small the gradient. The authors' code runs it in float64; jamem trains in
float32. With the loss (c - t)^(2m) at m = 30, the factor (c - t)^59 of the gradient underflows
float32 once |c - t| < 0.23 (float64: 0.0006), and (xi . U / T)^(n - 1) does at small overlaps, so
a memory whose every contribution underflows gets an exactly zero gradient in float32 where float64
still moves it a full step. A probe of the final models found no such memory (the ones with zero
gradient were silent in float64 too), but that cannot see the path: a memory frozen on the way could
have coasted into silence. So the run itself is repeated in float64.

Both dtypes start from the same memories and see the same minibatches: each is `jamem.train.fit` with
the preset and `dtype` float32 or float64, in its own process (float64 needs `jax_enable_x64` for the
whole process), side by side. Every `--every` epochs each records its validation error, its memories
silent on all training images, the memories whose gradient on a probe minibatch (the first 1000
training images) is exactly zero although they are not silent on it (an underflow, not silence),
and the share of memories voting for one class. Writes `<out>/n<degree>.json` and `.png`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
from pathlib import Path

DTYPES = ("float32", "float64")
PROBE_IMAGES = 1000


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--degree", type=int, default=30)
    parser.add_argument("--schedule", choices=["paper", "compressed"], default="compressed")
    parser.add_argument("--epochs", type=int, default=200, help="epochs run (the schedule's decay is kept)")
    parser.add_argument("--every", type=int, default=10, help="record every this many epochs (and the first)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default="results/mnist_paper/precision")
    parser.add_argument("--quick", action="store_true", help="K = 50, 2 epochs on 2000 images (the test suite)")
    parser.add_argument("--worker", choices=DTYPES, help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.every = 2, 1
    if args.worker:  # checked by the parent; jamem is imported only once the worker has set its dtype
        return args
    from jamem import train

    if args.degree not in train.PRESETS:
        parser.error(f"--degree must be one of {sorted(train.PRESETS)} (the presets), got {args.degree}")
    longest = train.preset(args.degree, schedule=args.schedule).epochs
    if not 1 <= args.epochs <= longest:
        parser.error(f"--epochs must lie in [1, {longest}] (the {args.schedule} schedule), got {args.epochs}")
    if args.every < 1:
        parser.error(f"--every must be a positive integer, got {args.every}")
    if args.data_dir is not None and not Path(args.data_dir).is_dir():
        parser.error(f"--data-dir {args.data_dir} is not a folder")
    return args


def worker(args: argparse.Namespace) -> None:
    """One dtype's run: `train.fit` with `dtype`, paused every --every epochs (its checkpoint, resumed
    bit for bit) to look at the memories; writes its records to --worker-out as JSON."""
    import jax

    if args.worker == "float64":  # before any array is made
        jax.config.update("jax_enable_x64", True)
    import equinox as eqx
    import jax.numpy as jnp
    import numpy as np

    from jamem import prototypes, train
    from jamem.tooling import data

    images, labels = data.load("mnist", split="train", validation_size=10000, data_dir=args.data_dir)
    held = data.load("mnist", split="validation", validation_size=10000, data_dir=args.data_dir)
    config = dataclasses.replace(train.preset(args.degree, schedule=args.schedule), dtype=args.worker)
    if args.quick:
        images, labels, held = images[:2000], labels[:2000], (held[0][:1000], held[1][:1000])
        config = dataclasses.replace(config, num_memories=50)
    probe_images = jnp.asarray(images[:PROBE_IMAGES], args.worker)
    probe_labels = jnp.asarray(labels[:PROBE_IMAGES])
    all_images = jnp.asarray(images, args.worker)

    @eqx.filter_jit
    @eqx.filter_grad
    def gradient(model, images, labels, temperature):
        return train.batch_loss(
            model, images, labels, temperature=temperature, loss=config.loss, loss_power=config.loss_power
        )[0]

    # one optimiser for every call: a new one each time would not compare equal, and recompile the epoch
    _, optimizer, _ = train.initial_state(config, steps_per_epoch=len(images) // config.batch_size)
    checkpoint = Path(args.worker_out).with_suffix(".ckpt")
    rows, done = [], 0
    for epoch in sorted({1, *range(args.every, args.epochs + 1, args.every), args.epochs}):
        # evaluated and checkpointed only at its last epoch (`epoch`), the next call resumes there
        model, history = train.fit(
            dataclasses.replace(config, epochs=epoch), (images, labels), held, optimizer=optimizer,
            checkpoint_path=checkpoint, checkpoint_every=args.epochs, eval_every=args.epochs, resume="auto",
            progress=False,
        )  # fmt: skip
        stretch, done = history.rows[done:], epoch
        temperature = jnp.asarray(stretch[-1]["temperature"], args.worker)
        silent = np.asarray(prototypes.silent_memories(model, all_images))
        silent_on_probe = np.asarray(prototypes.silent_memories(model, probe_images))
        grads = gradient(model, probe_images, probe_labels, temperature)
        zero = np.asarray(jnp.all(grads.memories == 0, axis=1))
        row = {
            "epoch": epoch,
            "validation_error": stretch[-1]["test_error"],
            "train_error": stretch[-1]["train_error"],
            "silent_on_train_images": int(silent.sum()),
            "zero_gradient_not_silent": int((zero & ~silent_on_probe).sum()),
            "one_class_share": prototypes.one_class_share(model),
            # the median of fit's epoch times since the last record: one epoch's training (the last one
            # also evaluates, the first of the run also compiles)
            "seconds_per_epoch": float(np.median([r["seconds"] for r in stretch])),
        }
        rows.append(row)
        print(f"{args.worker} " + " ".join(f"{k}={v:.4g}" for k, v in row.items()), flush=True)
    record = {"dtype": args.worker, "memories_dtype": str(model.memories.dtype), "config": dataclasses.asdict(config)}
    Path(args.worker_out).write_text(json.dumps({**record, "rows": rows}))


def main(argv=None) -> None:
    args = parse(argv)
    if args.worker:
        return worker(args)
    from jamem.tooling.provenance import save_json

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / (f"n{args.degree}_quick" if args.quick else f"n{args.degree}")
    base = [sys.executable, str(Path(__file__).resolve()), "--degree", str(args.degree), "--schedule", args.schedule,
            "--epochs", str(args.epochs), "--every", str(args.every)]  # fmt: skip
    base += ["--data-dir", args.data_dir] * (args.data_dir is not None) + ["--quick"] * args.quick
    with tempfile.TemporaryDirectory() as tmp:
        parts = {dtype: Path(tmp) / f"{dtype}.json" for dtype in DTYPES}
        procs = {d: subprocess.Popen([*base, "--worker", d, "--worker-out", str(parts[d])]) for d in DTYPES}
        try:
            codes = {dtype: proc.wait() for dtype, proc in procs.items()}
        finally:  # an interrupted parent takes its workers with it
            for proc in procs.values():
                if proc.poll() is None:
                    proc.terminate()
                    proc.wait()
        failed = [f"{dtype} (exit code {code})" for dtype, code in codes.items() if code]
        if failed:
            raise SystemExit(f"the {' and '.join(failed)} run failed: its error is above")
        runs = {dtype: json.loads(parts[dtype].read_text()) for dtype in DTYPES}
    save_json(stem.with_suffix(".json"), {"degree": args.degree, "schedule": args.schedule, "runs": runs})
    plot(runs, stem.with_suffix(".png"), degree=args.degree)
    for dtype, run in runs.items():
        last = run["rows"][-1]
        error, share = 100 * last["validation_error"], 100 * last["one_class_share"]
        silent = last["silent_on_train_images"]
        print(f"{dtype}: epoch {last['epoch']}: {error:.2f}% validation error, {silent} silent, {share:.1f}% one-class")


def plot(runs: dict, path: Path, *, degree: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jamem import plots

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    columns = (("validation_error", "validation error (%)", 100), ("silent_on_train_images", "silent memories", 1),
               ("one_class_share", "memories voting for one class (%)", 100))  # fmt: skip
    for ax, (column, label, scale) in zip(axes, columns):
        for dtype, run in runs.items():
            ax.plot([r["epoch"] for r in run["rows"]], [scale * r[column] for r in run["rows"]], label=dtype)
        ax.set(xlabel="epoch", ylabel=label)
    axes[0].set_yscale("log")
    axes[0].legend()
    fig.suptitle(f"n = {degree}: the same run in float32 and float64 (arXiv:1606.01164, App. A)")
    plots.save_figure(fig, path)


if __name__ == "__main__":
    main()
