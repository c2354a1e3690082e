"""Training DenseAM classifiers (Krotov & Hopfield 2016, App. A; arXiv:1606.01164, App. A), data-parallel and resumable.

`train_epoch` is one jit-compiled epoch: a keyed draw of minibatches (`epoch_batches`), then `lax.scan` over them, each
split over all local devices along the batch axis with `jax.sharding` (parameters replicated, the
gradient all-reduce inserted by XLA). `fit` loops over epochs with a progress bar, evaluates, logs
metrics to JSON and writes atomic checkpoints from which a killed run resumes bit-for-bit: every
epoch's minibatch key is `fold_in(key, epoch)`, so a resumed run replays the same minibatches.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
import os
import time
from collections.abc import Callable
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .._checks import check_key, check_positive, check_positive_int, check_writable
from .._sharding import data_sharding, is_writer, to_global, to_host
from .model import DenseAMClassifier, power_loss
from .optim import TemperatureRamp, dense_am_optimizer, epoch_decay

BATCH_SAMPLINGS = ("shuffled", "class_balanced")
DTYPES = ("float32", "float64")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one run (defaults: the paper's n = 3 window, arXiv:1606.01164, App. A)."""

    degree: int = 3
    num_memories: int = 2000
    epochs: int = 300
    batch_size: int = 1000
    # "shuffled": one permutation of the training set per epoch; "class_balanced": every minibatch
    # holds batch_size / C images of each class ("100 per class", arXiv:1606.01164, App. A)
    batch_sampling: str = "shuffled"
    loss: str = "power"  # "power" (arXiv:1606.01164, App. A) or "cross_entropy"
    loss_power: int = 3  # m in (c - t)^(2m)
    learning_rate: float = 0.04
    learning_rate_decay: float = 0.998
    momentum: float = 0.9
    temperature_initial: float = 300.0
    temperature_final: float = 60.0
    temperature_ramp_epochs: int = 200
    init_mean: float = -0.3
    init_std: float = 0.3
    seed: int = 0
    # the training arithmetic: "float32", or "float64" as the authors' code (needs jax_enable_x64 for
    # the whole process); the initial memories are drawn in float32 either way, so a seed gives the
    # same start in both
    dtype: str = "float32"

    def __post_init__(self):
        for name in ("degree", "num_memories", "epochs", "batch_size", "loss_power"):
            object.__setattr__(self, name, check_positive_int(getattr(self, name), name=name))
        for name in ("temperature_ramp_epochs", "seed"):
            object.__setattr__(self, name, check_positive_int(getattr(self, name), name=name, minimum=0))
        for name in ("learning_rate", "temperature_initial", "temperature_final", "init_std"):
            object.__setattr__(self, name, check_positive(getattr(self, name), name=name))
        _check_in_range(self.init_mean, "init_mean", -math.inf, math.inf, "a finite number")
        _check_in_range(self.momentum, "momentum", 0, 1, "[0, 1)", closed_above=False)
        _check_in_range(self.learning_rate_decay, "learning_rate_decay", 0, 1, "(0, 1]", closed_below=False)
        if self.loss not in ("power", "cross_entropy"):
            raise ValueError(f"`loss` must be 'power' or 'cross_entropy', got {self.loss!r}.")
        if self.batch_sampling not in BATCH_SAMPLINGS:
            raise ValueError(f"`batch_sampling` must be one of {BATCH_SAMPLINGS}, got {self.batch_sampling!r}.")
        if not isinstance(self.dtype, str) or self.dtype not in DTYPES:  # a name, as it is recorded in JSON
            raise ValueError(f"`dtype` must be one of the names {DTYPES}, got {self.dtype!r}.")

    def temperature(self) -> TemperatureRamp:
        return TemperatureRamp(self.temperature_initial, self.temperature_final, self.temperature_ramp_epochs)


# Settings added after checkpoints were first written, with the value every earlier run used: a
# checkpoint or run record without one of them was trained with this value.
LEGACY_SETTINGS = {"batch_sampling": "shuffled", "dtype": "float32"}


def with_legacy_settings(config: dict) -> dict:
    """A recorded config (a checkpoint header's, a run's JSON) with the settings it predates filled in."""
    return {**LEGACY_SETTINGS, **config}


def settings_that_matter(config: dict) -> dict:
    """A recorded config as it acts on training: `with_legacy_settings`, and without the ramp's
    length when T is constant (temperature_initial == temperature_final), where it changes nothing."""
    settings = with_legacy_settings(config)
    if settings.get("temperature_initial") == settings.get("temperature_final"):
        settings.pop("temperature_ramp_epochs", None)
    return settings


def _check_in_range(value, name, low, high, text, *, closed_below=True, closed_above=True):
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (low <= value if closed_below else low < value) and (value <= high if closed_above else value < high)
    if not ok:
        raise ValueError(f"`{name}` must lie in {text}, got {value!r}.")


