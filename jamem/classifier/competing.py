"""Unsupervised learning by competing hidden units (Krotov & Hopfield 2019, arXiv:1806.10181).

Hidden unit mu has weights W_mu in R^N and, for an input v, the current

    I_mu = <W_mu, v>_mu = sum_i sgn(W_mu,i) |W_mu,i|^(p-1) v_i

(the inner product in the metric eta_ij = |W_mu,i|^(p-2) delta_ij). The units compete: for each
input the unit with the largest current is pushed toward v (g = 1), the k-th largest is pushed away
(g = -Delta), the others do not learn. Summed over a minibatch,

    dW_mu = sum_v g_mu(v) [ v - I_mu(v) W_mu ],

scaled so that its largest entry is the learning rate. The rule is local (a unit needs only its own
current and the ranking), needs no labels, and a unit that keeps winning on v settles at
W = v / I, where ||W||_p = 1. A supervised top layer on the features relu(I)^n then classifies.
"""

from __future__ import annotations

import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray, Real

from .._checks import (
    as_float_array,
    at_least_float32,
    check_feature_dims,
    check_key,
    check_positive,
    check_positive_int,
    check_writable,
    is_concrete,
)
from .train import _progress, data_fingerprint, load_checkpoint, remove_stale_temporaries, save_checkpoint


def _fingerprint(array: np.ndarray) -> dict:
    """`jamem.train.data_fingerprint` of an unlabelled array (images, or the units' start)."""
    return data_fingerprint(array, np.zeros(0, np.int32))


MAX_POWER = 16.0  # |W|^(p-1) of weights near 1 and p-norms stay finite in float32 well past this


def _check_power(power) -> float:
    power = check_positive(power, name="power")
    if not is_concrete(power):
        raise TypeError("`power` (p of the Lp metric) must be a concrete number, not a traced value.")
    if not 1 <= power <= MAX_POWER:
        raise ValueError(f"`power` (p of the Lp metric) must lie in [1, {MAX_POWER:g}], got {power}.")
    return float(power)


def _check_rule(power, rank, anti_hebbian, num_units):
    """(power, rank, anti_hebbian) checked and converted."""
    power = _check_power(power)
    rank = check_positive_int(rank, name="rank", minimum=2)
    if rank > num_units:
        raise ValueError(f"`rank` must be at most the number of hidden units ({num_units}), got {rank}.")
    return power, rank, float(check_positive(anti_hebbian, name="anti_hebbian", allow_zero=True))


def _check_pair(weights, images):
    weights = as_float_array(weights, name="weights", ndim=2)
    images = as_float_array(images, name="images", ndim=2)
    check_feature_dims(images, weights, state_name="images", memories_name="weights")
    return weights, images


def unit_currents(
    weights: Real[Array | np.ndarray, "K N"], images: Real[Array | np.ndarray, "B N"], power: float
) -> Float[Array, "B K"]:
    """I_mu(v) = sum_i sgn(W_mu,i) |W_mu,i|^(p-1) v_i for every image and unit (arXiv:1806.10181)."""
    weights, images = _check_pair(weights, images)
    return _currents(weights, images, _check_power(power))


def _currents(weights, images, power):
    return images @ (jnp.sign(weights) * jnp.abs(weights) ** (power - 1)).T


def competing_update(
    weights: Real[Array | np.ndarray, "K N"],
    images: Real[Array | np.ndarray, "B N"],
    *,
    power: float = 3.0,
    rank: int = 7,
    anti_hebbian: float = 0.4,
) -> Float[Array, "K N"]:
    """The rule's step for one minibatch, scaled so that its largest entry is 1 (arXiv:1806.10181):

    dW_mu = sum_v g_mu(v) [v - I_mu(v) W_mu],   g = 1 for the strongest unit,
                                                -anti_hebbian for the `rank`-th strongest.
    """
    weights, images = _check_pair(weights, images)
    power, rank, anti_hebbian = _check_rule(power, rank, anti_hebbian, weights.shape[0])
    # float32 at least: half precision overflows the currents and flushes the step's 1e-30 floor
    wide = at_least_float32(jnp.result_type(weights, images))
    step = _update(weights.astype(wide), images.astype(wide), power, rank, anti_hebbian)
    if is_concrete(step) and not bool(jnp.all(jnp.isfinite(step))):
        raise FloatingPointError("The step overflowed float32: lower `power` or rescale `weights`.")
    return step.astype(weights.dtype)


