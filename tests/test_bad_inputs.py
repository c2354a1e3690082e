"""A catalogue of bad input at every entry point: each fails before any work, with the error type
and a message naming the argument; numerical limits give a clear refusal, never a silent NaN."""

import json
import math
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jamem as jm
from jamem import capacity as cap
from jamem import data, train

XI = jax.random.rademacher(jax.random.key(0), (6, 20), dtype=jnp.float32)
X0 = XI[0]
DENSE = jm.DenseEnergy(jm.Power(3))

RETRIEVE_CASES = [
    (dict(x0=XI), ValueError, "x0"),
    (dict(x0=jnp.ones(7)), ValueError, "x0"),
    (dict(memories=XI.at[0, 0].set(jnp.nan)), ValueError, "params"),
    (dict(steps=0), ValueError, "steps"),
    (dict(steps=2.5), TypeError, "steps"),
    (dict(steps=10, saveat=jm.SaveAt(every=3)), ValueError, "every"),
    (dict(solver="async"), TypeError, "solver"),
    (dict(mask=jnp.zeros(20)), TypeError, "mask"),
    (dict(mask=jnp.zeros(5, bool)), ValueError, "mask"),
    (dict(solver=jm.AsyncBinary(order="random")), ValueError, "key"),
    (dict(x0=X0 * 0.5, solver=jm.AsyncBinary()), ValueError, "x0"),
    (dict(x0=X0.astype(jnp.float16), memories=XI.astype(jnp.float16)), TypeError, "float16"),
    (dict(x0=X0.astype(jnp.bfloat16), memories=XI.astype(jnp.bfloat16)), TypeError, "bfloat16"),
    (dict(tol=-1.0), ValueError, "tol"),
]


@pytest.mark.parametrize("change,error,name", RETRIEVE_CASES)
def test_retrieve_refuses(change, error, name):
    kwargs = dict(energy=DENSE, x0=X0, memories=XI, solver=jm.GradientDescent(0.01), steps=10) | change
    energy, x0, memories = kwargs.pop("energy"), kwargs.pop("x0"), kwargs.pop("memories")
    # shape errors meet the test suite's jaxtyping hook first (a TypeError naming the argument)
    with pytest.raises((error, TypeError), match=name):
        jm.retrieve(energy, x0, memories, **kwargs)


def test_numpy_integers_are_integers():
    sol = jm.retrieve(DENSE, X0, XI, solver=jm.AsyncBinary(), steps=np.int64(4), saveat=jm.SaveAt(every=2))
    assert sol.trajectory.shape == (3, 20)
    assert cap.perfect_recall_capacity(np.int64(100), np.int32(3)) == cap.perfect_recall_capacity(100, 3)


def test_overflowing_energy_is_refused_not_reported():
    xi = jax.random.rademacher(jax.random.key(1), (5, 784), dtype=jnp.float32)
    with pytest.raises(Exception, match="log_domain=True"):
        jm.retrieve(jm.DenseEnergy(jm.Power(30)), xi[0], xi, solver=jm.AsyncBinary())
    sol = jm.retrieve(jm.DenseEnergy(jm.Power(30), log_domain=True), xi[0], xi, solver=jm.AsyncBinary())
    assert jnp.isfinite(sol.energy) and bool(jnp.all(sol.state == xi[0]))
    # low precision works where the energy allows it
    lse = jm.retrieve(jm.LogSumExpEnergy(0.1), (xi[0] * 0.5).astype(jnp.float16), xi.astype(jnp.float16), steps=3)
    assert jnp.isfinite(lse.energy)


def test_energy_options():
    with pytest.raises(TypeError, match="log_domain"):
        jm.DenseEnergy(jm.Power(3), log_domain="yes")


CONFIG_CASES = [
    (dict(momentum=1.0), "momentum"),
    (dict(momentum=-0.1), "momentum"),
    (dict(learning_rate_decay=0.0), "learning_rate_decay"),
    (dict(learning_rate_decay=1.5), "learning_rate_decay"),
    (dict(temperature_final=0.0), "temperature_final"),
    (dict(temperature_initial=-5.0), "temperature_initial"),
    (dict(temperature_ramp_epochs=-1), "temperature_ramp_epochs"),
    (dict(init_std=0.0), "init_std"),
    (dict(init_mean=float("nan")), "init_mean"),
    (dict(seed=-1), "seed"),
    (dict(epochs=0), "epochs"),
    (dict(learning_rate=float("inf")), "learning_rate"),
    (dict(loss="hinge"), "loss"),
]


