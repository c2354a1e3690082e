"""Retrieval dynamics: descent on any energy, one entry point `retrieve`.

`retrieve(energy, x0, memories, *, solver, steps, tol, mask, save_every, key)` runs one query
(batch with `jax.vmap`) and returns a `Solution`. Solvers are small modules:

- `AsyncBinary`: the asynchronous rule of Krotov & Hopfield 2016 (arXiv:1606.01164, eq. 3; A2),
  one neuron at a time, sequential or random order:

      sigma_i <- Sign[ sum_mu F(xi^mu_i + sum_{j!=i} xi^mu_j sigma_j)
                             - F(-xi^mu_i + sum_{j!=i} xi^mu_j sigma_j) ],

  i.e. the sign of E(sigma_i = -1) - E(sigma_i = +1); a tie keeps the current value, so the
  energy never increases. For a `DenseEnergy` the overlaps xi^mu . sigma are kept and updated
  per flip (O(K) per neuron); any other energy is compared by brute force.
- `SyncBinary`: every neuron updated at once from the same state (may 2-cycle: it is not a
  descent method, kept for comparison).
- `GradientDescent`: x <- x - step_size * grad E(x) for continuous states (`jax.grad`). With
  `LogSumExpEnergy` and step_size = 1 this is the modern Hopfield update (I1).
- `EulerFlow`: explicit Euler on the energy's own neuron dynamics, x <- x + dt * dx/dt with
  dx/dt = `energy.velocity(x, memories)` (- grad E by default; - dE/dg for networks written over
  activations, such as `jamem.hierarchical`).

`memories` is normally the (K, N) matrix of stored patterns; an energy whose parameters are not
one matrix (a hierarchical network, say) takes any pytree there instead.

With `tol=None` the solver runs exactly `steps` steps in a `lax.scan` (differentiable); with a
`tol` it runs in a `lax.while_loop` until the largest change in one step is <= tol (for binary
rules: a sweep with no flip when tol = 0, the default) or `steps` is reached. A step of a binary
rule is one sweep over all N neurons.
"""

from __future__ import annotations

from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray, PyTree

from ._checks import (
    IntLike,
    as_float_array,
    check_binary,
    check_degree,
    check_feature_dims,
    check_positive,
    is_concrete,
)
from .energies import AbstractEnergy, DenseEnergy
from .separation import gap_sign


class Solution(eqx.Module):
    """The result of `retrieve` for one query.

    Attributes:
        state: the final state, shape (N,).
        energy: its energy.
        num_steps: steps (sweeps for binary rules) actually taken.
        converged: True when the stopping criterion (`tol`) was met within `steps`.
        trajectory: states after 0, k, 2k, ... steps (k = `save_every`), shape (T, N), or None.
            After an early stop the remaining rows repeat the final state.
        trajectory_energy: their energies, shape (T,), or None.
    """

    state: Float[Array, " N"]
    energy: Float[Array, ""]
    num_steps: Int[Array, ""]
    converged: Bool[Array, ""]
    trajectory: Float[Array, "T N"] | None
    trajectory_energy: Float[Array, " T"] | None


class AbstractSolver(eqx.Module):
    """A retrieval rule with a pure `step`; `binary` solvers act on +-1 states and one step is
    one sweep over all neurons."""

    binary: bool = eqx.field(static=True, default=False, init=False)

    def step(self, energy, state, memories, clamped, key):
        """One step: returns (new_state, change), change being the number of flipped neurons
        (binary rules) or the largest absolute coordinate change (continuous rules)."""
        raise NotImplementedError


def _sign_or_keep(gap, current):
    return jnp.where(gap > 0, 1.0, jnp.where(gap < 0, -1.0, current)).astype(current.dtype)


def _neuron_gap(energy, sigma, memories, i):
    """E(sigma_i = -1) - E(sigma_i = +1), by brute force (any energy)."""
    up = sigma.at[i].set(1.0)
    down = sigma.at[i].set(-1.0)
    return energy(down, memories) - energy(up, memories)


def _count_flips(new, old):
    return new, jnp.sum(new != old).astype(old.dtype)


