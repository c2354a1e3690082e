"""A catalogue of bad input at every entry point: each fails before any work, with the error type
and a message naming the argument; numerical limits give a clear refusal, never a silent NaN."""

import json
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
