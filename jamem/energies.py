"""Energies of associative memories as pure functions `energy(state, memories) -> scalar`.

Each energy is a small final `equinox.Module` holding only its hyperparameters; calling it is a
pure function of `(state, memories)`, so it composes with `jax.grad`, `jax.vmap` and `jax.jit`
(memories are passed in, never closed over, so jit does not bake them in as constants). Any plain
function with the same signature is an energy as far as `jamem.retrieve` is concerned.

States are single examples (shape `(N,)`); batch with `jax.vmap`.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._checks import check_degree, check_positive
from .separation import AbstractSeparation, as_separation, overlap_scale


class AbstractEnergy(eqx.Module):
    """An energy E(state, memories) -> scalar."""

    def __call__(self, state: Float[Array, " N"], memories: Float[Array, "K N"]) -> Float[Array, ""]:
        raise NotImplementedError


class DenseEnergy(AbstractEnergy):
    """Dense Associative Memory energy (Krotov & Hopfield 2016, arXiv:1606.01164, eq. 2; A1):

        E(sigma) = - sum_mu F(xi^mu . sigma).

    Args:
        separation: F, e.g. `Power(3)`, `RectifiedPower(20)`, `Exponential()` or any callable.
        normalise: if True, return `- sum_mu F.scaled(xi^mu . sigma, s)` with s the power of two
            at or above max_mu |xi^mu|_1: for power F this is E / s^n, the same landscape up to a
            positive factor, finite in float32 at n = 30. The retrieval rules always use the
            rescaled form internally.
    """

    separation: AbstractSeparation
    normalise: bool = eqx.field(static=True, default=False)

    def __init__(self, separation, *, normalise: bool = False):
        self.separation = as_separation(separation)
        self.normalise = bool(normalise)

    def __call__(self, state, memories):
        overlaps = memories @ state
        if self.normalise:
            return -jnp.sum(self.separation.scaled(overlaps, overlap_scale(memories)))
        return -jnp.sum(self.separation(overlaps))


class LogSumExpEnergy(AbstractEnergy):
    """Modern Hopfield energy (Ramsauer et al. 2020, arXiv:2008.02217; Krotov & Hopfield 2020
    model B; I1, C4):

        E(x) = - (1/beta) log sum_mu exp(beta xi^mu . x) + 1/2 x . x.

    Its gradient is x - Xi^T softmax(beta Xi x), so one gradient step of size 1 is the modern
    Hopfield update x <- Xi^T softmax(beta Xi x). Computed in the stable log-sum-exp form.

    Args:
        beta: inverse temperature.
        chunk_size: if set (and dividing K), the memories are visited in chunks of this many
            rows inside a `lax.map`, with each chunk's scores recomputed in the backward pass
            (`jax.checkpoint`): a batch of queries against 10^6 memories never holds the full
            (batch, K) score matrix.
    """

    beta: float = eqx.field(static=True, default=1.0)
    chunk_size: int | None = eqx.field(static=True, default=None)

    def __init__(self, beta: float = 1.0, *, chunk_size: int | None = None):
        self.beta = check_positive(beta, name="beta")
        self.chunk_size = None if chunk_size is None else check_degree(chunk_size, name="chunk_size")

    def __call__(self, state, memories):
        num = memories.shape[0]
        if self.chunk_size is None or self.chunk_size >= num:
            lse = jax.nn.logsumexp(self.beta * (memories @ state))
        else:
            if num % self.chunk_size:
                raise ValueError(f"`chunk_size` ({self.chunk_size}) must divide the number of memories ({num}).")
            chunks = memories.reshape(num // self.chunk_size, self.chunk_size, memories.shape[1])
            per_chunk = jax.checkpoint(lambda m: jax.nn.logsumexp(self.beta * (m @ state)))
            lse = jax.nn.logsumexp(jax.lax.map(per_chunk, chunks))
        return -lse / self.beta + 0.5 * jnp.dot(state, state)


class GaussianKernelEnergy(AbstractEnergy):
    """Gaussian-kernel (distance) log-sum-exp energy used by DrDAM (Hoover et al. 2024,
    arXiv:2410.24153; F1):

        E(v) = - (1/beta) log sum_mu exp(- beta/2 |v - xi^mu|^2).
    """

    beta: float = eqx.field(static=True, default=1.0)

    def __init__(self, beta: float = 1.0):
        self.beta = check_positive(beta, name="beta")

    def __call__(self, state, memories):
        sq_dist = jnp.sum((memories - state[None, :]) ** 2, axis=-1)
        return -jax.nn.logsumexp(-0.5 * self.beta * sq_dist) / self.beta


class LogSumReLUEnergy(AbstractEnergy):
    """Epanechnikov (log-sum-ReLU) energy (Hoover et al. 2025, arXiv:2506.10801; G1):

        E(q) = - (1/beta) log( sum_mu ReLU(1 - beta/2 |q - xi^mu|^2) + eps ).

    Each memory's kernel has compact support of radius sqrt(2 / beta); memories further apart
    than that are exact minima, overlapping supports create extra (emergent) minima.
    """

    beta: float = eqx.field(static=True, default=1.0)
    eps: float = eqx.field(static=True, default=1e-6)

    def __init__(self, beta: float = 1.0, eps: float = 1e-6):
        self.beta = check_positive(beta, name="beta")
        self.eps = check_positive(eps, name="eps")

    def __call__(self, state, memories):
        sq_dist = jnp.sum((memories - state[None, :]) ** 2, axis=-1)
        kernel = jax.nn.relu(1.0 - 0.5 * self.beta * sq_dist)
        return -jnp.log(jnp.sum(kernel) + self.eps) / self.beta
