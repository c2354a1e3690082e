import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jamem import DenseAMClassifier, dual_outputs, power_loss


def _tiled_reference(memories, images, degree, temperature):
    """The original form: the batch copied once per class, U and V_alpha built explicitly."""
    memories, images = np.asarray(memories, np.float64), np.asarray(images, np.float64)
    num_classes = memories.shape[1] - images.shape[1]
    out = np.zeros((images.shape[0], num_classes))
    for alpha in range(num_classes):
        u = np.concatenate([images, -np.ones((images.shape[0], num_classes))], 1)
        v = u.copy()
        v[:, images.shape[1] + alpha] = 1.0
        f = lambda x: np.maximum(x, 0) ** degree
        out[:, alpha] = np.sum(f(v @ memories.T) - f(u @ memories.T), axis=1) / temperature**degree
    return np.tanh(out)


@pytest.mark.parametrize("degree", [2, 3, 20, 30])
def test_matches_tiled_reference(degree):
    model = DenseAMClassifier(num_memories=50, num_visible=30, num_classes=4, degree=degree, key=jax.random.key(0))
    images = jax.random.uniform(jax.random.key(1), (8, 30), minval=-1, maxval=1)
    temperature = 2.0 if degree < 10 else 20.0
    got = jax.vmap(lambda x: model(x, temperature=temperature))(images)
    np.testing.assert_allclose(got, _tiled_reference(model.memories, images, degree, temperature), rtol=2e-4, atol=1e-5)


def test_float32_images_on_a_float64_model_score_in_float64():
    # U = (v, -eps ...) is built in the promoted dtype: -eps = -0.1 rounded to float32 would shift
    # every score of a float64 model
    with jax.enable_x64(True):
        model = DenseAMClassifier(num_memories=20, num_visible=6, num_classes=3, degree=3, key=jax.random.key(0))
        model = jax.tree.map(lambda leaf: leaf.astype(jnp.float64), model)
        images = jax.random.uniform(jax.random.key(1), (2, 6), jnp.float32, minval=-1, maxval=1)
        got = model.batch_scores(images, temperature=2.0, eps=0.1)
        want = model.batch_scores(images.astype(jnp.float64), temperature=2.0, eps=0.1)
        assert got.dtype == jnp.float64
        np.testing.assert_array_equal(got, want)


def test_n30_full_size_is_finite_in_float32():
    model = DenseAMClassifier(num_memories=100, degree=30, key=jax.random.key(0))
    image = jnp.ones(784)
    assert bool(jnp.all(jnp.isfinite(model.scores(image, temperature=600.0))))
    grads = jax.grad(lambda m: power_loss(m(image, temperature=600.0), 3, power=30))(model)
    assert bool(jnp.all(jnp.isfinite(grads.memories)))


def test_a_key_gives_the_same_float32_memories_with_x64():
    # experiments/mnist_precision.py starts its float64 run from these memories, cast
    plain = DenseAMClassifier(num_memories=20, num_visible=30, num_classes=4, key=jax.random.key(3))
    with jax.enable_x64(True):
        wide = DenseAMClassifier(num_memories=20, num_visible=30, num_classes=4, key=jax.random.key(3))
    assert wide.memories.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(wide.memories), np.asarray(plain.memories))


def test_duality_gap_shrinks_as_eps_goes_to_zero():
    model = DenseAMClassifier(
        num_memories=40, num_visible=20, num_classes=5, degree=3, init_mean=0.0, key=jax.random.key(2)
    )
    image = jax.random.uniform(jax.random.key(3), (20,), minval=-1, maxval=1) * 0.3
    dual = dual_outputs(model, image)
    gaps = []
    for eps in (0.3, 0.1, 0.03, 0.01):
        # beta = 1 / (2 eps) and T^n = 1 / beta
        c = model(image, temperature=(2 * eps) ** (1 / 3), eps=eps)
        gaps.append(float(jnp.max(jnp.abs(c - dual))))
    assert all(a > b for a, b in zip(gaps, gaps[1:]))
    assert gaps[-1] < 1e-2


def test_power_loss_values():
    c = jnp.array([0.5, -1.0, -0.5])
    assert float(power_loss(c, 0, power=1)) == pytest.approx(0.25 + 0 + 0.25)
    assert float(power_loss(c, 1, power=2)) == pytest.approx(1.5**4 + 2**4 + 0.5**4)


def test_bad_arguments():
    with pytest.raises((TypeError, ValueError), match="degree"):
        DenseAMClassifier(num_memories=4, degree=0, key=jax.random.key(0))
    with pytest.raises((TypeError, ValueError), match="power"):
        power_loss(jnp.zeros(3), 0, power=0)
    model = DenseAMClassifier(num_memories=4, num_visible=6, num_classes=3, key=jax.random.key(0))
    # one pixel short: without the check, a matmul error about widths 8 and 9 (pixels + classes)
    with pytest.raises(ValueError, match=r"`images` must have shape \(B, 6\)"):
        model.batch_scores(jnp.ones((2, 5)), temperature=1.0)
    with pytest.raises((TypeError, ValueError), match="images"):
        model.scores(jnp.ones(5), temperature=1.0)