# The paper's ranges (arXiv:1606.01164, App. A): small n ramp T and use m ~ 2-4; large n keep T in [500, 700], m ~ 30.
# n = 8 (used by the 2017 robustness paper, arXiv:1701.00939) sits between: constant T = 400, m = 10
# (our choice).
PRESETS: dict[int, dict] = {
    2: dict(degree=2, loss_power=2, temperature_initial=350.0, temperature_final=60.0, learning_rate=0.04),
    3: dict(degree=3, loss_power=3, temperature_initial=300.0, temperature_final=60.0, learning_rate=0.04),
    8: dict(degree=8, loss_power=10, temperature_initial=400.0, temperature_final=400.0, learning_rate=0.02),
    20: dict(degree=20, loss_power=30, temperature_initial=550.0, temperature_final=550.0, learning_rate=0.01),
    30: dict(degree=30, loss_power=30, temperature_initial=650.0, temperature_final=650.0, learning_rate=0.01),
}
PAPER_EPOCHS = 3000  # arXiv:1606.01164, App. A
PAPER_DECAY = 0.998  # ibid.: eps(t) = eps0 f^t, so eps0 0.998^3000 = 0.25% of eps0 at the end
PAPER_RAMP_EPOCHS = 200  # ibid.: T ramps over the first 200 epochs
SCHEDULES = ("paper", "compressed")
COMPRESSED_EPOCHS = 400
# What the compressed schedule changes per degree, chosen on the 50k/10k validation split
# (results/mnist_paper/validation/choice.txt): the paper-range eps0 = 0.01 of n = 20, 30 has decayed
# to 0.002 by epoch 100 of 400 and underfits (n = 30: 1.8% training error, 3.1% validation);
# eps0 = 0.04 ends at 1.80% (n = 20, against 2.03%) and 1.90% (n = 30) validation error; n = 8's
# own 0.02 ends with 0.66% training error, and 0.04 at 2.15% validation error against 2.35%.
COMPRESSED_OVERRIDES: dict[int, dict] = {degree: dict(learning_rate=0.04) for degree in (8, 20, 30)}
# What the paper schedule changes per degree, chosen the same way over its 3000 epochs: eps0 = 0.04
# and p = 0.6 (the authors' notebook's values for large n) end at 1.96% validation error for n = 30,
# with 33.3% of its memories voting for one class, against 2.06% and 33.2% with 0.01 and 0.9, and at
# 1.68% for n = 20 against 1.75%.
PAPER_OVERRIDES: dict[int, dict] = {degree: dict(learning_rate=0.04, momentum=0.6) for degree in (20, 30)}


# The share of a compressed run the temperature ramps over, where validation chose other than the
# paper's 200 / 3000 (results/mnist_paper/validation/choice.txt): n = 2's 27 of 400 epochs fell cold
# faster than its memories could follow (1.89% validation error, 50 epochs: 1.68%).
COMPRESSED_RAMP_SHARE: dict[int, float] = {2: 1 / 8}


def compressed_ramp_epochs(epochs: int, *, degree: int | None = None) -> int:
    """The temperature ramp of a compressed `epochs`-epoch run, at least 1 epoch.

    The paper's 200-epoch ramp (arXiv:1606.01164, App. A) shrunk like its run, round(200 epochs / 3000),
    unless `COMPRESSED_RAMP_SHARE` holds another share for `degree` (n = 2: epochs / 8, rounded).
    """
    epochs = check_positive_int(epochs, name="epochs")
    share = COMPRESSED_RAMP_SHARE.get(degree, PAPER_RAMP_EPOCHS / PAPER_EPOCHS)
    return max(1, math.floor(share * epochs + 0.5))  # halves up (n = 2 at 20 epochs: 3), not to even


def preset(degree: int, *, schedule: str = "paper", **overrides) -> TrainConfig:
    """The paper-range configuration for n in PRESETS, with `overrides` applied.

    Args:
        schedule: "paper" is App. A of arXiv:1606.01164 as published: 3000 epochs,
            eps(t) = eps0 0.998^t, the temperature ramp over the first 200 epochs.
            "compressed" squeezes the paper's run into a shorter one (default `COMPRESSED_EPOCHS`):
            f = 0.998^(3000 / epochs), so eps ends at the paper's 0.25% of eps0, and the
            temperature ramp shrinks in the same proportion, round(200 epochs / 3000), 27 of 400
            epochs, except n = 2's, 1/8 of the run, 50 of 400 (`compressed_ramp_epochs`);
            `COMPRESSED_OVERRIDES` applies per degree (n = 8, 20, 30: eps0 = 0.04), and
            `PAPER_OVERRIDES` to the paper schedule (n = 20, 30: eps0 = 0.04, p = 0.6). All were chosen
            on the 50k/10k validation split (`experiments/mnist_dam.py`,
            results/mnist_paper/validation/choice.txt; n = 3 with a 13 / 27 / 50 / 100 / 200-epoch
            ramp: 2.17 / 1.66 / 1.71 / 1.85 / 2.05% validation error, n = 2 with 27 / 50: 1.89 /
            1.68%); memories, loss and temperatures stay the paper's, and every value lies in its ranges.
        overrides: any `TrainConfig` field; with "compressed", an explicit `learning_rate_decay`
            wins over the computed one.
    """
    if degree not in PRESETS:
        raise ValueError(f"`degree` has presets for {sorted(PRESETS)}, got {degree}; pass a TrainConfig instead.")
    if schedule not in SCHEDULES:
        raise ValueError(f"`schedule` must be one of {SCHEDULES}, got {schedule!r}.")
    if schedule == "paper":
        base = dict(epochs=PAPER_EPOCHS, learning_rate_decay=PAPER_DECAY, temperature_ramp_epochs=PAPER_RAMP_EPOCHS)
    else:
        epochs = check_positive_int(overrides.get("epochs", COMPRESSED_EPOCHS), name="epochs")
        decay = PAPER_DECAY ** (PAPER_EPOCHS / epochs)
        ramp = compressed_ramp_epochs(epochs, degree=degree)
        base = dict(epochs=epochs, learning_rate_decay=decay, temperature_ramp_epochs=ramp)
    chosen = (COMPRESSED_OVERRIDES if schedule == "compressed" else PAPER_OVERRIDES).get(degree, {})
    return TrainConfig(**{**base, **PRESETS[degree], **chosen, **overrides})


