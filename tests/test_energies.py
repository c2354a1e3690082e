import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jamem as jm
from jamem.core.separation import gap_sign


def _memories(key, k=7, n=12):
    return jax.random.normal(key, (k, n))


def test_dense_energy_matches_definition(key):
    xi = jax.random.rademacher(key, (9, 16), dtype=jnp.float32)
    sigma = jax.random.rademacher(jax.random.key(1), (16,), dtype=jnp.float32)
    for sep, f in [
        (jm.Power(3), lambda x: x**3),
        (jm.RectifiedPower(2), lambda x: np.maximum(x, 0) ** 2),
        (jm.Exponential(0.1), lambda x: np.exp(0.1 * x)),
        (lambda x: x**2, lambda x: x**2),
    ]:
        expected = -np.sum(f(np.asarray(xi) @ np.asarray(sigma)))
        np.testing.assert_allclose(jm.DenseEnergy(sep)(sigma, xi), expected, rtol=1e-5)


def test_power_gradient_closed_form(key):
    xi = _memories(key)
    x = jax.random.normal(jax.random.key(2), (12,))
    grad = jax.grad(jm.DenseEnergy(jm.Power(3)))(x, xi)
    expected = -3 * (xi @ x) ** 2 @ xi
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-4)


def test_lse_gradient_is_modern_hopfield_residual(key):
    xi = _memories(key)
    x = jax.random.normal(jax.random.key(3), (12,))
    beta = 2.5
    grad = jax.grad(jm.LogSumExpEnergy(beta))(x, xi)
    expected = x - xi.T @ jax.nn.softmax(beta * (xi @ x))
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-5)


def test_gaussian_kernel_gradient_closed_form(key):
    xi = _memories(key)
    v = jax.random.normal(jax.random.key(4), (12,))
    beta = 0.7
    grad = jax.grad(jm.GaussianKernelEnergy(beta))(v, xi)
    weights = jax.nn.softmax(-0.5 * beta * jnp.sum((xi - v[None]) ** 2, axis=-1))
    np.testing.assert_allclose(grad, v - weights @ xi, rtol=1e-5, atol=1e-5)


