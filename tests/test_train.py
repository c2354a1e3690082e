"""Training: the optimiser of arXiv:1606.01164 (App. A), the class-gap gradient, data parallelism,
checkpoints and resume."""

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jamem import DenseAMClassifier, prototypes, train
from jamem.classifier.model import rectified_power_gaps
from jamem.classifier.optim import (
    TemperatureRamp,
    dense_am_optimizer,
    epoch_decay,
    keep_params_in_box,
    normalize_by_row_max,
)

REPO = Path(__file__).resolve().parents[1]


def test_optimizer_matches_the_papers_update_written_out():
    rng = np.random.default_rng(0)
    xi = rng.uniform(-1, 1, (6, 5)).astype(np.float32)
    grads = [rng.normal(size=(6, 5)).astype(np.float32) for _ in range(4)]
    p, steps_per_epoch = 0.8, 2
    schedule = epoch_decay(initial=0.3, decay=0.5, steps_per_epoch=steps_per_epoch)
    optimizer = dense_am_optimizer(schedule, momentum=p)
    params, state = jnp.asarray(xi), optimizer.init(jnp.asarray(xi))
    velocity, expected = np.zeros_like(xi), xi.copy()
    for t, g in enumerate(grads):
        updates, state = optimizer.update(jnp.asarray(g), state, params)
        params = optax.apply_updates(params, updates)
        # App. A: V <- p V - dC/dxi; xi <- clip(xi + eps V / max_J |V_J|, -1, 1); eps halves per epoch here
        velocity = p * velocity - g
        eps = 0.3 * 0.5 ** (t // steps_per_epoch)
        expected = np.clip(expected + eps * velocity / np.abs(velocity).max(axis=1, keepdims=True), -1, 1)
        np.testing.assert_allclose(params, expected, rtol=1e-5, atol=1e-6)
    assert np.abs(expected).max() == 1.0  # the clip was exercised


def test_row_normalisation_and_box():
    u = jnp.array([[2.0, -4.0], [0.0, 0.0]])
    normed, _ = normalize_by_row_max().update(u, optax.EmptyState())
    np.testing.assert_allclose(normed, [[0.5, -1.0], [0.0, 0.0]])
    boxed, _ = keep_params_in_box(lower=-1, upper=1).update(jnp.array([0.5, -3.0]), None, jnp.array([0.8, 0.0]))
    np.testing.assert_allclose(boxed, [0.2, -1.0])
    with pytest.raises(ValueError, match="params"):
        keep_params_in_box().update(u, None)


def test_temperature_ramp():
    ramp = TemperatureRamp(300.0, 60.0, 200)
    assert ramp(0) == 300.0 and ramp(100) == pytest.approx(180.0) and ramp(200) == 60.0 and ramp(5000) == 60.0
    assert TemperatureRamp(550.0, 550.0, 0)(7) == 550.0


@pytest.mark.parametrize("degree", [1, 2, 3, 30])
def test_class_gap_gradient_matches_autodiff(degree):
    base = jax.random.normal(jax.random.key(0), (7, 13))
    shift = 0.5 * jax.random.normal(jax.random.key(1), (4, 13))
    weights = jax.random.normal(jax.random.key(2), (7, 4))

    def naive(b, s):
        return jnp.sum(jax.nn.relu(b[:, None, :] + s[None]) ** degree - jax.nn.relu(b)[:, None, :] ** degree, -1)

    def objective(fn):
        return lambda b, s: jnp.sum(weights * fn(b, s))

    got = jax.grad(objective(lambda b, s: rectified_power_gaps(b, s, degree)), argnums=(0, 1))(base, shift)
    want = jax.grad(objective(naive), argnums=(0, 1))(base, shift)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(w))))


def test_batch_scores_equal_per_image_scores():
    model = DenseAMClassifier(num_memories=30, num_visible=12, num_classes=3, degree=3, key=jax.random.key(0))
    images = jax.random.uniform(jax.random.key(1), (5, 12), minval=-1, maxval=1)
    per_image = jnp.stack([model.scores(x, temperature=3.0) for x in images])
    np.testing.assert_allclose(model.batch_scores(images, temperature=3.0), per_image, rtol=1e-5)


