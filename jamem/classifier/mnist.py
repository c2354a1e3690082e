"""The MNIST / Fashion-MNIST experiment of Krotov & Hopfield 2016 (arXiv:1606.01164, eq. 9) as one call: `jamem mnist`.

Trains a DenseAM classifier from a preset, checkpointing and logging as it goes, then saves the
summary JSON (config, history, final test error, epoch where 2% is first reached, the
feature-to-prototype statistics of Figs. 2, 4) and the memories as a grid of 28x28 images.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from .._checks import check_positive_int, check_writable
from .._sharding import is_writer
from ..tooling import data, plots
from ..tooling.provenance import save_json
from . import prototypes, train

DATASET_CLASSES = 10  # MNIST and Fashion-MNIST
# The final test errors of the paper's four sample models (arXiv:1606.01164, Fig. 2), K = 2000
PAPER_SAMPLE_ERROR = {2: 0.0151, 3: 0.0144, 20: 0.0161, 30: 0.0180}


def run(
    *,
    degree: int = 3,
    dataset: str = "mnist",
    out_dir: str | Path = "results/mnist",
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    train_size: int | None = None,
    validation: bool = False,
    resume: bool | str = False,
    checkpoint_every: int = 10,
    eval_every: int = 1,
    progress: bool = True,
    source: str = "auto",
    deadline: float | None = None,
    **overrides,
) -> dict:
    """Train with `train.preset(degree, **overrides)`; write `<out_dir>/<dataset>_n<degree>.*`:
    the resumable `.ckpt`, the `.json` summary (rewritten every epoch while training), the memories
    as `_memories.png`, and once the run is complete the model alone as `.eqx` (`train.save_model`).

    Args:
        validation: hold out the last 10k training images and report on them instead of the test
            set (the paper's hyperparameter protocol, arXiv:1606.01164, App. A).
        train_size: use only the first `train_size` training images (quick runs).
        resume: continue from the checkpoint `<out_dir>/<dataset>_n<degree>.ckpt` (True: it must
            exist; "auto": if it exists), `jamem.train.fit`.
        source: where the data comes from (`jamem.data.load`).
        deadline: stop after the epoch that ends past this `time.time()` (`jamem.train.fit`); the
            summary's "complete" is then False and a later call with `resume=True` continues.
    """
    config = train.preset(degree, **overrides)  # validates every setting before the data is read
    train.check_dtype_available(config)
    check_positive_int(checkpoint_every, name="checkpoint_every")
    check_positive_int(eval_every, name="eval_every")
    if train_size is not None:
        train_size = check_positive_int(train_size, name="train_size")
        if train_size < config.batch_size:
            raise ValueError(f"`train_size` must be at least batch_size={config.batch_size}, got {train_size}.")
    if config.batch_sampling == "class_balanced":
        train.check_class_balanced(config.batch_size, DATASET_CLASSES)  # before the data is read
    stem = Path(out_dir) / f"{dataset}_n{degree}"
    check_writable(stem.with_suffix(".json"), name="out_dir")
    where = dict(data_dir=data_dir, cache_dir=cache_dir, validation_size=10000 if validation else 0, source=source)
    eval_split = "validation" if validation else "test"
    if not is_writer():  # several processes: process 0 prepares the shared cache first
        multihost_utils.sync_global_devices("jamem: data prepared")
    images, labels = data.load(dataset, split="train", **where)
    eval_images, eval_labels = data.load(dataset, split=eval_split, **where)
    if is_writer() and jax.process_count() > 1:
        multihost_utils.sync_global_devices("jamem: data prepared")
    if train_size is not None:
        images, labels = images[:train_size], labels[:train_size]
    model, history = train.fit(
        config,
        (images, labels),
        (eval_images, eval_labels),
        checkpoint_path=stem.with_suffix(".ckpt"),
        checkpoint_every=checkpoint_every,
        resume=resume,
        metrics_path=stem.with_suffix(".json"),
        eval_every=eval_every,
        progress=progress,
        deadline=deadline,
    )
    summary = analyse(model, history, config=config, images=eval_images, dataset=dataset, split=eval_split)
    if is_writer():  # with several processes, process 0 writes
        save_json(stem.with_suffix(".json"), summary)
        if summary["complete"]:
            train.save_model(stem.with_suffix(".eqx"), model, config=config, history=history)
        plots.plot_memory_grid(
            model.memories, stem.with_name(stem.name + "_memories.png"), title=f"{dataset}, n = {degree}"
        )
    return summary


def evaluate(path: str | Path, *, dataset: str = "mnist", data_dir: str | None = None, source: str = "auto") -> dict:
    """A saved model (`.ckpt` or `.eqx`) re-evaluated on the test set: its error computed afresh
    (not read from the history), the recorded final error beside it, and the feature-to-prototype
    statistics (arXiv:1606.01164, Figs. 2, 4)."""
    model, config, history = train.load_trained(path)
    images, labels = data.load(dataset, split="test", data_dir=data_dir, source=source)
    temperature = config.temperature()(max(len(history.rows) - 1, 0))
    summary = analyse(model, history, config=config, images=images, dataset=dataset, split="test")
    summary["test_error"] = train.error_rate(model, images, labels, temperature=temperature)
    summary["checkpoint"] = str(path)
    return summary


def analyse(model, history: train.History, *, config: train.TrainConfig, images, dataset: str, split: str) -> dict:
    """Final error, epoch of first <= 2%, and the feature-to-prototype statistics
    (arXiv:1606.01164, Figs. 2, 4) of a trained model."""
    temperature = config.temperature()(max(len(history.rows) - 1, 0))
    votes = np.asarray(prototypes.classes_per_memory(model))
    ratios = np.asarray(prototypes.second_contribution_ratio(model, jnp.asarray(images), temperature=temperature))
    silent = prototypes.silent_memories(model, jnp.asarray(images))
    final = history.rows[-1]["test_error"] if history.rows else None
    return {
        "dataset": dataset,
        "eval_split": split,
        "config": dataclasses.asdict(config),
        "epochs_run": len(history.rows),
        "complete": len(history.rows) == config.epochs,
        "final_error": final,
        "first_epoch_at_or_below_2pct": history.first_epoch_below(0.02),
        "classes_per_memory_histogram": np.bincount(votes, minlength=model.num_classes + 1).tolist(),
        "fraction_of_memories_voting_for_one_class": prototypes.one_class_share(model),
        # memories that add to no class on any evaluated image: nothing trains them any more
        "memories_silent_on_eval_images": int(jnp.sum(silent)),
        "fraction_of_active_memories_voting_for_one_class": prototypes.one_class_share(model, among=~silent),
        "second_ratio": np.round(ratios, 4).tolist(),
        "images_with_second_ratio_below_0.9": int(np.sum(ratios < 0.9)),
        "history": history.rows,
    }


def finished_test_run(path: str | Path) -> dict | None:
    """The summary `run` wrote at `path` if that run is complete and evaluated on the test split
    (not the validation split), else None (also when there is no file)."""
    path = Path(path)
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    return record if record.get("complete") and record.get("eval_split", "test") == "test" else None


def attack_target(path: str | Path):
    """(scores_fn, loss_fn, config, history) of a trained checkpoint, ready for `jamem.adversarial`:
    the scores at the last training temperature and the training loss in log form (arXiv:1606.01164, App. A), which
    keeps a gradient where the outputs saturate."""
    from .model import log_power_loss

    model, config, history = train.load_trained(path)
    temperature = config.temperature()(max(len(history.rows) - 1, 0))

    def scores(images):
        return model.batch_scores(images, temperature=temperature)

    def loss(s, label):
        return log_power_loss(s, label, power=config.loss_power)

    return scores, loss, config, history
