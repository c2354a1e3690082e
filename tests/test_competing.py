"""Competing hidden units (Krotov & Hopfield 2019, arXiv:1806.10181): the rule against a literal
per-image replay, its fixed point, resume, bad input, and a small MNIST reproduction."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jamem.classifier import competing, train


def literal_rule(weights, images, *, power, rank, anti_hebbian):
    """The rule read off the paper one image at a time, in float64."""
    weights = np.asarray(weights, np.float64)
    delta = np.zeros_like(weights)
    for v in np.asarray(images, np.float64):
        current = np.array([np.sum(np.sign(w) * np.abs(w) ** (power - 1) * v) for w in weights])
        order = np.argsort(-current, kind="stable")
        gain = np.zeros(len(weights))
        gain[order[0]] = 1.0
        gain[order[rank - 1]] = -anti_hebbian
        for mu in range(len(weights)):
            delta[mu] += gain[mu] * (v - current[mu] * weights[mu])
    return delta / np.max(np.abs(delta))


@pytest.mark.parametrize("power, rank", [(2.0, 2), (3.0, 3), (4.5, 5)])
def test_update_matches_a_literal_replay(power, rank):
    weights = jax.random.normal(jax.random.key(0), (9, 7))
    images = jax.random.uniform(jax.random.key(1), (6, 7))
    got = competing.competing_update(weights, images, power=power, rank=rank, anti_hebbian=0.4)
    want = literal_rule(weights, images, power=power, rank=rank, anti_hebbian=0.4)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5)
    assert float(jnp.max(jnp.abs(got))) == pytest.approx(1.0)


@pytest.mark.parametrize("power", [2.0, 3.0])
def test_a_unit_that_keeps_winning_settles_at_unit_p_norm_along_its_input(power):
    # one input, no anti-Hebbian push: only the winner learns, and W -> v / I with ||W||_p = 1
    v = jax.random.uniform(jax.random.key(2), (6,), minval=0.2, maxval=1.0)
    units = competing.CompetingUnits(num_units=3, num_visible=6, power=power, key=jax.random.key(3))
    winner = int(jnp.argmax(units.currents(v)))
    trained, history = competing.train_competing_units(
        units, jnp.tile(v, (10, 1)), epochs=400, learning_rate=0.05, rank=2, anti_hebbian=0.0,
        batch_size=10, key=jax.random.key(4), progress=False,
    )  # fmt: skip
    w = trained.weights[winner]
    assert float(trained.p_norms()[winner]) == pytest.approx(1.0, abs=1e-2)
    assert float(jnp.dot(w, v) / (jnp.linalg.norm(w) * jnp.linalg.norm(v))) > 0.999
    others = jnp.array([mu for mu in range(3) if mu != winner])
    np.testing.assert_array_equal(trained.weights[others], units.weights[others])  # losers never moved
    assert len(history) == 400 and history[-1]["mean_p_norm_deviation"] < history[0]["mean_p_norm_deviation"]


def test_interrupted_training_resumes_bit_for_bit(tmp_path, monkeypatch):
    images = jax.random.uniform(jax.random.key(5), (200, 12))
    units = competing.CompetingUnits(num_units=8, num_visible=12, key=jax.random.key(6))
    kwargs = dict(epochs=4, learning_rate=0.05, rank=3, batch_size=50, key=jax.random.key(7), progress=False)
    straight, history = competing.train_competing_units(units, images, checkpoint_path=tmp_path / "a.ckpt", **kwargs)

    def stop_after_two(iterable, **_):
        for count, epoch in enumerate(iterable):
            if count == 2:
                raise KeyboardInterrupt
            yield epoch

    monkeypatch.setattr(competing, "_progress", stop_after_two)
    with pytest.raises(KeyboardInterrupt):
        competing.train_competing_units(units, images, checkpoint_path=tmp_path / "b.ckpt", **kwargs)
    monkeypatch.undo()
    epochs_run = []
    real_epoch = competing._epoch
    monkeypatch.setattr(competing, "_epoch", lambda *a: epochs_run.append(1) or real_epoch(*a))
    resumed, resumed_history = competing.train_competing_units(
        units, images, checkpoint_path=tmp_path / "b.ckpt", **kwargs
    )
    assert len(epochs_run) == 2  # the first two epochs came from the checkpoint
    np.testing.assert_array_equal(np.asarray(resumed.weights), np.asarray(straight.weights))
    assert [row["epoch"] for row in resumed_history] == [1, 2, 3, 4]
    # a checkpoint is only resumed by the run that wrote it: same settings, key, units and data
    changed = [
        dict(kwargs, rank=2),
        dict(kwargs, key=jax.random.key(8)),
    ]
    for other in changed:
        with pytest.raises(ValueError, match="other settings or data"):
            competing.train_competing_units(units, images, checkpoint_path=tmp_path / "b.ckpt", **other)
    with pytest.raises(ValueError, match="other settings or data"):
        competing.train_competing_units(units, images[::-1], checkpoint_path=tmp_path / "b.ckpt", **kwargs)
    for other_units in (
        competing.CompetingUnits(num_units=8, num_visible=12, power=4.5, key=jax.random.key(6)),
        competing.CompetingUnits(num_units=8, num_visible=12, key=jax.random.key(9)),  # another start
    ):
        with pytest.raises(ValueError, match="other settings or data"):
            competing.train_competing_units(other_units, images, checkpoint_path=tmp_path / "b.ckpt", **kwargs)


def test_bad_input_is_refused_by_name(tmp_path):
    units = competing.CompetingUnits(num_units=5, num_visible=4, key=jax.random.key(0))
    images = jnp.ones((10, 4))
    fit = lambda **kw: competing.train_competing_units(  # noqa: E731
        units, kw.pop("images", images), epochs=1, key=jax.random.key(1), progress=False, **kw
    )
    with pytest.raises(ValueError, match="`rank`"):
        fit(rank=1, batch_size=5)
    with pytest.raises(ValueError, match="`rank`"):
        fit(rank=6, batch_size=5)
    with pytest.raises(ValueError, match="`anti_hebbian`"):
        fit(rank=2, anti_hebbian=-0.1, batch_size=5)
    with pytest.raises(ValueError, match="`images`"):
        fit(rank=2, images=jnp.ones((10, 3)), batch_size=5)
    with pytest.raises(ValueError, match="batch_size"):
        fit(rank=2, batch_size=20)
    with pytest.raises(ValueError, match="`images`"):
        fit(rank=2, images=jnp.full((10, 4), jnp.nan), batch_size=5)
    with pytest.raises(ValueError, match="`images`.*\\[0, 1\\]"):
        fit(rank=2, images=-jnp.ones((10, 4)), batch_size=5)  # jamem.data's [-1, 1] pixels, unmapped
    with pytest.raises(ValueError, match="`checkpoint_path`"):
        fit(rank=2, batch_size=5, checkpoint_path=tmp_path)  # a folder: refused before any epoch
    with pytest.raises(TypeError, match="units"):  # jaxtyping, or our own check without it
        competing.train_competing_units(units.weights, images, epochs=1, key=jax.random.key(1))
    with pytest.raises(TypeError, match="units"):  # jaxtyping, or our own check without it
        competing.PowerFeatureClassifier(units.weights, key=jax.random.key(1))
    for power in (0.5, 100.0):
        with pytest.raises(ValueError, match="`power`"):
            competing.CompetingUnits(num_units=5, num_visible=4, power=power, key=jax.random.key(0))
    with pytest.raises(FloatingPointError, match="`weights`"):
        competing.competing_update(units.weights * 1e30, images, rank=2)
    ints = competing.unit_currents(jnp.full((2, 4), 100, jnp.int8), jnp.full((1, 4), 100, jnp.int8), 2.0)
    assert ints.dtype == jnp.float32 and float(ints[0, 0]) == pytest.approx(40000.0)
    with pytest.raises(ValueError, match="`degree`"):  # h^0.5 has an infinite slope at 0: NaN input gradients
        competing.PowerFeatureClassifier(units, degree=0.5, key=jax.random.key(1))
    with pytest.raises(TypeError, match="`power`.*concrete"):  # a traced Lp exponent (jaxtyping is not told)
        jax.jit(lambda p: competing._check_power(p))(2.0)


def test_half_precision_weights_are_updated_in_float32():
    units = competing.CompetingUnits(num_units=6, num_visible=4, key=jax.random.key(0))
    images = jax.random.uniform(jax.random.key(1), (8, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # JAX's FutureWarning on mixed-dtype scatters
        low = competing.competing_update(units.weights.astype(jnp.float16), images.astype(jnp.float16), rank=2)
        zeros = competing.competing_update(units.weights.astype(jnp.float16), jnp.zeros((8, 4), jnp.float16), rank=2)
    high = competing.competing_update(
        units.weights.astype(jnp.float16).astype(jnp.float32), images.astype(jnp.float16).astype(jnp.float32), rank=2
    )
    assert low.dtype == jnp.float16
    np.testing.assert_array_equal(low, high.astype(jnp.float16))
    np.testing.assert_array_equal(zeros, 0)  # all-zero images: no step (the 1e-30 floor flushed to 0 in float16)


def test_learned_units_beat_random_units_on_mnist(mnist):
    # a small reproduction: 100 units trained without labels, then the same top layer on learned
    # and on untrained units; the learned features must be clearly better (about 17% against 36%)
    (x_train, y_train), (x_test, y_test) = mnist
    x_train, x_test = (np.asarray(x_train[:4000]) + 1) / 2, (np.asarray(x_test[:2000]) + 1) / 2
    untrained = competing.CompetingUnits(num_units=100, power=3.0, key=jax.random.key(0))
    learned, history = competing.train_competing_units(
        untrained, x_train, epochs=30, learning_rate=0.05, rank=7, key=jax.random.key(1), progress=False
    )
    assert history[-1]["mean_p_norm_deviation"] < 0.25 < history[0]["mean_p_norm_deviation"]
    errors = {}
    for name, units in (("learned", learned), ("untrained", untrained)):
        model = competing.PowerFeatureClassifier(units, key=jax.random.key(2))
        model, _ = train.fit_softmax(
            model, (x_train, np.asarray(y_train[:4000])), epochs=10, optimizer=optax.adam(3e-3),
            key=jax.random.key(3), progress=False,
        )  # fmt: skip
        np.testing.assert_array_equal(np.asarray(model.units.weights), np.asarray(units.weights))  # frozen
        predictions = jnp.argmax(model.batch_logits(jnp.asarray(x_test)), axis=-1)
        errors[name] = float(jnp.mean(predictions != jnp.asarray(y_test[:2000])))
    assert errors["learned"] < 0.25 and errors["learned"] < 0.7 * errors["untrained"], errors
