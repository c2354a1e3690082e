import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import jamem as jm

EVERY_STEP = jm.SaveAt(every=1)

SEPARATIONS = {
    "power": jm.Power,
    "rectified": jm.RectifiedPower,
}


def _binary(key, shape):
    return jax.random.rademacher(key, shape, dtype=jnp.float32)


def _energy_trace(energy, x0, xi, solver, steps=8, key=None):
    sol = jm.retrieve(energy, x0, xi, solver=solver, steps=steps, tol=None, saveat=jm.SaveAt(every=1), key=key)
    return np.asarray(sol.trajectory_energy, np.float64), sol


@given(
    kind=st.sampled_from(["power", "rectified", "exponential"]),
    degree=st.integers(2, 8),
    dim=st.sampled_from([5, 24]),
    num_memories=st.sampled_from([1, 7, 60]),
    seed=st.integers(0, 2**16),
    order=st.sampled_from(["sequential", "random"]),
)
def test_async_energy_never_increases(kind, degree, dim, num_memories, seed, order):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    xi = _binary(k1, (num_memories, dim))
    x0 = _binary(k2, (dim,))
    sep = jm.Exponential(0.5) if kind == "exponential" else SEPARATIONS[kind](degree)
    # float64 reference energy on the saved trajectory (float32 would round at high degree)
    sol = jm.retrieve(
        jm.DenseEnergy(sep),
        x0,
        xi,
        solver=jm.AsyncBinary(order=order),
        steps=10,
        tol=None,
        saveat=jm.SaveAt(every=1),
        key=k3,
    )
    states = np.asarray(sol.trajectory, np.float64)
    ov = states @ np.asarray(xi, np.float64).T
    f = {
        "power": lambda x: x**degree,
        "rectified": lambda x: np.maximum(x, 0) ** degree,
        "exponential": lambda x: np.exp(0.5 * x),
    }[kind]
    energies = -f(ov).sum(-1)
    assert np.all(np.diff(energies) <= 1e-9 * np.abs(energies[:-1]) + 1e-9)
    assert set(np.unique(states)) <= {-1.0, 1.0}


def test_async_flip_by_flip_descent(key):
    """Within a sweep every single flip lowers (or keeps) the energy: replay flip by flip."""
    xi = _binary(key, (30, 20))
    sigma = np.asarray(_binary(jax.random.key(9), (20,)), np.float64)
    energy = jm.DenseEnergy(jm.Power(3))
    xi64 = np.asarray(xi, np.float64)
    for _ in range(3):
        new = np.asarray(
            jm.retrieve(energy, jnp.asarray(sigma, jnp.float32), xi, solver=jm.AsyncBinary(), steps=1, tol=None).state,
            np.float64,
        )
        # sequential order: apply the changes neuron by neuron
        for i in range(20):
            before = -np.sum((xi64 @ sigma) ** 3)
            sigma[i] = new[i]
            assert -np.sum((xi64 @ sigma) ** 3) <= before + 1e-9


@given(seed=st.integers(0, 2**16), degree=st.integers(2, 6), dim=st.sampled_from([3, 11]), k=st.sampled_from([1, 9]))
def test_async_fast_path_equals_brute_force(seed, degree, dim, k):
    k1, k2 = jax.random.split(jax.random.key(seed))
    xi = _binary(k1, (k, dim))
    x0 = _binary(k2, (dim,))
    fast = jm.DenseEnergy(jm.RectifiedPower(degree))

    def generic(state, memories):  # same energy, but not a DenseEnergy: brute-force comparisons
        return -jnp.sum(jax.nn.relu(memories @ state) ** degree)

    a = jm.retrieve(fast, x0, xi, solver=jm.AsyncBinary(), steps=20)
    b = jm.retrieve(generic, x0, xi, solver=jm.AsyncBinary(), steps=20)
    np.testing.assert_array_equal(a.state, b.state)
    assert int(a.num_steps) == int(b.num_steps)