@pytest.mark.parametrize("change,name", CONFIG_CASES)
def test_train_config_refuses(change, name):
    with pytest.raises((ValueError, TypeError), match=name):
        train.TrainConfig(**change)


def _toy(count=200, dim=16):
    rng = np.random.default_rng(0)
    return rng.uniform(-1, 1, (count, dim)).astype(np.float32), rng.integers(0, 3, count).astype(np.int32)


TOY = dict(degree=3, num_memories=10, batch_size=50, epochs=3, learning_rate=0.1, temperature_initial=8.0)
TOY.update(temperature_final=4.0, temperature_ramp_epochs=2, loss_power=2)


def test_fit_refuses_before_training(tmp_path):
    images, labels = _toy()
    config = train.TrainConfig(**TOY)
    cases = [
        (dict(checkpoint_every=0, checkpoint_path=tmp_path / "a.ckpt"), ValueError, "checkpoint_every"),
        (dict(eval_every=-1), ValueError, "eval_every"),
        (dict(test=(images[:, :8], labels)), ValueError, "features"),
        (dict(resume=True, checkpoint_path=tmp_path / "missing.ckpt"), FileNotFoundError, "resume"),
        (dict(resume="maybe"), ValueError, "resume"),
        (dict(checkpoint_path=tmp_path), ValueError, "checkpoint_path"),
        (dict(metrics_path="/proc/no/such/m.json"), ValueError, "metrics_path"),
    ]
    for change, error, name in cases:
        kwargs = dict(progress=False) | change
        test = kwargs.pop("test", None)
        with pytest.raises(error, match=name):
            train.fit(config, (images, labels), test, **kwargs)
    with pytest.raises(TypeError, match="config"):
        train.fit(dict(TOY), (images, labels), progress=False)


def test_divergence_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    images, labels = _toy()
    config = train.TrainConfig(**TOY)
    steps_per_epoch = images.shape[0] // config.batch_size
    # a sane step for the first epoch, then an absurd one: the memories overflow to inf / NaN
    blow_up = optax.sgd(lambda step: jnp.where(step < steps_per_epoch, 1e-3, 1e38))
    ckpt = tmp_path / "run.ckpt"
    with pytest.raises(FloatingPointError, match="epoch 2"):
        train.fit(config, (images, labels), optimizer=blow_up, checkpoint_path=ckpt, checkpoint_every=1, progress=False)
    header = json.loads(ckpt.read_bytes().split(b"\n", 1)[0])
    assert header["epoch"] == 1  # the diverged epoch was not written
    model, _, opt_state = train.initial_state(config, num_visible=16, num_classes=3, optimizer=blow_up)
    _, (loaded, _) = train.load_checkpoint(ckpt, (model, opt_state))
    assert bool(jnp.all(jnp.isfinite(loaded.memories)))


def test_corrupt_checkpoint_and_stale_temporaries(tmp_path):
    images, labels = _toy()
    config = train.TrainConfig(**TOY)
    ckpt = tmp_path / "run.ckpt"
    stale = tmp_path / ".run.ckpt.99999.tmp"
    stale.write_bytes(b"half a checkpoint")
    train.fit(config, (images, labels), checkpoint_path=ckpt, progress=False)
    assert not stale.exists()
    raw = bytearray(ckpt.read_bytes())
    raw[-10] ^= 0xFF  # one flipped byte in the memories
    ckpt.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="SHA-256"):
        train.fit(config.__class__(**{**TOY, "epochs": 5}), (images, labels), checkpoint_path=ckpt, resume=True)


def test_resume_on_other_data_is_refused(tmp_path):
    images, labels = _toy()
    config = train.TrainConfig(**TOY)
    ckpt = tmp_path / "run.ckpt"
    train.fit(config, (images, labels), checkpoint_path=ckpt, progress=False)
    longer = train.TrainConfig(**{**TOY, "epochs": 4})
    with pytest.raises(ValueError, match="other data"):
        train.fit(longer, (images[::-1].copy(), labels[::-1].copy()), checkpoint_path=ckpt, resume=True)
    train.fit(longer, (images, labels), checkpoint_path=ckpt, resume=True, progress=False)  # same data: fine


