"""Issue 10's targets for the 2016 MNIST classifiers (arXiv:1606.01164), checked against the saved runs.

    python experiments/mnist_targets.py      # writes results/mnist_paper/summary.json

Reads what the runs recorded, recomputing nothing: the final-epoch test errors and A15 statistics
of the compressed-schedule models (`compressed/`, seed 0, the preset) and of the paper's
3000-epoch schedule (`gpu/`; n = 20, 30 also with their validated optimiser, `paper_n<N>_p06/`), the seed
spreads (`seeds/summary.json` for the compressed schedule, `paper_seeds/summary.json` for the
paper's), the epoch benchmark (`results/bench_mnist_epoch.json`) and the accelerator slots
(`gpu/accelerator_slot*.json`). Each target is listed with every value that bears on it and `met`:
whether one of the declared runs (the compressed preset's seed 0, the paper's schedule) reaches it;
a run still going counts only once it is complete. Other seeds are shown beside them (their mean as
`met_by_seed_mean`), never picked for being best.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from jamem.classifier.mnist import PAPER_SAMPLE_ERROR, finished_test_run
from jamem.tooling.provenance import save_json

# The declared runs, a folder each ({degree} filled in). `paper_n<N>_p06/` is n = N alone under the
# paper's schedule with the optimiser its validation chose after `gpu/` had run it (n = 20, 30: eps0
# 0.04, p 0.6 against 0.01, 0.9: validation/choice.txt).
SCHEDULES = {
    "compressed_seed0": "compressed",
    "paper_schedule": "gpu",
    "paper_schedule_validated": "paper_n{degree}_p06",
}
ONE_CLASS_FRACTION = 0.40  # A15 at n = 30: over 40% of memories vote for one class
LONE_WINNER_IMAGES = 8000  # ... and over 8000 test images have no second memory above 0.9
EPOCH_OVER_FLOOR = 1.3
GPU_SECONDS = 300.0  # the paper's 3000 epochs at n = 3 in under 5 minutes on one H100-class card


def _runs(root: Path) -> dict[str, dict[int, dict]]:
    runs = {}
    for name, folder in SCHEDULES.items():
        runs[name] = {}
        for degree in PAPER_SAMPLE_ERROR:
            record = finished_test_run(root / folder.format(degree=degree) / f"mnist_n{degree}.json")
            if record is not None:
                runs[name][degree] = record
    return runs


def _target(text: str, values: dict, met: bool | None, **more) -> dict:
    return {"target": text, "values": values, "met": met, **more}


def _spread(path: Path) -> dict[int, dict]:
    return {row["degree"]: row for row in json.loads(path.read_text())["spread"]} if path.is_file() else {}


def targets(root: Path, bench: Path) -> list[dict]:
    runs = _runs(root)
    spread = _spread(root / "seeds" / "summary.json")
    paper_spread = _spread(root / "paper_seeds" / "summary.json")
    table = []
    for degree, paper in PAPER_SAMPLE_ERROR.items():
        values = {name: runs[name][degree]["final_error"] for name in runs if degree in runs[name]}
        seeds = spread.get(degree)
        more = {}
        if seeds is not None:
            more = {"seed_errors": seeds["final_test_errors"], "seed_mean": seeds["mean"]}
            more["met_by_seed_mean"] = seeds["mean"] <= paper
        paper_seeds = paper_spread.get(degree)
        if paper_seeds is not None:
            more["paper_schedule_seed_errors"] = paper_seeds["final_test_errors"]
            more["paper_schedule_seed_mean"] = paper_seeds["mean"]
            more["paper_schedule_met_by_seed_mean"] = paper_seeds["mean"] <= paper
        met = any(value <= paper for value in values.values()) if values else None
        table.append(_target(f"final-epoch test error at n = {degree} <= {100 * paper:.2f}%", values, met, **more))
    order = {}
    for name in runs:
        if 2 in runs[name] and 3 in runs[name]:
            order[name] = {n: runs[name][n]["first_epoch_at_or_below_2pct"] for n in (2, 3)}
    met = any(v[3] is not None and (v[2] is None or v[3] < v[2]) for v in order.values()) if order else None
    more = {}
    if 2 in spread and 3 in spread:
        more["seed_epochs"] = {n: spread[n]["first_epoch_at_or_below_2pct"] for n in (2, 3)}
    table.append(_target("n = 3 first reaches 2% test error in fewer epochs than n = 2", order, met, **more))
    for key, threshold, text in (
        ("fraction_of_memories_voting_for_one_class", ONE_CLASS_FRACTION, "over 40% of memories vote for one class"),
        ("images_with_second_ratio_below_0.9", LONE_WINNER_IMAGES, "over 8000 test images have no second memory "
         "above 0.9 of the largest contribution"),
    ):  # fmt: skip
        values = {name: runs[name][30][key] for name in runs if 30 in runs[name]}
        met = any(value > threshold for value in values.values()) if values else None
        table.append(_target(f"n = 30: {text}", values, met))
    if bench.is_file():
        record = json.loads(bench.read_text())
        n3 = record["jamem"]["n=3"]
        ratio = n3["epoch_over_matmul_floor"]
        # the ratio depends on the machine (fast matmuls leave the rest a larger share): say which
        machine = {
            "cpu": record["meta"]["hardware"]["cpu"],
            "cpu_count": record["meta"]["hardware"]["cpu_count"],
            "matmul_gflops_per_second": n3["matmul_gflops_per_second"],
            "date": record["meta"]["date"],
        }
        table.append(
            _target(
                "a CPU epoch (n = 3) within 1.3x of its matmul floor",
                {"cpu": ratio},
                ratio <= EPOCH_OVER_FLOOR,
                machine=machine,
            )
        )
    gpu = []
    for path in sorted((root / "gpu").glob("accelerator_slot*.json")):
        record = json.loads(path.read_text())
        for model in record["models"]:
            if model["degree"] == 3 and model["epochs_before"] == 0 and model["epochs_after"] == record["epochs"]:
                gpu.append({"slot": path.name, "device": record["device"], "seconds": model["seconds"]})
    if gpu:
        met = any(run["seconds"] < GPU_SECONDS for run in gpu)
        table.append(_target("the paper's 3000 epochs at n = 3 in under 5 minutes on one GPU", {"runs": gpu}, met))
    return table


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", default="results/mnist_paper")
    parser.add_argument("--bench", default="results/bench_mnist_epoch.json")
    args = parser.parse_args(argv)
    root = Path(args.root)
    table = targets(root, Path(args.bench))
    for row in table:
        print(f"{'met' if row['met'] else 'NOT met' if row['met'] is False else 'no runs'}: {row['target']}")
    save_json(root / "summary.json", {"targets": table})


if __name__ == "__main__":
    main()