class AsyncBinary(AbstractSolver):
    """Asynchronous sign rule (A2). `order`: "sequential" (0..N-1 each sweep) or "random"
    (a fresh permutation each sweep, needs `key`)."""

    binary: bool = eqx.field(static=True, default=True, init=False)
    order: Literal["sequential", "random"] = eqx.field(static=True, default="sequential")

    def __check_init__(self):
        if self.order not in ("sequential", "random"):
            raise ValueError(f"`order` must be 'sequential' or 'random', got {self.order!r}.")

    def step(self, energy, state, memories, clamped, key):
        n = state.shape[0]
        order = jnp.arange(n) if self.order == "sequential" else jax.random.permutation(key, n)
        if isinstance(energy, DenseEnergy):
            separation = energy.separation
            reference = separation.memories_reference(memories)
            columns = memories.T

            def update(carry, i):
                sigma, overlaps = carry
                column, current = columns[i], sigma[i]
                # The overlaps with sigma_i = +1 and -1, written so that XLA fuses them into the
                # reduction instead of materialising a (K,) "rest" array: one pass over the
                # overlaps to decide, one to update.
                plus = overlaps + column * (1.0 - current)
                minus = overlaps - column * (1.0 + current)
                new = _sign_or_keep(gap_sign(separation, plus, minus, reference=reference), current)
                new = jnp.where(clamped[i], current, new)
                return (sigma.at[i].set(new), overlaps + column * (new - current)), None

            # Overlaps are recomputed each sweep so real-valued memories cannot drift.
            (new_state, _), _ = jax.lax.scan(update, (state, memories @ state), order)
        else:

            def update(sigma, i):
                new = _sign_or_keep(_neuron_gap(energy, sigma, memories, i), sigma[i])
                return sigma.at[i].set(jnp.where(clamped[i], sigma[i], new)), None

            new_state, _ = jax.lax.scan(update, state, order)
        return _count_flips(new_state, state)


class SyncBinary(AbstractSolver):
    """Synchronous sign rule: all neurons from the same state (not guaranteed to descend)."""

    binary: bool = eqx.field(static=True, default=True, init=False)

    def step(self, energy, state, memories, clamped, key):
        del key
        if isinstance(energy, DenseEnergy):
            overlaps = memories @ state
            reference = energy.separation.memories_reference(memories)

            def gap(i):
                column = memories[:, i]
                rest = overlaps - column * state[i]
                return gap_sign(energy.separation, rest + column, rest - column, reference=reference)

        else:

            def gap(i):
                return _neuron_gap(energy, state, memories, i)

        new = _sign_or_keep(jax.vmap(gap)(jnp.arange(state.shape[0])), state)
        return _count_flips(jnp.where(clamped, state, new), state)


class GradientDescent(AbstractSolver):
    """x <- x - step_size * grad E(x); clamped coordinates (mask True) never move."""

    step_size: float = 0.1

    def __check_init__(self):
        check_positive(self.step_size, name="step_size")

    def step(self, energy, state, memories, clamped, key):
        del key
        grad = jax.grad(energy)(state, memories)
        new = jnp.where(clamped, state, state - self.step_size * grad)
        return new, jnp.max(jnp.abs(new - state))


class EulerFlow(AbstractSolver):
    """x <- x + dt * dx/dt with dx/dt = `energy.velocity(x, memories)` when the energy defines
    it (the neuron dynamics tau dx/dt = - dE/dg of Krotov 2021, D1), else - grad E. Clamped
    coordinates (mask True) never move. For neuron dynamics take dt at most the smallest time
    constant; for - grad E this is `GradientDescent(dt)`."""

    dt: float = 0.1

    def __check_init__(self):
        check_positive(self.dt, name="dt")

    def step(self, energy, state, memories, clamped, key):
        del key
        if hasattr(energy, "velocity"):
            velocity = energy.velocity(state, memories)
        else:
            velocity = -jax.grad(energy)(state, memories)
        new = jnp.where(clamped, state, state + self.dt * velocity)
        return new, jnp.max(jnp.abs(new - state))


# ---------------------------------------------------------------------------------------------
# Driver


