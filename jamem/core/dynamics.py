"""The dynamics engine: one entry point, `retrieve`, for every memory and every rule.

    retrieve(energy, x0, params, *, solver, steps, tol, mask, saveat, adjoint, key) -> Solution

runs one query (batch with `jax.vmap`) by descending `energy(state, params)`. Like diffrax's
`diffeqsolve`, the choices are small modules:

- the state `x0` is any pytree of arrays (a hierarchical network passes its layer states as a
  tuple), with a matching pytree `mask` of clamped entries;
- `solver`: `AsyncBinary` (the asynchronous sign rule of Krotov & Hopfield 2016,
  arXiv:1606.01164, eq. 3), `SyncBinary`, `GradientDescent` (x <- x - eta grad E), `EulerFlow`
  (x <- x + dt dx/dt with the energy's own neuron dynamics, e.g. tau dx/dt = - dE/dg of Krotov
  2021, arXiv:2107.06446), or `Iterate` (x <- next_state(x) for an `AbstractMap`, a
  system with no energy, such as a sequence memory);
- the stopping rule: `tol=None` runs exactly `steps` steps, for every solver; a number stops
  once the largest change in one step is <= tol (a sweep flipping nothing at tol = 0 for the
  binary rules, whose default it is);
- `saveat`: `SaveAt(every=k)` or `SaveAt(steps=(...))` records states (and their energies) with
  one meaning everywhere;
- `adjoint`: how gradients flow back through retrieval: `DirectAdjoint()` differentiates the
  iterations themselves (a `lax.scan`, or a checkpointed while loop when `tol` stops early),
  `ImplicitAdjoint()` differentiates the fixed point by the implicit function theorem (see
  `jamem.core.adjoints`).

An energy is any callable `E(state, params) -> scalar`; subclasses of `AbstractEnergy` can add
their own neuron dynamics (`velocity`) and a fast path for the binary rules (`binary_cache`,
`binary_gap_sign`; `DenseEnergy` keeps the overlaps up to date, O(K) per neuron).
"""

from __future__ import annotations

import abc
from typing import ClassVar, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray, PyTree

from .._checks import (
    IntLike,
    as_float_array,
    check_binary,
    check_bool,
    check_feature_dims,
    check_key,
    check_positive,
    check_positive_int,
)
from .adjoints import AbstractAdjoint, DirectAdjoint, ImplicitAdjoint
from .energies import AbstractEnergy, brute_force_gap_sign

DEFAULT = "default"  # `tol`'s default: 0 for the binary rules, None (exactly `steps` steps) otherwise


class SaveAt(eqx.Module):
    """Which steps `retrieve` records (like diffrax's `SaveAt`); the final state is always in
    `Solution.state`.

    Attributes:
        every: record step 0 and every `every` steps after it (`steps` must be a multiple).
        steps: record exactly these step indices (0 is the start; each at most `steps`).
        states: also record the states (False: only their energies, for long trajectories).
    """

    every: int | None = eqx.field(static=True, default=None)
    steps: tuple[int, ...] | None = eqx.field(static=True, default=None)
    states: bool = eqx.field(static=True, default=True)

    def __check_init__(self):
        if self.every is not None and self.steps is not None:
            raise ValueError("`SaveAt` takes `every` or `steps`, not both.")
        check_bool(self.states, name="states")
        if self.every is not None:
            check_positive_int(self.every, name="every")
        if self.steps is not None:
            if not self.steps or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) for s in self.steps):
                raise ValueError(f"`SaveAt(steps=...)` must be a non-empty tuple of step indices, got {self.steps!r}.")
            if list(self.steps) != sorted(set(self.steps)) or min(self.steps) < 0:
                raise ValueError(f"`SaveAt(steps=...)` must be increasing, distinct and >= 0, got {self.steps!r}.")

    def schedule(self, total: int) -> np.ndarray | None:
        """The recorded step indices for a run of `total` steps (None: nothing recorded)."""
        if self.every is not None:
            if total % self.every:
                raise ValueError(f"`steps` ({total}) must be a multiple of `SaveAt(every=...)` ({self.every}).")
            return np.arange(0, total + 1, self.every)
        if self.steps is not None:
            if self.steps[-1] > total:
                raise ValueError(f"`SaveAt(steps=...)` asks for step {self.steps[-1]} of a {total}-step run.")
            return np.asarray(self.steps)
        return None