def _toy_data(count=400, dim=16, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.choice([-1.0, 1.0], size=(classes, dim))
    labels = rng.integers(0, classes, count)
    images = np.clip(centres[labels] + 0.6 * rng.normal(size=(count, dim)), -1, 1).astype(np.float32)
    return images, labels.astype(np.int32)


TOY = dict(degree=3, num_memories=20, batch_size=40, learning_rate=0.1, temperature_initial=8.0)
TOY.update(temperature_final=4.0, temperature_ramp_epochs=3, loss_power=2)


def test_fit_refuses_a_start_whose_gradient_is_zero(tmp_path):
    # arXiv:1606.01164 ramps n = 3 down from T = 300: started at T = 60 the MNIST run saturates
    # every tanh, its gradient underflows to 0 and 400 epochs stay at chance (validation/ramp0)
    images, labels = _toy_data()
    checkpoint = tmp_path / "cold.ckpt"
    cases = [
        (dict(temperature_initial=0.01, temperature_final=0.005), "`temperature_initial` 0.01 is too low"),
        (dict(temperature_initial=0.01, temperature_final=0.005, temperature_ramp_epochs=0), "`temperature_final`"),
        (dict(temperature_initial=0.01, temperature_final=0.01), "`temperature_initial` = `temperature_final` 0.01"),
        # too hot: every (xi . U / T)^3 underflows, every score is 0
        (dict(temperature_initial=1e20, temperature_final=1e20), "every class score is 0.*too high for degree 3"),
    ]
    for change, message in cases:
        config = train.TrainConfig(epochs=2, **(TOY | change))
        with pytest.raises(ValueError, match=message):
            train.fit(config, (images, labels), checkpoint_path=checkpoint, progress=False)
    assert not checkpoint.exists()  # refused before any epoch ran


def test_the_zero_gradient_check_sees_the_first_minibatch_of_the_first_epoch(monkeypatch):
    images, labels = _toy_data()
    seen = []
    check = train._check_gradient_moves
    monkeypatch.setattr(train, "_check_gradient_moves", lambda m, x, y, c: seen.append((x, y)) or check(m, x, y, c))
    for sampling in ("shuffled", "class_balanced"):
        config = train.TrainConfig(epochs=1, **(TOY | dict(batch_size=39, batch_sampling=sampling, seed=3)))
        train.fit(config, (images, labels), progress=False)
        key = jax.random.fold_in(jax.random.split(jax.random.key(3))[1], 0)
        first = np.asarray(
            train.epoch_batches(key, jnp.asarray(labels), batch_size=39, sampling=sampling, num_classes=3)[0]
        )
        np.testing.assert_array_equal(seen[-1][0], images[first])
        np.testing.assert_array_equal(seen[-1][1], labels[first])
    assert len(seen) == 2


def test_fit_learns_toy_problem_and_logs(tmp_path):
    images, labels = _toy_data()
    config = train.TrainConfig(epochs=6, **TOY)
    model, history = train.fit(
        config,
        (images[:300], labels[:300]),
        (images[300:], labels[300:]),
        metrics_path=tmp_path / "m.json",
        progress=False,
    )
    assert history.rows[-1]["test_error"] < 0.1 < history.rows[0]["train_error"]
    logged = json.loads((tmp_path / "m.json").read_text())
    assert [r["epoch"] for r in logged["history"]] == list(range(1, 7)) and "meta" in logged
    assert float(jnp.max(jnp.abs(model.memories))) <= 1.0


def test_standard_optax_optimizer_and_cross_entropy():
    images, labels = _toy_data()
    config = train.TrainConfig(epochs=5, loss="cross_entropy", **TOY)
    _, history = train.fit(config, (images, labels), (images, labels), optimizer=optax.adam(0.05), progress=False)
    assert history.rows[-1]["test_error"] < 0.1


def test_resume_in_process_equals_uninterrupted(tmp_path):
    images, labels = _toy_data()
    full, _ = train.fit(train.TrainConfig(epochs=5, **TOY), (images, labels), progress=False)
    ckpt = tmp_path / "run.ckpt"
    train.fit(train.TrainConfig(epochs=3, **TOY), (images, labels), checkpoint_path=ckpt, progress=False)
    resumed, history = train.fit(
        train.TrainConfig(epochs=5, **TOY), (images, labels), checkpoint_path=ckpt, resume=True, progress=False
    )
    assert [r["epoch"] for r in history.rows] == [1, 2, 3, 4, 5]
    np.testing.assert_array_equal(resumed.memories, full.memories)
    with pytest.raises(ValueError, match="learning_rate"):
        train.fit(
            train.TrainConfig(epochs=5, **{**TOY, "learning_rate": 0.2}),
            (images, labels),
            checkpoint_path=ckpt,
            resume=True,
            progress=False,
        )


def test_bad_inputs(tmp_path):
    images, labels = _toy_data()
    config = train.TrainConfig(epochs=1, **TOY)
    with pytest.raises(ValueError, match="`train` labels"):
        train.fit(config, (images, labels[:-1]), progress=False)
    with pytest.raises(ValueError, match="`train` images"):
        train.fit(config, (images[:, :, None], labels), progress=False)
    with pytest.raises(ValueError, match="fewer than batch_size"):
        train.fit(config, (images[:10], labels[:10]), progress=False)
    with pytest.raises(ValueError, match="loss"):
        train.TrainConfig(loss="hinge")
    with pytest.raises(ValueError, match="degree"):
        train.preset(7)
    corrupt = tmp_path / "bad.ckpt"
    corrupt.write_bytes(b'{"epoch": 1}\ngarbage')
    with pytest.raises(ValueError, match="corrupt"):
        train.load_checkpoint(corrupt, (jnp.zeros(3),))
    with pytest.raises(FileNotFoundError, match="path"):
        train.load_checkpoint(tmp_path / "none.ckpt", (jnp.zeros(3),))


def test_prototype_statistics_on_a_constructed_model():
    model = DenseAMClassifier(num_memories=3, num_visible=4, num_classes=3, degree=2, key=jax.random.key(0))
    classes = jnp.array([[1.0, -1.0, -1.0], [0.5, 0.5, -1.0], [0.2, 0.3, 0.4]])
    visible = jnp.array([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0], [-1.0, -1.0, -1.0, -1.0]])
    model = eqx.tree_at(lambda m: m.memories, model, jnp.concatenate([visible, classes], 1))
    np.testing.assert_array_equal(prototypes.classes_per_memory(model), [1, 2, 3])
    image = jnp.ones((1, 4))
    # class 0 wins; memories 0 and 1 both push it (xi . U = 4 + 1 and 4 + 0), memory 2 is off
    ratio = prototypes.second_contribution_ratio(model, image, temperature=1.0)
    on0, off0 = (4 + 1 + 2) ** 2, (4 + 1) ** 2
    on1, off1 = (4 + 0 + 1) ** 2, (4 + 0) ** 2
    np.testing.assert_allclose(ratio, [(on1 - off1) / (on0 - off0)], rtol=1e-6)


