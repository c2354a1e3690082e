"""Attacks: the descent of arXiv:1701.00939, FGSM, PGD, rubbish images, the transfer matrix."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import SHARED_DATA
from test_train import TOY, _toy_data

from jamem import ReLUMLP, log_power_loss, power_loss, train
from jamem import adversarial as adv
from jamem.tooling.cli import main


def cross_entropy(out, label):
    return optax.softmax_cross_entropy_with_integer_labels(out, label)


@pytest.fixture(scope="module")
def mlp_and_data():
    images, labels = _toy_data(count=600, dim=16, classes=3)
    model = ReLUMLP(num_visible=16, num_hidden=32, num_classes=3, key=jax.random.key(0))
    model, _ = train.fit_softmax(
        model, (images, labels), epochs=15, optimizer=optax.adam(1e-2), batch_size=50, key=jax.random.key(1),
        progress=False,
    )  # fmt: skip
    correct = np.asarray(jnp.argmax(model.batch_logits(jnp.asarray(images)), -1) == labels)
    assert correct.mean() > 0.9
    return model, jnp.asarray(images[correct][:40]), jnp.asarray(labels[correct][:40])


def test_untargeted_descent_flips_labels_and_stays_in_range(mlp_and_data):
    model, x, y = mlp_and_data
    result = adv.descend(model.batch_logits, x, y, loss_fn=cross_entropy, step_size=0.05, steps=300)
    assert float(jnp.mean(result.success)) > 0.9
    assert float(jnp.max(jnp.abs(result.images))) <= 1.0
    predicted = jnp.argmax(model.batch_logits(result.images), -1)
    np.testing.assert_array_equal(predicted != y, result.success)
    clean = jax.vmap(cross_entropy)(model.batch_logits(x), y)
    attacked = jax.vmap(cross_entropy)(model.batch_logits(result.images), y)
    assert bool(jnp.all(attacked[result.success] > clean[result.success]))
    # each image stopped as soon as it flipped: one step fewer would not have flipped it
    assert int(jnp.max(result.steps)) < 300


def test_targeted_descent_reaches_target_and_vmap_equals_loop(mlp_and_data):
    model, x, y = mlp_and_data
    targets = (y + 1) % 3
    batch = adv.descend(model.batch_logits, x[:6], y[:6], loss_fn=cross_entropy, targets=targets[:6], step_size=0.05)
    assert bool(jnp.all(batch.success))
    np.testing.assert_array_equal(jnp.argmax(model.batch_logits(batch.images), -1), targets[:6])
    for i in range(3):
        one = adv.descend(
            model.batch_logits, x[i : i + 1], y[i : i + 1], loss_fn=cross_entropy, targets=targets[i : i + 1],
            step_size=0.05,
        )  # fmt: skip
        np.testing.assert_allclose(one.images[0], batch.images[i], atol=1e-6)
        assert int(one.steps[0]) == int(batch.steps[i])


def test_fgsm_and_pgd_respect_the_ball_and_raise_the_loss(mlp_and_data):
    model, x, y = mlp_and_data
    eps = 0.3
    for attacked in (
        adv.fgsm(model.batch_logits, x, y, loss_fn=cross_entropy, epsilon=eps),
        adv.pgd(model.batch_logits, x, y, loss_fn=cross_entropy, epsilon=eps, steps=10, key=jax.random.key(0)),
    ):
        assert float(jnp.max(jnp.abs(attacked - x))) <= eps + 1e-6
        assert float(jnp.max(jnp.abs(attacked))) <= 1.0
        before = jnp.mean(jax.vmap(cross_entropy)(model.batch_logits(x), y))
        after = jnp.mean(jax.vmap(cross_entropy)(model.batch_logits(attacked), y))
        assert float(after) > float(before)
    unchanged = adv.pgd(model.batch_logits, x, y, loss_fn=cross_entropy, epsilon=0.0, key=jax.random.key(0))
    np.testing.assert_array_equal(unchanged, x)


def test_margin_loss_is_positive_exactly_when_misclassified():
    outputs = jnp.array([[0.1, 2.0, -1.0], [3.0, 1.0, 0.5], [1.0, 1.0, 0.0]])
    labels = jnp.array([1, 1, 0])
    np.testing.assert_allclose(jax.vmap(adv.margin_loss)(outputs, labels), [-1.9, 2.0, 0.0], rtol=1e-6)
    grad = jax.grad(adv.margin_loss)(outputs[0], labels[0])
    np.testing.assert_array_equal(grad, [1.0, -1.0, 0.0])


def test_spsa_breaks_a_gradient_masked_model(mlp_and_data):
    """A model whose input gradient is zero (the logits behind stop_gradient) stops PGD cold; the
    gradient-free SPSA still flips most labels, inside the ball, with `success` telling the truth."""
    model, x, y = mlp_and_data

    def masked(images):
        return model.batch_logits(jax.lax.stop_gradient(images))

    eps = 1.0  # PGD on the unmasked model breaks every image at this radius
    pgd_images = adv.pgd(masked, x, y, loss_fn=cross_entropy, epsilon=eps, steps=20, key=jax.random.key(0))
    pgd_broken = float(jnp.mean(jnp.argmax(masked(pgd_images), -1) != y))
    result = adv.spsa(masked, x, y, epsilon=eps, steps=20, samples=16, key=jax.random.key(1))
    assert float(jnp.max(jnp.abs(result.images - x))) <= eps + 1e-6
    assert float(jnp.max(jnp.abs(result.images))) <= 1.0
    np.testing.assert_array_equal(jnp.argmax(masked(result.images), -1) != y, result.success)
    assert float(jnp.mean(result.success)) > 0.8 > pgd_broken + 0.3, (float(jnp.mean(result.success)), pgd_broken)
    with pytest.raises(ValueError, match="perturbation"):
        adv.spsa(masked, x, y, epsilon=eps, perturbation=0.0, key=jax.random.key(1))
    with pytest.raises(ValueError, match="step_size"):
        adv.spsa(masked, x, y, epsilon=eps, step_size=-0.1, key=jax.random.key(1))


def test_attack_on_a_small_dense_am(mlp_and_data):
    images, labels = _toy_data()
    model, _ = train.fit(train.TrainConfig(epochs=5, **TOY), (images, labels), progress=False)
    temperature = TOY["temperature_final"]

    def outputs(z):
        return model.batch_scores(z, temperature=temperature)

    def loss(scores, label):
        return log_power_loss(scores, label, power=TOY["loss_power"])

    x, y = jnp.asarray(images[:30]), jnp.asarray(labels[:30])
    keep = jnp.argmax(outputs(x), -1) == y
    result = adv.descend(outputs, x[keep], y[keep], loss_fn=loss, step_size=0.05, steps=400)
    assert float(jnp.mean(result.success)) > 0.8


def test_rubbish_images(mlp_and_data):
    model = mlp_and_data[0]
    result, targets = adv.rubbish_images(
        model.batch_logits, loss_fn=cross_entropy, num_classes=3, per_class=2, dim=16, step_size=0.05,
        key=jax.random.key(0),
    )  # fmt: skip
    np.testing.assert_array_equal(targets, [0, 0, 1, 1, 2, 2])
    assert bool(jnp.all(result.success))
    np.testing.assert_array_equal(jnp.argmax(model.batch_logits(result.images), -1), targets)


def test_transfer_matrix_on_a_constructed_case():
    images = jnp.array([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])
    labels = jnp.array([0, 1, 0, 1])  # "sign" predicts [1, 0, 1, 0]: all wrong
    by_sign = lambda x: (x[:, 0] > 0).astype(jnp.int32)  # predicts 1 for positive first pixel
    always_zero = lambda x: jnp.zeros(x.shape[0], jnp.int32)
    matrix = adv.transfer_matrix(
        {"a": (images, labels), "b": (images[:2], labels[:2])}, {"sign": by_sign, "zero": always_zero}
    )
    assert matrix == {"a": {"sign": 1.0, "zero": 0.5}, "b": {"sign": 1.0, "zero": 0.5}}


def test_log_power_loss_is_the_log_of_the_power_loss():
    scores = jnp.array([0.3, -1.2, 2.0, 0.1])
    for label in range(4):
        want = jnp.log(power_loss(jnp.tanh(scores), label, power=3))
        np.testing.assert_allclose(log_power_loss(scores, label, power=3), want, rtol=1e-5)
    # confidently right (the start of an attack): the power loss's gradient underflows to 0, the log form's does not
    saturated = jnp.array([30.0, -30.0, -25.0])
    assert float(jnp.max(jnp.abs(jax.grad(lambda s: power_loss(jnp.tanh(s), 0, power=3))(saturated)))) == 0.0
    assert float(jnp.max(jnp.abs(jax.grad(lambda s: log_power_loss(s, 0, power=3))(saturated)))) > 0.1


def test_bad_inputs(mlp_and_data):
    model, x, y = mlp_and_data
    with pytest.raises(ValueError, match="epsilon"):
        adv.fgsm(model.batch_logits, x, y, loss_fn=cross_entropy, epsilon=-0.1)
    with pytest.raises(ValueError, match="epsilon"):
        adv.pgd(model.batch_logits, x, y, loss_fn=cross_entropy, epsilon=-1, key=jax.random.key(0))
    # (under the test suite's jaxtyping hook the annotation catches it first; both name the argument)
    with pytest.raises((ValueError, TypeError), match="images"):
        adv.descend(model.batch_logits, x[0], y[:1], loss_fn=cross_entropy)
    with pytest.raises((ValueError, TypeError), match="labels"):
        adv.descend(model.batch_logits, x, y[:-1], loss_fn=cross_entropy)
    with pytest.raises(ValueError, match="step_size"):
        adv.descend(model.batch_logits, x, y, loss_fn=cross_entropy, step_size=0.0)
    with pytest.raises(ValueError, match="non-empty"):
        adv.transfer_matrix({}, {})


def test_attack_command(small_mnist_run, cache, capsys, monkeypatch):
    monkeypatch.setenv("JAMEM_CACHE_DIR", str(cache))
    args = ["attack", "--checkpoint", str(small_mnist_run[2]), "--images", "30", "--data-dir", str(SHARED_DATA)]
    assert main([*args, "--steps", "200", "--step-size", "0.02"]) == 0
    out = capsys.readouterr().out
    assert "n = 3, descend:" in out and float(out.split("%")[0].split()[-1]) > 50
    assert int(out.split(" of ")[1].split()[0]) >= 20  # most of the 30 images were classified right