class Solution(eqx.Module):
    """The result of `retrieve` for one query.

    Attributes:
        state: the final state (the pytree structure of `x0`).
        energy: its energy (None for an `AbstractMap`, which has none).
        num_steps: steps (sweeps for binary rules) actually taken.
        converged: True when the stopping rule (`tol`) was met within `steps`; with `tol=None`,
            True.
        ts: the recorded step indices (`saveat`), shape (T,), or None.
        trajectory: the recorded states, each leaf with a leading axis of length T, or None.
            After an early stop, rows for later steps repeat the final state.
        trajectory_energy: their energies, shape (T,), or None (also for an `AbstractMap`).
    """

    state: PyTree[Float[Array, ...]]
    energy: Float[Array, ""] | None
    num_steps: Int[Array, ""]
    converged: Bool[Array, ""]
    ts: Int[Array, " T"] | None
    trajectory: PyTree[Float[Array, "T ..."]] | None
    trajectory_energy: Float[Array, " T"] | None


# ---------------------------------------------------------------------------------------------
# Solvers


class AbstractSolver(eqx.Module):
    """A retrieval rule: a pure `step`. Binary rules act on one +-1 vector and one step is a
    sweep over all neurons; continuous rules act on any pytree of float arrays."""

    binary: eqx.AbstractClassVar[bool]

    @abc.abstractmethod
    def step(self, energy, state, params, clamped, key):
        """One step: (new_state, change, energy of `state` or None). The change is the number of
        flipped neurons (binary rules) or the largest absolute coordinate change."""


def _sign_or_keep(sign, current):
    return jnp.where(sign > 0, 1.0, jnp.where(sign < 0, -1.0, current)).astype(current.dtype)


def _binary_cache(energy, state, params):
    return energy.binary_cache(state, params) if isinstance(energy, AbstractEnergy) else None


def _binary_gap_sign(energy, state, params, i, cache):
    if isinstance(energy, AbstractEnergy):
        return energy.binary_gap_sign(state, params, i, cache)
    return brute_force_gap_sign(energy, state, params, i)  # a plain function: both energies evaluated


def _count_flips(new, old):
    return new, jnp.sum(new != old).astype(old.dtype), None


class AsyncBinary(AbstractSolver):
    """The asynchronous sign rule (arXiv:1606.01164, eq. 3), one neuron at a time,

        sigma_i <- Sign[ E(sigma_i = -1) - E(sigma_i = +1) ],

    a tie keeping the current value, so the energy never increases. `order`: "sequential"
    (0..N-1 each sweep) or "random" (a fresh permutation each sweep, needs `key`)."""

    binary: ClassVar[bool] = True
    order: Literal["sequential", "random"] = eqx.field(static=True, default="sequential")

    def __check_init__(self):
        if self.order not in ("sequential", "random"):
            raise ValueError(f"`order` must be 'sequential' or 'random', got {self.order!r}.")

    def step(self, energy, state, params, clamped, key):
        n = state.shape[0]
        order = jnp.arange(n) if self.order == "sequential" else jax.random.permutation(key, n)

        def update(carry, i):
            sigma, cache = carry
            current = sigma[i]
            new = _sign_or_keep(_binary_gap_sign(energy, sigma, params, i, cache), current)
            new = jnp.where(clamped[i], current, new)
            if isinstance(energy, AbstractEnergy):
                cache = energy.binary_cache_update(cache, params, i, new - current)
            return (sigma.at[i].set(new), cache), None

        # the cache (e.g. overlaps) is rebuilt each sweep, so real-valued parameters cannot drift
        (new_state, _), _ = jax.lax.scan(update, (state, _binary_cache(energy, state, params)), order)
        return _count_flips(new_state, state)


