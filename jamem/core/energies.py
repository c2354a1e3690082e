"""Energies of associative memories as pure functions `energy(state, params) -> scalar`.

Each energy is a small final `equinox.Module` holding only its hyperparameters; calling it is a
pure function of `(state, params)` (for the memory energies `params` is the (K, N) matrix of
memories), so it composes with `jax.grad`, `jax.vmap` and `jax.jit` (the parameters are passed
in, never closed over, so jit does not bake them in as constants). Any plain function with the
same signature is an energy as far as `jamem.retrieve` is concerned.

States are single examples; batch with `jax.vmap`.
"""

from __future__ import annotations

import abc
import functools

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._checks import at_least_float32, check_positive, check_positive_int, is_concrete
from .separation import AbstractSeparation, as_separation, gap_sign


def overlaps(state: Float[Array, " N"], memories: Float[Array, "K N"]) -> Float[Array, " K"]:
    """xi^mu . x for every memory mu.

    Written x Xi^T rather than Xi x: the same numbers, but under `jax.vmap` over states the batch
    becomes the leading axis of the (B, K) scores and both matmuls of a retrieval step keep
    row-major operands, which XLA's CPU backend runs 1.1x (K = 10^3) to 1.5x (K = 10^5) faster
    for 1024 queries (an unchunked LSE retrieval, benchmarks/retrieval_peers.py).
    """
    return state @ memories.T


class AbstractEnergy(eqx.Module):
    """An energy E(state, params) -> scalar. Subclasses implement `__call__`; they may give their
    own neuron dynamics (`velocity`), a fast path for the binary rules (`binary_cache`,
    `binary_gap_sign`, `binary_cache_update`) and a check of their `params`."""

    @abc.abstractmethod
    def __call__(self, state, params) -> Float[Array, ""]:
        """The energy of `state` given `params`."""

    @property
    def low_precision_ok(self) -> bool:
        """Whether float16 / bfloat16 states and parameters give correct values (`jamem.retrieve`
        refuses them otherwise)."""
        return False

    def check_params(self, params) -> None:
        """Raise a clear error if `params` is not what this energy takes (before any work)."""

    def velocity(self, state, params):
        """The neuron dynamics dx/dt that `jamem.EulerFlow` integrates: - grad E (gradient flow)
        unless an energy written over activations gives - dE/dg (Krotov 2021, arXiv:2107.06446),
        which also never increases E."""
        return jax.tree.map(jnp.negative, jax.grad(self)(state, params))

    def value_and_velocity(self, state, params):
        """(E(state), velocity(state)), sharing the work where the two coincide."""
        if type(self).velocity is AbstractEnergy.velocity:
            value, grad = jax.value_and_grad(self)(state, params)
            return value, jax.tree.map(jnp.negative, grad)
        return self(state, params), self.velocity(state, params)

    def binary_cache(self, state, params):
        """What the binary rules keep from one neuron's decision to the next (default nothing)."""
        del state, params
        return None

    def binary_gap_sign(self, state, params, i, cache) -> Float[Array, ""]:
        """Sign of E(sigma_i = -1) - E(sigma_i = +1) in {-1, 0, +1}, the decision of the binary
        rules for neuron i (default: both energies evaluated)."""
        del cache
        return brute_force_gap_sign(self, state, params, i)

    def binary_cache_update(self, cache, params, i, delta):
        """The cache after neuron i changed by `delta` (default: unchanged)."""
        del params, i, delta
        return cache


def brute_force_gap_sign(energy, state, params, i) -> Float[Array, ""]:
    """Sign of E(sigma_i = -1) - E(sigma_i = +1), both evaluated (any energy, any function)."""
    return jnp.sign(energy(state.at[i].set(-1.0), params) - energy(state.at[i].set(1.0), params))