def batch_loss(
    model: DenseAMClassifier,
    images: Float[Array, "B N"],
    labels: Int[Array, " B"],
    *,
    temperature,
    loss: str = "power",
    loss_power: int = 3,
) -> tuple[Float[Array, ""], Float[Array, "B C"]]:
    """Summed loss over the batch (arXiv:1606.01164, App. A: sum (c - t)^(2m)) and the scores (for the error count)."""
    scores = model.batch_scores(images, temperature=temperature)
    if loss == "power":
        value = jnp.sum(jax.vmap(lambda c, t: power_loss(c, t, power=loss_power))(jnp.tanh(scores), labels))
    else:
        value = jnp.sum(optax.softmax_cross_entropy_with_integer_labels(scores, labels))
    return value, scores


@eqx.filter_jit
def train_epoch(
    model: DenseAMClassifier,
    opt_state: optax.OptState,
    images: Float[Array, "P N"],
    labels: Int[Array, " P"],
    *,
    key: PRNGKeyArray,
    temperature,
    optimizer: optax.GradientTransformation,
    batch_size: int,
    loss: str = "power",
    loss_power: int = 3,
    batch_sampling: str = "shuffled",
):
    """One epoch: minibatch indices drawn with `key` (`epoch_batches`), then one optimiser step per minibatch.

    Returns (model, opt_state, mean loss per image, training error of the minibatches as they were
    seen).
    """
    order = epoch_batches(key, labels, batch_size=batch_size, sampling=batch_sampling, num_classes=model.num_classes)
    params, static = eqx.partition(model, eqx.is_array)

    def step(carry, batch_order):
        params, opt_state = carry
        # Gathered per step, not as one shuffled copy of the whole set up front (a 190 MB
        # copy for MNIST): the minibatch is still in cache when the matmul reads it.
        x = jax.lax.with_sharding_constraint(images[batch_order], data_sharding(axis=0, ndim=2))
        y = jax.lax.with_sharding_constraint(labels[batch_order], data_sharding(axis=0, ndim=1))

        def objective(p):
            return batch_loss(eqx.combine(p, static), x, y, temperature=temperature, loss=loss, loss_power=loss_power)

        (value, scores), grads = jax.value_and_grad(objective, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        errors = jnp.sum(jnp.argmax(scores, axis=-1) != y)
        return (params, opt_state), (value, errors)

    (params, opt_state), (losses, errors) = jax.lax.scan(step, (params, opt_state), order)
    seen = order.size
    return eqx.combine(params, static), opt_state, jnp.sum(losses) / seen, jnp.sum(errors) / seen


def epoch_batches(
    key: PRNGKeyArray, labels: Int[Array, " P"], *, batch_size: int, sampling: str = "shuffled", num_classes: int = 10
) -> Int[Array, "S B"]:
    """The image indices of one epoch's S = P // batch_size minibatches.

    "shuffled": a random permutation of the P images, the last incomplete minibatch dropped.
    "class_balanced": every minibatch holds batch_size / num_classes images of each class (the
    paper trains on minibatches of "100 examples of each class", arXiv:1606.01164, App. A). Each
    class is walked in its own random order, starting again from the top when a class has fewer
    than S * batch_size / num_classes images, so in one epoch a rarer class repeats some images
    and a commoner one leaves some out (MNIST: 5421 to 6742 images per class, 6000 places each); a
    class with fewer images than batch_size / num_classes repeats some within one minibatch.

    Labels must lie in [0, num_classes) with every class present; that is checked here when
    `labels` is concrete, and by `fit` before training (inside `jit` they are traced).
    """
    if sampling not in BATCH_SAMPLINGS:
        raise ValueError(f"`sampling` must be one of {BATCH_SAMPLINGS}, got {sampling!r}.")
    batch_size = check_positive_int(batch_size, name="batch_size")
    num_classes = check_positive_int(num_classes, name="num_classes", minimum=2)
    if batch_size > labels.shape[0]:
        raise ValueError(f"`batch_size` {batch_size} is larger than the {labels.shape[0]} `labels`.")
    if sampling == "class_balanced":
        check_class_balanced(batch_size, num_classes, None if isinstance(labels, jax.core.Tracer) else labels)
    num_batches = labels.shape[0] // batch_size
    if sampling == "shuffled":
        order = jax.random.permutation(key, labels.shape[0])[: num_batches * batch_size]
        return order.reshape(num_batches, batch_size)
    per_class = batch_size // num_classes

    def walk(class_key, label):
        # the class's indices in random order come first, the others behind them (float32 ties,
        # about one pair per class, are broken by index)
        members = labels == label
        ranked = jnp.argsort(jnp.where(members, jax.random.uniform(class_key, labels.shape), 2.0))
        return ranked[jnp.arange(num_batches * per_class) % jnp.sum(members)]

    picks = jax.vmap(walk)(jax.random.split(key, num_classes), jnp.arange(num_classes))  # (C, S * per_class)
    return picks.reshape(num_classes, num_batches, per_class).transpose(1, 0, 2).reshape(num_batches, batch_size)


def check_class_balanced(batch_size: int, num_classes: int, labels=None, *, labels_name: str = "`labels`") -> None:
    """What batch_sampling='class_balanced' needs: `batch_size` a multiple of `num_classes`, and
    (when given) `labels` holding every class 0 .. num_classes - 1 and no other."""
    if batch_size % num_classes:
        raise ValueError(
            f"`batch_size` {batch_size} must be a multiple of the {num_classes} classes (`num_classes` "
            f"{num_classes}) for batch_sampling='class_balanced'."
        )
    if labels is not None:
        present = set(np.unique(np.asarray(labels)).tolist())
        missing, others = sorted(set(range(num_classes)) - present), sorted(present - set(range(num_classes)))
        wrong = [f"no images of classes {missing}"] * bool(missing) + [f"images of classes {others}"] * bool(others)
        if wrong:
            raise ValueError(
                f"{labels_name} must hold every class 0 to {num_classes - 1} and no other for "
                f"batch_sampling='class_balanced': {', '.join(wrong)}."
            )


@eqx.filter_jit
def predict(
    model: DenseAMClassifier, images: Float[Array, "P N"], *, temperature=1.0, chunk_size: int = 1000
) -> Int[Array, " P"]:
    """argmax_alpha c_alpha for every image, `chunk_size` images at a time, split over devices."""
    count = images.shape[0]
    chunk = min(chunk_size, count)
    padded = -(-count // chunk) * chunk
    chunks = jnp.pad(images, ((0, padded - count), (0, 0))).reshape(padded // chunk, chunk, -1)
    if chunk % jax.device_count() == 0:
        chunks = jax.lax.with_sharding_constraint(chunks, data_sharding(axis=1, ndim=3))

    def classify(x):
        return jnp.argmax(model.batch_scores(x, temperature=temperature), axis=-1)

    return jax.lax.map(classify, chunks).reshape(-1)[:count]


def error_rate(model: DenseAMClassifier, images, labels, *, temperature=1.0) -> float:
    """Fraction of misclassified images (host arrays, or global ones split over every process)."""
    images, labels = to_global((jnp.asarray(images), jnp.asarray(labels)))
    return float(to_host(_error_rate(model, images, labels, temperature)))


@eqx.filter_jit
def _error_rate(model, images, labels, temperature):
    return jnp.mean(predict(model, images, temperature=temperature) != labels)


# -- checkpoints ---------------------------------------------------------------------------------


def save_checkpoint(path: str | os.PathLike, state, *, header: dict) -> Path:
    """Write a JSON header line then the pytree's leaves (equinox serialisation), atomically.

    The header records the SHA-256 of the leaves, which `load_checkpoint` verifies.
    """
    import io

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, state)
    payload = buffer.getvalue()
    header = {**header, "sha256": hashlib.sha256(payload).hexdigest()}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(json.dumps(header).encode() + b"\n")
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)  # readers see the old checkpoint or the new one, never half of one
    return path


def _load_leaf_in_its_dtype(f, like):
    # jnp.load would turn a float64 array into float32 without 64-bit JAX, and equinox compares the
    # dtype only after that: the stored dtype is checked first
    if isinstance(like, (jax.Array, np.ndarray)):
        value = np.load(f)
        if value.dtype != like.dtype:
            hint = " (a float64 checkpoint needs 64-bit JAX: JAX_ENABLE_X64=1)" if value.dtype == np.float64 else ""
            raise ValueError(f"a leaf of shape {value.shape} is {value.dtype} on disk but {like.dtype} in `like`{hint}")
        return jnp.asarray(value) if isinstance(like, jax.Array) else value
    return eqx.default_deserialise_filter_spec(f, like)


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files a killed `save_checkpoint` left beside `path`; returns them."""
    path = Path(path)
    stale = list(path.parent.glob(f".{path.name}.*.tmp")) if path.parent.is_dir() else []
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return stale


def load_checkpoint(path: str | os.PathLike, like):
    """(header, state) from `save_checkpoint`; `like` is a pytree of the same structure.

    Raises ValueError when the file is corrupt: its header does not parse, its contents do not
    match the recorded SHA-256, or they do not fit `like`.
    """
    import io

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at `path` {path}.")
    try:
        with open(path, "rb") as f:
            header = json.loads(f.readline())
            payload = f.read()
    except (ValueError, OSError) as err:
        raise ValueError(f"The checkpoint {path} is corrupt (its header does not parse): {err}") from err
    recorded = header.get("sha256") if isinstance(header, dict) else None
    if recorded is not None and hashlib.sha256(payload).hexdigest() != recorded:
        raise ValueError(
            f"The checkpoint {path} is corrupt: its contents do not match the SHA-256 in its header (a partial "
            f"copy or a damaged disk?). Restore it, or delete it to start afresh."
        )
    try:
        state = eqx.tree_deserialise_leaves(io.BytesIO(payload), like, filter_spec=_load_leaf_in_its_dtype)
    except Exception as err:  # noqa: BLE001 - re-raised with the file named
        root = err
        while root.__cause__ is not None:  # equinox's own error names the leaf only, its first cause why
            root = root.__cause__
        why = f"{err}" if root is err else f"{err}: {root}"
        raise ValueError(f"The checkpoint {path} is corrupt or from another configuration: {why}") from err
    return header, state


def run_keys(config: TrainConfig) -> tuple[PRNGKeyArray, PRNGKeyArray]:
    """(memories key, minibatch key) of a run from `config.seed`: `initial_state` draws the memories
    from the first, `fit` the minibatches of epoch e from fold_in(second, e)."""
    memories, minibatches = jax.random.split(jax.random.key(config.seed))
    return memories, minibatches


def check_dtype_available(config: TrainConfig, *, checkpoint: Path | None = None) -> None:
    """Refuse `config.dtype` float64 unless JAX is in 64-bit mode (else its arrays are made float32);
    the error names `checkpoint` when the config is one's."""
    if config.dtype == "float64" and not jax.config.jax_enable_x64:
        what = "`dtype` 'float64' needs"
        if checkpoint is not None:
            what = f"`path` {checkpoint} was trained in float64: it needs"
        raise ValueError(
            f"{what} 64-bit JAX for the whole process: jax.config.update('jax_enable_x64', True) before any array "
            f"is made (or JAX_ENABLE_X64=1)."
        )


def initial_state(
    config: TrainConfig,
    *,
    num_visible: int = 784,
    num_classes: int = 10,
    steps_per_epoch: int = 60,
    optimizer: optax.GradientTransformation | None = None,
):
    """(model, optimizer, opt_state) at epoch 0: the model from `config.seed` in `config.dtype`, the optimiser of
    arXiv:1606.01164, App. A with the per-epoch decay unless `optimizer` is given."""
    check_dtype_available(config)
    if optimizer is None:
        schedule = epoch_decay(
            initial=config.learning_rate, decay=config.learning_rate_decay, steps_per_epoch=steps_per_epoch
        )
        optimizer = dense_am_optimizer(schedule, momentum=config.momentum)
    model = DenseAMClassifier(
        num_memories=config.num_memories,
        num_visible=num_visible,
        num_classes=num_classes,
        degree=config.degree,
        init_mean=config.init_mean,
        init_std=config.init_std,
        key=run_keys(config)[0],
    )
    model = jax.tree.map(lambda leaf: leaf.astype(config.dtype) if eqx.is_inexact_array(leaf) else leaf, model)
    return model, optimizer, optimizer.init(eqx.filter(model, eqx.is_array))


def save_model(path: str | os.PathLike, model: DenseAMClassifier, *, config: TrainConfig, history: History) -> Path:
    """The trained model alone (no optimiser state: half a checkpoint's size), for sharing and
    evaluation; `load_trained` reads it. A run cannot be resumed from it."""
    header = {"epoch": len(history.rows), "config": dataclasses.asdict(config), "history": history.rows}
    return save_checkpoint(path, model, header={**header, "contents": "model"})


def load_trained(path: str | os.PathLike, *, num_visible: int = 784, num_classes: int = 10):
    """(model, config, history) from a checkpoint written by `fit` (default optimiser) or `save_model`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at `path` {path}.")
    header = _checkpoint_header(path, name="path")
    try:
        config = TrainConfig(**with_legacy_settings(header["config"]))
    except (TypeError, ValueError) as err:  # an unknown, missing or invalid setting
        raise ValueError(f"`path` {path} is not a jamem checkpoint (its config does not fit): {err}") from err
    check_dtype_available(config, checkpoint=path)
    model, _, opt_state = initial_state(config, num_visible=num_visible, num_classes=num_classes)
    if header.get("contents") == "model":
        header, model = load_checkpoint(path, model)
    else:
        header, (model, _) = load_checkpoint(path, (model, opt_state))
    return model, config, History(header["history"])


def _checkpoint_header(path: Path, *, name: str) -> dict:
    """A checkpoint's header line alone, with its config: read before its contents, so that a run
    with other settings is named as such, not as contents that do not fit."""
    with open(path, "rb") as f:
        try:
            header = json.loads(f.readline())
            if not isinstance(header["config"], dict):
                raise TypeError(f"its config is a {type(header['config']).__name__}")
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"`{name}` {path} is not a jamem checkpoint (its header does not parse): {err}") from err
    return header


# -- the loop ------------------------------------------------------------------------------------


@dataclasses.dataclass
class History:
    """Per-epoch metrics: epoch, loss, train_error, test_error (None when not evaluated), T, lr, seconds."""

    rows: list[dict] = dataclasses.field(default_factory=list)

    def first_epoch_below(self, error: float, *, column: str = "test_error") -> int | None:
        for row in self.rows:
            if row.get(column) is not None and row[column] <= error:
                return row["epoch"]
        return None


def fit(
    config: TrainConfig,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray] | None = None,
    *,
    optimizer: optax.GradientTransformation | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    checkpoint_every: int = 10,
    resume: bool | str = False,
    metrics_path: str | os.PathLike | None = None,
    eval_every: int = 1,
    progress: bool = True,
    on_epoch: Callable[[dict], None] | None = None,
    deadline: float | None = None,
) -> tuple[DenseAMClassifier, History]:
    """Train a DenseAM classifier for `config.epochs` epochs; returns (model, history).

    A non-finite loss or parameters stop training with `FloatingPointError` before anything of
    that epoch is written, so the last checkpoint stays the last good state. A fresh start whose
    loss gradient is exactly zero on its first minibatch (a first temperature so low that tanh
    saturates, or so high that every score underflows to 0) is refused with `ValueError` before
    the first epoch, whatever the optimiser.

    Data-parallel over every device of every process (`jamem.tooling.distributed` starts the
    processes): each process holds the training set, each device computes its share of every
    minibatch, the parameters stay replicated; only process 0 writes checkpoints and metrics, and
    every process resumes from them.

    Args:
        config: hyperparameters; `preset(n)` gives the paper's.
        train: (images (P, 784) in [-1, 1], integer labels (P,)).
        test: the same for evaluation, or None.
        optimizer: defaults to the paper's rule (arXiv:1606.01164, App. A) with the per-epoch decay; any optax
            optimiser works (it is called with `params`).
        checkpoint_path: where to write checkpoints every `checkpoint_every` epochs and at the end.
            Each carries a SHA-256 of its contents; temporaries of a killed write are removed.
        resume: True continues from `checkpoint_path` (an error if there is none); "auto"
            continues if it exists, else starts afresh. The config (but for `epochs`) and the
            training data (shape and SHA-256) must match the checkpoint's; a setting the
            checkpoint predates counts as the value it was trained with (`LEGACY_SETTINGS`).
        metrics_path: JSON file rewritten after every epoch with the config and history.
        eval_every: evaluate `test` every this many epochs (and after the last).
        deadline: a `time.time()` value; the first epoch to end after it is the last one run, a
            checkpoint is written, and `resume=True` continues later (for short accelerator slots).
            The history then has fewer than `config.epochs` rows.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"`config` must be a TrainConfig (see `preset`), got {type(config).__name__}.")
    images, labels = _check_split(train, "train")
    if test is not None:
        test_images, test_labels = _check_split(test, "test")
        if test_images.shape[1] != images.shape[1]:
            raise ValueError(
                f"`test` images have {test_images.shape[1]} features but `train` images have {images.shape[1]}."
            )
    checkpoint_every = check_positive_int(checkpoint_every, name="checkpoint_every")
    eval_every = check_positive_int(eval_every, name="eval_every")
    if resume not in (False, True, "auto"):
        raise ValueError(f"`resume` must be True, False or 'auto', got {resume!r}.")
    if resume is True and (checkpoint_path is None or not Path(checkpoint_path).is_file()):
        raise FileNotFoundError(
            f"`resume=True` but there is no checkpoint at `checkpoint_path` {checkpoint_path}; pass resume='auto' to "
            f"start afresh when there is none."
        )
    for name, target in (("checkpoint_path", checkpoint_path), ("metrics_path", metrics_path)):
        if target is not None:
            check_writable(target, name=name)
    if images.shape[0] < config.batch_size:
        raise ValueError(f"`train` has {images.shape[0]} images, fewer than batch_size={config.batch_size}.")
    devices = jax.device_count()
    if config.batch_size % devices:
        raise ValueError(
            f"`batch_size` {config.batch_size} must be a multiple of the {devices} devices (of all processes)."
        )
    steps_per_epoch = images.shape[0] // config.batch_size
    num_classes = int(labels.max()) + 1 if test is None else int(max(labels.max(), test_labels.max())) + 1
    if config.batch_sampling == "class_balanced":
        check_class_balanced(config.batch_size, num_classes, labels, labels_name="`train` labels")
    model, optimizer, opt_state = initial_state(
        config,
        num_visible=images.shape[1],
        num_classes=num_classes,
        steps_per_epoch=steps_per_epoch,
        optimizer=optimizer,
    )
    shuffle_key = run_keys(config)[1]
    history, start = History(), 0
    config_dict = dataclasses.asdict(config)
    data = data_fingerprint(images, labels)  # of the images as given (float32), whatever the training dtype
    images = images.astype(config.dtype)
    if test is not None:
        test_images = test_images.astype(config.dtype)
    if checkpoint_path is not None:
        remove_stale_temporaries(checkpoint_path)
    if resume and checkpoint_path is not None and Path(checkpoint_path).is_file():
        # a run may be extended (more epochs); anything else must match
        written = settings_that_matter(_checkpoint_header(Path(checkpoint_path), name="checkpoint_path")["config"])
        wanted = settings_that_matter(config_dict)
        differ = sorted(k for k in wanted.keys() | written.keys() if k != "epochs" and written.get(k) != wanted.get(k))
        if differ:
            raise ValueError(f"`resume`: the checkpoint {checkpoint_path} was written with other {', '.join(differ)}.")
        header, (model, opt_state) = load_checkpoint(checkpoint_path, (model, opt_state))
        if "data" in header and header["data"] != data:  # checkpoints before jamem 0.1.1 have no record
            raise ValueError(
                f"`resume`: the checkpoint {checkpoint_path} was trained on other data ({header['data']}) than "
                f"`train` ({data}): another dataset, split, size or order."
            )
        start, history = header["epoch"], History(header["history"])
    if start == 0:  # on the minibatch the first step will take
        batches = epoch_batches(
            jax.random.fold_in(shuffle_key, 0),
            jnp.asarray(labels),
            batch_size=config.batch_size,
            sampling=config.batch_sampling,
            num_classes=model.num_classes,
        )
        first = np.asarray(batches[0])
        _check_gradient_moves(model, images[first], labels[first], config)

    # every process holds the whole (small) training set, replicated on its devices; each device
    # gathers only its share of every minibatch inside the epoch (`train_epoch`)
    images, labels, model, opt_state = to_global((images, labels, model, opt_state))
    if test is not None:
        test_images, test_labels = to_global((test_images, test_labels))
    writer = is_writer()
    schedule_fn = config.temperature()
    bar = _progress(range(start, config.epochs), total=config.epochs, initial=start, enabled=progress and writer)
    for epoch in bar:
        tic = time.perf_counter()
        temperature = schedule_fn(epoch)
        model, opt_state, loss, train_error = train_epoch(
            model,
            opt_state,
            images,
            labels,
            key=jax.random.fold_in(shuffle_key, epoch),
            temperature=jnp.asarray(temperature, config.dtype),
            optimizer=optimizer,
            batch_size=config.batch_size,
            loss=config.loss,
            loss_power=config.loss_power,
            batch_sampling=config.batch_sampling,
        )
        loss, train_error, finite = to_host((loss, train_error, _all_finite(model)))
        if not (np.isfinite(loss) and finite):
            raise FloatingPointError(
                f"Training diverged at epoch {epoch + 1}: the loss is {float(loss)} or the memories are not finite. "
                f"Nothing of this epoch was written"
                + (f"; {checkpoint_path} still holds the last good state." if checkpoint_path is not None else ".")
            )
        row = {
            "epoch": epoch + 1,
            "loss": float(loss),
            "train_error": float(train_error),
            "test_error": None,
            "temperature": float(temperature),
            "learning_rate": config.learning_rate * config.learning_rate_decay**epoch,
        }
        stopping = deadline is not None and time.time() >= deadline
        last = epoch + 1 == config.epochs or stopping
        if test is not None and ((epoch + 1) % eval_every == 0 or last):
            row["test_error"] = error_rate(model, test_images, test_labels, temperature=temperature)
        row["seconds"] = time.perf_counter() - tic
        history.rows.append(row)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(train=f"{row['train_error']:.4f}", test=_fmt(row["test_error"]), T=f"{temperature:.0f}")
        if writer and checkpoint_path is not None and ((epoch + 1) % checkpoint_every == 0 or last):
            header = {"epoch": epoch + 1, "config": config_dict, "data": data, "history": history.rows}
            save_checkpoint(checkpoint_path, to_host((model, opt_state)), header=header)
        if writer and metrics_path is not None:
            from ..tooling.provenance import save_json

            save_json(metrics_path, {"config": config_dict, "history": history.rows})
        if on_epoch is not None:
            on_epoch(row)
        if stopping:
            break
    if jax.process_count() > 1:  # hand back a model this process can use on its own
        model = jax.tree.map(jnp.asarray, to_host(model))
    return model, history