def test_silent_memories_are_the_ones_with_no_gradient():
    model = DenseAMClassifier(num_memories=4, num_visible=4, num_classes=3, degree=2, key=jax.random.key(0))
    visible = jnp.array(
        [[1.0, 1.0, 1.0, 1.0], [-1.0, -1.0, -1.0, -1.0], [-1.0, -1.0, -0.5, 0.0], [-1.0, -1.0, -1.0, 0.0]]
    )
    classes = jnp.array([[-1.0, -1.0, -1.0], [-1.0, -1.0, -1.0], [1.0, -1.0, -1.0], [1.0, -1.0, -1.0]])
    model = eqx.tree_at(lambda m: m.memories, model, jnp.concatenate([visible, classes], 1))
    images = jnp.ones((2, 4))
    # xi . U on the image of ones: 4 + 3 = 7; -4 + 3 = -1; -2.5 + 1 = -1.5, but class 0 on adds
    # 2 (0.5 > 0); -3 + 1 = -2, and class 0 on reaches exactly 0
    np.testing.assert_array_equal(prototypes.silent_memories(model, images), [False, True, False, True])
    grads = jax.grad(lambda m: train.batch_loss(m, images, jnp.array([0, 1]), temperature=3.0, loss_power=2)[0])(model)
    row_sizes = np.abs(np.asarray(grads.memories)).max(axis=1)
    assert row_sizes[0] > 0 and row_sizes[2] > 0 and row_sizes[1] == 0 and row_sizes[3] == 0, row_sizes
    # a memory silent on one image but not on another is not silent
    mixed = jnp.concatenate([images, -jnp.ones((1, 4))])  # memory 1 on -1s: 4 + 3 > 0
    np.testing.assert_array_equal(prototypes.silent_memories(model, mixed, chunk_size=2), [False, False, False, False])
    with pytest.raises(ValueError, match="images"):
        prototypes.silent_memories(model, jnp.ones((0, 4)))
    with pytest.raises(ValueError, match="images"):
        prototypes.silent_memories(model, jnp.ones((2, 5)))