def test_gaussian_kernel_at_low_temperature_under_jit():
    # beta |v - xi|^2 ~ 6e11: a fused multiply-subtract once left every softmax weight 0 under jit
    # (a NaN gradient); the nearest memory must take all the weight, and the value stay exact
    xi = jax.random.uniform(jax.random.key(7), (10, 784), minval=-1.0, maxval=1.0)
    v = 80.0 * jax.random.normal(jax.random.key(8), (784,))
    energy = jm.GaussianKernelEnergy(1 / 0.002**2)
    value, grad = jax.jit(jax.value_and_grad(energy))(v, xi)
    sq_dist = np.sum((np.asarray(xi, np.float64) - np.asarray(v, np.float64)) ** 2, axis=-1)
    nearest = int(np.argmin(sq_dist))
    np.testing.assert_allclose(grad, v - xi[nearest], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(value, 0.5 * sq_dist[nearest], rtol=1e-6)


def test_log_sum_relu_gradient_closed_form(key):
    xi = jnp.array([[0.0, 0.0], [1.0, 0.2], [0.1, 1.1]])
    q = jnp.array([0.3, 0.2])
    beta, eps = 2.0, 1e-6
    grad = jax.grad(jm.LogSumReLUEnergy(beta, eps))(q, xi)
    kern = np.maximum(1 - 0.5 * beta * np.sum((np.asarray(xi) - np.asarray(q)) ** 2, -1), 0)
    active = kern > 0
    expected = (np.asarray(q)[None] - np.asarray(xi))[active].sum(0) / (kern.sum() + eps)
    np.testing.assert_allclose(grad, expected, rtol=1e-4)


@pytest.mark.parametrize("sep", [jm.Power(30), jm.RectifiedPower(30), jm.Power(20), jm.Power(3), jm.Power(31)])
@pytest.mark.parametrize("start", ["memory", "random"])
def test_log_domain_energy_finite_and_exact_in_float32(sep, start):
    xi = jax.random.rademacher(jax.random.key(0), (50, 784), dtype=jnp.float32)
    sigma = xi[3] if start == "memory" else jax.random.rademacher(jax.random.key(5), (784,), dtype=jnp.float32)
    if sep.degree >= 30 and start == "memory":  # 784^30 overflows float32: raw E is -inf
        assert not jnp.isfinite(jm.DenseEnergy(sep)(sigma, xi))
    energy = jm.DenseEnergy(sep, log_domain=True)
    e, g = energy(sigma, xi), jax.grad(energy)(sigma, xi)
    assert jnp.isfinite(e) and bool(jnp.all(jnp.isfinite(g)))
    # E_log = -sign(S) log(1 + |S|), S = sum_mu F(xi . sigma), in exact integer arithmetic
    overlaps = [int(v) for v in np.asarray(xi, np.int64) @ np.asarray(sigma, np.int64)]
    rectified = isinstance(sep, jm.RectifiedPower)
    total = sum((max(v, 0) if rectified else v) ** sep.degree for v in overlaps)
    expected = -np.sign(total) * (math.log(abs(total)) + math.log1p(1 / abs(total)))
    np.testing.assert_allclose(float(e), expected, rtol=2e-6)
    # the same descent direction as E: grad E_log = grad E / (1 + |E|), against float64 numpy
    x64, m64 = np.asarray(sigma, np.float64), np.asarray(xi, np.float64)
    ov = m64 @ x64
    fprime = sep.degree * (np.maximum(ov, 0) if rectified else ov) ** (sep.degree - 1)
    grad_e = -(fprime @ m64)
    np.testing.assert_allclose(np.asarray(g), grad_e / (1 + abs(float(total))), rtol=2e-4, atol=1e-6)


def test_log_domain_orders_states_like_the_energy():
    xi = jax.random.rademacher(jax.random.key(1), (8, 40), dtype=jnp.float32)
    states = jax.random.rademacher(jax.random.key(2), (30, 40), dtype=jnp.float32)
    for sep in (jm.Power(3), jm.Power(4), jm.RectifiedPower(5), jm.Exponential(0.5)):
        raw = jax.vmap(lambda s: jm.DenseEnergy(sep)(s, xi))(states)
        log = jax.vmap(lambda s: jm.DenseEnergy(sep, log_domain=True)(s, xi))(states)
        order = [np.argsort(np.asarray(values), kind="stable") for values in (raw, log)]
        np.testing.assert_array_equal(*order)


def test_exponential_gap_sign_stable_at_large_arguments():
    sep = jm.Exponential(beta=5.0)
    assert gap_sign(sep, jnp.array([700.0, 10.0]), jnp.array([698.0, 12.0])) == 1.0
    # exp(5 * 700) overflows float32 unscaled; the largest terms tie and cancel, the rest decides
    assert gap_sign(sep, jnp.array([700.0, 12.0, 3.0]), jnp.array([700.0, 10.0, 3.0])) == 1.0
    assert gap_sign(sep, jnp.array([1.0, 2.0]), jnp.array([2.0, 1.0])) == 0.0


def test_lse_energy_stable_at_large_beta(key):
    xi = _memories(key)
    x = xi[0]
    e = jm.LogSumExpEnergy(beta=1e4)(x, xi)
    assert jnp.isfinite(e)
    np.testing.assert_allclose(e, -jnp.max(xi @ x) + 0.5 * x @ x, rtol=1e-3, atol=1e-3)


def test_jit_equals_eager_and_vmap_equals_loop(key):
    xi = _memories(key)
    xs = jax.random.normal(jax.random.key(5), (6, 12))
    for energy in [
        jm.LogSumExpEnergy(1.5),
        jm.GaussianKernelEnergy(0.5),
        jm.LogSumReLUEnergy(0.1),
        jm.DenseEnergy(jm.RectifiedPower(3)),
    ]:
        eager = jnp.stack([energy(x, xi) for x in xs])
        np.testing.assert_allclose(jax.jit(jax.vmap(energy, in_axes=(0, None)))(xs, xi), eager, rtol=1e-5)


@pytest.mark.parametrize("bad", [0, -2, 2.5, True, "3"])
def test_bad_degree_raises_naming_degree(bad):
    with pytest.raises((TypeError, ValueError), match="degree"):
        jm.Power(bad)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_bad_beta_raises_naming_beta(bad):
    with pytest.raises(ValueError, match="beta"):
        jm.LogSumExpEnergy(bad)


def test_gaussian_kernel_beta_is_kept_where_float32_can_follow_it():
    # 1/beta subnormal (beta > 8.5e37) made the gradient exactly 0; beta < 1e-38 made E -inf
    for bad in (9e37, 1e39, 1e-44):
        with pytest.raises(ValueError, match="`beta`"):
            jm.GaussianKernelEnergy(bad)
    xi, v = jnp.array([[0.0, 0.0], [1.0, 1.0]]), jnp.array([0.2, 0.1])
    np.testing.assert_allclose(jax.grad(jm.GaussianKernelEnergy(1e30))(v, xi), v)  # v - nearest memory


def test_gaussian_kernel_energy_of_half_precision_is_computed_in_float32():
    xi = jnp.array([[200.0, 200.0], [-200.0, -200.0]])  # |v - xi|^2 ~ 1e5, past float16's 65504
    v = jnp.array([150.0, 190.0])
    energy = jm.GaussianKernelEnergy(1.0)
    low = energy(v.astype(jnp.float16), xi.astype(jnp.float16))
    assert low.dtype == jnp.float32 and float(low) == pytest.approx(float(energy(v, xi)), rel=1e-6)
    np.testing.assert_allclose(jax.grad(energy)(v.astype(jnp.float16), xi.astype(jnp.float16)), jax.grad(energy)(v, xi))


def test_bad_separation_raises():
    with pytest.raises(TypeError, match="separation"):
        jm.DenseEnergy(3)


def test_chunked_lse_equals_unchunked(key):
    xi = jax.random.normal(key, (64, 10))
    x = jax.random.normal(jax.random.key(1), (10,))
    full, chunked = jm.LogSumExpEnergy(2.0, chunk_size=None), jm.LogSumExpEnergy(2.0, chunk_size=16)
    np.testing.assert_allclose(chunked(x, xi), full(x, xi), rtol=1e-5)
    np.testing.assert_allclose(jax.grad(chunked)(x, xi), jax.grad(full)(x, xi), rtol=1e-5, atol=1e-6)
    # the custom VJP: memories' cotangent, vmap over queries, and reverse over reverse (H v)
    np.testing.assert_allclose(jax.grad(chunked, 1)(x, xi), jax.grad(full, 1)(x, xi), rtol=1e-5, atol=1e-6)
    queries = jax.random.normal(jax.random.key(2), (5, 10))
    np.testing.assert_allclose(
        jax.vmap(jax.grad(chunked), (0, None))(queries, xi),
        jax.vmap(jax.grad(full), (0, None))(queries, xi),
        rtol=1e-5,
        atol=1e-6,
    )
    v = jnp.arange(10.0) / 10

    def hvp(energy):
        return jax.grad(lambda y: jnp.vdot(jax.grad(energy)(y, xi), v))(x)

    np.testing.assert_allclose(hvp(chunked), hvp(full), rtol=1e-4, atol=1e-5)
    # a lower-precision state against float32 memories promotes like the unchunked form
    half = x.astype(jnp.float16)
    np.testing.assert_allclose(chunked(half, xi), full(half, xi), rtol=1e-3)
    # a chunk that does not divide K: the last chunk takes the remainder (64 = 6 x 10 + 4)
    ragged = jm.LogSumExpEnergy(2.0, chunk_size=10)
    np.testing.assert_allclose(ragged(x, xi), full(x, xi), rtol=1e-5)
    for arg in (0, 1):
        np.testing.assert_allclose(jax.grad(ragged, arg)(x, xi), jax.grad(full, arg)(x, xi), rtol=1e-5, atol=1e-6)
    with pytest.raises((ValueError, TypeError), match="chunk_size"):
        jm.LogSumExpEnergy(2.0, chunk_size=0)


def test_lse_chunks_by_itself_at_large_k():
    auto = jm.LogSumExpEnergy(3.0)
    assert auto.chunk_for(1000) is None and auto.chunk_for(5000) == jm.energies.AUTO_CHUNK
    xi = jax.random.normal(jax.random.key(3), (5000, 8)) / 3
    x = jax.random.normal(jax.random.key(4), (8,))
    one_piece = jm.LogSumExpEnergy(3.0, chunk_size=None)
    np.testing.assert_allclose(auto(x, xi), one_piece(x, xi), rtol=1e-5)
    np.testing.assert_allclose(jax.grad(auto)(x, xi), jax.grad(one_piece)(x, xi), rtol=1e-4, atol=1e-6)


def test_gap_sign_settles_a_tie_beyond_float32_integers_exactly():
    # 257^3 + 21^3 = 231^3 + 167^3: the float32 sums differ by 2 (257^3 is rounded); integers tie
    plus, minus = jnp.array([257.0, 21.0]), jnp.array([231.0, 167.0])
    assert float(jnp.sum(plus**3) - jnp.sum(minus**3)) != 0.0
    assert gap_sign(jm.Power(3), plus, minus) == 0.0
    assert gap_sign(jm.Power(3), plus.at[1].set(23.0), minus) == 1.0
    batched = jax.vmap(lambda p: gap_sign(jm.Power(3), p, minus))(jnp.stack([plus, plus.at[1].set(19.0)]))
    np.testing.assert_array_equal(batched, [0.0, -1.0])
