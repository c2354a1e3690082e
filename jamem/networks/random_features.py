"""Dense associative memory with random features (DrDAM; Hoover et al. NeurIPS 2024,
arXiv:2410.24153).

The Gaussian-kernel log-sum-exp energy (arXiv:2410.24153, `jamem.energies.GaussianKernelEnergy`)

    E(v) = - (1/beta) log sum_mu exp(- beta/2 |v - xi^mu|^2)

needs all K memories at every query. Writing the kernel as an expectation over random features,

    exp(- |a - b|^2 / 2) = E_w[ phi_w(a) . phi_w(b) ],   w ~ Normal(0, I),

and averaging over Y sampled rows W (arXiv:2410.24153) gives

    sum_mu exp(- beta/2 |v - xi^mu|^2) ~= Phi(sqrt(beta) v) . T,   T = sum_mu Phi(sqrt(beta) xi^mu),

so the memories are kept as one vector T whose size depends on Y, never on K: adding a memory adds
its features to T and changes no shape. The approximate energy and its `jax.grad` then cost
O(Y N) per query instead of O(K N). The error of the kernel sum falls like 1/sqrt(Y) (arXiv:2410.24153).

Two feature maps (both unbiased for the Gaussian kernel):

- "fourier" (arXiv:2410.24153, random Fourier features): Phi(a) = Y^(-1/2) [cos(W a), sin(W a)], 2Y numbers.
  Far from every memory the estimate of the (tiny) kernel sum can be <= 0; the logarithm is then
  taken of the smallest positive float instead (the energy is flat there).
- "positive" (positive random features, as in Performer's FAVOR+): Phi(a) = Y^(-1/2)
  exp(W a - |a|^2), Y numbers, always > 0; its variance grows quickly with beta |a|^2, and past
  beta |xi|^2 = 40 the product of two feature vectors falls out of float32's normal range
  (exp(-80) ~ 1e-35), so that even at a stored memory the estimate underflows to the floor below:
  `add_memories` refuses such memories.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .._checks import as_float_array, check_key, check_positive_int, is_concrete
from ..core.energies import AbstractEnergy, check_kernel_beta

_KINDS = ("fourier", "positive")
POSITIVE_FEATURES_LIMIT = 40.0  # the largest beta |xi|^2 positive features keep in float32 (module docstring)


class RandomFeatureMemory(AbstractEnergy):
    """A Gaussian-kernel associative memory stored as random features (DrDAM, arXiv:2410.24153).

    Build it empty and add memories (`add_memories` returns a new module; the sizes never
    change), then call it on a query for the approximate energy:

        rf = RandomFeatureMemory(dim=N, num_features=Y, beta=beta, key=key).add_memories(xi)
        rf(v)                  # ~= GaussianKernelEnergy(beta)(v, xi)
        rf.gradient(v)         # jax.grad of the approximate energy

    Acts on one query (batch with `jax.vmap`); works under `jax.jit` as an argument.

    Attributes:
        projection: W, shape (Y, N), rows drawn from Normal(0, I).
        memory: T = sum_mu Phi(sqrt(beta) xi^mu), shape (2Y,) for "fourier", (Y,) for "positive".
        num_stored: how many memories have been added (a count; T alone defines the energy).
        beta: inverse temperature of the kernel.
        kind: "fourier" or "positive".
    """

    projection: Float[Array, "Y N"]
    memory: Float[Array, " F"]
    num_stored: Int[Array, ""]
    beta: float = eqx.field(static=True)
    kind: str = eqx.field(static=True)

    def __init__(
        self,
        dim: int,
        num_features: int,
        *,
        beta: float = 1.0,
        kind: str = "fourier",
        key: PRNGKeyArray,
        dtype=jnp.float32,
    ):
        """
        Args:
            dim: N, the number of features of a state.
            num_features: Y, the number of random projections.
            beta: inverse temperature of the Gaussian kernel, > 0.
            kind: "fourier" (arXiv:2410.24153) or "positive".
            key: PRNG key for W (keyword-only; same key, same features).
            dtype: floating dtype of W and T.
        """
        dim = check_positive_int(dim, name="dim")
        num_features = check_positive_int(num_features, name="num_features")
        if kind not in _KINDS:
            raise ValueError(f"`kind` must be one of {_KINDS}, got {kind!r}.")
        key = check_key(key)
        self.beta = check_kernel_beta(beta)
        self.kind = kind
        self.projection = jax.random.normal(key, (num_features, dim), dtype)
        width = 2 * num_features if kind == "fourier" else num_features
        self.memory = jnp.zeros((width,), dtype)
        self.num_stored = jnp.zeros((), jnp.int32)

    @property
    def num_features(self) -> int:
        return self.projection.shape[0]

    def features(self, x: Float[Array, " N"]) -> Float[Array, " F"]:
        """Phi(sqrt(beta) x), so that features(v) . features(xi) ~= exp(- beta/2 |v - xi|^2)."""
        a = jnp.sqrt(self.beta) * x
        proj = self.projection @ a
        scale = 1.0 / jnp.sqrt(jnp.asarray(self.num_features, x.dtype))
        if self.kind == "fourier":
            return scale * jnp.concatenate([jnp.cos(proj), jnp.sin(proj)])
        return scale * jnp.exp(proj - jnp.dot(a, a))

    def add_memories(self, memories: Float[Array, "K N"]) -> RandomFeatureMemory:
        """Return a copy with T <- T + sum_mu Phi(sqrt(beta) xi^mu); shapes are unchanged."""
        memories = as_float_array(memories, name="memories", ndim=2)
        if memories.shape[1] != self.projection.shape[1]:
            raise ValueError(
                f"`memories` has {memories.shape[1]} features but this memory was built for "
                f"dim={self.projection.shape[1]}."
            )
        memories = memories.astype(self.memory.dtype)
        if is_concrete(memories):
            if not np.all(np.isfinite(np.asarray(memories))):
                raise ValueError(f"`memories` overflow this memory's dtype {self.memory.dtype}.")
            largest = self.beta * float(np.max(np.sum(np.asarray(memories, np.float64) ** 2, axis=-1)))
            if self.kind == "positive" and largest > POSITIVE_FEATURES_LIMIT:
                raise ValueError(
                    f"`memories` reach beta |xi|^2 = {largest:.3g}, past the {POSITIVE_FEATURES_LIMIT:g} where "
                    "positive features underflow float32 (the estimate would be 0 even at a stored memory): use "
                    "kind='fourier', a smaller beta, or centred data."
                )
        added = jnp.sum(jax.vmap(self.features)(memories), axis=0)
        return eqx.tree_at(
            lambda m: (m.memory, m.num_stored),
            self,
            (self.memory + added, self.num_stored + memories.shape[0]),
        )

    def kernel_sum(self, state: Float[Array, " N"]) -> Float[Array, ""]:
        """Phi(sqrt(beta) v) . T, the estimate of sum_mu exp(- beta/2 |v - xi^mu|^2)."""
        if jnp.shape(state) != self.projection.shape[1:]:  # shapes only: also under jit and vmap
            raise ValueError(
                f"`state` must be one point of shape ({self.projection.shape[1]},) (this memory's dim), "
                f"got shape {tuple(jnp.shape(state))}; batch with jax.vmap."
            )
        return jnp.dot(self.features(state), self.memory)

    def __call__(self, state: Float[Array, " N"], params=None) -> Float[Array, ""]:
        """The approximate energy - (1/beta) log(Phi(sqrt(beta) v) . T) (arXiv:2410.24153): a `jamem` energy
        whose parameters are its own (`params` is unused), so `jamem.retrieve(rf, v)` descends it."""
        del params
        total = self.kernel_sum(state)
        tiny = jnp.finfo(total.dtype).tiny
        return -jnp.log(jnp.maximum(total, tiny)) / self.beta

    def gradient(self, state: Float[Array, " N"]) -> Float[Array, " N"]:
        """grad_v of the approximate energy (by `jax.grad`)."""
        return jax.grad(self.__call__)(state)
