"""The optimiser and schedules of Krotov & Hopfield 2016 (arXiv:1606.01164, App. A) in optax.

The update of arXiv:1606.01164, App. A, per minibatch, for every memory mu:

    V^mu   <- p V^mu - dC/dxi^mu
    xi^mu  <- clip( xi^mu + eps(t) V^mu / max_J |V^mu_J| , -1, 1 ),   eps(t) = eps0 f^t (t in epochs)

is `optax.trace` (momentum), a per-memory max-normalisation, a learning rate and a projection onto
the box [-1, 1]: `dense_am_optimizer` chains them. Any optax optimiser can be used instead.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from .._checks import check_positive, check_positive_int


def normalize_by_row_max() -> optax.GradientTransformation:
    """Divide each row of every update by its largest absolute entry (a row is one memory).

    1-D and scalar leaves are divided by their overall max. Rows that are all zero stay zero.
    """

    def update_fn(updates, state, params=None):
        del params

        def normalise(u):
            axis = -1 if u.ndim >= 2 else None
            scale = jnp.max(jnp.abs(u), axis=axis, keepdims=True)
            return jnp.where(scale > 0, u / jnp.where(scale > 0, scale, 1.0), 0.0)

        return jax.tree.map(normalise, updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def keep_params_in_box(*, lower: float | int = -1.0, upper: float | int = 1.0) -> optax.GradientTransformation:
    """Turn updates u into clip(params + u, lower, upper) - params: a projection after the step."""
    if not lower < upper:
        raise ValueError(f"`lower` must be below `upper`, got {lower} and {upper}.")

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("keep_params_in_box needs `params` in `update(updates, state, params)`.")
        return jax.tree.map(lambda u, p: jnp.clip(p + u, lower, upper) - p, updates, params), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def epoch_decay(*, initial: float | int, decay: float | int, steps_per_epoch: int) -> optax.Schedule:
    """eps(t) = initial * decay^epoch, constant within an epoch (arXiv:1606.01164, App. A: decay f = 0.998)."""
    check_positive(initial, name="initial")
    if not 0 < decay <= 1:
        raise ValueError(f"`decay` must lie in (0, 1], got {decay}.")
    check_positive_int(steps_per_epoch, name="steps_per_epoch")
    return optax.exponential_decay(
        init_value=initial, transition_steps=steps_per_epoch, decay_rate=decay, staircase=True
    )


def dense_am_optimizer(
    learning_rate: float | optax.Schedule, *, momentum: float | int = 0.9, clip: float | int = 1.0
) -> optax.GradientTransformation:
    """The update of arXiv:1606.01164, App. A: momentum, per-memory max-normalisation, step, clip to [-clip, clip].

    Args:
        learning_rate: eps, a float or an optax schedule of the step count (see `epoch_decay`).
        momentum: p in V <- p V - dC/dxi (the paper: 0.6-0.95).
        clip: memories are kept in [-clip, clip] (the paper: 1).
    """
    if not 0 <= momentum < 1:
        raise ValueError(f"`momentum` must lie in [0, 1), got {momentum}.")
    check_positive(clip, name="clip")
    return optax.chain(
        optax.trace(decay=momentum),
        normalize_by_row_max(),
        optax.scale_by_learning_rate(learning_rate),
        keep_params_in_box(lower=-clip, upper=clip),
    )


class TemperatureRamp(NamedTuple):
    """T(epoch): linear from `initial` to `final` over `ramp_epochs`, then constant (arXiv:1606.01164, App. A).

    beta = 1 / T^n. Large n uses a constant T (initial == final, e.g. 550); small n ramps,
    e.g. 300 -> 60 over 200 epochs.
    """

    initial: float
    final: float
    ramp_epochs: int = 200

    def __call__(self, epoch):
        check_positive(self.initial, name="initial")
        check_positive(self.final, name="final")
        if self.ramp_epochs <= 0:
            return self.final
        fraction = min(max(epoch / self.ramp_epochs, 0.0), 1.0)
        return self.initial + fraction * (self.final - self.initial)
