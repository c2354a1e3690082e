import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jamem as jm
from jamem import RandomFeatureMemory

N, K, BETA = 8, 16, 1.0


def _problem():
    xi = 0.5 * jax.random.normal(jax.random.key(0), (K, N))
    queries = xi[:6] + 0.2 * jax.random.normal(jax.random.key(1), (6, N))
    return xi, queries


@jax.jit
def _energy_errors(xi, queries, small, large):
    """Mean |approx - exact| of the energy and its gradient at `queries`, over four feature
    seeds, for feature maps `small` and `large` (empty modules differing only in Y)."""
    energy = jm.GaussianKernelEnergy(BETA)
    exact = jax.vmap(energy, in_axes=(0, None))(queries, xi)
    exact_grad = jax.vmap(jax.grad(energy), in_axes=(0, None))(queries, xi)
    out = []
    for empty in (small, large):

        def one(key):
            fresh = eqx.tree_at(lambda m: m.projection, empty, jax.random.normal(key, empty.projection.shape))
            rf = fresh.add_memories(xi)
            e, g = jax.vmap(rf)(queries), jax.vmap(rf.gradient)(queries)
            return jnp.mean(jnp.abs(e - exact)), jnp.mean(jnp.linalg.norm(g - exact_grad, axis=-1))

        errs = jax.lax.map(one, jax.random.split(jax.random.key(7), 4))
        out.append(jax.tree_util.tree_map(jnp.mean, errs))
    return out, jnp.mean(jnp.linalg.norm(exact_grad, axis=-1))


@pytest.mark.parametrize("kind", ["fourier", "positive"])
def test_error_falls_with_number_of_features(kind, key):
    xi, queries = _problem()
    small, large = (RandomFeatureMemory(N, y, beta=BETA, kind=kind, key=key) for y in (16, 4096))
    ((err_s, grad_s), (err_l, grad_l)), grad_norm = _energy_errors(xi, queries, small, large)
    # 1/sqrt(Y): a factor 256 in Y is a factor 16 in the error; ask for at least 2.5
    assert float(err_l) < float(err_s) / 2.5, (err_s, err_l)
    assert float(grad_l) < float(grad_s) / 2.5, (grad_s, grad_l)
    if kind == "fourier":
        assert float(err_l) < 0.1 and float(grad_l) < 0.3 * float(grad_norm)


def test_kernel_sum_estimate_is_unbiased():
    """Averaged over many feature draws the kernel sum approaches the exact sum."""
    xi, queries = _problem()
    v = queries[0]
    exact = float(jnp.sum(jnp.exp(-0.5 * BETA * jnp.sum((xi - v[None]) ** 2, axis=-1))))

    @jax.jit
    def estimate(key):
        return RandomFeatureMemory(N, 64, beta=BETA, key=key).add_memories(xi).kernel_sum(v)

    draws = np.asarray(jax.lax.map(estimate, jax.random.split(jax.random.key(3), 200)))
    assert abs(draws.mean() - exact) < 4 * draws.std() / np.sqrt(draws.size)
    assert draws.std() > 0  # a real random estimate, not the exact sum


def test_footprint_independent_of_number_of_memories_and_additive(key):
    xi, _ = _problem()
    rf = RandomFeatureMemory(N, 32, beta=BETA, key=key)

    @jax.jit
    def build(rf, xi, extra):
        return (
            rf.add_memories(xi[:3]),
            rf.add_memories(extra),
            rf.add_memories(xi),
            rf.add_memories(xi[:5]).add_memories(xi[5:]),
        )

    few, many, at_once, in_parts = build(rf, xi, jax.random.normal(jax.random.key(2), (500, N)))
    shapes = lambda m: [(x.shape, x.dtype) for x in jax.tree_util.tree_leaves(m)]
    assert shapes(few) == shapes(many) == shapes(rf)
    assert int(few.num_stored) == 3 and int(many.num_stored) == 500
    assert not np.allclose(few.memory, many.memory)
    # T is a sum: adding in two parts equals adding at once
    np.testing.assert_allclose(in_parts.memory, at_once.memory, rtol=1e-5, atol=1e-6)
    assert int(in_parts.num_stored) == K
    # a stored memory sits lower in energy once it is added
    without = jax.jit(lambda rf, xi: rf.add_memories(xi[1:])(xi[0]))(rf, xi)
    assert float(jax.jit(lambda m, v: m(v))(at_once, xi[0])) < float(without)


def test_same_key_same_features_different_key_different():
    a = RandomFeatureMemory(N, 16, key=jax.random.key(5))
    b = RandomFeatureMemory(N, 16, key=jax.random.key(5))
    c = RandomFeatureMemory(N, 16, key=jax.random.key(6))
    assert np.array_equal(a.projection, b.projection)
    assert not np.allclose(a.projection, c.projection)


@pytest.mark.parametrize("kind", ["fourier", "positive"])
def test_jit_and_vmap(kind, key):
    xi, queries = _problem()
    empty = RandomFeatureMemory(N, 32, beta=BETA, kind=kind, key=key)
    rf = jax.jit(lambda m, x: m.add_memories(x))(empty, xi)
    batched = jax.jit(jax.vmap(lambda m, q: (m(q), m.gradient(q)), in_axes=(None, 0)))(rf, queries)
    assert batched[0].shape == (6,) and batched[1].shape == (6, N)
    # eager, one query: the same numbers
    eager = empty.add_memories(xi)
    np.testing.assert_allclose(rf.memory, eager.memory, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(batched[0][2], eager(queries[2]), rtol=1e-5)
    np.testing.assert_allclose(batched[1][2], jax.grad(eager)(queries[2]), rtol=1e-4, atol=1e-5)


def test_descent_on_approximate_energy_retrieves_a_memory(key):
    """With many features, gradient descent on the approximate energy from near a memory ends
    closest to that memory (through `jamem.retrieve` with the memory matrix unused)."""
    xi = 1.5 * jax.random.normal(key, (4, N))
    start = xi[2] + 0.3 * jax.random.normal(jax.random.key(12), (N,))

    @jax.jit
    def run(rf, start):
        rf = rf.add_memories(xi)
        sol = jm.retrieve(lambda s, _: rf(s), start, xi, solver=jm.GradientDescent(0.5), steps=60)
        return sol.state, sol.energy, rf(start)

    state, end_energy, start_energy = run(RandomFeatureMemory(N, 2048, beta=BETA, key=jax.random.key(11)), start)
    dist = jnp.linalg.norm(xi - state[None], axis=-1)
    assert int(jnp.argmin(dist)) == 2 and float(dist[2]) < 0.2
    assert float(end_energy) < float(start_energy)


def test_bad_inputs(key):
    with pytest.raises(ValueError, match="beta"):
        RandomFeatureMemory(N, 8, beta=0.0, key=key)
    with pytest.raises(ValueError, match="num_features"):
        RandomFeatureMemory(N, 0, key=key)
    with pytest.raises(ValueError, match="dim"):
        RandomFeatureMemory(0, 8, key=key)
    with pytest.raises(ValueError, match="kind"):
        RandomFeatureMemory(N, 8, kind="gaussian", key=key)
    with pytest.raises(TypeError, match="key"):
        RandomFeatureMemory(N, 8)
    rf = RandomFeatureMemory(N, 8, key=key)
    with pytest.raises(ValueError, match="memories"):
        rf.add_memories(jnp.ones((3, N + 1)))
    with pytest.raises((TypeError, ValueError), match="memories"):
        rf.add_memories(jnp.ones((N,)))
    with pytest.raises(ValueError, match="memories"):
        rf.add_memories(jnp.full((2, N), jnp.nan))
