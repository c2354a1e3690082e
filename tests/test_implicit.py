import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jamem as jm
from jamem.core.adjoints import fixed_point

N, K, BETA = 8, 5, 0.5


def _problem(seed=0):
    """A small LSE energy with small beta and memories of norm about 1: the update
    x <- Xi^T softmax(beta Xi x) is a contraction, with a unique fixed point."""
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    xi = jax.random.normal(k1, (K, N)) / np.sqrt(N)
    x0 = jax.random.normal(k2, (N,))
    target = jax.random.normal(k3, (N,))
    return xi, x0, target


def _unrolled(xi, x0, mask=None, steps=100):
    energy = jm.LogSumExpEnergy(BETA)
    return jm.retrieve(energy, x0, xi, solver=jm.GradientDescent(1.0), steps=steps, mask=mask).state


def _implicit(xi, x0, mask=None, backward="iterate"):
    adjoint = jm.ImplicitAdjoint(linear_solver=backward)
    solver = jm.GradientDescent(1.0)
    return jm.retrieve(
        jm.LogSumExpEnergy(BETA), x0, xi, solver=solver, steps=1000, tol=1e-7, mask=mask, adjoint=adjoint
    ).state


def test_implicit_gradients_match_unrolled_gradients():
    """IFT gradient w.r.t. the memories (fixed-point and GMRES adjoint solves) equals jax.grad
    through a long unrolled lax.scan retrieval; with a mask the clamped query entries get the
    same gradient too."""
    xi, x0, target = _problem(1)
    mask = jnp.arange(N) < 3

    def loss(fn, **kw):
        return lambda xi, x0: jnp.sum((fn(xi, x0, **kw) - target) ** 2)

    @jax.jit
    def grads(xi, x0):
        out = {}
        for name, fn, kw in [
            ("unrolled", _unrolled, {}),
            ("iterate", _implicit, {}),
            ("gmres", _implicit, {"backward": "gmres"}),
            ("unrolled_mask", _unrolled, {"mask": mask}),
            ("iterate_mask", _implicit, {"mask": mask}),
        ]:
            out[name] = (loss(fn, **kw)(xi, x0), jax.grad(loss(fn, **kw), argnums=(0, 1))(xi, x0))
        out["fixed"] = _implicit(xi, x0)
        return out

    out = grads(xi, x0)
    ref_loss, (ref_xi, ref_x0) = out["unrolled"]
    for name in ("iterate", "gmres"):
        value, (g_xi, g_x0) = out[name]
        np.testing.assert_allclose(value, ref_loss, rtol=1e-5)
        np.testing.assert_allclose(g_xi, ref_xi, rtol=1e-3, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(g_x0, 0.0, atol=1e-6)  # the fixed point forgets the start
    assert np.abs(np.asarray(ref_xi)).max() > 1e-2  # a gradient worth comparing
    np.testing.assert_allclose(np.abs(ref_x0).max(), 0.0, atol=1e-5)

    ref_loss, (ref_xi, ref_x0) = out["unrolled_mask"]
    value, (g_xi, g_x0) = out["iterate_mask"]
    np.testing.assert_allclose(value, ref_loss, rtol=1e-5)
    np.testing.assert_allclose(g_xi, ref_xi, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(g_x0, ref_x0, rtol=1e-3, atol=1e-5)
    assert np.abs(np.asarray(g_x0[:3])).max() > 1e-2 and np.all(np.asarray(g_x0[3:]) == 0)

    # it is a fixed point of the update, and a step count too short to converge gives another gradient
    x = out["fixed"]
    np.testing.assert_allclose(xi.T @ jax.nn.softmax(BETA * (xi @ x)), x, atol=1e-6)
    short = jax.grad(lambda xi: jnp.sum((_unrolled(xi, x0, steps=1) - target) ** 2))(xi)
    assert not np.allclose(short, ref_xi, atol=1e-3)


def test_generic_fixed_point_with_pytree_params_under_vmap():
    """x* = a * tanh(W x*) + b: gradients w.r.t. a dict of params against the closed-form
    implicit derivative, batched over b with vmap."""
    w = 0.4 * jax.random.normal(jax.random.key(2), (4, 4)) / 2.0
    params = {"w": w, "a": jnp.asarray(0.9)}
    bs = jax.random.normal(jax.random.key(3), (3, 4))

    def step(x, p):
        w, a, b = p
        return a * jnp.tanh(w @ x) + b

    def solve(params, b):
        return fixed_point(step, jnp.zeros(4), (params["w"], params["a"], b), tol=1e-7)

    g = jax.jit(jax.grad(lambda p: jnp.sum(jax.vmap(lambda b: solve(p, b))(bs) ** 2)))(params)

    def exact(params, b):  # dl/dtheta = 2 x* . (I - J)^-1 df/dtheta at the fixed point
        x = solve(params, b)
        inv = jnp.linalg.inv(jnp.eye(4) - jax.jacobian(step)(x, (params["w"], params["a"], b)))
        dw = jnp.einsum("ij,jkl->ikl", inv, jax.jacobian(lambda w: step(x, (w, params["a"], b)))(params["w"]))
        da = inv @ jax.jacobian(lambda a: step(x, (params["w"], a, b)))(params["a"])
        return 2 * jnp.einsum("i,ikl->kl", x, dw), 2 * x @ da

    ew, ea = jax.vmap(lambda b: exact(params, b))(bs)
    np.testing.assert_allclose(g["w"], ew.sum(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(g["a"], ea.sum(0), rtol=1e-4, atol=1e-6)


def test_bad_inputs_raise_clear_errors():
    xi, x0, _ = _problem(4)
    energy = jm.LogSumExpEnergy(BETA)
    implicit = jm.ImplicitAdjoint()
    with pytest.raises(ValueError, match="continuous solver"):
        jm.retrieve(energy, jnp.sign(x0), xi, solver=jm.AsyncBinary(), adjoint=implicit)
    with pytest.raises(ValueError, match="tol"):
        jm.retrieve(energy, x0, xi, adjoint=implicit)  # no tol: no fixed point to differentiate
    with pytest.raises(ValueError, match="saveat"):
        jm.retrieve(energy, x0, xi, tol=1e-6, adjoint=implicit, saveat=jm.SaveAt(every=10))
    with pytest.raises((ValueError, TypeError), match="linear_solver"):  # jaxtyping's Literal check first
        jm.ImplicitAdjoint(linear_solver="cg")
    with pytest.raises(ValueError, match="`steps`"):
        jm.ImplicitAdjoint(steps=0)
    with pytest.raises(ValueError, match="`tol`"):
        jm.retrieve(energy, x0, xi, tol=-1.0, adjoint=implicit)
    with pytest.raises((ValueError, TypeError), match="x0|params"):
        jm.retrieve(energy, x0[:-1], xi, tol=1e-6, adjoint=implicit)
    with pytest.raises((ValueError, TypeError), match="mask"):
        jm.retrieve(energy, x0, xi, tol=1e-6, mask=jnp.ones(N), adjoint=implicit)
    with pytest.raises(ValueError, match="`step`"):
        fixed_point(lambda x, p: jnp.sum(x), x0, xi)
    with pytest.raises(TypeError, match="`step`"):
        fixed_point("step", x0, xi)