class DenseEnergy(AbstractEnergy):
    """Dense Associative Memory energy (Krotov & Hopfield 2016, arXiv:1606.01164, eq. 2):

        E(sigma) = - sum_mu F(xi^mu . sigma).

    Args:
        separation: F, e.g. `Power(3)`, `RectifiedPower(20)`, `Exponential()` or any callable.
        log_domain: if True, return instead

            E_log(sigma) = - sign(S) log(1 + |S|),   S = sum_mu F(xi^mu . sigma) = -E,

            a strictly increasing function of E: the same minima, the same order of any two
            states and the same descent directions (grad E_log = grad E / (1 + |E|)), computed
            from log |F| without forming F, so it stays finite in float32 and float16 for any
            degree (with F = x^30 at N = 784, E itself is about -10^86 and overflows float32 to
            -inf; `jamem.retrieve` refuses such an energy with an error pointing here).

    The binary retrieval rules never need E's value: they decide from `gap_sign`, exactly at any
    degree, in either form.

    Example:
        >>> import jax.numpy as jnp, jamem as jm
        >>> xi = jnp.array([[1.0, -1.0, 1.0], [1.0, 1.0, 1.0]])
        >>> float(jm.DenseEnergy(jm.Power(2))(xi[0], xi))  # -(3^2 + 1^2)
        -10.0
        >>> round(float(jm.DenseEnergy(jm.Power(2), log_domain=True)(xi[0], xi)), 4)  # -log(1 + 10)
        -2.3979
    """

    separation: AbstractSeparation
    log_domain: bool = eqx.field(static=True, default=False)

    def __init__(self, separation, *, log_domain: bool = False):
        self.separation = as_separation(separation)
        if not isinstance(log_domain, bool):
            raise TypeError(f"`log_domain` must be True or False, got {log_domain!r}.")
        self.log_domain = log_domain

    @property
    def low_precision_ok(self) -> bool:
        return self.log_domain

    def check_params(self, params):
        if not hasattr(params, "ndim") or params.ndim != 2:
            raise TypeError(f"`params` must be the (K, N) memories for a DenseEnergy, got {type(params).__name__}.")

    def binary_cache(self, state, params):
        # the overlaps xi . sigma, updated per flip (O(K) per neuron), and the scale of the terms
        return params @ state, self.separation.memories_reference(params)

    def binary_gap_sign(self, state, params, i, cache):
        cached, reference = cache
        column, current = params[:, i], state[i]
        # the overlaps with sigma_i = +1 and -1, written so that XLA fuses them into the
        # reductions instead of materialising a (K,) "rest" array
        plus = cached + column * (1.0 - current)
        minus = cached - column * (1.0 + current)
        return gap_sign(self.separation, plus, minus, reference=reference)

    def binary_cache_update(self, cache, params, i, delta):
        cached, reference = cache
        return cached + params[:, i] * delta, reference

    def __call__(self, state, memories):
        scores = overlaps(state, memories)
        if not self.log_domain:
            return -jnp.sum(self.separation(scores))
        # where F = 0 (log -inf) evaluate log |F| at a harmless point, so its gradient is 0, not NaN
        signs, logs = self.separation.log_abs(jax.lax.stop_gradient(scores))
        present = jnp.isfinite(logs) & (signs != 0)
        signs, logs = self.separation.log_abs(jnp.where(present, scores, 1.0))
        return -signed_log1p_sum(jnp.where(present, signs, 0.0), jnp.where(present, logs, -jnp.inf))


def signed_log1p_sum(signs: Float[Array, " K"], logs: Float[Array, " K"]) -> Float[Array, ""]:
    """sign(S) log(1 + |S|) for S = sum_k signs_k exp(logs_k), without forming exp(logs_k).

    Terms with log -inf (F = 0) contribute nothing and give a zero, not NaN, gradient.
    """
    present = jnp.isfinite(logs) & (signs != 0)
    safe_logs = jnp.where(present, logs, 0.0)
    top = jax.lax.stop_gradient(jnp.max(jnp.where(present, safe_logs, -jnp.inf), initial=-jnp.inf))
    top = jnp.where(jnp.isfinite(top), top, 0.0)
    scaled = jnp.sum(jnp.where(present, signs * jnp.exp(safe_logs - top), 0.0))  # S / e^top
    nonzero = scaled != 0
    safe_scaled = jnp.where(nonzero, scaled, 1.0)
    magnitude = jnp.logaddexp(0.0, top + jnp.log(jnp.abs(safe_scaled)))  # log(1 + |S|)
    return jnp.where(nonzero, jnp.sign(scaled) * magnitude, 0.0)


