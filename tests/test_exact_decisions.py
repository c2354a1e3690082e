"""The binary rules decide as exact arithmetic does, at every degree (arXiv:1606.01164, eq. 3).

The reference (`jamem.reference`) computes sum_mu F(r_mu + xi^mu_i) - F(r_mu - xi^mu_i) in Python
integers (no rounding, no overflow) for every neuron; jamem's decisions must equal its signs, ties (a zero
gap) keeping the current value. Energies along asynchronous trajectories are checked, also in
integers, never to increase.
"""

import importlib.util
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jamem as jm
from jamem.core.reference import exact_async_sweeps, exact_sync_step


def _separation(kind, degree):
    return jm.Power(degree) if kind == "power" else jm.RectifiedPower(degree)


@jax.jit
def _sync_step(memories, state, separation):
    return jm.SyncBinary().step(jm.DenseEnergy(separation), state, memories, jnp.zeros(state.shape, bool), None)[0]


def _with_ties(rng, memories):
    """Make memories 1 and 2 tie with memory 0 in |overlap| for many states (exact cancellations)."""
    memories = memories.copy()
    if memories.shape[0] >= 3:
        memories[1] = memories[0]
        memories[1, rng.choice(memories.shape[1], memories.shape[1] // 2, replace=False)] *= -1
        memories[2] = -memories[0]
    return memories


CASES = [
    # (N, K, degrees): degrees 2..100, N up to 2000
    (16, 3, (2, 3, 4, 5, 7)),
    (100, 40, (2, 3, 5, 10)),
    (100, 6, (20, 30, 50, 100)),
    (784, 5, (3, 20, 30, 100)),
    (2000, 3, (2, 3, 30, 100)),
]


@pytest.mark.parametrize("kind", ["power", "rectified"])
@pytest.mark.parametrize("dim,count,degrees", CASES)
def test_sync_decisions_equal_exact_integer_arithmetic(kind, dim, count, degrees):
    rng = np.random.default_rng(dim * 1000 + count)
    for degree in degrees:
        for trial in range(2):
            memories = rng.choice([-1, 1], size=(count, dim))
            if trial:
                memories = _with_ties(rng, memories)
                state = memories[0] * np.where(rng.random(dim) < 0.1, -1, 1)  # near a memory: large terms
            else:
                state = rng.choice([-1, 1], size=dim)
            want = exact_sync_step(memories, state, kind=kind, degree=degree)
            got = _sync_step(
                jnp.asarray(memories, jnp.float32), jnp.asarray(state, jnp.float32), _separation(kind, degree)
            )
            mismatched = np.flatnonzero(np.asarray(got) != want)
            assert mismatched.size == 0, (kind, degree, trial, mismatched[:10])


@pytest.mark.parametrize("kind,degree", [("power", 2), ("power", 3), ("rectified", 30), ("power", 30), ("power", 100)])
def test_async_sweeps_equal_a_literal_integer_replay(kind, degree):
    rng = np.random.default_rng(degree)
    dim, count, sweeps = 60, 8, 3
    for trial in range(3):
        memories = rng.choice([-1, 1], size=(count, dim))
        memories = _with_ties(rng, memories) if trial else memories
        state = rng.choice([-1, 1], size=dim)
        want = exact_async_sweeps(memories, state, kind=kind, degree=degree, sweeps=sweeps)
        sol = jm.retrieve(
            jm.DenseEnergy(_separation(kind, degree), log_domain=True),
            jnp.asarray(state, jnp.float32),
            jnp.asarray(memories, jnp.float32),
            solver=jm.AsyncBinary(),
            steps=sweeps,
            tol=None,
            saveat=jm.SaveAt(every=1),
        )
        np.testing.assert_array_equal(np.asarray(sol.trajectory), want)


def _reliability():
    """experiments/reliability.py as a module (its checks are shared with the results record)."""
    path = Path(__file__).resolve().parents[1] / "experiments" / "reliability.py"
    spec = importlib.util.spec_from_file_location("reliability", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_energy_never_increases_in_exact_arithmetic():
    record = _reliability().energy_trajectories(trials=40, seed=0)
    assert record["trajectories"] == 400 and record["rises"] == 0


@pytest.mark.slow
def test_energy_never_increases_in_exact_arithmetic_many():
    record = _reliability().energy_trajectories(trials=1000, seed=1)
    assert record["trajectories"] >= 10**4 and record["rises"] == 0


def test_reliability_record_quick(tmp_path, mnist, cache, monkeypatch):
    # also the test of `jamem mnist --resume` after a SIGKILL (mid-epoch, and inside a checkpoint
    # write): parameters, optimiser state and history end byte-identical to an uninterrupted run
    from conftest import SHARED_DATA

    monkeypatch.setenv("JAMEM_CACHE_DIR", str(cache))
    out = tmp_path / "reliability.json"
    assert _reliability().main(["--quick", "--out", str(out), "--data-dir", str(SHARED_DATA)]) == 0
    record = json.loads(out.read_text())
    assert record["decisions"]["mismatches"] == 0 and record["decisions"]["decisions"] > 500
    kills = record["kill_resume"]
    assert kills["identical"] == kills["trials"] == 2
    assert all(run["killed_after_epoch"] < 12 for run in kills["runs"])  # killed mid-run, not after