def test_one_class_share_counts_over_all_or_the_selected_memories():
    model = DenseAMClassifier(num_memories=4, num_visible=2, num_classes=3, degree=2, key=jax.random.key(0))
    classes = jnp.array([[0.5, -1.0, -1.0], [0.5, 0.5, -1.0], [-1.0, -1.0, 0.0], [-1.0, 0.2, -1.0]])
    model = eqx.tree_at(lambda m: m.memories, model, jnp.concatenate([jnp.zeros((4, 2)), classes], 1))
    # votes (entries > 0): 1, 2, 0 (0 is not > 0), 1
    assert prototypes.one_class_share(model) == pytest.approx(2 / 4)
    assert prototypes.one_class_share(model, among=jnp.array([True, True, False, False])) == pytest.approx(1 / 2)
    assert prototypes.one_class_share(model, among=jnp.array([True, False, False, True])) == pytest.approx(1.0)
    assert prototypes.one_class_share(model, among=jnp.zeros(4, bool)) is None
    with pytest.raises(ValueError, match="among"):
        prototypes.one_class_share(model, among=jnp.ones(3, bool))


_PARALLEL_SCRIPT = textwrap.dedent(
    """
    import sys, numpy as np, jax
    sys.path.insert(0, "tests")
    from jamem import train
    from test_train import TOY, _toy_data
    images, labels = _toy_data()
    model, history = train.fit(train.TrainConfig(epochs=3, **TOY), (images, labels), (images, labels), progress=False)
    assert jax.local_device_count() == int(sys.argv[2]), jax.devices()
    np.save(sys.argv[1], np.asarray(model.memories))
    """
)


def test_data_parallel_on_four_cpu_devices_equals_one(tmp_path):
    outputs = {}
    for devices in (1, 4):
        env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}
        out = tmp_path / f"d{devices}.npy"
        subprocess.run(
            [sys.executable, "-c", _PARALLEL_SCRIPT, str(out), str(devices)], cwd=REPO, env=env, check=True, timeout=300
        )
        outputs[devices] = np.load(out)
    # the same sums in another order: equal up to float32 rounding, carried through 30 steps
    np.testing.assert_allclose(outputs[4], outputs[1], atol=2e-4)


def test_short_real_mnist_run_is_below_ten_percent(small_mnist_run):
    _, history, _ = small_mnist_run
    assert history.rows[-1]["test_error"] < 0.10
    assert history.rows[-1]["test_error"] < history.rows[0]["test_error"]


@pytest.mark.parametrize("degree", [2, 30])
def test_accelerator_class_gaps_equal_the_cpu_loops(degree, monkeypatch):
    # accelerators take one (B, C, K) expression forward and one (C, B, K) expression backward;
    # XLA on CPU loops over the two halves of the memories forward and over the classes backward;
    # the compiled CPU kernel (where built) fuses both: same value and gradient from all three
    from jamem.classifier import model as classifier
    from jamem.classifier import native

    base = jax.random.normal(jax.random.key(0), (6, 12))
    shift = 0.5 * jax.random.normal(jax.random.key(1), (3, 12))
    weights = jax.random.normal(jax.random.key(2), (6, 3))

    def value_and_grads():
        objective = lambda b, s: jnp.sum(weights * rectified_power_gaps(b, s, degree))
        return objective(base, shift), jax.grad(objective, argnums=(0, 1))(base, shift)

    fused = value_and_grads()
    monkeypatch.setitem(native._state, "enabled", False)  # grad is traced afresh on each call
    looped = value_and_grads()
    monkeypatch.setattr(classifier, "_on_cpu", lambda: False)
    vectorised = value_and_grads()
    for other in (fused, vectorised):
        for a, b in zip(jax.tree.leaves(looped), jax.tree.leaves(other)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * float(jnp.max(jnp.abs(a))))


