"""Seed-to-seed spread of the MNIST classifiers (arXiv:1606.01164, eq. 9), per schedule.

    python experiments/mnist_seeds.py                    # after `bash experiments/mnist_paper.sh seeds N S ...`
    python experiments/mnist_seeds.py --schedule paper   # after `... paper-seeds N S ...`

The paper reports one sample model per n (A14 of our reference: 1.51% at n = 2, 1.44% at n = 3).
For the compressed schedule this reads the seed-0 model of `results/mnist_paper/compressed/` and
the runs of other seeds in `results/mnist_paper/seeds/n<N>_seed<S>/`; for the paper's own
3000-epoch schedule, the seed-0 model of `gpu/` and the runs in `paper_seeds/n<N>_seed<S>/`. It
checks that they share every setting but the seed, and writes `summary.json` into the seeds'
folder: each run's final-epoch test error and the epoch it first reached 2%, the errors' mean and
sample standard deviation, the binomial standard error of one 10k test error, and how far the
paper's sample lies below our mean in units of the spread.
Only complete runs count.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from jamem import train
from jamem.classifier.mnist import PAPER_SAMPLE_ERROR, finished_test_run
from jamem.tooling.provenance import save_json

# schedule: (the folder of its seed-0 models, the folder of its other seeds), under the root
FOLDERS = {"compressed": ("compressed", "seeds"), "paper": ("gpu", "paper_seeds")}


def spread(degree: int, root: Path, schedule: str = "compressed") -> dict:
    first, seeds = FOLDERS[schedule]
    others = sorted((root / seeds).glob(f"n{degree}_seed*/mnist_n{degree}.json"))
    paths = [root / first / f"mnist_n{degree}.json", *others]
    runs = [r for r in map(finished_test_run, paths) if r is not None]
    if not runs:
        raise SystemExit(f"no complete test-split runs for n = {degree} under {root}")
    # every setting but the seed, as it acts on training (`train.settings_that_matter`)
    settings = [{k: v for k, v in train.settings_that_matter(r["config"]).items() if k != "seed"} for r in runs]
    if any(s != settings[0] for s in settings):
        raise SystemExit(f"the n = {degree} runs differ in more than the seed: {settings}")
    errors = [r["final_error"] for r in runs]  # the last epoch's, as `jamem.mnist.analyse` records it
    mean = sum(errors) / len(errors)
    sd = math.sqrt(sum((e - mean) ** 2 for e in errors) / (len(errors) - 1)) if len(errors) > 1 else None
    paper = PAPER_SAMPLE_ERROR.get(degree)
    return {
        "degree": degree,
        "seeds": [r["config"]["seed"] for r in runs],
        "final_test_errors": errors,
        "first_epoch_at_or_below_2pct": [r["first_epoch_at_or_below_2pct"] for r in runs],
        "mean": mean,
        "sample_sd": sd,
        "binomial_se_of_one_10k_error": math.sqrt(mean * (1 - mean) / 10000),
        "paper_sample_error": paper,
        "paper_sample_below_mean_in_sds": None if paper is None or not sd else (mean - paper) / sd,
        "runs_meeting_paper_sample": None if paper is None else sum(e <= paper for e in errors),
        "config_except_seed": settings[0],
    }


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--schedule", choices=sorted(FOLDERS), default="compressed")
    parser.add_argument("--degrees", default=None, help="default: every n with runs in the schedule's seed folder")
    parser.add_argument("--root", default="results/mnist_paper")
    args = parser.parse_args(argv)
    root, seeds = Path(args.root), FOLDERS[args.schedule][1]
    if args.degrees is None:
        degrees = sorted({int(p.name[1:].split("_seed")[0]) for p in (root / seeds).glob("n*_seed*")})
    else:
        degrees = [int(d) for d in args.degrees.split(",")]
    table = [spread(degree, root, args.schedule) for degree in degrees]
    for row in table:
        print({k: row[k] for k in ("degree", "seeds", "final_test_errors", "mean", "sample_sd")})
    save_json(root / seeds / "summary.json", {"schedule": args.schedule, "spread": table})


if __name__ == "__main__":
    main()