class SyncBinary(AbstractSolver):
    """The synchronous sign rule: every neuron from the same state (it may 2-cycle: not a descent
    method, kept for comparison)."""

    binary: ClassVar[bool] = True

    def step(self, energy, state, params, clamped, key):
        del key
        cache = _binary_cache(energy, state, params)
        signs = jax.vmap(lambda i: _binary_gap_sign(energy, state, params, i, cache))(jnp.arange(state.shape[0]))
        return _count_flips(jnp.where(clamped, state, _sign_or_keep(signs, state)), state)


def _largest_change(new, old):
    return jax.tree.reduce(jnp.maximum, jax.tree.map(lambda a, b: jnp.max(jnp.abs(a - b)), new, old))


def _move(state, direction, size, clamped):
    return jax.tree.map(lambda x, d, c: jnp.where(c, x, x + size * d), state, direction, clamped)


class GradientDescent(AbstractSolver):
    """x <- x - step_size grad E(x) (`jax.grad`); clamped entries never move. With
    `LogSumExpEnergy` and step_size = 1 this is the modern Hopfield update
    x <- Xi^T softmax(beta Xi x) (Ramsauer et al. 2020, arXiv:2008.02217)."""

    binary: ClassVar[bool] = False
    step_size: float = 0.1

    def __check_init__(self):
        check_positive(self.step_size, name="step_size")

    def step(self, energy, state, params, clamped, key):
        del key
        value, grad = jax.value_and_grad(energy)(state, params)
        new = _move(state, grad, -self.step_size, clamped)
        return new, _largest_change(new, state), value


class EulerFlow(AbstractSolver):
    """x <- x + dt dx/dt with dx/dt = `energy.velocity(x, params)`: the energy's own neuron
    dynamics (tau dx/dt = - dE/dg for networks written over activations, Krotov 2021,
    arXiv:2107.06446), - grad E for energies without them. Clamped entries never move. For neuron
    dynamics take dt at most the smallest time constant."""

    binary: ClassVar[bool] = False
    dt: float = 0.1

    def __check_init__(self):
        check_positive(self.dt, name="dt")

    def step(self, energy, state, params, clamped, key):
        del key
        if isinstance(energy, AbstractEnergy):
            value, velocity = energy.value_and_velocity(state, params)
        else:
            value, grad = jax.value_and_grad(energy)(state, params)
            velocity = jax.tree.map(jnp.negative, grad)
        new = _move(state, velocity, self.dt, clamped)
        return new, _largest_change(new, state), value


class AbstractMap(eqx.Module):
    """A discrete-time system x <- next_state(x, params) with no energy: a sequence memory steps
    from each stored pattern to the next (`jamem.networks.sequence`), which no energy descent does.
    `retrieve` runs it with the `Iterate` solver; its `Solution` then has no energies.
    """

    @abc.abstractmethod
    def next_state(self, state, params):
        """The state one step later."""

    def check_params(self, params) -> None:
        """Raise a clear error if `params` is not what this system takes (before any work)."""

    def check_state(self, x0) -> None:
        """Raise a clear error if `x0` is not a state of this system (before any work)."""

    def check_compatible(self, x0, params) -> None:
        """Raise a clear error if `x0` and `params`, each valid, do not fit together (their sizes)."""


class Iterate(AbstractSolver):
    """x <- `system.next_state(x, params)` for an `AbstractMap` (clamped entries never move). The
    change is the largest absolute coordinate change, so `tol=0` stops at a fixed point."""

    binary: ClassVar[bool] = False

    def step(self, energy, state, params, clamped, key):
        del key
        new = energy.next_state(state, params)
        new = jax.tree.map(lambda x, n, c: jnp.where(c, x, n).astype(x.dtype), state, new, clamped)
        return new, _largest_change(new, state), None


# ---------------------------------------------------------------------------------------------
# The loops