def test_run_to_convergence_refuses():
    energy = jm.DenseEnergy(jm.Power(3))
    with pytest.raises((ValueError, TypeError), match="starts"):  # jaxtyping's check first in the tests
        cap.run_to_convergence(energy, XI[0], XI)
    with pytest.raises(ValueError, match="memories"):
        cap.run_to_convergence(energy, XI, XI[:0])
    with pytest.raises(ValueError, match="memories"):
        cap.run_to_convergence(energy, XI, XI.at[1, 1].set(jnp.inf))
    with pytest.raises(ValueError, match="starts"):
        cap.run_to_convergence(energy, XI * 0.5, XI)
    with pytest.raises(ValueError, match="solver"):
        cap.run_to_convergence(energy, XI, XI, solver=jm.GradientDescent(0.1))


def test_capacity_theory_at_any_degree():
    assert cap.perfect_recall_capacity(784, 200) > 1e100
    assert cap.perfect_recall_capacity(10**6, 200) == float("inf")
    assert cap.bit_error_probability(784, 5, 300) == 0.0
    assert cap.small_error_alpha(200) == 0.0  # 0.146 / 397!! is below 1e-308
    assert 1e140 < cap.small_error_capacity(784, 200) < float("inf")
    np.testing.assert_allclose(cap.perfect_recall_capacity(100, 3), 362, rtol=1e-3)  # arXiv:1606.01164, sec. 2
    with pytest.raises(ValueError, match="degree"):
        cap.perfect_recall_capacity(100, 1)


def test_data_arguments():
    with pytest.raises(ValueError, match="source"):
        data.load("mnist", source="web")
    with pytest.raises(ValueError, match="split"):
        data.load("mnist", split="valid")


CLI_CASES = [
    (["xor", "--max-degree", "0"], 2, "--max-degree"),
    (["capacity", "--dims", "10", "--memories", "5", "--json", "/proc/no/such/x.json"], 1, "--json"),
    (["mnist", "--ramp-epochs", "-3"], 1, "temperature_ramp_epochs"),
    (["mnist", "--momentum", "1.5"], 1, "momentum"),
    (["mnist", "--checkpoint-every", "0"], 1, "checkpoint_every"),
    (["mnist", "--out", "/proc/no/such"], 1, "out_dir"),
    (["mnist", "--evaluate", "/no/such.ckpt"], 1, "No checkpoint"),
    # refused before the data is read (the data directory does not exist)
    (
        ["mnist", "--batch-sampling", "class_balanced", "--batch-size", "1005", "--data-dir", "/no/such"],
        1,
        "batch_size",
    ),
    (["mnist", "--train-size", "10", "--data-dir", "/no/such"], 1, "train_size"),
    (["capacity", "--dims", "0"], 2, "--dims"),
]


