"""Memories that take no part: how many of the K memories of each saved MNIST model add to no
class on any image, and how the one-class vote of arXiv:1606.01164 (Figs. 2, 4) reads without them.

    python experiments/mnist_silent.py  # re-evaluates the saved models (*.eqx) of results/mnist_paper/
    # compressed/, ramp27/compressed/, ramp100/compressed/ and gpu/

A memory is silent on an image when F(xi . V_alpha) = F(xi . U) = 0 for every class alpha
(`jamem.prototypes.silent_memories`). Silent on the whole training set, it gets an exactly zero
gradient: nothing trains it any more, and the normalised momentum of App. A carries it on in its
last direction until the velocity underflows, leaving its class weights where that takes them.
Writes `results/mnist_paper/silent_memories.json`: per model, the silent memories on the 60k
training and 10k test images, the vote histogram of silent and of active memories, and the share
of all and of active memories that vote for one class, and the share of all memories read with
stricter votes (`STRICTER_VOTES`). The issue's target (over 40% at n = 30) is about all memories
with a vote meaning any positive class weight; the active share and the stricter readings are
diagnoses, not other ways to meet it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from jamem import prototypes, train
from jamem.tooling import data
from jamem.tooling.provenance import save_json

# A memory votes for class alpha when xi_alpha > threshold. The recorded statistic, and the issue's
# target, use 0 (any positive class weight); these stricter readings (a class weight near the clip
# at +1) show how much the share depends on that choice, and are not a way to meet the target.
STRICTER_VOTES = (0.5, 0.9)


def silence(path: Path, train_images, test_images) -> dict:
    model, config, history = train.load_trained(path)
    votes = np.asarray(prototypes.classes_per_memory(model))
    silent_train = prototypes.silent_memories(model, train_images)
    silent_test = prototypes.silent_memories(model, test_images)
    active = ~np.asarray(silent_train)
    return {
        "model": str(path),
        "degree": config.degree,
        "epochs_run": len(history.rows),
        "learning_rate": config.learning_rate,
        "learning_rate_decay": config.learning_rate_decay,
        "final_test_error": history.rows[-1]["test_error"] if history.rows else None,
        "memories": int(model.memories.shape[0]),
        "silent_on_train_images": int(silent_train.sum()),
        "silent_on_test_images": int(silent_test.sum()),
        "fraction_of_memories_voting_for_one_class": prototypes.one_class_share(model),
        "fraction_of_active_memories_voting_for_one_class": prototypes.one_class_share(model, among=~silent_train),
        "fraction_of_memories_voting_for_one_class_by_threshold": {
            str(threshold): prototypes.one_class_share(model, threshold=threshold) for threshold in STRICTER_VOTES
        },
        "classes_per_memory_histogram_active": np.bincount(votes[active], minlength=model.num_classes + 1).tolist(),
        "classes_per_memory_histogram_silent": np.bincount(votes[~active], minlength=model.num_classes + 1).tolist(),
    }


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", default="results/mnist_paper")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)
    root = Path(args.root)
    folders = ("compressed", "ramp27/compressed", "ramp100/compressed", "gpu")
    paths = [path for folder in folders for path in sorted(root.glob(f"{folder}/mnist_n*.eqx"))]
    if not paths:
        raise SystemExit(f"no saved models under {', '.join(f'{root}/{folder}' for folder in folders)}")
    train_images, _ = data.load("mnist", split="train", data_dir=args.data_dir)
    test_images, _ = data.load("mnist", split="test", data_dir=args.data_dir)
    train_images, test_images = jnp.asarray(train_images), jnp.asarray(test_images)
    rows = [silence(path, train_images, test_images) for path in paths]
    for row in rows:
        active = row["fraction_of_active_memories_voting_for_one_class"]
        print(
            f"{row['model']}: {row['silent_on_train_images']} of {row['memories']} silent on the training set; "
            f"one class: "
            f"{100 * row['fraction_of_memories_voting_for_one_class']:.1f}% of all, "
            f"{'-' if active is None else f'{100 * active:.1f}%'} of the active"
        )
    save_json(root / "silent_memories.json", {"models": rows})


if __name__ == "__main__":
    main()