def test_paper_and_compressed_schedules():
    paper = train.preset(3)
    assert (paper.epochs, paper.learning_rate_decay, paper.temperature_ramp_epochs) == (3000, 0.998, 200)
    for epochs in (300, 400, 500):
        short = train.preset(3, schedule="compressed", epochs=epochs)
        # the same total decay as 0.998^3000, reached at the end of the shorter run
        assert short.learning_rate_decay**epochs == pytest.approx(0.998**3000, rel=1e-9)
        # and the 200-epoch ramp shrunk in the same proportion
        assert short.epochs == epochs and short.temperature_ramp_epochs == round(200 * epochs / 3000)
        assert (short.temperature_initial, short.loss_power, short.momentum) == (300.0, 3, 0.9)
    assert train.preset(3, schedule="compressed", learning_rate_decay=0.99).learning_rate_decay == 0.99
    assert train.preset(3, schedule="compressed").temperature_ramp_epochs == 27
    assert train.preset(3, schedule="compressed", epochs=5).temperature_ramp_epochs == 1
    assert train.preset(3, schedule="compressed", temperature_ramp_epochs=100).temperature_ramp_epochs == 100
    # n = 2 ramps over its own share, 1/8 of the run (validated: 50 of 400 epochs), the others the paper's
    assert train.preset(2, schedule="compressed").temperature_ramp_epochs == 50
    assert train.preset(2, schedule="compressed", epochs=160).temperature_ramp_epochs == 20
    assert train.preset(2, schedule="compressed", epochs=3).temperature_ramp_epochs == 1
    assert train.preset(2, schedule="compressed", epochs=20).temperature_ramp_epochs == 3  # 2.5 rounds up
    assert train.preset(2).temperature_ramp_epochs == 200
    for degree in (8, 20, 30):
        assert train.preset(degree, schedule="compressed").temperature_ramp_epochs == 27
    assert train.compressed_ramp_epochs(400) == 27 and train.compressed_ramp_epochs(400, degree=2) == 50
    # the compressed schedule's own choices per degree, and only there; explicit overrides still win
    assert train.preset(30, schedule="compressed").learning_rate == 0.04
    assert train.preset(20, schedule="compressed").learning_rate == 0.04
    assert train.preset(8, schedule="compressed").learning_rate == 0.04
    assert train.preset(8).learning_rate == 0.02
    assert train.preset(20, schedule="compressed").momentum == 0.9
    # the paper schedule's own choices for n = 20, 30 (validated over 3000 epochs), and only there
    for degree in (20, 30):
        assert (train.preset(degree).learning_rate, train.preset(degree).momentum) == (0.04, 0.6)
    assert train.preset(30, schedule="compressed").momentum == 0.9
    assert train.preset(30, momentum=0.9, learning_rate=0.01).momentum == 0.9
    assert train.preset(3, schedule="compressed").learning_rate == train.preset(3).learning_rate
    assert train.preset(30, schedule="compressed", learning_rate=0.02).learning_rate == 0.02
    with pytest.raises(ValueError, match="schedule"):
        train.preset(3, schedule="fast")


def test_deadline_stops_with_a_checkpoint_and_resume_finishes_identically(tmp_path):
    images, labels = _toy_data()
    config = train.TrainConfig(epochs=4, **TOY)
    full, _ = train.fit(config, (images, labels), progress=False)
    ckpt = tmp_path / "run.ckpt"
    # a deadline already past: exactly one epoch runs, then a checkpoint is written
    _, stopped = train.fit(
        config, (images, labels), checkpoint_path=ckpt, checkpoint_every=100, deadline=time.time(), progress=False
    )
    assert len(stopped.rows) == 1
    header, _ = train.load_checkpoint(ckpt, train.initial_state(config, num_visible=16, num_classes=3)[::2])
    assert header["epoch"] == 1
    resumed, history = train.fit(config, (images, labels), checkpoint_path=ckpt, resume=True, progress=False)
    assert [r["epoch"] for r in history.rows] == [1, 2, 3, 4]
    np.testing.assert_array_equal(resumed.memories, full.memories)


def test_saved_model_alone_loads_like_the_checkpoint(tmp_path):
    images, labels = _toy_data()
    config = train.TrainConfig(epochs=2, **TOY)
    ckpt = tmp_path / "run.ckpt"
    model, history = train.fit(config, (images, labels), checkpoint_path=ckpt, progress=False)
    path = train.save_model(tmp_path / "run.eqx", model, config=config, history=history)
    assert path.stat().st_size < 0.6 * ckpt.stat().st_size  # no momentum
    for source in (ckpt, path):
        loaded, loaded_config, loaded_history = train.load_trained(source, num_visible=16, num_classes=3)
        np.testing.assert_array_equal(loaded.memories, model.memories)
        assert loaded_config == config and loaded_history.rows == history.rows
    (tmp_path / "junk.eqx").write_bytes(b"not json\n")
    with pytest.raises(ValueError, match="not a jamem checkpoint"):
        train.load_trained(tmp_path / "junk.eqx")


