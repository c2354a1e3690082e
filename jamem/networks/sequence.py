"""Sequence memory: a Dense Associative Memory that steps through a stored sequence
(Chaudhry, Zavatone-Veth, Krotov & Pehlevan 2023, "Long Sequence Hopfield Memory", arXiv:2306.04532).

The patterns xi^1, ..., xi^K (+-1 vectors of N bits) are stored as transitions xi^mu -> xi^(mu+1)
(cyclically, xi^K -> xi^1, unless `cyclic=False`), and the synchronous update is

    x_i <- Sign[ sum_mu xi_i^(mu+1) F(xi^mu . x) ],

F a separation function (`Power(n)`: the polynomial "DenseNet"; `Exponential(beta)`). With
F(z) = z (n = 1) this is the classical asymmetric sequence rule, whose capacity is a small fraction
of N; a sharper F separates the transitions as DenseAM separates memories. The update descends no
energy, so `SequenceMemory` is an `AbstractMap` that `jamem.retrieve` runs with `Iterate()`; a
run of T steps from xi^mu recalls xi^(mu+1), ..., xi^(mu+T).

Capacity (the signal-to-noise argument of arXiv:1606.01164, sec. 2, for the transition rule):
started at xi^mu, bit i of the field is xi_i^(mu+1) N^n plus K - 1 terms xi_i^(nu+1) (xi^nu . xi^mu)^n
of mean 0 and variance (2n-1)!! N^n (the overlap of two random patterns is a sum of N +-1, and
xi^(nu+1) is independent of it), so a bit goes wrong with probability about

    P = Phi_c( sqrt( N^n / ((2n-1)!! (K-1)) ) )            (`transition_error_probability`),

Phi_c the standard normal tail. Unlike the symmetric memory (N^(n-1), (2n-3)!!), bit i of the
successor is independent of the overlap, so the scale is N^n: a degree-n sequence memory holds
about N^n / (2 (2n-1)!! ln N) transitions (arXiv:2306.04532).
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from .._checks import IntLike, as_float_array, at_least_float32, check_binary, check_degree, check_positive_int
from ..core.capacity import log_double_factorial_odd
from ..core.dynamics import AbstractMap, Iterate, SaveAt, retrieve
from ..core.energies import overlaps
from ..core.separation import AbstractSeparation, as_separation, signed_sums_sign


class SequenceMemory(AbstractMap):
    """x <- Sign[ sum_mu xi^(mu+1) F(xi^mu . x) ] (arXiv:2306.04532), a tie keeping the bit.

    `params` are the patterns of the sequence in order, shape (K, N), entries +-1. The cue may be
    any real vector (a 0 marks an unknown bit: it adds nothing to the overlaps, and stays 0 only
    where the field is exactly 0); every later state is +-1. The sign is the one exact arithmetic
    gives (`jamem.core.separation.signed_sums_sign`), for any degree: at n = 30 the terms are
    compared at the scale of the largest, never overflowing float32; a near tie that float32
    cannot settle raises an error instead of guessing.

    Args:
        separation: F, e.g. `Power(3)` or `Exponential(beta)`.
        cyclic: the last pattern leads back to the first (True), or is a dead end whose field
            holds only the other transitions (False).
    """

    separation: AbstractSeparation
    cyclic: bool = eqx.field(static=True, default=True)

    def __init__(self, separation, *, cyclic: bool = True):
        self.separation = as_separation(separation)
        if not isinstance(cyclic, (bool, np.bool_)):
            raise TypeError(f"`cyclic` must be True or False, got {cyclic!r}.")
        self.cyclic = bool(cyclic)

    def check_params(self, params) -> None:
        if not hasattr(params, "ndim") or params.ndim != 2 or params.shape[0] < 2:
            raise ValueError(
                f"`params` (the sequence) must have shape (K, N) with K >= 2 patterns, got "
                f"{getattr(params, 'shape', type(params).__name__)}."
            )
        check_binary(params, name="params")

    def check_state(self, x0) -> None:
        if not hasattr(x0, "ndim") or x0.ndim != 1:
            raise ValueError(
                f"`x0` (the cue) must be one vector of shape (N,), got {getattr(x0, 'shape', type(x0).__name__)}."
            )

    def transitions(self, memories: Float[Array, "K N"]) -> tuple[Float[Array, "M N"], Float[Array, "M N"]]:
        """(keys, successors): pattern mu and the pattern it leads to, for every stored transition."""
        if self.cyclic:
            return memories, jnp.roll(memories, -1, axis=0)
        return memories[:-1], memories[1:]

    def next_state(self, state: Float[Array, " N"], params: Float[Array, "K N"]) -> Float[Array, " N"]:
        wide = at_least_float32(state.dtype)
        keys, successors = self.transitions(params.astype(wide))
        signs = signed_sums_sign(self.separation, overlaps(state.astype(wide), keys), successors)
        return jnp.where(signs > 0, 1.0, jnp.where(signs < 0, -1.0, state)).astype(state.dtype)


def recall(
    memory: SequenceMemory, cue: Float[Array, " N"], patterns: Float[Array, "K N"], *, steps: IntLike
) -> Float[Array, "T N"]:
    """The states after 1, ..., `steps` updates from `cue` (`jamem.retrieve` with `Iterate()`).

    From a cue near xi^mu a memory within capacity gives xi^(mu+1), ..., xi^(mu+steps).
    """
    if not isinstance(memory, SequenceMemory):
        raise TypeError(f"`memory` must be a SequenceMemory, got {type(memory).__name__}.")
    steps = check_positive_int(steps, name="steps")
    solution = retrieve(memory, cue, patterns, solver=Iterate(), steps=steps, tol=None, saveat=SaveAt(every=1))
    return solution.trajectory[1:]


def transition_bit_errors(memory: SequenceMemory, patterns: Float[Array, "K N"]) -> Float[Array, ""]:
    """The fraction of bits wrong after one update from each stored pattern (the measured P)."""
    return _transition_bit_errors(memory, _checked(memory, patterns))


def cycle_recalled(memory: SequenceMemory, patterns: Float[Array, "K N"]) -> Bool[Array, ""]:
    """Whether K updates from xi^1 visit every pattern in order and return to xi^1 (cyclic memories)."""
    if isinstance(memory, SequenceMemory) and not memory.cyclic:
        raise ValueError("`cycle_recalled` needs a cyclic SequenceMemory.")
    return _cycle_recalled(memory, _checked(memory, patterns))


def _checked(memory, patterns):
    # checked here, on concrete values: inside the compiled helpers below they are tracers
    if not isinstance(memory, SequenceMemory):
        raise TypeError(f"`memory` must be a SequenceMemory, got {type(memory).__name__}.")
    patterns = as_float_array(patterns, name="patterns")
    memory.check_params(patterns)
    return patterns


@eqx.filter_jit
def _transition_bit_errors(memory, patterns):
    keys, successors = memory.transitions(patterns)
    # in batches: a near tie is settled column by column over (N, K) terms, too much for all K at once
    after = jax.lax.map(lambda x: memory.next_state(x, patterns), keys, batch_size=16)
    return jnp.mean(after != successors)


@eqx.filter_jit
def _cycle_recalled(memory, patterns):
    states = recall(memory, patterns[0], patterns, steps=patterns.shape[0])
    return jnp.all(states == jnp.roll(patterns, -1, axis=0))


def transition_error_probability(dim: IntLike, num_memories: IntLike, degree: IntLike) -> float:
    """P = Phi_c( sqrt(N^n / ((2n-1)!! (K-1))) ): one bit of one transition of F = z^n goes wrong
    (Gaussian noise, large N; see the module docstring). K is the number of stored transitions (the
    number of patterns of a cyclic memory, one fewer for `cyclic=False`). 0.0 for K = 1."""
    n = check_degree(degree, minimum=1)
    dim = check_positive_int(dim, name="dim")
    num_memories = check_positive_int(num_memories, name="num_memories")
    if num_memories == 1:
        return 0.0
    log_snr = n * math.log(dim) - log_double_factorial_odd(2 * n - 1) - math.log(num_memories - 1)
    return 0.5 * math.erfc(math.exp(0.5 * log_snr) / math.sqrt(2)) if log_snr < 1400 else 0.0
