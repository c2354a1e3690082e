"""Gradients through a fixed point by implicit differentiation.

Retrieval ends at a fixed point x* = f(x*, theta) of an update rule f (one step of a solver on an
energy, theta being the memories and whatever else the rule reads). Differentiating a loss
l(x*) through an unrolled `lax.scan` of the iteration stores every step; the implicit function
theorem needs only x*: from x* = f(x*, theta),

    dx*/dtheta = (I - df/dx)^(-1) df/dtheta,

so the vector-Jacobian product with the loss gradient g = dl/dx* is

    (I - df/dx)^T u = g,        dl/dtheta = u^T df/dtheta,

one adjoint linear system at x*, solved here by the fixed-point iteration u <- g + (df/dx)^T u
(convergent where f is a contraction near x*, the same condition as for the forward iteration)
or by GMRES (`jax.scipy.sparse.linalg.gmres`). The forward pass is a `lax.while_loop` that keeps
no trajectory, so memory does not grow with the number of steps.

- `fixed_point(step, x0, params, ...)`: any rule `step(x, params) -> x` (params: a pytree of
  arrays holding everything the gradient should reach; `step` must not close over traced arrays).
- `retrieve_fixed_point(energy, x0, memories, ...)`: the rule of a jamem continuous solver
  (`GradientDescent`) on any energy, with clamping; gradients reach the memories, the energy's
  array fields and the clamped entries of x0.

See e.g. Bai, Kolter & Koltun 2019 (deep equilibrium models) for the same construction.
"""

from __future__ import annotations

from functools import partial
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from ._checks import as_float_array, check_feature_dims, check_positive
from .dynamics import AbstractSolver, GradientDescent

_BACKWARDS = ("iterate", "gmres")


def _check_count(value, *, name):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    return value


def _iterate(update, x0, *, max_steps, tol):
    """x <- update(x) until max |update(x) - x| <= tol or max_steps; returns the last x."""

    def cond(carry):
        t, _, change = carry
        return (t < max_steps) & (change > tol)

    def body(carry):
        t, x, _ = carry
        new = update(x)
        return t + 1, new, jnp.max(jnp.abs(new - x))

    init = (jnp.asarray(0), x0, jnp.asarray(jnp.inf, x0.dtype))
    _, x, _ = jax.lax.while_loop(cond, body, init)
    return x


@partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _solve(step, config, x0, params):
    max_steps, tol, _, _, _ = config
    return _iterate(lambda x: step(x, params), x0, max_steps=max_steps, tol=tol)


def _solve_fwd(step, config, x0, params):
    x = _solve(step, config, x0, params)
    return x, (x, params)


def _solve_bwd(step, config, residuals, g):
    _, _, backward, back_steps, back_tol = config
    x, params = residuals
    _, vjp_x = jax.vjp(lambda y: step(y, params), x)
    transpose_jac = lambda u: vjp_x(u)[0]
    if backward == "iterate":
        u = _iterate(lambda u: g + transpose_jac(u), g, max_steps=back_steps, tol=back_tol)
    else:
        u, _ = jax.scipy.sparse.linalg.gmres(
            lambda u: u - transpose_jac(u), g, tol=back_tol, atol=0.0, maxiter=back_steps, solve_method="batched"
        )
    _, vjp_p = jax.vjp(lambda p: step(x, p), params)
    (grad_params,) = vjp_p(u)
    return jnp.zeros_like(x), grad_params


_solve.defvjp(_solve_fwd, _solve_bwd)