def _update(weights, images, power, rank, anti_hebbian):
    currents = _currents(weights, images, power)
    # The barrier keeps top_k whole: sliced at columns 0 and k-1 straight away, XLA's CPU backend
    # lowers it as a full sort of every row instead of its TopK kernel, 8x slower for K = 2000.
    values, ranked = jax.lax.optimization_barrier(jax.lax.top_k(currents, rank))  # strongest first
    top, kth = ranked[:, 0], ranked[:, -1]
    # sum_v g_mu(v) v and sum_v g_mu(v) I_mu(v), scattered to the two units each image moves
    pulled = jnp.zeros_like(weights).at[top].add(images).at[kth].add(-anti_hebbian * images)
    drag = (
        jnp.zeros(weights.shape[0], weights.dtype).at[top].add(values[:, 0]).at[kth].add(-anti_hebbian * values[:, -1])
    )
    delta = pulled - drag[:, None] * weights
    largest = jnp.max(jnp.abs(delta))
    return delta / jnp.where(largest > 1e-30, largest, 1e-30)  # an all-zero step stays zero


class CompetingUnits(eqx.Module):
    """K hidden units trained by the competing rule (arXiv:1806.10181); acts on one image."""

    weights: Float[Array, "K N"]
    power: float = eqx.field(static=True)

    def __init__(self, *, num_units: int = 2000, num_visible: int = 784, power: float = 3.0, key: PRNGKeyArray):
        num_units = check_positive_int(num_units, name="num_units")
        num_visible = check_positive_int(num_visible, name="num_visible")
        self.power = _check_power(power)
        self.weights = jax.random.normal(check_key(key), (num_units, num_visible))  # the paper's N(0, 1) start

    def currents(self, image: Float[Array, " N"]) -> Float[Array, " K"]:
        image = as_float_array(image, name="image", ndim=1)
        return unit_currents(self.weights, image[None], self.power)[0]

    def p_norms(self) -> Float[Array, " K"]:
        """||W_mu||_p, which the rule drives to 1 for every unit that learns."""
        return jnp.sum(jnp.abs(self.weights) ** self.power, axis=-1) ** (1 / self.power)


@eqx.filter_jit
def _epoch(units, images, key, learning_rate, batch_size, rank, anti_hebbian):
    steps = images.shape[0] // batch_size
    order = jax.random.permutation(key, images.shape[0])[: steps * batch_size].reshape(steps, batch_size)

    def step(weights, idx):
        return weights + learning_rate * _update(weights, images[idx], units.power, rank, anti_hebbian), None

    weights, _ = jax.lax.scan(step, units.weights, order)
    return eqx.tree_at(lambda u: u.weights, units, weights)