@pytest.mark.parametrize("argv,code,name", CLI_CASES)
def test_cli_prints_one_line_and_exits_non_zero(argv, code, name):
    result = subprocess.run(
        [sys.executable, "-m", "jamem.tooling.cli", *argv], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == code
    assert name in result.stderr and "Traceback" not in result.stderr
    if code == 1:
        assert len(result.stderr.strip().splitlines()) == 1


def test_cli_debug_shows_the_traceback():
    argv = [sys.executable, "-m", "jamem.tooling.cli", "--debug", "mnist", "--momentum", "1.5"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_mnist_run_refuses_float64_without_x64_before_reading_data(tmp_path):
    with pytest.raises(ValueError, match="`dtype` 'float64' needs 64-bit JAX"):
        jm.mnist.run(degree=3, dtype="float64", out_dir=tmp_path, data_dir=tmp_path / "no_such")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# The family's entry points (jamem.networks, jamem.capacity): hyperparameters, shapes, float32 limits


def _networks():
    from jamem.networks import clustering, diffusion, energy_transformer, hierarchical, random_features, two_layer

    return clustering, diffusion, energy_transformer, hierarchical, random_features, two_layer


def test_hyperparameters_are_real_scalars():
    from jamem._checks import check_positive

    for value, error, message in [
        (np.array([1.0]), ValueError, "must be a scalar"),  # would broadcast into one value per entry
        (jnp.array([-1.0, 2.0]), ValueError, "must be a scalar"),  # and pass no range check
        (True, TypeError, "real number"),
        ("1.0", TypeError, "real number"),
        (None, TypeError, "real number"),
        (np.float32(-1.0), ValueError, "finite number > 0"),
    ]:
        with pytest.raises(error, match=f"`step_size` {message}" if "must" in message else message):
            check_positive(value, name="step_size")
    assert check_positive(jnp.array(0.5), name="x") == 0.5 and check_positive(np.int64(2), name="x") == 2.0
    with pytest.raises(ValueError, match="must be a scalar"):  # shapes are checked under jit too
        jax.jit(lambda b: check_positive(b, name="x"))(jnp.ones(2))
    assert float(jax.jit(lambda b: check_positive(b, name="x") * 2)(3.0)) == 6.0  # a traced scalar is trusted
    clustering, *_, two_layer = _networks()
    pts = jax.random.normal(jax.random.key(2), (5, 3))
    # through the public functions (the test suite's jaxtyping hook may name the argument first)
    with pytest.raises((ValueError, TypeError), match="step_size"):
        clustering.settle(pts[:2], pts, beta=1.0, step_size=np.array([-1.0]))
    with pytest.raises((ValueError, TypeError), match="dt"):
        two_layer.simulate(two_layer.model_b(), pts[0], pts, dt=np.array([5.0]))


def test_exponential_separation_at_float32_limits():
    with pytest.raises(ValueError, match="`beta` must lie in float32's normal range"):
        jm.Exponential(1e39)  # inf in float32: its terms were NaN and the binary rules' level loop never ended
    with pytest.raises(ValueError, match="`beta` must lie in float32's normal range"):
        jm.Exponential(1e-40)
    from jamem.networks import sequence

    pats = jax.random.rademacher(jax.random.key(0), (4, 16), dtype=jnp.float32)
    # beta = 1e-8: terms of different overlaps agree to 1 ulp; the near tie used to keep the old bit silently
    with pytest.raises(Exception, match="near tie float32 cannot decide"):
        jax.block_until_ready(sequence.recall(sequence.SequenceMemory(jm.Exponential(1e-8)), pats[0], pats, steps=1))
    ok = sequence.recall(sequence.SequenceMemory(jm.Exponential(1e-4)), pats[0], pats, steps=1)
    assert bool(jnp.all(ok[-1] == pats[1]))


def test_capacity_entry_points():
    with pytest.raises(ValueError, match="above 1/2"):
        cap.bit_error_probability(100, 1000, 2)  # the large-N formula gave 1.2 here
    assert 0 < cap.bit_error_probability(100, 3000, 3) < 0.5
    with pytest.raises(ValueError, match="`state`"):
        cap.is_stored_memory(jnp.where(jnp.arange(20) < 10, 2 * X0, 0.0), XI)  # was True
    with pytest.raises((ValueError, TypeError), match="state"):
        cap.is_stored_memory(XI[:2], XI)  # a batch collapsed to one answer
    with pytest.raises((ValueError, TypeError), match="state"):
        cap.is_stored_memory(X0[:8], XI)
    assert bool(cap.is_stored_memory(XI[3], XI)) and not bool(cap.is_stored_memory(-XI[3], XI))
    with pytest.raises((ValueError, TypeError), match="fraction"):
        cap.flip_bits(jax.random.key(0), XI, fraction=True)
    # the exact double factorial of 4 * 10^5 took seconds; logs of Gamma are instant and agree at small n
    from jamem.networks.sequence import transition_error_probability

    assert transition_error_probability(100, 50, 2 * 10**5) == pytest.approx(0.5)  # (2n-1)!! >> N^n: chance
    n, dim, k = 3, 60, 40
    snr = dim**n / (cap.double_factorial(2 * n - 1) * (k - 1))
    assert transition_error_probability(dim, k, n) == pytest.approx(0.5 * math.erfc(math.sqrt(snr / 2)), rel=1e-12)


def test_energy_transformer_inputs():
    _, _, et, *_ = _networks()
    img, mask = jnp.arange(16.0), jnp.array([True, False, False, False])
    assert float(et.masked_patch_mse(jnp.zeros(16), img, mask, patch_size=2)) == pytest.approx(10.5)
    # (the test suite's jaxtyping hook may name the argument first, as a TypeError)
    with pytest.raises(TypeError, match="mask"):
        et.masked_patch_mse(jnp.zeros(16), img, jnp.array([0.5, 0, 0, 0]), patch_size=2)  # was a weight
    with pytest.raises((ValueError, TypeError), match="same shape|reconstruction|image"):
        et.masked_patch_mse(jnp.zeros(32), img, mask, patch_size=2)  # was broadcast
    with pytest.raises((ValueError, TypeError), match="mask"):
        et.masked_patch_mse(jnp.zeros(16), img, mask[:2], patch_size=2)
    # half precision: pixel differences of 1500 square past float16's range, not here
    half = et.masked_patch_mse(jnp.zeros(16, jnp.float16), (100 * img).astype(jnp.float16), mask, patch_size=2)
    assert float(half) == pytest.approx(105000.0)
    block = et.EnergyTransformer(8, num_heads=2, head_dim=4, num_memories=6, key=jax.random.key(0))
    for call in (block.energy, block.layer_norm):
        with pytest.raises((ValueError, TypeError), match=r"shape \(T, 8\)|parameter 'x'"):
            call(jnp.ones(8))  # one token without its axis gave a scalar or zeros
    with pytest.raises((ValueError, TypeError), match="one token|parameter 'x'"):
        et.layer_norm_lagrangian(jnp.ones((3, 8)))
    with pytest.raises((ValueError, TypeError), match="delta"):
        et.layer_norm_lagrangian(jnp.ones(8), delta=jnp.array(0.5))


def test_two_layer_external_input_shape():
    *_, two_layer = _networks()
    mem, v0 = jax.random.normal(jax.random.key(0), (5, 8)), jnp.ones(8)
    flow = two_layer.TwoLayerFlow(two_layer.model_b(), jnp.ones(1))
    with pytest.raises((ValueError, TypeError), match="external"):
        jm.retrieve(flow, v0, mem, solver=jm.EulerFlow(0.1), steps=3)
    with pytest.raises((ValueError, TypeError), match="external"):
        two_layer.model_b().energy(v0, mem @ v0, mem, external=jnp.ones(1))


def test_random_features_limits():
    *_, random_features, _ = _networks()
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="`beta` must lie in"):
        random_features.RandomFeatureMemory(3, 8, beta=1e40, key=key)
    xi = jax.random.rademacher(key, (2, 64), dtype=jnp.float32)  # beta |xi|^2 = 64
    with pytest.raises(ValueError, match="positive features underflow"):
        random_features.RandomFeatureMemory(64, 16, kind="positive", key=key).add_memories(xi)
    with pytest.raises(ValueError, match="overflow"):
        random_features.RandomFeatureMemory(3, 8, key=key, dtype=jnp.float16).add_memories(jnp.full((2, 3), 1e5))


def test_diffusion_float32_limits():
    _, diffusion, *_ = _networks()
    mem = jnp.array([[0.0, 1.0], [1.0, 0.0]])
    with pytest.raises(ValueError, match="overflows"):
        diffusion.score(jnp.array([1e9, 0.0]), mem, sigma=1e-15)  # gave -inf
    with pytest.raises(ValueError, match="in float32"):
        diffusion.ProbabilityFlow(1 - 1e-9, sigma_min=0.01)  # sigma never fell


def test_integer_sizes_are_not_truncated():
    *_, hierarchical, _, _ = _networks()
    key = jax.random.key(0)
    with pytest.raises(TypeError, match=r"`in_shape\[1\]` must be an integer"):
        hierarchical.ConvSynapse.init((1, 4.7, 4), 2, 2, key=key)  # was (1, 4, 4)
    with pytest.raises(TypeError, match=r"`stride\[0\]`"):
        hierarchical.ConvSynapse.init((1, 4, 4), 2, 2, key=key, stride=2.5)
    with pytest.raises(ValueError, match="`in_size`"):
        hierarchical.DenseSynapse.init(0, 3, key=key)  # was a ZeroDivisionError
    assert hierarchical.ConvSynapse.init((1, 4.0, 4), 2, 2, key=key, stride=2).out_shape == (2, 2, 2)


def test_clustering_refuses_overflowing_points():
    clustering, *_ = _networks()
    pts = jax.random.normal(jax.random.key(2), (5, 3))
    with pytest.raises(ValueError, match="`points` has entries beyond"):
        clustering.settle(pts[:2], pts * 1e20, beta=1.0)  # failed after the work, blaming log_domain
    with pytest.raises(ValueError, match="`points` has entries beyond"):
        clustering.kmeans_objective(pts[:2], pts * 1e20)  # was inf


def test_sweep_flags_and_theory_helpers():
    key = jax.random.key(0)
    good = dict(dim=8, num_memories=2, degree=2, kind="power")
    with pytest.raises((ValueError, TypeError), match=r"grid\[1\]"):  # refused before grid[0] runs
        cap.capacity_sweep(key, [good, dict(good, seed=2.7)], progress=False)  # was read as seed 2
    with pytest.raises(ValueError, match=r"`grid\[0\]` lacks 'kind'"):
        cap.capacity_sweep(key, [dict(dim=8, num_memories=2, degree=2)], progress=False)
    with pytest.raises(TypeError, match="one dict|parameter .grid."):
        cap.capacity_sweep(key, good, progress=False)
    with pytest.raises(ValueError, match="finite"):
        cap.k_half([10, 20, 30], [0.9, float("nan"), 0.2])  # the NaN was skipped
    with pytest.raises(ValueError, match="`level`"):
        cap.k_half([10, 20, 30], [0.9, 0.6, 0.2], level=2.0)
    assert cap.k_half([10, 20, 30], [0.9, 0.6, 0.2]) == pytest.approx(22.5)
    # x^200 of overlaps up to 3 overflows float32: the readout's sign is still exact (even n ties XOR)
    assert cap.xor_readout(jm.Power(200), 1.0, 1.0)[0] == 0.0 and cap.xor_readout(jm.Power(201), 1.0, 1.0)[0] == -1.0
    with pytest.raises(TypeError, match="`states` must be True or False|parameter .states."):
        jm.SaveAt(every=2, states="no")  # was read as True
    from jamem.networks.energy_transformer import EnergyTransformer

    with pytest.raises(TypeError, match="`exclude_self` must be True or False|parameter .exclude_self."):
        EnergyTransformer(8, num_heads=2, head_dim=4, num_memories=6, key=key, exclude_self="no")


def test_random_features_state_shape():
    from jamem.networks.random_features import RandomFeatureMemory

    rf = RandomFeatureMemory(3, 8, key=jax.random.key(0)).add_memories(jnp.eye(3))
    with pytest.raises((ValueError, TypeError), match="`state` must be one point of shape"):
        jm.retrieve(rf, jnp.ones(4), steps=2)  # a deep dot_general error before
    assert jnp.isfinite(jm.retrieve(rf, jnp.ones(3), solver=jm.GradientDescent(0.1), steps=2).energy)


def test_keys_are_named():
    from jamem.networks.clustering import fit_prototypes
    from jamem.networks.energy_transformer import random_mask

    calls = [
        lambda key: cap.random_patterns(key, num_patterns=2, dim=3),
        lambda key: random_mask(key, 4, 2),
        lambda key: fit_prototypes(jnp.eye(3), num_clusters=2, beta=1.0, key=key),
        lambda key: jm.DenseAMClassifier(num_memories=4, degree=3, key=key),
        lambda key: cap.capacity_trials(key, dim=8, num_memories=2, separation=jm.Power(2), num_sets=1),
    ]
    for call in calls:
        for bad in (0, None):  # deep inside jax.random before, with no argument named
            with pytest.raises((TypeError, ValueError), match="key"):
                call(bad)
    assert cap.random_patterns(jax.random.PRNGKey(0), num_patterns=2, dim=3).shape == (2, 3)  # raw keys still work