def _fixed_steps(step, energy_of, x0, *, steps, key, schedule, save_states, step_energies):
    """Exactly `steps` steps in a lax.scan (reverse-mode differentiable). `step_energies`: the
    solver returns the energy of the state it steps from (so recording every step is free)."""
    if schedule is None:
        final = jax.lax.scan(lambda x, t: (step(x, jax.random.fold_in(key, t))[0], None), x0, jnp.arange(steps))[0]
        return final, None, None
    every = int(schedule[1] - schedule[0]) if schedule.size > 1 else 0
    if every and schedule[0] == 0 and np.array_equal(schedule, np.arange(0, steps + 1, every)):
        # record every k-th step: nested scans, the inner one keeps nothing
        def chunk(x, c):
            x = jax.lax.scan(
                lambda x, t: (step(x, jax.random.fold_in(key, t))[0], None), x, c * every + jnp.arange(every)
            )[0]
            return x, (x if save_states else None, energy_of(x))

        if every == 1 and step_energies:

            def one(x, t):
                new, _, value = step(x, jax.random.fold_in(key, t))
                return new, (new if save_states else None, value)

            final, (states, before) = jax.lax.scan(one, x0, jnp.arange(steps))
            energies = jnp.concatenate([before, energy_of(final)[None]])  # E(x_0), ..., E(x_steps)
        else:
            final, (states, after) = jax.lax.scan(chunk, x0, jnp.arange(steps // every))
            energies = jnp.concatenate([energy_of(x0)[None], after])
        if states is not None:
            states = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), x0, states)
        return final, states, energies

    # any other set of steps: keep every state, then pick
    def one(x, t):
        new = step(x, jax.random.fold_in(key, t))[0]
        return new, new

    final, path = jax.lax.scan(one, x0, jnp.arange(steps))
    path = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b])[schedule], x0, path)
    return final, path if save_states else None, jax.vmap(energy_of)(path)


def _until_converged(step, energy_of, x0, *, steps, tol, key, schedule, save_states, kind):
    """Steps until the largest change of one step is <= tol, or `steps`; a while loop
    (`kind="checkpointed"`: reverse-mode differentiable with bounded memory)."""
    num_saves = 0 if schedule is None else schedule.size
    slot_of_step = np.full(steps + 1, num_saves, np.int32)  # unrecorded steps write a spare last slot
    if schedule is not None:
        slot_of_step[schedule] = np.arange(num_saves)
    slot_of_step = jnp.asarray(slot_of_step)

    structure = jax.tree.structure(x0)

    def record(buffers, t, x):
        # states are kept as a flat tuple of leaves: the while loop wraps each buffer for in-place writes
        states, energies = buffers
        slot = slot_of_step[t]
        if states is not None:
            states = tuple(buf.at[slot].set(leaf) for buf, leaf in zip(states, jax.tree.leaves(x)))
        return states, energies.at[slot].set(energy_of(x))

    def cond(carry):
        t, _, converged, _ = carry
        return (t < steps) & ~converged

    def body(carry):
        t, x, _, buffers = carry
        new, change, _ = step(x, jax.random.fold_in(key, t))
        t = t + 1
        if schedule is not None:
            buffers = record(buffers, t, new)
        return t, new, change <= tol, buffers

    buffers = None
    if schedule is not None:
        states = None
        if save_states:
            states = tuple(jnp.zeros((num_saves + 1,) + leaf.shape, leaf.dtype) for leaf in jax.tree.leaves(x0))
        buffers = record((states, jnp.zeros((num_saves + 1,), _dtype(x0))), 0, x0)
    init = (jnp.asarray(0), x0, jnp.asarray(False), buffers)
    if kind == "lax":
        t, final, converged, buffers = jax.lax.while_loop(cond, body, init)
    else:
        t, final, converged, buffers = eqx.internal.while_loop(
            cond, body, init, max_steps=steps, kind=kind, buffers=lambda carry: carry[3]
        )
    if schedule is None:
        return final, t, converged, None, None
    states, energies = buffers
    energies = energies[:num_saves]
    after = jnp.asarray(schedule) > t  # rows after an early stop repeat the final state
    if states is not None:
        leaves = [
            jnp.where(_expand(after, buf[:num_saves]), leaf[None], buf[:num_saves])
            for buf, leaf in zip(states, jax.tree.leaves(final))
        ]
        states = jax.tree.unflatten(structure, leaves)
    energies = jnp.where(after, energy_of(final), energies)
    return final, t, converged, states, energies


