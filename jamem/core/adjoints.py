"""How gradients flow back through retrieval: the `adjoint` option of `jamem.retrieve`.

- `DirectAdjoint()` differentiates the iterations themselves: the `lax.scan` of a fixed number of
  steps, or, when a tolerance stops early, a checkpointed while loop (reverse-mode
  differentiable with memory that grows like log(steps), as in diffrax).
- `ImplicitAdjoint()` differentiates the fixed point. Retrieval ends at x* = f(x*, theta), f being
  one step of a continuous solver on the energy and theta everything the step reads (the
  parameters, the energy's own arrays, the clamped entries of x0). By the implicit function
  theorem,

      dx*/dtheta = (I - df/dx)^(-1) df/dtheta,

  so the gradient of a loss l(x*) needs one adjoint linear system at x*,

      (I - df/dx)^T u = dl/dx*,        dl/dtheta = u^T df/dtheta,

  solved by the fixed-point iteration u <- g + (df/dx)^T u (convergent where f contracts near
  x*, the condition of the forward iteration too) or by GMRES. The forward pass is a
  `lax.while_loop` that keeps nothing, so memory does not grow with the number of steps (Bai,
  Kolter & Koltun 2019, arXiv:1909.01377, deep equilibrium models).

`fixed_point(step, x0, params)` is the same construction for any rule `step(x, params) -> x`.

Why hand-written rather than optimistix / lineax: the dependency set of jamem is fixed (JAX,
equinox, optax, ...), and the two linear solvers needed here are a few lines on top of
`jax.scipy.sparse.linalg.gmres`; the tests check both against unrolled differentiation.
"""

from __future__ import annotations

from functools import partial
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PyTree

from .._checks import check_positive, check_positive_int

LINEAR_SOLVERS = ("iterate", "gmres")


class AbstractAdjoint(eqx.Module):
    """How `retrieve` is differentiated."""


class DirectAdjoint(AbstractAdjoint):
    """Differentiate through the iterations (reverse mode; memory grows with the steps taken)."""


class ImplicitAdjoint(AbstractAdjoint):
    """Differentiate at the fixed point by the implicit function theorem (see the module docstring).

    Attributes:
        linear_solver: "iterate" (u <- g + (df/dx)^T u) or "gmres" for the adjoint system.
        steps: the most backward iterations (GMRES restarts of 20 Krylov vectors); default
            the forward `steps`.
        tol: the backward stopping tolerance (the largest change of u for "iterate", the relative
            residual for "gmres"); default the forward `tol`.
    """

    linear_solver: Literal["iterate", "gmres"] = eqx.field(static=True, default="iterate")
    steps: int | None = eqx.field(static=True, default=None)
    tol: float | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        if self.linear_solver not in LINEAR_SOLVERS:
            raise ValueError(f"`linear_solver` must be one of {LINEAR_SOLVERS}, got {self.linear_solver!r}.")
        if self.steps is not None:
            check_positive_int(self.steps, name="steps")
        if self.tol is not None:
            check_positive(self.tol, name="tol", allow_zero=True)

    def solve(self, solver, energy, x0, params, clamped, *, steps: int, tol: float):
        """(x*, steps taken, converged) for `retrieve`; gradients reach `params`, the energy's
        array fields and the clamped entries of `x0` (the free entries get zero)."""
        dynamic, static = eqx.partition(energy, eqx.is_array)
        # Every array the rule reads travels in `theta` (the rule must not close over traced
        # values); the mask as 0/1 floats, its (zero) cotangent discarded.
        masks = jax.tree.map(lambda m, x: m.astype(x.dtype), clamped, x0)

        def rule(x, theta):
            dyn, p, anchor, mask = theta
            clamp = jax.tree.map(lambda m: m > 0.5, mask)
            new = solver.step(eqx.combine(dyn, static), x, p, clamp, None)[0]
            return jax.tree.map(lambda c, a, n: jnp.where(c, a, n), clamp, anchor, new)

        backward_steps = steps if self.steps is None else self.steps
        backward_tol = tol if self.tol is None else float(self.tol)
        config = (steps, tol, self.linear_solver, backward_steps, backward_tol)
        final, taken, change = _solve(rule, config, x0, (dynamic, params, x0, masks))
        return final, taken, change <= tol


def _largest_change(new, old):
    return jax.tree.reduce(jnp.maximum, jax.tree.map(lambda a, b: jnp.max(jnp.abs(a - b)), new, old))


