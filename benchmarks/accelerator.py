"""The prepared accelerator run: the paper's MNIST classifiers (Krotov & Hopfield 2016, arXiv:1606.01164,
App. A) for the full 3000 epochs on one GPU, most important first, inside a fixed time budget.

    bash benchmarks/accelerator.sh                       # on the GPU machine (reads .data/mnist)
    python benchmarks/accelerator.py --dry-run --out /tmp/acc   # tiny sizes, any machine (tests)

Order of work: (1) time the training epoch (K = 2000, n = 3, minibatch 1000, 60k images)
against bare matmuls of its shapes, with a breakdown (`epoch_breakdown` of
benchmarks/mnist_epoch.py); (2) train n = 3 with the paper's schedule (`jamem.train.preset(3)`:
eps0 = 0.04, f = 0.998 per epoch, momentum 0.9, T 300 -> 60 over 200 epochs, m = 3, 3000 epochs);
(3) n = 2, 20, 30 the same way as time allows; (4) the modern Hopfield update at
K = 10^5 .. 10^7 memories against the card's bare matmuls (`accelerator_retrieval` of
benchmarks/retrieval_peers.py). Every model checkpoints into `--out` and resumes
from there, so a model that does not finish in one slot continues in the next one from the
committed checkpoint; one that cannot start in the time left is skipped with a note. Writes
`<out>/accelerator.json` (device, timings, what ran, what was skipped and why) beside each model's
JSON, checkpoint and memory grid. Matmuls run at float32 ("highest" precision), like the CPU runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
from mnist_epoch import epoch_breakdown  # this folder is on sys.path when run as a script


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/mnist_paper/gpu")
    parser.add_argument("--data-dir", default=".data", help="folder holding mnist/ with the IDX .gz files")
    parser.add_argument("--degrees", default="3,2,20,30", help="in order of importance")
    parser.add_argument("--epochs", type=int, default=3000)
    parser.add_argument("--budget-seconds", type=float, default=450, help="wall time for everything")
    parser.add_argument("--checkpoint-every", type=int, default=100)
    parser.add_argument(
        "--dry-run", "--quick", action="store_true", help="K = 50, 4 epochs on 2000 images: a CPU check"
    )
    args = parser.parse_args(argv)
    start = time.time()
    deadline = start + args.budget_seconds
    jax.config.update("jax_default_matmul_precision", "highest")

    from jamem import data, mnist
    from jamem.tooling.provenance import save_json

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sizes = dict(num_memories=50, epochs=4, train_size=2000) if args.dry_run else dict(num_memories=2000)
    epochs = sizes.pop("epochs", args.epochs)
    images, labels = data.load("mnist", split="train", data_dir=args.data_dir)
    test_images, _ = data.load("mnist", split="test", data_dir=args.data_dir)
    if "train_size" in sizes:
        images, labels = images[: sizes["train_size"]], labels[: sizes["train_size"]]
    report = {
        "device": str(jax.devices()[0].device_kind),
        "dry_run": args.dry_run,
        "budget_seconds": args.budget_seconds,
        "epochs": epochs,
        "matmul_precision": "highest (float32)",
        "models": [],
        "skipped": [],
    }
    print(f"devices: {jax.devices()}", flush=True)
    report["epoch_timing"] = epoch_breakdown(images, labels, test_images, num_memories=sizes["num_memories"], repeats=5)
    print(f"epoch timing: {report['epoch_timing']}", flush=True)
    save_json(out / "accelerator.json", report)

    # seconds per epoch including the per-epoch test evaluation; refined after each model
    timing = report["epoch_timing"]["seconds"]
    per_epoch = timing["epoch"] + timing["test_evaluation"] + 0.01
    for degree in [int(d) for d in args.degrees.split(",")]:
        left = deadline - time.time()
        ckpt = out / f"mnist_n{degree}.ckpt"
        done = max(_epochs_done(ckpt), _epochs_done(out / f"mnist_n{degree}.eqx"))  # the committed final model
        if done >= epochs:
            report["skipped"].append({"degree": degree, "why": f"already complete ({done} epochs) in {out}"})
            continue
        needed = (epochs - done) * per_epoch + 30  # 30 s: compile, data transfer, final analysis
        if left < min(needed, 60 + 30):
            report["skipped"].append(
                {"degree": degree, "why": f"{left:.0f} s left, about {needed:.0f} s needed; rerun to continue"}
            )
            print(f"n = {degree}: skipped, {left:.0f} s left of the budget", flush=True)
            continue
        tic = time.time()
        summary = mnist.run(
            degree=degree,
            out_dir=out,
            data_dir=args.data_dir,
            resume=ckpt.is_file(),
            checkpoint_every=args.checkpoint_every,
            progress=False,
            deadline=deadline - 30,
            epochs=epochs,
            **sizes,
        )
        seconds = time.time() - tic
        ran = summary["epochs_run"] - done
        per_epoch = max(seconds - 10, 1e-3) / max(ran, 1)
        report["models"].append(
            {
                "degree": degree,
                "epochs_before": done,
                "epochs_after": summary["epochs_run"],
                "complete": summary["complete"],
                "seconds": seconds,
                "seconds_per_epoch_with_evaluation": per_epoch,
                "final_test_error": summary["final_error"],
                "first_epoch_at_or_below_2pct": summary["first_epoch_at_or_below_2pct"],
                "fraction_of_memories_voting_for_one_class": summary["fraction_of_memories_voting_for_one_class"],
                "images_with_second_ratio_below_0.9": summary["images_with_second_ratio_below_0.9"],
            }
        )
        print(f"n = {degree}: {report['models'][-1]}", flush=True)
        save_json(out / "accelerator.json", report)
    # then retrieval at sizes only an accelerator holds (the modern Hopfield update, 1024 queries)
    left = deadline - time.time()
    if left > 60:
        from retrieval_peers import accelerator_retrieval

        report["retrieval"] = accelerator_retrieval(quick=args.dry_run, deadline=deadline - 15)
        print(f"retrieval: {report['retrieval']}", flush=True)
    else:
        report["skipped"].append({"stage": "retrieval", "why": f"{left:.0f} s left"})
    report["total_seconds"] = time.time() - start
    save_json(out / "accelerator.json", report)
    print(json.dumps({k: report[k] for k in ("models", "skipped", "total_seconds")}, indent=1))
    return 0


def _epochs_done(checkpoint: Path) -> int:
    if not checkpoint.is_file():
        return 0
    with open(checkpoint, "rb") as f:
        return int(json.loads(f.readline())["epoch"])


if __name__ == "__main__":
    sys.exit(main())