def _check_gradient_moves(model, images, labels, config: TrainConfig) -> None:
    """Refuse a start whose loss gradient on the first minibatch is exactly zero: no step would move
    a memory, and training would report chance-level error for every epoch.

    Two ways get there. Too cold: beta sum_mu [F(xi . V_alpha) - F(xi . U)] is hundreds for every
    class, tanh saturates and its derivative underflows to 0 in float32 (n = 3 started at T = 60
    instead of the paper's 300, arXiv:1606.01164, App. A). Too hot, or images outside [-1, 1]: every
    rectified term (xi . U / T)^n underflows or is inactive, so every score is 0. Both in `config.dtype`."""
    temperature = config.temperature()(0)
    images, labels = jnp.asarray(images), jnp.asarray(labels)
    (_, scores), grads = eqx.filter_value_and_grad(batch_loss, has_aux=True)(
        model, images, labels, temperature=temperature, loss=config.loss, loss_power=config.loss_power
    )
    if bool(jnp.any(grads.memories != 0)):
        return
    if config.temperature_initial == config.temperature_final:
        name = "`temperature_initial` = `temperature_final`"
    else:
        name = "`temperature_initial`" if config.temperature_ramp_epochs > 0 else "`temperature_final`"
    largest = float(jnp.max(jnp.abs(scores)))
    if largest > (9.0 if config.dtype == "float32" else 19.0):  # where tanh rounds to +-1
        raise ValueError(
            f"{name} {temperature:g} is too low for degree {config.degree}: on the first minibatch the class scores "
            f"beta sum F(.) reach {largest:.3g} in size (beta = 1 / T^n), tanh saturates and the loss gradient is "
            f"exactly zero in {config.dtype}, so training could not move. Start hotter (the paper ramps n = 2, 3 down "
            f"from 300-350, arXiv:1606.01164, App. A)."
        )
    raise ValueError(
        f"{name} {temperature:g}: on the first minibatch every class score is {largest:.3g} and the loss gradient "
        f"is exactly zero, so training could not move: each rectified term (xi . U / T)^{config.degree} is inactive "
        f"or underflows in {config.dtype}. The temperature is too high for degree {config.degree}, or the images are "
        f"not in [-1, 1]."
    )