def _expand(flags, like):
    return flags.reshape(flags.shape + (1,) * (like.ndim - 1))


def _dtype(tree):
    return jnp.result_type(*jax.tree.leaves(tree))


# ---------------------------------------------------------------------------------------------
# The entry point


def _check_state(x0, *, binary: bool):
    """x0 as a pytree of float arrays (one 1-D +-1 vector for the binary rules)."""
    leaves, treedef = jax.tree.flatten(x0)
    if not leaves:
        raise ValueError("`x0` must be an array or a pytree of arrays, got an empty structure.")
    leaves = [as_float_array(leaf, name="x0") for leaf in leaves]
    if binary:
        if len(leaves) != 1 or leaves[0].ndim != 1:
            raise ValueError("`x0` must be one vector of shape (N,) for a binary rule.")
        check_binary(leaves[0], name="x0")
    return jax.tree.unflatten(treedef, leaves)


def _check_params(params, x0, energy):
    if params is None:
        return None
    if hasattr(params, "dtype") or (isinstance(params, (list, tuple)) and _numeric(params)):
        params = as_float_array(params, name="params")
        if isinstance(x0, jax.Array) and (x0.ndim == 1 or params.ndim == 2):
            # memories (K, N) and one state (N,): batch several states with jax.vmap
            if params.ndim != 2:
                raise ValueError(f"`params` (the memories) must have shape (K, N), got {tuple(params.shape)}.")
            if x0.ndim != 1:
                raise ValueError(
                    f"`x0` must be one state of shape (N,) for memories of shape {tuple(params.shape)}, got "
                    f"{tuple(x0.shape)}; batch states with jax.vmap."
                )
            check_feature_dims(x0, params, memories_name="params")
        return params
    arrays = [leaf for leaf in jax.tree.leaves(params) if eqx.is_array(leaf)]
    if not arrays and not isinstance(params, eqx.Module):
        raise TypeError(f"`params` must be an array or a pytree holding the energy's arrays, got {params!r:.60}.")
    for leaf in arrays:
        if jnp.issubdtype(leaf.dtype, jnp.inexact) and not np.all(np.isfinite(leaf)):
            raise ValueError("`params` contains NaN or infinite values.")
    if isinstance(energy, AbstractEnergy):
        energy.check_params(params)
    return params


def _numeric(value) -> bool:
    try:
        return np.asarray(value).dtype.kind in "biuf"
    except (TypeError, ValueError):
        return False


def _check_mask(mask, x0):
    if mask is None:
        return jax.tree.map(lambda leaf: jnp.zeros(leaf.shape, bool), x0)
    structure = jax.tree.structure(x0)
    if jax.tree.structure(mask) != structure:
        raise ValueError(f"`mask` must have the structure of `x0` ({structure}), got {jax.tree.structure(mask)}.")
    masks = []
    for m, leaf in zip(jax.tree.leaves(mask), jax.tree.leaves(x0)):
        m = jnp.asarray(m)
        if m.dtype != jnp.bool_:
            raise TypeError(f"`mask` must be boolean (True = clamped), got dtype {m.dtype}.")
        if m.shape != leaf.shape:
            raise ValueError(f"`mask` must have the shape of `x0` {tuple(leaf.shape)}, got {tuple(m.shape)}.")
        masks.append(m)
    return jax.tree.unflatten(structure, masks)


def _check_key(key, solver):
    if key is None:
        if isinstance(solver, AsyncBinary) and solver.order == "random":
            raise ValueError("`key` is required for AsyncBinary(order='random').")
        return jax.random.key(0)
    return check_key(key)


