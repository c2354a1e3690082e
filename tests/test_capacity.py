import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jamem as jm
from jamem import capacity as cap


def test_a5_values_at_n100():
    assert round(cap.perfect_recall_capacity(100, 2)) == 11
    assert round(cap.perfect_recall_capacity(100, 3)) == 362
    assert round(cap.perfect_recall_capacity(100, 4)) == 7238


def test_alpha_and_double_factorial():
    assert [cap.double_factorial(m) for m in (-1, 0, 1, 3, 5, 7)] == [1, 1, 1, 3, 15, 105]
    assert cap.small_error_alpha(2) == pytest.approx(0.146)
    assert cap.small_error_alpha(3) == pytest.approx(0.146 / 3)
    assert cap.small_error_capacity(100, 2) == pytest.approx(14.6)


def test_bit_error_probability_formula_and_monotonicity():
    n, dim, k = 3, 100, 300
    expected = math.sqrt(3 / (2 * math.pi) * k / dim**2) * math.exp(-(dim**2) / (2 * k * 3))
    assert cap.bit_error_probability(dim, k, n) == pytest.approx(expected)
    ps = [cap.bit_error_probability(100, k, 3) for k in (100, 300, 1000, 3000)]
    assert all(a < b for a, b in zip(ps, ps[1:]))


@pytest.mark.parametrize("degree,dim,k", [(2, 200, 40), (3, 60, 200)])
def test_bit_error_rate_matches_a3(key, degree, dim, k):
    """The bit-error probability of arXiv:1606.01164 sec. 2 against measurement: the fraction of
    bits of stored memories that the async rule would flip
    (sign of the energy gap against the bit), averaged over memories and bits."""
    xi = np.asarray(cap.random_patterns(key, num_patterns=k, dim=dim), np.float64)
    h = xi @ xi.T  # h[nu, mu] = xi^mu . xi^nu
    unstable = 0
    for i in range(dim):
        rest = h - xi[:, i][:, None] * xi[:, i][None, :]  # remove bit i of the state (= xi^nu)
        gap = np.sum((rest + xi[:, i][None, :]) ** degree - (rest - xi[:, i][None, :]) ** degree, axis=1)
        unstable += np.sum(np.sign(gap) != xi[:, i])
    measured = unstable / (k * dim)
    assert measured == pytest.approx(cap.bit_error_probability(dim, k, degree), rel=0.5)


def test_xor_by_enumeration():
    for n in range(1, 8):
        assert cap.solves_xor(jm.Power(n)) == (n % 2 == 1 and n >= 3)
        assert cap.solves_xor(jm.RectifiedPower(n)) == (n >= 2)
    # the worked numbers of arXiv:1606.01164, sec. 3: rectified, x = y = +1
    assert cap.xor_readout(jm.RectifiedPower(2), 1.0, 1.0)[1] == pytest.approx(-9 - (-3))
    assert cap.xor_readout(jm.RectifiedPower(3), 1.0, 1.0)[1] == pytest.approx(-27 - (-3))


def test_flip_bits_flips_exact_count(key):
    pats = cap.random_patterns(key, num_patterns=50, dim=64)
    flipped = cap.flip_bits(jax.random.key(1), pats, fraction=0.25)
    np.testing.assert_array_equal(jnp.sum(flipped != pats, axis=-1), 16)


def test_pool_equals_independent_retrieval(key):
    xi = cap.random_patterns(key, num_patterns=60, dim=40)
    starts = cap.random_patterns(jax.random.key(1), num_patterns=23, dim=40)
    energy = jm.DenseEnergy(jm.Power(3))
    finals, sweeps, converged = jax.jit(lambda s, m: cap.run_to_convergence(energy, s, m, pool_size=4, steps=50))(
        starts, xi
    )
    sol = jax.jit(
        jax.vmap(lambda s, m: jm.retrieve(energy, s, m, solver=jm.AsyncBinary(), steps=50), in_axes=(0, None))
    )(starts, xi)
    np.testing.assert_array_equal(finals, sol.state)
    np.testing.assert_array_equal(sweeps, sol.num_steps)
    np.testing.assert_array_equal(converged, sol.converged)


def test_k_half_interpolation():
    assert cap.k_half([100, 200, 300], [0.9, 0.7, 0.3]) == pytest.approx(250)
    assert cap.k_half([300, 100, 200], [0.3, 0.9, 0.7]) == pytest.approx(250)
    assert math.isnan(cap.k_half([1, 2], [0.9, 0.8]))
    with pytest.raises(ValueError):
        cap.k_half([], [])


def test_small_k_half_reproduction(key):
    """App. B (b) at N = 100, n = 3: power K_1/2 within 15% of the formula of sec. 2 (362);
    rectified at or above power."""
    ks = [250, 350, 450, 550]
    result = {}
    for kind in ("power", "rectified"):
        rows = cap.capacity_sweep(
            key,
            [dict(dim=100, num_memories=k, degree=3, kind=kind, seed=k) for k in ks],
            num_sets=2,
            starts_per_set=100,
            pool_size=64,
            progress=False,
        )
        result[kind] = cap.k_half(ks, [r["on_memory_fraction"] for r in rows])
    theory = cap.perfect_recall_capacity(100, 3)
    assert abs(result["power"] / theory - 1) < 0.15
    assert result["rectified"] >= result["power"]


def test_corrupted_cue_recall_below_and_above_capacity(key):
    below = cap.capacity_trials(
        key, dim=64, num_memories=20, separation=jm.Power(3), num_sets=2, starts_per_set=20, flip_fraction=0.1
    )
    above = cap.capacity_trials(
        key, dim=64, num_memories=20, separation=jm.Power(2), num_sets=2, starts_per_set=20, flip_fraction=0.1
    )
    assert below["recalled"].mean() == 1.0
    assert above["recalled"].mean() < 0.5  # K = 20 >> 0.14 N for the classical network


def test_bad_inputs():
    with pytest.raises((TypeError, ValueError), match="num_patterns"):
        cap.random_patterns(jax.random.key(0), num_patterns=0, dim=4)
    with pytest.raises(ValueError, match="fraction"):
        cap.flip_bits(jax.random.key(0), jnp.ones((2, 4)), fraction=1.5)
    with pytest.raises(ValueError, match="kind"):
        cap.make_separation("cubic", 3)
    with pytest.raises((TypeError, ValueError), match="degree"):
        cap.perfect_recall_capacity(100, 1)
    with pytest.raises(ValueError, match="grid"):
        cap.capacity_sweep(jax.random.key(0), [])
