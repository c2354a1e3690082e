import jax
import jax.numpy as jnp
import numpy as np

import jamem as jm


def _separated(key, k=5, n=8, min_dist=1.5):
    """Random memories, rescaled so the smallest pairwise distance is `min_dist`."""
    xi = jax.random.normal(key, (k, n))
    d = jnp.linalg.norm(xi[:, None, :] - xi[None, :, :], axis=-1) + jnp.eye(k) * 1e9
    return xi * (min_dist / jnp.min(d))


def test_retrieval_near_a_well_separated_memory_is_exact(key):
    """arXiv:2506.10801: with the support radius sqrt(2 / beta) below the smallest memory distance, descent from
    near a memory lands on it (to float32 precision); the Gaussian LSE energy at the same beta
    is pulled off it by the other memories."""
    xi = _separated(key)
    radius = 1.2  # < 1.5: no other memory inside any support
    beta = 2.0 / radius**2
    direction = jax.random.normal(jax.random.key(1), (5, 8))
    starts = xi + 0.4 * radius * direction / jnp.linalg.norm(direction, axis=1, keepdims=True)

    @jax.jit
    def run(starts):
        def one(energy, x0):
            return jm.retrieve(energy, x0, xi, solver=jm.GradientDescent(0.5), steps=300, tol=0.0).state

        lsr = jax.vmap(lambda x0: one(jm.LogSumReLUEnergy(beta), x0))(starts)
        lse = jax.vmap(lambda x0: one(jm.GaussianKernelEnergy(beta), x0))(starts)
        grad_at_memories = jax.vmap(jax.grad(jm.LogSumReLUEnergy(beta)), in_axes=(0, None))(xi, xi)
        return lsr, lse, grad_at_memories

    lsr, lse, grad_at_memories = run(starts)
    assert np.all(np.asarray(grad_at_memories) == 0.0)
    err = np.linalg.norm(np.asarray(lsr) - np.asarray(xi), axis=1)
    assert np.all(err <= 1e-6 * np.maximum(np.linalg.norm(np.asarray(xi), axis=1), 1.0)), err
    assert np.min(np.linalg.norm(np.asarray(lse) - np.asarray(xi), axis=1)) > 1e-4


def test_overlapping_supports_create_an_emergent_minimum():
    """arXiv:2506.10801: two memories 1.5 r apart (supports overlap) give three minima: both memories and the
    midpoint, which descent from there keeps."""
    beta = 2.0  # r = 1
    xi = jnp.array([[0.0, 0.0], [1.5, 0.0]])
    energy = jm.LogSumReLUEnergy(beta)
    starts = jnp.array([[-0.3, 0.2], [1.8, -0.1], [0.7, 0.3], [0.8, -0.2]])
    ends = jax.jit(
        jax.vmap(lambda x0: jm.retrieve(energy, x0, xi, solver=jm.GradientDescent(0.05), steps=2000, tol=1e-7).state)
    )(starts)
    expected = np.array([[0.0, 0.0], [1.5, 0.0], [0.75, 0.0], [0.75, 0.0]])
    np.testing.assert_allclose(ends, expected, atol=1e-4)
