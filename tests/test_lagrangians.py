import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jamem as jm
from jamem import lagrangians as lg

LAGRANGIANS = {
    "identity": lg.Identity(),
    "rectified1": lg.RectifiedPower(1),
    "rectified3": lg.RectifiedPower(3),
    "relu": lg.ReLU(),
    "exponential": lg.Exponential(0.7),
    "tanh": lg.Tanh(1.5),
    "sigmoid": lg.Sigmoid(2.0),
    "softmax": lg.Softmax(1.3),
    "layernorm": lg.LayerNorm(0.8, 0.3),
    "spherical": lg.SphericalNorm(),
}


def _samples(seed, num=6, dim=7):
    # scale 2 reaches the saturated parts of tanh/sigmoid and both sides of the rectifiers
    return 2.0 * jax.random.normal(jax.random.key(seed), (num, dim))


@jax.jit
def _derivatives(lag, xs):
    """Per sample: g(x), grad L(x), Hess L(x), grad_x [x . g - L](x), all in one compiled call."""

    def one(x):
        legendre_grad = jax.grad(lambda y: lg.legendre_energy(lag, y))(x)
        return lag.activation(x), jax.grad(lag)(x), jax.hessian(lag)(x), legendre_grad

    return jax.vmap(one)(xs)


@pytest.mark.parametrize("name", sorted(LAGRANGIANS))
def test_activation_convexity_and_legendre_identity(name):
    """g = grad L; Hess L is positive semi-definite (the condition for dE/dt <= 0, arXiv:2008.06996); and
    grad_x [x . g(x) - L(x)] = Hess L(x) @ x (the Legendre identity)."""
    lag = LAGRANGIANS[name]
    xs = _samples(1)
    act, grad, hess, legendre_grad = (np.asarray(a, np.float64) for a in _derivatives(lag, xs))
    np.testing.assert_allclose(act, grad, rtol=1e-5, atol=1e-6)
    for x, h, lgrad in zip(np.asarray(xs, np.float64), hess, legendre_grad):
        np.testing.assert_allclose(h, h.T, atol=1e-5)
        eig = np.linalg.eigvalsh(0.5 * (h + h.T))
        assert eig.min() >= -1e-5 * max(1.0, np.abs(eig).max()), (name, eig)
        np.testing.assert_allclose(lgrad, h @ x, rtol=1e-4, atol=1e-4)


def test_the_checks_can_fail():
    """-log cosh is concave (a negative Hessian eigenvalue), and a wrong activation breaks both
    g = grad L and the Legendre identity."""
    _, _, hess, _ = _derivatives(lg.Tanh(), -_samples(3))
    assert np.linalg.eigvalsh(-np.asarray(hess[0])).min() < -1e-3

    class WrongSoftmax(lg.Softmax):
        def activation(self, x):
            return jax.nn.softmax(x)  # ignores beta

    x = _samples(1)[:1]
    act, grad, hess, legendre_grad = _derivatives(WrongSoftmax(3.0), x)
    assert not np.allclose(act, grad, atol=1e-3)
    assert not np.allclose(legendre_grad[0], hess[0] @ x[0], atol=1e-3)