class LogSumExpEnergy(AbstractEnergy):
    """Modern Hopfield energy (Ramsauer et al. 2020, arXiv:2008.02217; Krotov & Hopfield 2020
    model B, arXiv:2008.06996):

        E(x) = - (1/beta) log sum_mu exp(beta xi^mu . x) + 1/2 x . x.

    Its gradient is x - Xi^T softmax(beta Xi x), so one gradient step of size 1 is the modern
    Hopfield update x <- Xi^T softmax(beta Xi x). Computed in the stable log-sum-exp form.

    Args:
        beta: inverse temperature.
        chunk_size: "auto" (the default) visits the memories in chunks of `AUTO_CHUNK` rows once
            there are at least twice that many, else in one piece; an integer sets the chunk
            (the last chunk takes the remainder); None never chunks. Chunks use an online
            (running-max) log-sum-exp, so a batch of queries against 10^6 memories never holds
            the full (batch, K) score matrix, and each chunk's scores stay in cache between the
            two matmuls: about 1.05x faster than one piece at K = 10^4 and 10^5 for 1024 queries
            on a 2-core CPU (benchmarks/retrieval_peers.py). The same pass accumulates
            the softmax-weighted memory Xi^T softmax(beta Xi x), which is the state gradient,
            so `jax.grad` costs two matmuls per chunk, as the hand-written update does. This
            path has a custom VJP: reverse mode only (no `jax.jvp`, `jax.jacfwd` or
            `jax.hessian`; reverse-over-reverse works). Its memories' gradient is formed per
            query, so training memories under `vmap` over a large batch holds a
            (batch, K, N) cotangent: train memories with `chunk_size=None`. A `chunk_size` >= K
            uses the unchunked path, where every transformation works.
    """

    beta: float = eqx.field(static=True, default=1.0)
    chunk_size: int | str | None = eqx.field(static=True, default="auto")

    def __init__(self, beta: float = 1.0, *, chunk_size: int | str | None = "auto"):
        self.beta = check_positive(beta, name="beta")
        if chunk_size is not None and chunk_size != "auto":
            chunk_size = check_positive_int(chunk_size, name="chunk_size")
        self.chunk_size = chunk_size

    def chunk_for(self, num_memories: int) -> int | None:
        """The chunk length used for `num_memories` memories (None: one piece)."""
        if self.chunk_size == "auto":
            return AUTO_CHUNK if num_memories >= 2 * AUTO_CHUNK else None
        return self.chunk_size if self.chunk_size is not None and self.chunk_size < num_memories else None

    @property
    def low_precision_ok(self) -> bool:
        return True

    def __call__(self, state, memories):
        chunk = self.chunk_for(memories.shape[0])
        if chunk is None:
            lse = jax.nn.logsumexp(self.beta * overlaps(state, memories))
        else:
            lse = _chunked_logsumexp(state, memories, self.beta, chunk)
        return -lse / self.beta + 0.5 * jnp.dot(state, state)


AUTO_CHUNK = 2048  # rows: with N = 784, 6 MB of memories and a (batch, 2048) score block per chunk


