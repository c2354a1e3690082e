"""Clustering as associative memory (ClAM, arXiv:2306.03209): the k-means limit, the dynamics,
recovery of separated clusters, bad input."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jamem.networks import clustering


def blobs(key, *, centres=4, per_centre=100, dim=5, spread=0.3):
    k1, k2 = jax.random.split(key)
    means = 3.0 * jax.random.normal(k1, (centres, dim))
    labels = jnp.repeat(jnp.arange(centres), per_centre)
    return means[labels] + spread * jax.random.normal(k2, (centres * per_centre, dim)), labels, means


def test_one_hard_step_is_the_kmeans_objective():
    points, _, _ = blobs(jax.random.key(0))
    prototypes = points[:6] + 0.1
    loss = clustering.reconstruction_loss(prototypes, points, beta=1e4, steps=1, step_size=1.0)
    assert float(loss) == pytest.approx(float(clustering.kmeans_objective(prototypes, points)), rel=1e-4)
    # a soft beta blurs the settled point between prototypes, so it reconstructs worse than the hard limit
    soft = clustering.reconstruction_loss(prototypes, points, beta=0.05, steps=1, step_size=1.0)
    assert float(soft) > float(loss)


def test_settling_is_the_written_out_update_and_lowers_the_energy():
    points, _, _ = blobs(jax.random.key(1), per_centre=5)
    prototypes, beta, eta = points[::4], 0.7, 0.3
    x = points
    for _ in range(3):
        d2 = jnp.sum((x[:, None, :] - prototypes[None]) ** 2, -1)
        x = (1 - eta) * x + eta * jax.nn.softmax(-0.5 * beta * d2, axis=-1) @ prototypes
    settled = clustering.settle(prototypes, points, beta=beta, steps=3, step_size=eta)
    np.testing.assert_allclose(settled, x, rtol=1e-5, atol=1e-5)
    energy = jax.vmap(lambda s: clustering.GaussianKernelEnergy(beta)(s, prototypes))
    assert bool(jnp.all(energy(settled) <= energy(points) + 1e-6))


def test_fitted_prototypes_recover_separated_clusters():
    points, labels, means = blobs(jax.random.key(2))
    prototypes, losses = clustering.fit_prototypes(
        points, num_clusters=4, beta=2.0, steps=3, epochs=40, batch_size=100, learning_rate=0.05, key=jax.random.key(3)
    )
    # down to what the true centres give (the loss of well-placed prototypes is the blobs' spread)
    at_centres = float(clustering.reconstruction_loss(means, points, beta=2.0, steps=3))
    assert losses[-1] < losses[0] and losses[-1] <= 1.02 * at_centres
    found = np.asarray(clustering.assign(prototypes, points, beta=2.0, steps=3))
    # the partition equals the true one up to relabelling
    best = max(np.mean(np.asarray(perm)[found] == np.asarray(labels)) for perm in itertools.permutations(range(4)))
    assert best == 1.0
    # each prototype sits near a true centre
    distances = jnp.min(jnp.linalg.norm(prototypes[:, None] - means[None], axis=-1), axis=1)
    assert float(jnp.max(distances)) < 0.5


def test_bad_input_is_refused_by_name():
    points = jnp.ones((10, 3))
    with pytest.raises(ValueError, match="`num_clusters`"):
        clustering.fit_prototypes(points, num_clusters=11, beta=1.0, key=jax.random.key(0))
    with pytest.raises(ValueError, match="`beta`"):
        clustering.fit_prototypes(points, num_clusters=2, beta=0.0, key=jax.random.key(0))
    with pytest.raises((ValueError, TypeError), match="points"):  # jaxtyping, or our own check without it
        clustering.assign(jnp.ones((2, 3)), jnp.ones((10, 4)), beta=1.0)
    with pytest.raises(ValueError, match="`steps`"):
        clustering.settle(jnp.ones((2, 3)), points, beta=1.0, steps=0)
    with pytest.raises(ValueError, match="`points`"):
        clustering.fit_prototypes(jnp.full((10, 3), jnp.nan), num_clusters=2, beta=1.0, key=jax.random.key(0))


def test_distances_keep_their_precision_far_from_the_origin():
    # |x|^2 - 2 x.rho + |rho|^2 in float32 at |x| ~ 1400 would lose these (it gave 0 and -0.125)
    prototypes = jnp.array([[1000.0, 1000.0], [1001.0, 1001.0]])
    points = jnp.array([[1000.9, 1000.9], [1000.1, 1000.1]])
    want = np.array([[1.62, 0.02], [0.02, 1.62]])
    np.testing.assert_allclose(clustering.squared_distances(points, prototypes), want, atol=2e-3)
    assert float(clustering.kmeans_objective(prototypes, points)) == pytest.approx(0.02, abs=2e-3)
    # ... and far from the prototypes' mean, where centring on it (the previous fix) lost them
    spread = jnp.array([[0.0], [1e4], [1e4 + 0.8]])
    np.testing.assert_allclose(
        clustering.squared_distances(jnp.array([[1e4 + 0.7]]), spread)[0, 1:], [0.49, 0.01], atol=2e-3
    )
    assert float(clustering.kmeans_objective(spread, jnp.array([[1e4 + 0.7]]))) == pytest.approx(0.01, abs=2e-3)
    # float16 points 300 apart: |x - rho|^2 overflows float16, so it is computed in float32
    low = clustering.kmeans_objective(
        jnp.array([[0.0, 0.0], [300.0, 300.0]], jnp.float16), jnp.array([[10.0, 0.0], [290.0, 300.0]], jnp.float16)
    )
    assert float(low) == pytest.approx(100.0)
    # integer input is converted, not wrapped around
    ints = clustering.kmeans_objective(jnp.zeros((1, 3), jnp.int8), jnp.full((2, 3), 100, jnp.int8))
    assert float(ints) == pytest.approx(30000.0)


def test_beta_beyond_float32_is_refused_not_frozen():
    # past 8.5e37, 1/beta is subnormal, flushed to 0 on CPU: the gradient was exactly 0, points never moved
    memories, points = jnp.array([[0.0, 0.0], [1.0, 1.0]]), jnp.array([[0.2, 0.1], [0.9, 0.8]])
    for beta in (1e38, 1e-44):
        with pytest.raises(ValueError, match="`beta`"):
            clustering.settle(memories, points, beta=beta, steps=1)
    # the largest beta allowed is the k-means limit: one hard step lands on the nearest prototype
    np.testing.assert_allclose(clustering.settle(memories, points, beta=1e30, steps=1), memories)
    assert float(clustering.reconstruction_loss(memories, points, beta=1e30, steps=1)) == pytest.approx(
        float(clustering.kmeans_objective(memories, points)), rel=1e-5
    )


def test_float16_points_far_apart_settle_like_float32():
    memories = jnp.array([[200.0, 200.0], [-200.0, -200.0]])
    # (0, 0) is 283 from both: both squared distances overflowed float16, and inf - inf gave NaN
    points = jnp.array([[0.0, 0.0], [150.0, 190.0], [-180.0, -170.0]])
    low = clustering.settle(memories.astype(jnp.float16), points.astype(jnp.float16), beta=1.0, steps=2)
    assert low.dtype == jnp.float16
    np.testing.assert_allclose(np.asarray(low, np.float32), clustering.settle(memories, points, beta=1.0, steps=2))


def test_bfloat16_points_settle():
    points, _, _ = blobs(jax.random.key(4), per_centre=5)
    low = clustering.settle(points[::4].astype(jnp.bfloat16), points.astype(jnp.bfloat16), beta=1.0, steps=2)
    high = clustering.settle(points[::4], points, beta=1.0, steps=2)
    assert low.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(low, np.float32), high, atol=0.1)