def fixed_point(
    step,
    x0: Float[Array, "*shape"],
    params,
    *,
    max_steps: int = 1000,
    tol: float = 1e-6,
    backward: Literal["iterate", "gmres"] = "iterate",
    backward_max_steps: int | None = None,
    backward_tol: float | None = None,
) -> Float[Array, "*shape"]:
    """The fixed point x* = step(x*, params), iterated from x0, differentiable in `params` by the
    implicit function theorem (see the module docstring).

    Args:
        step: the update rule `step(x, params) -> x` (same shape and dtype as x). Everything it
            depends on and that gradients should reach must be in `params`.
        x0: where the iteration starts. Its gradient is zero (a fixed point does not depend on
            where the iteration started, as long as it lands on the same one).
        params: a pytree of arrays.
        max_steps: the most forward iterations.
        tol: stop once max |step(x) - x| <= tol.
        backward: how to solve the adjoint system (I - df/dx)^T u = g: "iterate"
            (u <- g + (df/dx)^T u) or "gmres".
        backward_max_steps: the most backward iterations (GMRES restarts of 20 Krylov vectors);
            default `max_steps`.
        backward_tol: the backward stopping tolerance (the largest change of u for "iterate",
            the relative residual for "gmres"); default `tol`.

    Returns:
        x*, of the shape of x0.
    """
    if not callable(step):
        raise TypeError(f"`step` must be a callable step(x, params) -> x, got {type(step).__name__}.")
    x0 = as_float_array(x0, name="x0")
    max_steps = _check_count(max_steps, name="max_steps")
    tol = check_positive(tol, name="tol", allow_zero=True)
    if backward not in _BACKWARDS:
        raise ValueError(f"`backward` must be one of {_BACKWARDS}, got {backward!r}.")
    back_steps = (
        max_steps if backward_max_steps is None else _check_count(backward_max_steps, name="backward_max_steps")
    )
    back_tol = tol if backward_tol is None else check_positive(backward_tol, name="backward_tol", allow_zero=True)
    if not isinstance(tol, float) or not isinstance(back_tol, float):
        raise TypeError("`tol` and `backward_tol` must be Python numbers (they are static).")
    out = jax.eval_shape(step, x0, params)
    if out.shape != x0.shape or out.dtype != x0.dtype:
        raise ValueError(
            f"`step` must return an array like x ({x0.dtype}{tuple(x0.shape)}), got {out.dtype}{tuple(out.shape)}."
        )
    return _solve(step, (max_steps, tol, backward, back_steps, back_tol), x0, params)


def retrieve_fixed_point(
    energy,
    x0: Float[Array, " N"],
    memories: Float[Array, "K N"],
    *,
    solver: AbstractSolver | None = None,
    max_steps: int = 1000,
    tol: float = 1e-6,
    mask: Bool[Array, " N"] | None = None,
    backward: Literal["iterate", "gmres"] = "iterate",
    backward_max_steps: int | None = None,
    backward_tol: float | None = None,
) -> Float[Array, " N"]:
    """Retrieval to the fixed point with implicit gradients: the state where `jamem.retrieve`
    with the same energy and continuous solver stops, x* = x* - step_size grad E(x*), i.e. a
    stationary point of the energy (in the free coordinates).

    Gradients reach `memories`, any array fields of `energy` and the clamped entries of `x0`
    (those are part of the rule: x_i = x0_i for mask_i True); the free entries of x0 get zero.

    Args:
        energy: E(state, memories) -> scalar (a `jamem.energies` module, an equinox module with
            array fields, or a pure function).
        x0: the query, shape (N,). Batch with `jax.vmap`.
        memories: shape (K, N).
        solver: a continuous solver (default `GradientDescent()`); binary rules have no
            derivative and are refused.
        max_steps, tol: forward stopping (largest change of one step <= tol).
        mask: boolean (N,), True where a coordinate is clamped to x0.
        backward, backward_max_steps, backward_tol: see `fixed_point`.

    Returns:
        x*, shape (N,).
    """
    solver = GradientDescent() if solver is None else solver
    if not isinstance(solver, AbstractSolver):
        raise TypeError(f"`solver` must be a jamem solver (e.g. GradientDescent), got {type(solver).__name__}.")
    if solver.binary:
        raise TypeError(f"`solver` must be continuous: {type(solver).__name__} flips signs and has no derivative.")
    if not callable(energy):
        raise TypeError(f"`energy` must be a callable E(state, memories), got {type(energy).__name__}.")
    x0 = as_float_array(x0, name="x0", ndim=1)
    memories = as_float_array(memories, name="memories", ndim=2)
    check_feature_dims(x0, memories)
    if mask is None:
        clamped = jnp.zeros(x0.shape, bool)
    else:
        clamped = jnp.asarray(mask)
        if clamped.dtype != jnp.bool_ or clamped.shape != x0.shape:
            raise ValueError(f"`mask` must be a boolean array of shape {tuple(x0.shape)}, got {clamped.dtype}.")
    dynamic, static = eqx.partition(energy, eqx.is_array)

    # Every array the rule reads travels in `params` (the rule itself must not close over traced
    # values); the mask goes as 0/1 floats, its (zero) cotangent discarded.
    def step(x, params):
        dyn, mem, anchor, clamp = params
        clamp = clamp > 0.5
        new, _ = solver.step(eqx.combine(dyn, static), x, mem, clamp, None)
        return jnp.where(clamp, anchor, new)

    return fixed_point(
        step,
        x0,
        (dynamic, memories, x0, clamped.astype(x0.dtype)),
        max_steps=max_steps,
        tol=tol,
        backward=backward,
        backward_max_steps=backward_max_steps,
        backward_tol=backward_tol,
    )