def retrieve(
    energy,
    x0: PyTree[Float[Array, ...]],
    params=None,
    *,
    solver: AbstractSolver | None = None,
    steps: IntLike = 100,
    tol: float | None | str = DEFAULT,
    mask: PyTree[Bool[Array, ...]] | None = None,
    saveat: SaveAt | None = None,
    adjoint: AbstractAdjoint | None = None,
    key: PRNGKeyArray | None = None,
) -> Solution:
    """Retrieve from the query `x0` by descending `energy`.

    Args:
        energy: E(state, params) -> scalar: a `jamem` energy (`DenseEnergy`, `LogSumExpEnergy`,
            a network's energy, ...) or any pure function; or an `AbstractMap` (a system with no
            energy, such as a sequence memory) with `solver=Iterate()`.
        x0: the query: an array, or a pytree of arrays (one per layer, say); for the binary rules
            one +-1 vector (N,). Batch with `jax.vmap`.
        params: what the energy takes besides the state: the memories (K, N) for the memory
            energies, a network module for network energies, any pytree, or None.
        solver: `GradientDescent(step_size)` (the default), `EulerFlow(dt)`, `AsyncBinary()` or
            `SyncBinary()`; `Iterate()` for an `AbstractMap` passed as `energy`.
        steps: the most steps (sweeps for the binary rules).
        tol: None runs exactly `steps` steps; a number stops at the first step whose largest
            change is <= tol. Default: 0 for the binary rules (stop at the first sweep that
            flips nothing), None for the continuous ones.
        mask: a pytree like `x0` of booleans, True where the entry is clamped to its value in x0.
        saveat: what to record along the way (`SaveAt`); default the final state only.
        adjoint: `DirectAdjoint()` (the default: gradients through the iterations) or
            `ImplicitAdjoint()` (gradients at the fixed point; needs a continuous solver and a
            `tol`).
        key: a PRNG key, needed by `AsyncBinary(order="random")`.

    Returns:
        A `Solution`.

    Example:
        >>> import jax, jax.numpy as jnp, jamem as jm
        >>> xi = jnp.array([[1.0, -1.0, 1.0, -1.0], [1.0, 1.0, -1.0, -1.0]])
        >>> cue = jnp.array([1.0, -1.0, 1.0, 1.0])  # memory 0 with its last bit flipped
        >>> sol = jm.retrieve(jm.DenseEnergy(jm.Power(3)), cue, xi, solver=jm.AsyncBinary())
        >>> sol.state.tolist(), int(sol.num_steps), bool(sol.converged)
        ([1.0, -1.0, 1.0, -1.0], 2, True)
    """
    solver = GradientDescent() if solver is None else solver
    if not isinstance(solver, AbstractSolver):
        raise TypeError(
            f"`solver` must be a jamem solver (AsyncBinary, SyncBinary, GradientDescent, EulerFlow, Iterate), "
            f"got {type(solver).__name__}."
        )
    is_map = isinstance(energy, AbstractMap)
    if is_map != isinstance(solver, Iterate):
        raise TypeError(
            f"`energy` is a {type(energy).__name__} (a system without an energy): run it with solver=Iterate()."
            if is_map
            else "`solver=Iterate()` steps an AbstractMap (a system without an energy, e.g. a sequence memory); "
            f"`energy` is a {type(energy).__name__}: descend it with GradientDescent, EulerFlow or a binary rule."
        )
    if not is_map and not callable(energy):
        raise TypeError(f"`energy` must be a callable E(state, params), got {type(energy).__name__}.")
    adjoint = DirectAdjoint() if adjoint is None else adjoint
    if not isinstance(adjoint, AbstractAdjoint):
        raise TypeError(f"`adjoint` must be DirectAdjoint() or ImplicitAdjoint(), got {type(adjoint).__name__}.")
    saveat = SaveAt() if saveat is None else saveat
    if not isinstance(saveat, SaveAt):
        raise TypeError(f"`saveat` must be a jamem.SaveAt, got {type(saveat).__name__}.")
    x0 = _check_state(x0, binary=solver.binary)
    params = _check_params(params, x0, energy)
    if is_map:  # a map checks its whole state and params, arrays and None included
        energy.check_state(x0)
        energy.check_params(params)
        energy.check_compatible(x0, params)
    steps = check_positive_int(steps, name="steps")
    schedule = saveat.schedule(steps)
    if isinstance(tol, str):
        if tol != DEFAULT:
            raise ValueError(f"`tol` must be a number >= 0 or None, got {tol!r}.")
        tol = 0.0 if solver.binary else None
    if tol is not None:
        tol = check_positive(tol, name="tol", allow_zero=True)
    clamped = _check_mask(mask, x0)
    key = _check_key(key, solver)
    _check_precision(energy, x0, params)
    if isinstance(adjoint, ImplicitAdjoint) and (solver.binary or is_map or tol is None or schedule is not None):
        raise ValueError(
            "`ImplicitAdjoint` differentiates the fixed point: it needs an energy, a continuous solver, a `tol` and no "
            "`saveat` trajectory (use DirectAdjoint to differentiate through recorded steps)."
        )

    def step(state, k):
        return solver.step(energy, state, params, clamped, k)

    def energy_of(state):
        # a map has no energy: a placeholder the loops carry and the Solution drops (XLA removes it)
        return jnp.zeros((), _dtype(state)) if is_map else energy(state, params)

    if isinstance(adjoint, ImplicitAdjoint):
        final, num_steps, converged = adjoint.solve(solver, energy, x0, params, clamped, steps=steps, tol=tol)
        states = energies = None
    elif tol is None:
        final, states, energies = _fixed_steps(
            step, energy_of, x0, steps=steps, key=key, schedule=schedule, save_states=saveat.states,
            step_energies=not (solver.binary or is_map),
        )  # fmt: skip
        num_steps, converged = jnp.asarray(steps), jnp.asarray(True)
    else:
        # binary rules have no derivative: a plain while loop; continuous ones stay differentiable
        kind = "lax" if solver.binary else "checkpointed"
        final, num_steps, converged, states, energies = _until_converged(
            step, energy_of, x0, steps=steps, tol=tol, key=key, schedule=schedule, save_states=saveat.states,
            kind=kind,
        )  # fmt: skip
    # each check travels with its value: under jit, an energy nobody reads is neither computed nor checked
    overflow = (
        "an overflow: E = -sum F(xi . x) with a large degree exceeds float32; use DenseEnergy(..., log_domain=True)"
    )
    state_finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(final)]))
    final = eqx.error_if(
        final, ~state_finite, "retrieve: the state is not finite (a step size too large, or " + overflow + ")"
    )
    if is_map:
        return Solution(
            state=final, energy=None, num_steps=num_steps, converged=converged,
            ts=None if schedule is None else jnp.asarray(schedule), trajectory=states, trajectory_energy=None,
        )  # fmt: skip
    final_energy = energy_of(final)
    final_energy = eqx.error_if(
        final_energy, ~jnp.isfinite(final_energy), f"retrieve: the energy is not finite ({overflow})"
    )
    if energies is not None:
        energies = eqx.error_if(
            energies, ~jnp.all(jnp.isfinite(energies)), f"retrieve: a recorded energy is not finite ({overflow})"
        )
    return Solution(
        state=final,
        energy=final_energy,
        num_steps=num_steps,
        converged=converged,
        ts=None if schedule is None else jnp.asarray(schedule),
        trajectory=states,
        trajectory_energy=energies,
    )


def _check_precision(energy, x0, params):
    low = [str(a.dtype) for a in jax.tree.leaves((x0, params)) if eqx.is_array(a) and a.dtype.itemsize < 4]
    if low and isinstance(energy, AbstractEnergy) and not energy.low_precision_ok:
        raise TypeError(
            f"`x0` / `params` are {low[0]}, where {type(energy).__name__} overflows or loses its landscape; use "
            f"float32, or an energy stable in low precision (LogSumExpEnergy, GaussianKernelEnergy, "
            f"DenseEnergy(..., log_domain=True))."
        )