@eqx.filter_jit
def _all_finite(model):
    return jnp.all(jnp.isfinite(model.memories))


def data_fingerprint(images: np.ndarray, labels: np.ndarray) -> dict:
    """Shape and SHA-256 of a training set, recorded in checkpoints and checked on resume."""
    digest = hashlib.sha256(np.ascontiguousarray(images).tobytes())
    digest.update(np.ascontiguousarray(labels).tobytes())
    return {"images": list(images.shape), "sha256": digest.hexdigest()[:16]}


def _check_split(split, name: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        images, labels = split
    except (TypeError, ValueError) as err:
        raise TypeError(f"`{name}` must be a pair (images, labels).") from err
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim != 2 or images.shape[0] == 0:
        raise ValueError(f"`{name}` images must have shape (P > 0, N), got {images.shape}.")
    if labels.shape != images.shape[:1]:
        raise ValueError(f"`{name}` labels must have shape ({images.shape[0]},), got {labels.shape}.")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        raise ValueError(f"`{name}` labels must be non-negative integers, got dtype {labels.dtype}.")
    if not np.issubdtype(images.dtype, np.floating) or not np.all(np.isfinite(images)):
        raise ValueError(f"`{name}` images must be finite floats in [-1, 1].")
    return images.astype(np.float32), labels.astype(np.int32)


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def _progress(iterable, *, total: int, initial: int, enabled: bool):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, initial=initial, desc="epochs", unit="epoch")


