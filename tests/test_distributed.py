"""Training and capacity sweeps as several real processes on this machine (`jax.distributed` over a
localhost coordinator, gloo collectives on CPU), against one process with the same seed."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

# One process of a run: train a small DenseAM (and run a capacity sweep), process 0 writes what it got.
WORKER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from jamem.tooling.distributed import initialize

    port, count, rank, out, epochs, resume = sys.argv[1:7]
    count, rank, epochs = int(count), int(rank), int(epochs)
    if count > 1:
        initialize(f"localhost:{port}", count, rank)
    import jax
    from jamem import capacity as cap, train

    rng = np.random.default_rng(0)
    centres = rng.choice([-1.0, 1.0], size=(3, 16))
    labels = rng.integers(0, 3, 480)
    images = np.clip(centres[labels] + 0.6 * rng.normal(size=(480, 16)), -1, 1).astype(np.float32)
    config = train.TrainConfig(
        degree=3, num_memories=20, batch_size=40, learning_rate=0.1, temperature_initial=8.0,
        temperature_final=4.0, temperature_ramp_epochs=3, loss_power=2, epochs=epochs,
    )
    model, history = train.fit(
        config, (images[:400], labels[:400]), (images[400:], labels[400:]), checkpoint_path=f"{out}/run.ckpt",
        checkpoint_every=1, resume="auto" if resume == "resume" else False, progress=False,
    )
    import optax
    from jamem import ReLUMLP
    mlp, mlp_losses = train.fit_softmax(
        ReLUMLP(num_visible=16, num_hidden=12, num_classes=3, key=jax.random.key(1)), (images, labels),
        epochs=3, optimizer=optax.adam(1e-2), batch_size=40, key=jax.random.key(2), progress=False,
    )
    rows = cap.capacity_sweep(
        jax.random.key(0), [dict(dim=32, num_memories=k, degree=3, kind="power") for k in (8, 64)],
        num_sets=6, starts_per_set=16, progress=False,
    )
    if jax.process_index() == 0:
        np.save(f"{out}/memories.npy", np.asarray(model.memories))
        json.dump({"history": history.rows, "capacity": rows, "devices": jax.device_count(), "mlp_losses": mlp_losses},
                  open(f"{out}/result.json", "w"))
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _launch(count: int, out: Path, epochs: int, *, resume: bool = False):
    out.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    mode = "resume" if resume else "fresh"
    return [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(port), str(count), str(rank), str(out), str(epochs), mode],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for rank in range(count)
    ]


def _wait(procs, timeout=600):
    deadline = time.time() + timeout
    for proc in procs:
        proc.wait(timeout=max(1, deadline - time.time()))
        assert proc.returncode == 0, proc.stderr.read().decode()[-3000:]


def _result(out: Path):
    return json.loads((out / "result.json").read_text()), np.load(out / "memories.npy")


def _untimed(history):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    out = tmp_path_factory.mktemp("one")
    _wait(_launch(1, out, epochs=6))
    return _result(out)


@pytest.mark.parametrize("count", [2, pytest.param(4, marks=pytest.mark.slow)])
def test_processes_train_and_sweep_like_one(count, single, tmp_path):
    _wait(_launch(count, tmp_path, epochs=6))
    (record, memories), (reference, ref_memories) = _result(tmp_path), single
    assert record["devices"] == count
    # the same minibatches, sums split over processes in another order: equal up to float32
    # round-off carried through 60 steps (about 1e-4 on memories in [-1, 1])
    np.testing.assert_allclose(memories, ref_memories, atol=5e-4)
    for row, ref in zip(record["history"], reference["history"]):
        assert row["epoch"] == ref["epoch"]
        np.testing.assert_allclose(row["loss"], ref["loss"], rtol=1e-3, atol=1e-6)
        assert row["train_error"] == pytest.approx(ref["train_error"], abs=1 / 400)
        assert row["test_error"] == pytest.approx(ref["test_error"], abs=1 / 80)
    # the generic softmax trainer too
    np.testing.assert_allclose(record["mlp_losses"], reference["mlp_losses"], rtol=1e-4)
    # each memory set runs on one device: the capacity table is exactly the single-process one
    assert record["capacity"] == reference["capacity"]
    assert (tmp_path / "run.ckpt").is_file()


def test_a_killed_process_and_a_restart_end_as_the_uninterrupted_run(tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    _wait(_launch(2, full, epochs=40))
    procs = _launch(2, killed, epochs=40)
    checkpoint = killed / "run.ckpt"
    deadline = time.time() + 300
    while time.time() < deadline and all(p.poll() is None for p in procs):
        try:
            if json.loads(checkpoint.open("rb").readline())["epoch"] >= 5:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    assert all(p.poll() is None for p in procs), "the run ended before it could be killed"
    procs[1].send_signal(signal.SIGKILL)  # one process dies; the other cannot go on alone
    procs[1].wait()
    for p in procs[:1]:
        p.send_signal(signal.SIGKILL)
        p.wait()
    stopped_at = json.loads(checkpoint.open("rb").readline())["epoch"]
    assert 5 <= stopped_at < 40
    _wait(_launch(2, killed, epochs=40, resume=True))  # every process restarts from the checkpoint
    (a, memories_a), (b, memories_b) = _result(killed), _result(full)
    np.testing.assert_array_equal(memories_a, memories_b)
    assert _untimed(a["history"]) == _untimed(b["history"])