def test_async_matches_literal_rule(key):
    """The asynchronous rule (arXiv:1606.01164, eq. 3) written out literally in numpy, one neuron at a time."""
    xi = np.asarray(_binary(key, (25, 15)), np.float64)
    sigma = np.asarray(_binary(jax.random.key(3), (15,)), np.float64)
    out = np.asarray(
        jm.retrieve(
            jm.DenseEnergy(jm.Power(3)),
            jnp.asarray(sigma, jnp.float32),
            jnp.asarray(xi, jnp.float32),
            solver=jm.AsyncBinary(),
            steps=1,
            tol=None,
        ).state
    )
    for i in range(15):
        field = xi @ sigma - xi[:, i] * sigma[i]
        gap = np.sum((xi[:, i] + field) ** 3 - (-xi[:, i] + field) ** 3)
        sigma[i] = np.sign(gap) if gap != 0 else sigma[i]
    np.testing.assert_array_equal(out, sigma)


def test_stored_memory_is_fixed_point_below_capacity(key):
    xi = _binary(key, (5, 64))
    for i in range(5):
        sol = jm.retrieve(jm.DenseEnergy(jm.Power(3)), xi[i], xi, solver=jm.AsyncBinary())
        np.testing.assert_array_equal(sol.state, xi[i])
        assert bool(sol.converged) and int(sol.num_steps) == 1


def test_corrupted_cue_is_recalled(key):
    xi = _binary(key, (20, 100))
    cue = jm.capacity.flip_bits(jax.random.key(1), xi[7], fraction=0.2)
    sol = jm.retrieve(jm.DenseEnergy(jm.Power(3)), cue, xi, solver=jm.AsyncBinary(order="random"), key=key)
    np.testing.assert_array_equal(sol.state, xi[7])


def test_sync_rule_reaches_fixed_point_near_memory(key):
    xi = _binary(key, (3, 50))
    cue = jm.capacity.flip_bits(jax.random.key(2), xi[0], fraction=0.1)
    sol = jm.retrieve(jm.DenseEnergy(jm.Power(2)), cue, xi, solver=jm.SyncBinary(), steps=10)
    np.testing.assert_array_equal(sol.state, xi[0])


def test_gradient_step_one_is_modern_hopfield_update(key):
    xi = jax.random.normal(key, (10, 8))
    x = jax.random.normal(jax.random.key(1), (8,))
    beta = 3.0
    sol = jm.retrieve(jm.LogSumExpEnergy(beta), x, xi, solver=jm.GradientDescent(step_size=1.0), steps=1)
    np.testing.assert_allclose(sol.state, xi.T @ jax.nn.softmax(beta * (xi @ x)), rtol=1e-5, atol=1e-6)


@given(seed=st.integers(0, 2**16), beta=st.floats(0.1, 8.0), which=st.sampled_from(["lse", "gauss", "relu", "dense"]))
def test_gradient_descent_energy_never_increases(seed, beta, which):
    k1, k2 = jax.random.split(jax.random.key(seed))
    xi = jax.random.normal(k1, (6, 5))
    x0 = xi[0] + 0.3 * jax.random.normal(k2, (5,))
    energy, step = {
        "lse": (jm.LogSumExpEnergy(beta), 0.5),  # Hessian <= (1 + beta |Xi|^2) so a small step descends
        "gauss": (jm.GaussianKernelEnergy(beta), 0.5 / (1 + beta * 25)),
        "relu": (jm.LogSumReLUEnergy(beta), 0.01 / (1 + beta)),
        "dense": (jm.DenseEnergy(jm.RectifiedPower(2)), 0.002),
    }[which]
    if which == "lse":
        step = 0.9 / (1 + beta * float(jnp.linalg.norm(xi, 2) ** 2))
    sol = jm.retrieve(energy, x0, xi, solver=jm.GradientDescent(step), steps=40, saveat=jm.SaveAt(every=1))
    e = np.asarray(sol.trajectory_energy, np.float64)
    assert np.all(np.diff(e) <= 1e-5 * (1 + np.abs(e[:-1])))