# -- any model with `batch_logits`: softmax cross-entropy with an optax optimiser ------------------


@eqx.filter_jit
def _softmax_epoch(model, opt_state, images, labels, key, optimizer, batch_size):
    num_batches = images.shape[0] // batch_size
    order = jax.random.permutation(key, images.shape[0])[: num_batches * batch_size].reshape(num_batches, batch_size)
    params, static = eqx.partition(model, eqx.is_array)

    def step(carry, idx):
        params, opt_state = carry

        x = jax.lax.with_sharding_constraint(images[idx], data_sharding(axis=0, ndim=2))  # each device its share
        y = jax.lax.with_sharding_constraint(labels[idx], data_sharding(axis=0, ndim=1))

        def objective(p):
            logits = eqx.combine(p, static).batch_logits(x)
            return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))

        value, grads = jax.value_and_grad(objective)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), value

    (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), order)
    return eqx.combine(params, static), opt_state, jnp.mean(losses)


def fit_softmax(
    model,
    train: tuple[np.ndarray, np.ndarray],
    *,
    epochs: int,
    optimizer: optax.GradientTransformation,
    batch_size: int = 100,
    key: PRNGKeyArray,
    progress: bool = True,
):
    """Train any equinox model with `batch_logits(images) -> (B, C)` on softmax cross-entropy
    (e.g. the ReLU MLP baseline); returns (model, per-epoch mean losses). Data-parallel over every
    device of every process, as `fit` is."""
    images, labels = _check_split(train, "train")
    key = check_key(key)
    check_positive_int(epochs, name="epochs")
    if images.shape[0] < batch_size:
        raise ValueError(f"`train` has {images.shape[0]} images, fewer than batch_size={batch_size}.")
    if batch_size % jax.device_count():
        raise ValueError(f"`batch_size` {batch_size} must be a multiple of the {jax.device_count()} devices.")
    opt_state = optimizer.init(eqx.filter(model, eqx.is_array))
    images, labels, model, opt_state = to_global((images, labels, model, opt_state))
    losses = []
    bar = _progress(range(epochs), total=epochs, initial=0, enabled=progress and is_writer())
    for epoch in bar:
        model, opt_state, loss = _softmax_epoch(
            model, opt_state, images, labels, jax.random.fold_in(key, epoch), optimizer, batch_size
        )
        losses.append(float(to_host(loss)))
    if jax.process_count() > 1:
        model = jax.tree.map(jnp.asarray, to_host(model))
    return model, losses