def test_closed_forms_of_lagrangians():
    x = _samples(2)[0]
    xn = np.asarray(x, np.float64)
    beta, gamma, delta, eps = 1.3, 0.8, 0.3, 1e-5
    big = jnp.array([200.0, -200.0, 0.5])  # cosh(200) overflows float32

    @jax.jit
    def values(x, big):
        layer_norm = lg.LayerNorm(gamma, delta, eps=eps)
        return dict(
            softmax=lg.Softmax(beta)(x),
            softmax_grad=jax.grad(lg.Softmax(beta))(x),
            layer_norm=layer_norm(x),
            layer_norm_grad=jax.grad(layer_norm)(x),
            tanh_big=lg.Tanh()(big),
            sigmoid=lg.Sigmoid(2.0)(x),
            spherical=lg.SphericalNorm()(x),
            rectified3=lg.RectifiedPower(3).activation(x),
        )

    v = values(x, big)
    # softmax: L = (1/beta) log sum exp(beta x), g = softmax(beta x)
    np.testing.assert_allclose(v["softmax"], np.log(np.exp(beta * xn).sum()) / beta, rtol=1e-5)
    np.testing.assert_allclose(v["softmax_grad"], np.exp(beta * xn) / np.exp(beta * xn).sum(), rtol=1e-5, atol=1e-7)
    # layer norm: L = D gamma sqrt(var + eps) + delta sum x, g = gamma (x - mean)/sqrt(var + eps) + delta
    var = xn.var()
    np.testing.assert_allclose(v["layer_norm"], xn.size * gamma * np.sqrt(var + eps) + delta * xn.sum(), rtol=1e-5)
    ln = gamma * (xn - xn.mean()) / np.sqrt(var + eps) + delta
    np.testing.assert_allclose(v["layer_norm_grad"], ln, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(v["tanh_big"], 400 - 2 * np.log(2) + np.log(np.cosh(0.5)), rtol=1e-6)
    np.testing.assert_allclose(v["sigmoid"], np.log1p(np.exp(2 * xn)).sum() / 2, rtol=1e-5)
    np.testing.assert_allclose(v["spherical"], np.linalg.norm(xn), rtol=1e-6)
    np.testing.assert_allclose(v["rectified3"], np.maximum(xn, 0) ** 2, rtol=1e-6)


def test_legendre_energy_values():
    x = _samples(5)[0]
    np.testing.assert_allclose(lg.legendre_energy(lg.Identity(), x), 0.5 * jnp.dot(x, x), rtol=1e-6)
    # a plain callable works through jax.grad
    np.testing.assert_allclose(
        lg.legendre_energy(lambda y: 0.5 * jnp.sum(y**2), x), lg.legendre_energy(lg.Identity(), x), rtol=1e-6
    )
    # softmax: x . softmax(x) - lse(x) = -entropy(softmax(x)) <= 0
    p = jax.nn.softmax(x)
    np.testing.assert_allclose(lg.legendre_energy(lg.Softmax(), x), jnp.sum(p * jnp.log(p)), rtol=1e-5)


def test_model_b_energy_is_the_modern_hopfield_energy(key):
    """Model B of arXiv:2008.06996: with L_v = 1/2 |v|^2, L_h = lse and h at its fixed point Xi v, the two-layer energy
    [v . g - L_v] + [h . f - L_h] - f . Xi g equals the LogSumExpEnergy."""
    xi = jax.random.normal(key, (5, 8))
    v = jax.random.normal(jax.random.key(1), (8,))
    beta = 1.7
    lv, lh = lg.Identity(), lg.Softmax(beta)
    h = xi @ lv.activation(v)
    energy = lg.legendre_energy(lv, v) + lg.legendre_energy(lh, h) - lh.activation(h) @ (xi @ lv.activation(v))
    np.testing.assert_allclose(energy, jm.LogSumExpEnergy(beta)(v, xi), rtol=1e-5, atol=1e-5)


def test_spherical_norm_finite_at_origin():
    zero = jnp.zeros(4)
    assert float(lg.SphericalNorm()(zero)) == 0.0
    assert bool(jnp.all(lg.SphericalNorm().activation(zero) == 0))
    assert bool(jnp.all(jnp.isfinite(jax.grad(lg.SphericalNorm())(zero))))


def test_jit_and_vmap_equal_eager(key):
    xs = jax.random.normal(key, (5, 6))
    for name in ("softmax", "layernorm", "spherical", "tanh"):  # the layer-coupling ones and a saturating one
        lag = LAGRANGIANS[name]
        values, acts = jax.jit(jax.vmap(lambda x: (lag(x), lag.activation(x))))(xs)
        np.testing.assert_allclose(values[2], lag(xs[2]), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(acts[2], lag.activation(xs[2]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cls", [lg.Exponential, lg.Tanh, lg.Sigmoid, lg.Softmax])
@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_beta_raises_naming_beta(cls, bad):
    with pytest.raises(ValueError, match="beta"):
        cls(bad)


@pytest.mark.parametrize("bad", [0, -2, 2.5, True])
def test_bad_degree_raises_naming_degree(bad):
    with pytest.raises((TypeError, ValueError), match="degree"):
        lg.RectifiedPower(bad)


def test_bad_layer_norm_and_spherical_parameters():
    with pytest.raises(ValueError, match="gamma"):
        lg.LayerNorm(gamma=0.0)
    with pytest.raises(ValueError, match="eps"):
        lg.LayerNorm(eps=-1.0)
    with pytest.raises(TypeError, match="delta"):
        lg.LayerNorm(delta="a")
    with pytest.raises(ValueError, match="eps"):
        lg.SphericalNorm(eps=-1e-3)


def test_legendre_energy_bad_input():
    with pytest.raises(TypeError, match="lagrangian"):
        lg.legendre_energy(3, jnp.ones(3))
    with pytest.raises((TypeError, ValueError), match="x"):  # jaxtyping's check or ours
        lg.legendre_energy(lg.Identity(), jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="`x`"):
        lg.legendre_energy(lg.Identity(), jnp.array([1.0, jnp.nan]))