def train_competing_units(
    units: CompetingUnits,
    images: Real[Array | np.ndarray, "P N"],
    *,
    epochs: int,
    learning_rate: float = 0.02,
    rank: int = 7,
    anti_hebbian: float = 0.4,
    batch_size: int = 100,
    key: PRNGKeyArray,
    checkpoint_path: str | Path | None = None,
    progress: bool = True,
) -> tuple[CompetingUnits, list[dict]]:
    """Train `units` on `images` (pixels in [0, 1]) with the competing rule, no labels.

    The learning rate decays linearly to 0 over `epochs` (eps = eps0 (1 - epoch / epochs), the
    paper's notebook); epoch e shuffles with `fold_in(key, e)`. With `checkpoint_path` the state is
    written atomically after every epoch and a rerun resumes from it, bit for bit.
    Returns the units and one row per epoch: epoch, learning rate, mean |  ||W||_p - 1 |, seconds.
    """
    if not isinstance(units, CompetingUnits):
        raise TypeError(f"`units` must be CompetingUnits, got {type(units).__name__}.")
    key = check_key(key)
    epochs = check_positive_int(epochs, name="epochs")
    learning_rate = check_positive(learning_rate, name="learning_rate")
    batch_size = check_positive_int(batch_size, name="batch_size")
    _, rank, anti_hebbian = _check_rule(units.power, rank, anti_hebbian, units.weights.shape[0])
    start_weights, images = _check_pair(units.weights, images)
    if images.shape[0] < batch_size:
        raise ValueError(f"`images` holds {images.shape[0]} images, fewer than batch_size={batch_size}.")
    host_images = np.asarray(images)
    if host_images.min() < 0 or host_images.max() > 1:
        raise ValueError(
            f"`images` must have pixels in [0, 1] (the paper's inputs), got [{host_images.min()}, "
            f"{host_images.max()}]; map jamem.data's [-1, 1] pixels with (x + 1) / 2."
        )
    settings = dict(
        epochs=epochs, learning_rate=learning_rate, rank=rank, anti_hebbian=anti_hebbian, batch_size=batch_size,
        power=units.power, key=np.asarray(jax.random.key_data(key)).tolist(),
        units=_fingerprint(np.asarray(start_weights)), data=_fingerprint(host_images),
    )  # fmt: skip
    history, start = [], 0
    if checkpoint_path is not None:
        check_writable(checkpoint_path, name="checkpoint_path")
        checkpoint_path = Path(checkpoint_path)
        remove_stale_temporaries(checkpoint_path)
        if checkpoint_path.is_file():
            header, units = load_checkpoint(checkpoint_path, units)
            if header.get("settings") != settings:
                raise ValueError(
                    f"The checkpoint {checkpoint_path} was written with other settings or data "
                    f"({header.get('settings')}), not {settings}; delete it to start afresh."
                )
            history, start = header["history"], len(header["history"])
    for epoch in _progress(range(start, epochs), total=epochs, initial=start, enabled=progress):
        tic = time.perf_counter()
        rate = learning_rate * (1 - epoch / epochs)
        # the rate as an array: a Python float would be static under filter_jit, one compile per epoch
        units = _epoch(units, images, jax.random.fold_in(key, epoch), jnp.float32(rate), batch_size, rank, anti_hebbian)
        if not bool(jnp.all(jnp.isfinite(units.weights))):
            raise FloatingPointError(f"The weights became non-finite in epoch {epoch + 1}; lower `learning_rate`.")
        deviation = float(jnp.mean(jnp.abs(units.p_norms() - 1)))
        seconds = time.perf_counter() - tic
        history.append(dict(epoch=epoch + 1, learning_rate=rate, mean_p_norm_deviation=deviation, seconds=seconds))
        if checkpoint_path is not None:
            save_checkpoint(checkpoint_path, units, header=dict(settings=settings, history=history))
    return units, history


class PowerFeatureClassifier(eqx.Module):
    """A supervised top layer on frozen competing units (arXiv:1806.10181):
    logits = beta S h, h = (relu(I(v)) / max_mu relu(I_mu(v)))^n. Train it with
    `jamem.train.fit_softmax`; the units get no gradient, so they stay fixed under any optimiser
    that moves parameters only along gradients (Adam, SGD; one with weight decay, such as adamw,
    would shrink them: mask them with `optax.masked`). Dividing by the image's largest current (our
    choice) keeps h in [0, 1] whatever the scale of the units, so one `beta` suits any n."""

    units: CompetingUnits
    output: Float[Array, "C K"]
    degree: float = eqx.field(static=True)
    beta: float = eqx.field(static=True)

    def __init__(
        self,
        units: CompetingUnits,
        *,
        num_classes: int = 10,
        degree: float = 4.5,
        beta: float = 1.0,
        key: PRNGKeyArray,
    ):
        if not isinstance(units, CompetingUnits):
            raise TypeError(f"`units` must be CompetingUnits, got {type(units).__name__}.")
        num_classes = check_positive_int(num_classes, name="num_classes", minimum=2)
        self.degree = check_positive(degree, name="degree")
        if not self.degree >= 1:
            # h^n with n < 1 has an infinite slope at h = 0 (every unit below the top one can be
            # silent), so the input gradient, which attacks need, would be NaN
            raise ValueError(f"`degree` must be at least 1, got {degree}.")
        self.beta = check_positive(beta, name="beta")
        self.units = units
        scale = 1 / np.sqrt(units.weights.shape[0])
        self.output = scale * jax.random.normal(check_key(key), (num_classes, units.weights.shape[0]))

    def features(self, images: Float[Array, "B N"]) -> Float[Array, "B K"]:
        weights = jax.lax.stop_gradient(self.units.weights)  # unsupervised units are not trained here
        active = jax.nn.relu(unit_currents(weights, images, self.units.power))
        largest = jnp.max(active, axis=-1, keepdims=True)
        return (active / jnp.where(largest > 0, largest, 1.0)) ** self.degree

    def batch_logits(self, images: Float[Array, "B N"]) -> Float[Array, "B C"]:
        return self.beta * self.features(images) @ self.output.T

    def __call__(self, image: Float[Array, " N"]) -> Float[Array, " C"]:
        return self.batch_logits(as_float_array(image, name="image", ndim=1)[None])[0]