def test_class_balanced_batches_hold_each_class_equally_and_walk_each_class_without_repeats():
    labels = jnp.asarray(np.random.default_rng(1).choice(3, size=500, p=[0.5, 0.3, 0.2]), jnp.int32)
    host = np.asarray(labels)
    counts = np.bincount(host)
    with pytest.raises(ValueError, match="`sampling`"):
        train.epoch_batches(jax.random.key(0), labels, batch_size=30, sampling="stratified", num_classes=3)
    with pytest.raises(ValueError, match="`num_classes` 4"):
        train.epoch_batches(jax.random.key(0), labels, batch_size=30, sampling="class_balanced", num_classes=4)
    order = np.asarray(
        train.epoch_batches(jax.random.key(0), labels, batch_size=30, sampling="class_balanced", num_classes=3)
    )
    assert order.shape == (500 // 30, 30)
    for batch in order:
        np.testing.assert_array_equal(np.bincount(host[batch], minlength=3), [10, 10, 10])
    for label in range(3):
        # the class's picks in order: a permutation of its images, restarted when they run out
        walked = [i for batch in order for i in batch if host[i] == label]
        members = np.flatnonzero(host == label)
        first = walked[: min(len(walked), counts[label])]
        assert len(set(first)) == len(first) and set(first) <= set(members)
        if len(walked) > counts[label]:  # the rarest class (100 images, 160 places) starts again
            assert set(walked[: counts[label]]) == set(members)
            np.testing.assert_array_equal(walked[counts[label] :], walked[: len(walked) - counts[label]])
    assert len(walked) > counts[2]  # the restart above was exercised
    other = np.asarray(
        train.epoch_batches(jax.random.key(1), labels, batch_size=30, sampling="class_balanced", num_classes=3)
    )
    assert not np.array_equal(order, other)


def test_shuffled_batches_are_one_permutation_of_the_set():
    labels = jnp.zeros(100, jnp.int32)
    order = np.asarray(train.epoch_batches(jax.random.key(0), labels, batch_size=30))
    assert order.shape == (3, 30) and len(set(order.reshape(-1).tolist())) == 90
    np.testing.assert_array_equal(order.reshape(-1), np.asarray(jax.random.permutation(jax.random.key(0), 100))[:90])


def test_bad_epoch_batches_arguments_are_refused_by_name():
    labels = jnp.asarray([0, 0, 2, 2, 2, 0, 2, 0, 2, 2], jnp.int32)  # class 1 is empty
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="`labels` must hold every class 0 to 2"):
        train.epoch_batches(key, labels, batch_size=3, sampling="class_balanced", num_classes=3)
    with pytest.raises(ValueError, match="`labels` must hold every class 0 to 1"):
        train.epoch_batches(key, labels, batch_size=2, sampling="class_balanced", num_classes=2)
    for bad in (0, -3, 3.0):
        with pytest.raises((ValueError, TypeError), match="batch_size"):
            train.epoch_batches(key, labels, batch_size=bad)
    with pytest.raises(ValueError, match="`batch_size` 11 is larger than the 10 `labels`"):
        train.epoch_batches(key, labels, batch_size=11)
    with pytest.raises(ValueError, match="num_classes"):
        train.epoch_batches(key, labels, batch_size=2, num_classes=1)