def _run(step, energy_of, x0, *, steps, tol, save_every, key):
    """Iterate `step(state, key) -> (state, change)` and record what was asked for."""
    save = save_every is not None
    num_saves = steps // save_every + 1 if save else 0

    if tol is None:
        # Fixed number of steps: nested lax.scan, differentiable end to end.
        def one(state, t):
            new, _ = step(state, jax.random.fold_in(key, t))
            return new, None

        if save:

            def chunk(state, c):
                ts = c * save_every + jnp.arange(save_every)
                state, _ = jax.lax.scan(one, state, ts)
                return state, (state, energy_of(state))

            final, (states, energies) = jax.lax.scan(chunk, x0, jnp.arange(steps // save_every))
            states = jnp.concatenate([x0[None], states])
            energies = jnp.concatenate([energy_of(x0)[None], energies])
        else:
            final, _ = jax.lax.scan(one, x0, jnp.arange(steps))
            states = energies = None
        return final, jnp.asarray(steps), jnp.asarray(True), states, energies

    def cond(carry):
        t, _, converged, *_ = carry
        return (t < steps) & ~converged

    def body(carry):
        t, state, _, states, energies = carry
        new, change = step(state, jax.random.fold_in(key, t))
        t = t + 1
        if save:
            slot = t // save_every
            keep = (t % save_every) == 0
            states = jnp.where(keep, states.at[slot].set(new), states)
            energies = jnp.where(keep, energies.at[slot].set(energy_of(new)), energies)
        return t, new, change <= tol, states, energies

    if save:
        states = jnp.zeros((num_saves,) + x0.shape, x0.dtype).at[0].set(x0)
        energies = jnp.zeros((num_saves,), x0.dtype).at[0].set(energy_of(x0))
    else:
        states = energies = jnp.zeros((0,), x0.dtype)
    init = (jnp.asarray(0), x0, jnp.asarray(False), states, energies)
    t, final, converged, states, energies = jax.lax.while_loop(cond, body, init)
    if save:
        # Rows after an early stop repeat the final state.
        filled = jnp.arange(num_saves) > t // save_every
        states = jnp.where(filled[:, None], final[None, :], states)
        energies = jnp.where(filled, energy_of(final), energies)
    else:
        states = energies = None
    return final, t, converged, states, energies


def _is_matrix_like(memories) -> bool:
    """Arrays, None and nested lists / tuples of numbers take the (K, N) path (and its error
    messages); anything else is a pytree of the energy's parameters."""
    if memories is None or hasattr(memories, "dtype"):
        return True
    if isinstance(memories, (list, tuple)):
        try:
            return np.asarray(memories).dtype.kind in "biuf"
        except (TypeError, ValueError):
            return False
    return False


def retrieve(
    energy,
    x0: Float[Array, " N"],
    memories: Float[Array, "K N"] | PyTree,
    *,
    solver: AbstractSolver | None = None,
    steps: IntLike = 100,
    tol: float | None = None,
    mask: Bool[Array, " N"] | None = None,
    save_every: IntLike | None = None,
    key: PRNGKeyArray | None = None,
) -> Solution:
    """Retrieve a memory from the query `x0` by descending `energy`.

    Args:
        energy: E(state, memories) -> scalar: a `jamem.energies` module or any pure function.
        x0: the query, shape (N,); +-1 entries for binary solvers. Batch with `jax.vmap`.
        memories: shape (K, N), or any pytree of parameters the energy takes (checked by the
            energy, not here).
        solver: `AsyncBinary()`, `SyncBinary()`, `GradientDescent(step_size)` (the default) or
            `EulerFlow(dt)`.
        steps: the most steps (sweeps for binary solvers) to take.
        tol: None runs exactly `steps` steps (lax.scan); a number stops once the largest change
            of one step is <= tol (lax.while_loop). Binary solvers default to tol = 0: stop at
            the first sweep that flips nothing.
        mask: boolean (N,), True where a coordinate is clamped to its value in `x0`.
        save_every: record the state and energy every this many steps (and at step 0); `steps`
            must be a multiple of it. None records nothing (a long batched recall stays small).
        key: PRNG key, needed for `AsyncBinary(order="random")`.

    Returns:
        A `Solution`.
    """
    solver = GradientDescent() if solver is None else solver
    if not isinstance(solver, AbstractSolver):
        raise TypeError(
            f"`solver` must be a jamem solver (AsyncBinary, SyncBinary, GradientDescent, EulerFlow), "
            f"got {type(solver).__name__}."
        )
    if not callable(energy):
        raise TypeError(f"`energy` must be a callable E(state, memories), got {type(energy).__name__}.")
    x0 = as_float_array(x0, name="x0", ndim=1)
    if _is_matrix_like(memories):
        memories = as_float_array(memories, name="memories", ndim=2)
        check_feature_dims(x0, memories)
    else:
        leaves = [leaf for leaf in jax.tree_util.tree_leaves(memories) if eqx.is_array(leaf)]
        if not leaves:
            raise TypeError(
                f"`memories` must be a (K, N) array or a pytree holding the energy's arrays, "
                f"got {type(memories).__name__}."
            )
        if isinstance(energy, DenseEnergy):
            raise TypeError(f"`memories` must be a (K, N) array for a DenseEnergy, got {type(memories).__name__}.")
        for leaf in leaves:
            if is_concrete(leaf) and jnp.issubdtype(leaf.dtype, jnp.inexact) and not np.all(np.isfinite(leaf)):
                raise ValueError("`memories` contains NaN or infinite values.")
    steps = check_degree(steps, name="steps")
    if save_every is not None:
        save_every = check_degree(save_every, name="save_every")
        if steps % save_every:
            raise ValueError(f"`steps` ({steps}) must be a multiple of `save_every` ({save_every}).")
    if solver.binary:
        check_binary(x0, name="x0")
        tol = 0.0 if tol is None else tol
    if tol is not None:
        tol = check_positive(tol, name="tol", allow_zero=True)
    if mask is None:
        clamped = jnp.zeros(x0.shape, bool)
    else:
        clamped = jnp.asarray(mask)
        if clamped.dtype != jnp.bool_:
            raise TypeError(f"`mask` must be boolean (True = clamped), got dtype {clamped.dtype}.")
        if clamped.shape != x0.shape:
            raise ValueError(f"`mask` must have the shape of `x0` {tuple(x0.shape)}, got {tuple(clamped.shape)}.")
    needs_key = isinstance(solver, AsyncBinary) and solver.order == "random"
    if key is None:
        if needs_key:
            raise ValueError("`key` is required for AsyncBinary(order='random').")
        key = jax.random.key(0)
    elif is_concrete(key) and not jnp.issubdtype(jnp.asarray(key).dtype, jax.dtypes.prng_key):
        key = jnp.asarray(key)
        if key.dtype != jnp.uint32 or key.shape != (2,):
            raise TypeError("`key` must be a jax.random key (jax.random.key or jax.random.PRNGKey).")

    low_precision = [
        str(a.dtype) for a in [x0, *jax.tree_util.tree_leaves(memories)] if eqx.is_array(a) and a.dtype.itemsize < 4
    ]
    if low_precision and isinstance(energy, AbstractEnergy) and not energy.low_precision_ok:
        raise TypeError(
            f"`x0` / `memories` are {low_precision[0]}, where {type(energy).__name__} overflows or loses its "
            f"landscape; use float32, or an energy stable in low precision (LogSumExpEnergy, GaussianKernelEnergy, "
            f"DenseEnergy(..., log_domain=True))."
        )

    def step(state, k):
        return solver.step(energy, state, memories, clamped, k)

    def energy_of(state):
        return energy(state, memories)

    final, num_steps, converged, states, energies = _run(
        step, energy_of, x0, steps=steps, tol=tol, save_every=save_every, key=key
    )
    final_energy = energy_of(final)
    finite = jnp.all(jnp.isfinite(final)) & jnp.isfinite(final_energy)
    if energies is not None:
        finite = finite & jnp.all(jnp.isfinite(energies))
    final = eqx.error_if(
        final,
        ~finite,
        "retrieve: the state or its energy is not finite (an overflow: E = -sum F(xi . x) with a large degree "
        "exceeds float32; use DenseEnergy(..., log_domain=True), or a smaller step size)",
    )
    return Solution(
        state=final,
        energy=final_energy,
        num_steps=num_steps,
        converged=converged,
        trajectory=states,
        trajectory_energy=energies,
    )