def _iterate(update, x0, *, steps, tol):
    """x <- update(x) until the largest change of one step <= tol, or steps; returns
    (steps taken, x, the last change)."""

    def cond(carry):
        t, _, change = carry
        return (t < steps) & (change > tol)

    def body(carry):
        t, x, _ = carry
        new = update(x)
        return t + 1, new, _largest_change(new, x)

    init = (jnp.asarray(0), x0, jnp.asarray(jnp.inf, jnp.result_type(*jax.tree.leaves(x0))))
    return jax.lax.while_loop(cond, body, init)


@partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _solve(step, config, x0, params):
    """(x*, steps taken, last change); only x* carries a gradient."""
    steps, tol, _, _, _ = config
    taken, x, change = _iterate(lambda x: step(x, params), x0, steps=steps, tol=tol)
    return x, taken, jax.lax.stop_gradient(change)


def _solve_fwd(step, config, x0, params):
    x, taken, change = _solve(step, config, x0, params)
    return (x, taken, change), (x, params)


def _solve_bwd(step, config, residuals, cotangents):
    g = cotangents[0]
    _, _, linear_solver, back_steps, back_tol = config
    x, params = residuals
    _, vjp_x = jax.vjp(lambda y: step(y, params), x)

    def transposed_jacobian(u):
        return vjp_x(u)[0]

    if linear_solver == "iterate":
        u = _iterate(lambda u: jax.tree.map(jnp.add, g, transposed_jacobian(u)), g, steps=back_steps, tol=back_tol)[1]
    else:
        u, _ = jax.scipy.sparse.linalg.gmres(
            lambda u: jax.tree.map(jnp.subtract, u, transposed_jacobian(u)),
            g,
            tol=back_tol,
            atol=0.0,
            maxiter=back_steps,
            solve_method="batched",
        )
    _, vjp_p = jax.vjp(lambda p: step(x, p), params)
    (grad_params,) = vjp_p(u)
    return jax.tree.map(jnp.zeros_like, x), grad_params


_solve.defvjp(_solve_fwd, _solve_bwd)


def fixed_point(
    step,
    x0: PyTree[Float[Array, ...]],
    params,
    *,
    steps: int = 1000,
    tol: float = 1e-6,
    linear_solver: Literal["iterate", "gmres"] = "iterate",
    backward_steps: int | None = None,
    backward_tol: float | None = None,
) -> PyTree[Float[Array, ...]]:
    """The fixed point x* = step(x*, params), iterated from x0, differentiable in `params` by the
    implicit function theorem (see the module docstring).

    Args:
        step: the rule `step(x, params) -> x` (the structure, shapes and dtypes of x). Everything
            it depends on and that gradients should reach must be in `params`.
        x0: where the iteration starts (an array or a pytree of arrays). Its gradient is zero.
        params: a pytree of arrays.
        steps: the most forward iterations.
        tol: stop once the largest change of one step <= tol.
        linear_solver: "iterate" or "gmres" for the adjoint system (I - df/dx)^T u = g.
        backward_steps: the most backward iterations; default `steps`.
        backward_tol: the backward stopping tolerance; default `tol`.

    Returns:
        x*, like x0.
    """
    if not callable(step):
        raise TypeError(f"`step` must be a callable step(x, params) -> x, got {type(step).__name__}.")
    x0 = jax.tree.map(jnp.asarray, x0)
    steps = check_positive_int(steps, name="steps")
    tol = check_positive(tol, name="tol", allow_zero=True)
    if linear_solver not in LINEAR_SOLVERS:
        raise ValueError(f"`linear_solver` must be one of {LINEAR_SOLVERS}, got {linear_solver!r}.")
    back_steps = steps if backward_steps is None else check_positive_int(backward_steps, name="steps")
    back_tol = tol if backward_tol is None else check_positive(backward_tol, name="backward_tol", allow_zero=True)
    if not isinstance(tol, float) or not isinstance(back_tol, float):
        raise TypeError("`tol` and `backward_tol` must be Python numbers (they are static).")
    expected = jax.tree.map(lambda a: (a.shape, a.dtype), x0)
    got = jax.tree.map(lambda a: (a.shape, a.dtype), jax.eval_shape(step, x0, params))
    if got != expected:
        raise ValueError(f"`step` must return x's structure, shapes and dtypes ({expected}), got {got}.")
    return _solve(step, (steps, tol, linear_solver, back_steps, back_tol), x0, params)[0]