def test_vmap_equals_loop_and_jit_equals_eager(key):
    xi = _binary(key, (40, 32))
    x0s = _binary(jax.random.key(1), (5, 32))
    keys = jax.random.split(jax.random.key(2), 5)
    energy = jm.DenseEnergy(jm.Power(4))
    solver = jm.AsyncBinary(order="random")

    def run(x, k, memories):
        return jm.retrieve(energy, x, memories, solver=solver, steps=30, key=k)

    batched = jax.jit(jax.vmap(run, in_axes=(0, 0, None)))(x0s, keys, xi)
    for i in range(5):
        single = run(x0s[i], keys[i], xi)
        np.testing.assert_array_equal(batched.state[i], single.state)
        assert int(batched.num_steps[i]) == int(single.num_steps)
    # continuous
    lse = jm.LogSumExpEnergy(2.0)
    xs = jax.random.normal(key, (4, 32))
    f = lambda x, m: jm.retrieve(lse, x, m, solver=jm.GradientDescent(0.5), steps=20, tol=1e-6).state
    np.testing.assert_allclose(
        jax.jit(jax.vmap(f, in_axes=(0, None)))(xs, xi), jnp.stack([f(x, xi) for x in xs]), rtol=1e-5, atol=1e-5
    )


def test_while_loop_stops_at_tolerance(key):
    xi = jax.random.normal(key, (5, 6))
    sol = jm.retrieve(jm.LogSumExpEnergy(4.0), xi[1] + 0.1, xi, solver=jm.GradientDescent(1.0), steps=500, tol=1e-6)
    assert bool(sol.converged) and int(sol.num_steps) < 500
    fixed = jm.retrieve(jm.LogSumExpEnergy(4.0), xi[1] + 0.1, xi, solver=jm.GradientDescent(1.0), steps=7)
    assert int(fixed.num_steps) == 7


def test_saved_trajectory_thinned_and_forward_filled(key):
    xi = _binary(key, (10, 30))
    cue = jm.capacity.flip_bits(jax.random.key(3), xi[2], fraction=0.2)
    sol = jm.retrieve(
        jm.DenseEnergy(jm.Power(3)), cue, xi, solver=jm.AsyncBinary(), steps=40, saveat=jm.SaveAt(every=4)
    )
    assert sol.trajectory.shape == (11, 30) and sol.trajectory_energy.shape == (11,)
    np.testing.assert_array_equal(sol.trajectory[0], cue)
    np.testing.assert_array_equal(sol.trajectory[-1], sol.state)  # early stop: filled with the final state
    gd = jm.retrieve(jm.LogSumExpEnergy(), xi[0] * 0.5, xi, steps=16000, saveat=jm.SaveAt(every=1000))
    assert gd.trajectory.shape == (17, 30)


def test_mask_clamps_coordinates(key):
    xi = _binary(key, (4, 20))
    cue = -xi[1]
    mask = jnp.arange(20) < 10
    sol = jm.retrieve(jm.DenseEnergy(jm.Power(3)), cue, xi, solver=jm.AsyncBinary(), mask=mask)
    np.testing.assert_array_equal(sol.state[:10], cue[:10])
    gd = jm.retrieve(jm.LogSumExpEnergy(2.0), jnp.zeros(20), xi, steps=10, mask=mask)
    np.testing.assert_array_equal(gd.state[:10], jnp.zeros(10))
    assert float(jnp.abs(gd.state[10:]).sum()) > 0


def test_random_order_is_reproducible(key):
    xi = _binary(key, (80, 40))
    x0 = _binary(jax.random.key(1), (40,))
    run = lambda k: jm.retrieve(jm.DenseEnergy(jm.Power(3)), x0, xi, solver=jm.AsyncBinary(order="random"), key=k)
    np.testing.assert_array_equal(run(jax.random.key(5)).state, run(jax.random.key(5)).state)


# ---- bad input -------------------------------------------------------------------------------

E = jm.DenseEnergy(jm.Power(3))


def test_mismatched_shapes_raise(key):
    with pytest.raises((ValueError, TypeError), match="x0|memories"):
        jm.retrieve(E, jnp.ones(5), jnp.ones((3, 6)), solver=jm.AsyncBinary())


def test_non_binary_state_raises():
    with pytest.raises(ValueError, match="x0"):
        jm.retrieve(E, jnp.array([1.0, 0.5, -1.0]), jnp.ones((2, 3)), solver=jm.AsyncBinary())