def test_an_epoch_steps_through_the_batches_epoch_batches_draws():
    images, labels = _toy_data()
    images, labels = jnp.asarray(images), jnp.asarray(labels)
    config = train.TrainConfig(epochs=1, **{**TOY, "batch_size": 30, "batch_sampling": "class_balanced"})
    model, optimizer, opt_state = train.initial_state(config, num_visible=16, num_classes=3, steps_per_epoch=13)
    key, temperature = jax.random.key(5), jnp.float32(6.0)
    trained, _, _, _ = train.train_epoch(
        model, opt_state, images, labels, key=key, temperature=temperature, optimizer=optimizer,
        batch_size=30, loss_power=2, batch_sampling="class_balanced",
    )  # fmt: skip
    params, static = eqx.partition(model, eqx.is_array)
    order = train.epoch_batches(key, labels, batch_size=30, sampling="class_balanced", num_classes=3)
    for batch in order:  # the same steps written out, one minibatch at a time

        def objective(p, batch=batch):
            model = eqx.combine(p, static)
            return train.batch_loss(model, images[batch], labels[batch], temperature=temperature, loss_power=2)[0]

        updates, opt_state = optimizer.update(jax.grad(objective)(params), opt_state, params)
        params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(trained.memories, params.memories, atol=1e-6)
    shuffled, _, _, _ = train.train_epoch(
        model, optimizer.init(eqx.filter(model, eqx.is_array)), images, labels, key=key, temperature=temperature,
        optimizer=optimizer, batch_size=30, loss_power=2,
    )  # fmt: skip
    assert np.abs(np.asarray(shuffled.memories) - np.asarray(trained.memories)).max() > 1e-2


def test_fit_with_class_balanced_batches_learns_and_checks_its_inputs():
    images, labels = _toy_data()
    balanced = {**TOY, "batch_size": 30, "batch_sampling": "class_balanced"}
    _, history = train.fit(
        train.TrainConfig(epochs=6, **balanced),
        (images[:300], labels[:300]),
        (images[300:], labels[300:]),
        progress=False,
    )
    assert history.rows[-1]["test_error"] < 0.1 < history.rows[0]["train_error"]
    with pytest.raises(ValueError, match="batch_sampling"):
        train.TrainConfig(batch_sampling="stratified")
    with pytest.raises(ValueError, match="`batch_size` 40 must be a multiple of the 3 classes"):
        train.fit(train.TrainConfig(epochs=1, **{**balanced, "batch_size": 40}), (images, labels), progress=False)
    with pytest.raises(ValueError, match=r"no images of classes \[1\]"):
        keep = labels != 1
        train.fit(
            train.TrainConfig(epochs=1, **balanced), (images[keep], labels[keep]), (images, labels), progress=False
        )


def test_checkpoint_written_before_a_setting_existed_resumes_with_the_value_it_used(tmp_path):
    images, labels = _toy_data()
    full, _ = train.fit(train.TrainConfig(epochs=3, **TOY), (images, labels), progress=False)
    ckpt = tmp_path / "run.ckpt"
    train.fit(train.TrainConfig(epochs=2, **TOY), (images, labels), checkpoint_path=ckpt, progress=False)
    header_line, payload = ckpt.read_bytes().split(b"\n", 1)
    header = json.loads(header_line)
    for setting in ("batch_sampling", "dtype"):  # as jamem wrote it before the setting was added
        del header["config"][setting]
    ckpt.write_bytes(json.dumps(header).encode() + b"\n" + payload)
    _, config, _ = train.load_trained(ckpt, num_visible=16, num_classes=3)
    assert (config.batch_sampling, config.dtype) == ("shuffled", "float32")
    resumed, history = train.fit(
        train.TrainConfig(epochs=3, **TOY), (images, labels), checkpoint_path=ckpt, resume=True, progress=False
    )
    assert [r["epoch"] for r in history.rows] == [1, 2, 3]
    np.testing.assert_array_equal(resumed.memories, full.memories)
    balanced = train.TrainConfig(epochs=4, **{**TOY, "batch_sampling": "class_balanced", "batch_size": 39})
    with pytest.raises(ValueError, match=r"other batch_sampling, batch_size\."):
        train.fit(balanced, (images, labels), checkpoint_path=ckpt, resume=True, progress=False)


def test_the_ramp_length_of_a_constant_temperature_does_not_block_resuming(tmp_path):
    images, labels = _toy_data()
    constant = {**TOY, "temperature_final": TOY["temperature_initial"]}
    full, _ = train.fit(train.TrainConfig(epochs=3, **constant), (images, labels), progress=False)
    ckpt = tmp_path / "run.ckpt"
    train.fit(train.TrainConfig(epochs=2, **constant), (images, labels), checkpoint_path=ckpt, progress=False)
    other_ramp = train.TrainConfig(epochs=3, **{**constant, "temperature_ramp_epochs": 27})
    resumed, _ = train.fit(other_ramp, (images, labels), checkpoint_path=ckpt, resume=True, progress=False)
    np.testing.assert_array_equal(resumed.memories, full.memories)
    ramped = tmp_path / "ramped.ckpt"
    train.fit(train.TrainConfig(epochs=2, **TOY), (images, labels), checkpoint_path=ramped, progress=False)
    with pytest.raises(ValueError, match=r"other temperature_ramp_epochs\."):
        train.fit(
            train.TrainConfig(epochs=3, **{**TOY, "temperature_ramp_epochs": 27}),
            (images, labels),
            checkpoint_path=ramped,
            resume=True,
            progress=False,
        )