def _split_chunks(memories, chunk_size):
    """(chunks (C, chunk_size, N), the remaining rows (R, N), R < chunk_size)."""
    num, dim = memories.shape
    whole = num // chunk_size * chunk_size
    return memories[:whole].reshape(num // chunk_size, chunk_size, dim), memories[whole:]


def _online_logsumexp(state, memories, beta, chunk_size):
    """log sum_mu exp(beta xi^mu . x) and Xi^T softmax(beta Xi x), one pass over chunks of
    memories (Milakov & Gimelshein 2018 online softmax)."""
    chunks, rest = _split_chunks(memories, chunk_size)

    def visit(carry, chunk):
        running_max, total, weighted = carry
        scores = beta * overlaps(state, chunk)
        new_max = jnp.maximum(running_max, jnp.max(scores))
        decay = jnp.exp(running_max - new_max)  # 0 on the first chunk (running_max = -inf)
        weights = jnp.exp(scores - new_max)
        return (new_max, total * decay + jnp.sum(weights), weighted * decay + weights @ chunk), None

    dtype = jnp.result_type(state, memories)
    init = (jnp.asarray(-jnp.inf, dtype), jnp.zeros((), dtype), jnp.zeros(state.shape, dtype))
    carry, _ = jax.lax.scan(visit, init, chunks)
    if rest.shape[0]:
        carry, _ = visit(carry, rest)
    running_max, total, weighted = carry
    return running_max + jnp.log(total), weighted / total


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _chunked_logsumexp(state, memories, beta, chunk_size):
    return _online_logsumexp(state, memories, beta, chunk_size)[0]


def _chunked_logsumexp_fwd(state, memories, beta, chunk_size):
    lse, mean = _online_logsumexp(state.value, memories.value, beta, chunk_size)
    # The memories' cotangent needs the (K,) softmax again; keep what to recompute it from
    # only when the memories are being differentiated.
    kept = memories.value if memories.perturbed else None
    return lse, (state.value, kept, lse, mean)


def _chunked_logsumexp_bwd(beta, chunk_size, residuals, cotangent):
    state, memories, lse, mean = residuals
    if isinstance(cotangent, jax.custom_derivatives.SymbolicZero):
        return None, None
    # d lse / dx = beta Xi^T softmax(beta Xi x); d lse / d xi^mu = beta softmax_mu x.
    d_state = cotangent * beta * mean
    if memories is None:
        return d_state, None
    chunks, rest = _split_chunks(memories, chunk_size)
    weights = jax.lax.map(lambda chunk: jnp.exp(beta * overlaps(state, chunk) - lse), chunks).reshape(-1)
    weights = jnp.concatenate([weights, jnp.exp(beta * overlaps(state, rest) - lse)])
    return d_state, (cotangent * beta) * weights[:, None] * state[None, :]


_chunked_logsumexp.defvjp(_chunked_logsumexp_fwd, _chunked_logsumexp_bwd, symbolic_zeros=True)


class GaussianKernelEnergy(AbstractEnergy):
    """Gaussian-kernel (distance) log-sum-exp energy used by DrDAM (Hoover et al. 2024,
    arXiv:2410.24153):

        E(v) = - (1/beta) log sum_mu exp(- beta/2 |v - xi^mu|^2).
    """

    beta: float = eqx.field(static=True, default=1.0)

    def __init__(self, beta: float = 1.0):
        self.beta = check_kernel_beta(beta)

    @property
    def low_precision_ok(self) -> bool:
        return True  # computed in float32 at least

    def __call__(self, state, memories):
        return gaussian_kernel_energy(state, memories, self.beta)


# beta and 1/beta must both stay normal float32 numbers: past 8.5e37, 1/beta is subnormal, the CPU
# flushes it to 0 and the gradient of E is exactly 0 (points never move); below 1e-38, E is -inf.
KERNEL_BETA_RANGE = (1e-30, 1e30)


def check_kernel_beta(beta, *, name: str = "beta"):
    """A concrete `beta` of the Gaussian-kernel energy inside KERNEL_BETA_RANGE (traced values are trusted)."""
    beta = check_positive(beta, name=name)
    if is_concrete(beta) and not KERNEL_BETA_RANGE[0] <= beta <= KERNEL_BETA_RANGE[1]:
        low, high = KERNEL_BETA_RANGE
        raise ValueError(
            f"`{name}` must lie in [{low:g}, {high:g}] (float32 keeps beta and 1/beta normal there; "
            f"{high:g} is already the k-means limit for any data), got {beta!r}."
        )
    return beta


def gaussian_kernel_energy(
    state: Float[Array, " N"], memories: Float[Array, "K N"], beta: Float[Array, ""] | float
) -> Float[Array, ""]:
    """E(v) = - (1/beta) log sum_mu exp(- beta/2 |v - xi^mu|^2) with `beta` an argument, not a
    hyperparameter: it may be traced, e.g. to follow a noise level (beta = 1 / sigma^2).
    Its gradient is v - sum_mu softmax_mu(- beta/2 |v - xi^mu|^2) xi^mu at every beta in
    KERNEL_BETA_RANGE. Computed in float32 at least (half precision overflows |v - xi|^2 once |v - xi| passes 256)."""
    wide = at_least_float32(jnp.result_type(state, memories))
    state, memories = state.astype(wide), memories.astype(wide)
    sq_dist = jnp.sum((memories - state[None, :]) ** 2, axis=-1)
    # Shifted by the nearest distance before scaling, so the largest exponent is exactly 0: with
    # beta |v - xi|^2 ~ 1e11, XLA's fused multiply-subtract in logsumexp's own shift left every
    # exponent at -1e4 or below under jit, all weights 0 and a NaN gradient.
    nearest = jax.lax.stop_gradient(jnp.min(sq_dist))
    return 0.5 * nearest - jax.nn.logsumexp(-0.5 * beta * (sq_dist - nearest)) / beta


class LogSumReLUEnergy(AbstractEnergy):
    """Epanechnikov (log-sum-ReLU) energy (Hoover et al. 2025, arXiv:2506.10801):

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