def test_empty_memories_raise():
    with pytest.raises((ValueError, TypeError), match="params"):
        jm.retrieve(E, jnp.ones(3), jnp.ones((0, 3)), solver=jm.AsyncBinary())


def test_nan_inputs_raise():
    with pytest.raises(ValueError, match="x0"):
        jm.retrieve(jm.LogSumExpEnergy(), jnp.array([1.0, jnp.nan]), jnp.ones((2, 2)))
    with pytest.raises(ValueError, match="params"):
        jm.retrieve(jm.LogSumExpEnergy(), jnp.ones(2), jnp.array([[1.0, jnp.inf]]))


def test_euler_flow_follows_the_energy_velocity(key):
    """EulerFlow with the default velocity (- grad E) is GradientDescent; an energy with its own
    velocity and pytree parameters is integrated with that velocity."""
    xi = jax.random.normal(key, (5, 6))
    x0 = xi[2] + 0.3
    a = jm.retrieve(jm.LogSumExpEnergy(3.0), x0, xi, solver=jm.EulerFlow(0.2), steps=9)
    b = jm.retrieve(jm.LogSumExpEnergy(3.0), x0, xi, solver=jm.GradientDescent(0.2), steps=9)
    np.testing.assert_allclose(a.state, b.state, rtol=1e-6, atol=1e-7)

    class Preconditioned(jm.AbstractEnergy):
        def __call__(self, state, params):
            return 0.5 * jnp.sum(params["scale"] * (state - params["target"]) ** 2)

        def velocity(self, state, params):
            return params["target"] - state  # - grad E / scale: descends E for a positive scale

    params = {"scale": jnp.linspace(1.0, 3.0, 6), "target": xi[0]}
    sol = jm.retrieve(Preconditioned(), x0, params, solver=jm.EulerFlow(0.5), steps=4, saveat=jm.SaveAt(every=1))
    np.testing.assert_allclose(sol.state, xi[0] + 0.5**4 * (x0 - xi[0]), rtol=1e-5, atol=1e-6)
    assert np.all(np.diff(np.asarray(sol.trajectory_energy)) < 0)


def test_bad_options_raise():
    xi, x = jnp.ones((2, 4)), jnp.ones(4)
    with pytest.raises(ValueError, match="steps"):
        jm.retrieve(E, x, xi, steps=0)
    with pytest.raises(ValueError, match="every"):
        jm.retrieve(E, x, xi, steps=10, saveat=jm.SaveAt(every=3))
    with pytest.raises(ValueError, match="key"):
        jm.retrieve(E, x, xi, solver=jm.AsyncBinary(order="random"))
    with pytest.raises((TypeError, ValueError), match="order"):
        jm.AsyncBinary(order="backwards")
    with pytest.raises((TypeError, ValueError), match="mask"):
        jm.retrieve(E, x, xi, mask=jnp.ones(4))
    with pytest.raises(ValueError, match="step_size"):
        jm.GradientDescent(-1.0)
    with pytest.raises(TypeError, match="solver"):
        jm.retrieve(E, x, xi, solver="async")
    with pytest.raises(ValueError, match="dt"):
        jm.EulerFlow(0.0)
    with pytest.raises(TypeError, match="params"):
        jm.retrieve(E, x, {"weights": "none"})
    with pytest.raises(TypeError, match="DenseEnergy"):
        jm.retrieve(jm.DenseEnergy(jm.Power(2)), x, {"xi": xi}, solver=jm.AsyncBinary())
    with pytest.raises(ValueError, match="NaN"):
        jm.retrieve(lambda s, p: jnp.sum((s - p["t"]) ** 2), x, {"t": jnp.full(4, jnp.nan)})
    # a nested tuple of numbers is still a (K, N) matrix
    as_tuple = jm.retrieve(E, x, ((1.0, 0.0, 0.0, 0.0), (0.0, 1.0, 0.0, 0.0)), steps=3)
    as_array = jm.retrieve(E, x, jnp.eye(2, 4), steps=3)
    np.testing.assert_allclose(as_tuple.state, as_array.state)