def test_float64_training_starts_alike_stays_float64_and_is_refused_without_x64(tmp_path):
    images, labels = _toy_data()
    with pytest.raises(ValueError, match="`dtype` must be one of the names"):
        train.TrainConfig(dtype="float16")
    for bad in (np.dtype("float32"), jnp.float64):  # a name only: the config is recorded as JSON
        with pytest.raises((ValueError, TypeError), match="dtype"):  # jaxtyping's check first in the tests
            train.TrainConfig(dtype=bad)
    wide = train.TrainConfig(epochs=2, dtype="float64", **TOY)
    with pytest.raises(ValueError, match="`dtype` 'float64' needs 64-bit JAX"):
        train.fit(wide, (images, labels), checkpoint_path=tmp_path / "x.ckpt", progress=False)
    narrow, narrow_history = train.fit(train.TrainConfig(epochs=2, **TOY), (images, labels), progress=False)
    with jax.enable_x64(True):
        start, _, _ = train.initial_state(wide, num_visible=16, num_classes=3)
        ckpt = tmp_path / "wide.ckpt"
        model, history = train.fit(wide, (images, labels), (images, labels), checkpoint_path=ckpt, progress=False)
        assert start.memories.dtype == model.memories.dtype == jnp.float64
        loaded, config, _ = train.load_trained(ckpt, num_visible=16, num_classes=3)
        assert config.dtype == "float64" and loaded.memories.dtype == jnp.float64
        np.testing.assert_array_equal(loaded.memories, model.memories)
        # a float32 run may not continue in float64, nor the other way
        with pytest.raises(ValueError, match=r"other dtype\."):
            train.fit(train.TrainConfig(epochs=3, **TOY), (images, labels), checkpoint_path=ckpt, resume=True)
        narrow_ckpt = tmp_path / "narrow.ckpt"
        train.fit(train.TrainConfig(epochs=1, **TOY), (images, labels), checkpoint_path=narrow_ckpt, progress=False)
        with pytest.raises(ValueError, match=r"other dtype\."):
            train.fit(wide, (images, labels), checkpoint_path=narrow_ckpt, resume=True)
    # without 64-bit JAX a float64 checkpoint is refused, by name, not read as float32
    with pytest.raises(ValueError, match=r"`path` .*wide.ckpt was trained in float64"):
        train.load_trained(ckpt, num_visible=16, num_classes=3)
    like = train.initial_state(train.TrainConfig(**TOY), num_visible=16, num_classes=3)[::2]
    with pytest.raises(ValueError, match="is float64 on disk but float32 in `like`"):
        train.load_checkpoint(ckpt, like)
    header_line, payload = ckpt.read_bytes().split(b"\n", 1)
    header = json.loads(header_line)
    header["config"]["dtype"] = "float16"
    (tmp_path / "odd.ckpt").write_bytes(json.dumps(header).encode() + b"\n" + payload)
    with pytest.raises(ValueError, match=r"`path` .*odd.ckpt is not a jamem checkpoint .*`dtype` must be one of"):
        train.load_trained(tmp_path / "odd.ckpt", num_visible=16, num_classes=3)
    # the same start (float32 draws, cast) and minibatches: the paths differ by rounding only
    first = train.initial_state(train.TrainConfig(**TOY), num_visible=16, num_classes=3)[0]
    np.testing.assert_array_equal(np.asarray(start.memories), np.asarray(first.memories, np.float64))
    np.testing.assert_allclose(np.asarray(model.memories), np.asarray(narrow.memories), atol=1e-4)
    assert not np.array_equal(np.asarray(model.memories, np.float32), np.asarray(narrow.memories))
    assert history.rows[0]["train_error"] == pytest.approx(narrow_history.rows[0]["train_error"], abs=0.01)
