"""Clustering as associative memory (ClAM: Saha, Krotov, Zaki & Ram, ICML 2023, arXiv:2306.03209).

The cluster prototypes are the memories rho_mu of the Gaussian-kernel energy

    E(x) = - (1/beta) log sum_mu exp(- beta/2 |x - rho_mu|^2)        (`jamem.GaussianKernelEnergy`).

A point settles by `steps` gradient steps of size eta through `jamem.retrieve`,

    x <- x - eta grad E(x) = (1 - eta) x + eta sum_mu softmax_mu(- beta/2 |x - rho|^2) rho_mu,

and belongs to the prototype it settles nearest. The prototypes are learned end to end, by
gradient descent through the dynamics, on the reconstruction loss

    L = mean_x |x - x_T|^2.

With eta = 1, one step and beta -> infinity, x_1 is x's nearest prototype and L is the k-means
objective: ClAM is a differentiable k-means whose assignment is where a point's dynamics take it.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, Int, PRNGKeyArray, Real

from .._checks import (
    as_float_array,
    at_least_float32,
    check_feature_dims,
    check_key,
    check_magnitude,
    check_positive,
    check_positive_int,
)
from ..core.dynamics import GradientDescent, retrieve
from ..core.energies import GaussianKernelEnergy, check_kernel_beta


def _check(memories, points, beta, steps, step_size):
    memories = as_float_array(memories, name="memories", ndim=2)
    points = as_float_array(points, name="points", ndim=2)
    check_feature_dims(points[0], memories, state_name="points", memories_name="memories")
    check_magnitude(memories, name="memories")
    check_magnitude(points, name="points")
    check_kernel_beta(beta)
    check_positive_int(steps, name="steps")
    check_positive(step_size, name="step_size")
    return memories, points


def _settle(memories, points, beta, steps, step_size):
    energy, solver = GaussianKernelEnergy(beta), GradientDescent(step_size)
    return jax.vmap(lambda x: retrieve(energy, x, memories, solver=solver, steps=steps, tol=None).state)(points)


def settle(
    memories: Float[Array, "K N"],
    points: Float[Array, "B N"],
    *,
    beta: float,
    steps: int = 5,
    step_size: float = 1.0,
) -> Float[Array, "B N"]:
    """x_T for every point: `steps` gradient steps of size `step_size` on the Gaussian-kernel energy."""
    memories, points = _check(memories, points, beta, steps, step_size)
    return _settle(memories, points, beta, steps, step_size)


def reconstruction_loss(
    memories: Float[Array, "K N"],
    points: Float[Array, "B N"],
    *,
    beta: float,
    steps: int = 5,
    step_size: float = 1.0,
) -> Float[Array, ""]:
    """L = mean_x |x - x_T|^2, differentiable in the memories (arXiv:2306.03209)."""
    memories, points = _check(memories, points, beta, steps, step_size)
    return _loss(memories, points, beta, steps, step_size)


def _loss(memories, points, beta, steps, step_size):
    return jnp.mean(jnp.sum((points - _settle(memories, points, beta, steps, step_size)) ** 2, axis=-1))


def assign(
    memories: Float[Array, "K N"],
    points: Float[Array, "B N"],
    *,
    beta: float,
    steps: int = 5,
    step_size: float = 1.0,
) -> Int[Array, " B"]:
    """The cluster of every point: the prototype nearest to where the point settles."""
    memories, points = _check(memories, points, beta, steps, step_size)
    settled = _settle(memories, points, beta, steps, step_size)
    return jnp.argmin(_squared_distances(settled, memories), axis=-1)


def squared_distances(
    points: Real[Array | np.ndarray, "B N"], memories: Real[Array | np.ndarray, "K N"]
) -> Float[Array, "B K"]:
    """|x - rho_mu|^2 for every point and prototype, in float32 at least (float16 overflows past 256)."""
    points = as_float_array(points, name="points", ndim=2)
    memories = as_float_array(memories, name="memories", ndim=2)
    check_feature_dims(points[0], memories, state_name="points", memories_name="memories")
    check_magnitude(points, name="points")
    check_magnitude(memories, name="memories")
    return _squared_distances(points, memories)


@jax.jit
def _squared_distances(points, memories):
    # The differences themselves, not |x|^2 - 2 x . rho + |rho|^2: that form's float32 error grows
    # with the norms and lost distances of 0.1 at 1e4 from the prototypes' mean. XLA fuses the
    # subtract, square and sum, so the (B, K, N) differences are never stored.
    wide = at_least_float32(jnp.result_type(points, memories))
    return jnp.sum((points[:, None, :].astype(wide) - memories[None, :, :].astype(wide)) ** 2, axis=-1)


def kmeans_objective(
    memories: Real[Array | np.ndarray, "K N"], points: Real[Array | np.ndarray, "B N"]
) -> Float[Array, ""]:
    """mean_x min_mu |x - rho_mu|^2, the limit of `reconstruction_loss` (eta = 1, one step, beta -> inf)."""
    return jnp.mean(jnp.min(squared_distances(points, memories), axis=-1))


def fit_prototypes(
    points: Real[Array | np.ndarray, "P N"],
    *,
    num_clusters: int,
    beta: float,
    steps: int = 5,
    step_size: float = 1.0,
    epochs: int = 20,
    batch_size: int = 256,
    learning_rate: float = 1e-2,
    key: PRNGKeyArray,
) -> tuple[Float[Array, "K N"], list[float]]:
    """ClAM prototypes for `points`: start at `num_clusters` distinct random points, then Adam on
    `reconstruction_loss` over shuffled minibatches. Returns the prototypes and the loss over all
    points after each epoch (the first entry: at the start)."""
    points = as_float_array(points, name="points", ndim=2)
    num_clusters = check_positive_int(num_clusters, name="num_clusters")
    if num_clusters > points.shape[0]:
        raise ValueError(f"`num_clusters` ({num_clusters}) exceeds the number of points ({points.shape[0]}).")
    epochs = check_positive_int(epochs, name="epochs")
    batch_size = min(check_positive_int(batch_size, name="batch_size"), points.shape[0])
    check_positive(learning_rate, name="learning_rate")
    key_init, key_order = jax.random.split(check_key(key))
    memories = points[jax.random.choice(key_init, points.shape[0], (num_clusters,), replace=False)]
    _check(memories, points, beta, steps, step_size)
    optimizer = optax.adam(learning_rate)
    settings = (float(beta), int(steps), float(step_size))

    @eqx.filter_jit
    def epoch(memories, opt_state, order):
        def step(carry, idx):
            memories, opt_state = carry
            grads = jax.grad(_loss)(memories, points[idx], *settings)
            updates, opt_state = optimizer.update(grads, opt_state, memories)
            return (optax.apply_updates(memories, updates), opt_state), None

        return jax.lax.scan(step, (memories, opt_state), order)[0]

    full_loss = jax.jit(lambda m: _loss(m, points, *settings))
    opt_state = optimizer.init(memories)
    losses = [float(full_loss(memories))]
    batches = points.shape[0] // batch_size
    for e in range(epochs):
        order = jax.random.permutation(jax.random.fold_in(key_order, e), points.shape[0])
        memories, opt_state = epoch(memories, opt_state, order[: batches * batch_size].reshape(batches, batch_size))
        losses.append(float(full_loss(memories)))
        if not np.isfinite(losses[-1]):
            raise FloatingPointError(f"The loss became non-finite in epoch {e + 1}; lower `learning_rate`.")
    return memories, losses
