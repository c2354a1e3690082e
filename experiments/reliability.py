"""Reliability record: exact binary decisions, energies that never rise, and kill / resume trials.

    python experiments/reliability.py                  # full record -> results/reliability.json
    python experiments/reliability.py --quick --out /tmp/r.json    # seconds (the test suite)

1. Decisions: random +-1 memories and states (and memories built to tie in |overlap|, so the
   largest terms cancel exactly), degrees 2..100, N up to 2000; every neuron's synchronous
   decision against the sign of its gap in Python integers (`jamem.reference`).
2. Energies: asynchronous trajectories (sequential and random order) of power and rectified F,
   every saved state's energy in integers; none may rise.
3. Kill / resume: `jamem mnist` on a small subset is killed with SIGKILL at random moments
   (every other trial inside a checkpoint write, seen as its temporary file), resumed with
   `--resume`, and compared with an uninterrupted run: parameters, optimiser state and history
   must be bit-identical.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jamem as jm
from jamem.core.reference import exact_energy, exact_sync_step
from jamem.tooling.provenance import save_json

REPO = Path(__file__).resolve().parents[1]


def _separation(kind: str, degree: int):
    return jm.Power(degree) if kind == "power" else jm.RectifiedPower(degree)


def decision_cases(grid, *, trials: int, seed: int) -> dict:
    """Synchronous decisions against exact integer gaps over `grid` of (N, K, degrees)."""
    step = jax.jit(
        lambda m, x, sep: jm.SyncBinary().step(jm.DenseEnergy(sep), x, m, jnp.zeros(x.shape, bool), None)[0],
        static_argnums=2,
    )
    rng = np.random.default_rng(seed)
    cases = decisions = mismatches = 0
    failures = []
    for dim, count, degrees in grid:
        for kind in ("power", "rectified"):
            for degree in degrees:
                for trial in range(trials):
                    memories = rng.choice([-1, 1], size=(count, dim))
                    state = rng.choice([-1, 1], size=dim)
                    if trial % 2 and count >= 3:  # ties: memory 1 and -memory 0 match memory 0's |overlap|
                        memories[1] = memories[0] * np.where(rng.random(dim) < 0.5, -1, 1)
                        memories[2] = -memories[0]
                        state = memories[0] * np.where(rng.random(dim) < 0.1, -1, 1)
                    want = exact_sync_step(memories, state, kind=kind, degree=degree)
                    got = np.asarray(
                        step(
                            jnp.asarray(memories, jnp.float32),
                            jnp.asarray(state, jnp.float32),
                            _separation(kind, degree),
                        )
                    )
                    wrong = int(np.sum(got != want))
                    cases, decisions, mismatches = cases + 1, decisions + dim, mismatches + wrong
                    if wrong:
                        failures.append(dict(kind=kind, degree=degree, dim=dim, count=count, trial=trial, wrong=wrong))
    return dict(cases=cases, decisions=decisions, mismatches=mismatches, failures=failures[:20])


def energy_trajectories(*, trials: int, seed: int) -> dict:
    """Asynchronous trajectories whose integer energies must never rise; returns the counts."""
    rng = np.random.default_rng(seed)
    settings = [("power", 2, 24, 6), ("power", 3, 24, 12), ("rectified", 4, 24, 20), ("power", 30, 32, 5)]
    settings += [("rectified", 100, 32, 5)]
    checked, rises, states = 0, 0, 0
    for kind, degree, dim, count in settings:
        memories = rng.choice([-1, 1], size=(count, dim))
        starts = jnp.asarray(rng.choice([-1, 1], size=(trials, dim)), jnp.float32)
        energy = jm.DenseEnergy(_separation(kind, degree), log_domain=True)
        xi = jnp.asarray(memories, jnp.float32)
        for order in ("sequential", "random"):
            run = jax.jit(
                jax.vmap(
                    lambda x, key, order=order: (
                        jm.retrieve(
                            energy,
                            x,
                            xi,
                            solver=jm.AsyncBinary(order=order),
                            steps=6,
                            saveat=jm.SaveAt(every=1),
                            key=key,
                        ).trajectory
                    )
                )
            )
            paths = np.asarray(run(starts, jax.random.split(jax.random.key(seed), trials)))
            for trajectory in paths:
                values = [exact_energy(memories, s, kind=kind, degree=degree) for s in trajectory]
                rises += sum(b > a for a, b in zip(values, values[1:]))
                checked, states = checked + 1, states + len(values)
    return dict(trajectories=checked, states=states, rises=rises)


def _mnist_args(out: Path, data_dir: str) -> list[str]:
    return [
        "mnist", "--n", "3", "--memories", "200", "--batch-size", "200", "--train-size", "2000", "--epochs", "12",
        "--learning-rate", "0.1", "--ramp-epochs", "5", "--checkpoint-every", "1", "--no-progress",
        "--data-dir", data_dir, "--out", str(out),
    ]  # fmt: skip


def _run(args, env, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "jamem.tooling.cli", *args], cwd=REPO, env=env, **kwargs)


def _epoch(checkpoint: Path) -> int:
    """The epoch a checkpoint holds (0 if there is none yet or its header is being written)."""
    try:
        with open(checkpoint, "rb") as f:
            return int(json.loads(f.readline())["epoch"])
    except (OSError, ValueError, KeyError):
        return 0


def _wait_while(proc: subprocess.Popen, condition, *, pause: float = 0.002) -> None:
    """Poll `condition` until it is False or `proc` has ended."""
    while proc.poll() is None and condition():
        time.sleep(pause)


def _untimed(header: dict) -> list[dict]:
    """The history without its wall-clock seconds (the one column that may differ)."""
    return [{k: v for k, v in row.items() if k != "seconds"} for row in header.get("history", [])]


def kill_resume_trials(*, trials: int, seed: int, data_dir: str) -> dict:
    """Kill `jamem mnist` at random moments, resume, and compare with an uninterrupted run."""
    rng = np.random.default_rng(seed)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    work = Path(tempfile.mkdtemp(prefix="jamem-reliability-"))
    reference = work / "full"
    tic = time.time()
    assert _run(_mnist_args(reference, data_dir), env, stdout=subprocess.DEVNULL).wait() == 0
    full_seconds = time.time() - tic
    want = (reference / "mnist_n3.ckpt").read_bytes().split(b"\n", 1)
    results = []
    for trial in range(trials):
        out = work / f"trial{trial}"
        proc = _run(_mnist_args(out, data_dir), env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # wait for a random epoch's checkpoint, then kill a random moment later: inside the next
        # epoch's training, its evaluation, or its checkpoint write. The delay is a fraction of
        # the epoch just timed, so a fast machine still kills mid-run.
        target, ckpt = int(rng.integers(2, 11)), out / "mnist_n3.ckpt"
        _wait_while(proc, lambda: _epoch(ckpt) < target - 1)
        started = time.time()
        _wait_while(proc, lambda: _epoch(ckpt) < target)
        epoch_seconds = time.time() - started
        if trial % 2:  # every other trial: as soon as the next checkpoint write has begun
            _wait_while(proc, lambda: not any(out.glob(".mnist_n3.ckpt.*.tmp")), pause=0.0002)
        else:
            time.sleep(rng.uniform(0.0, 0.9 * epoch_seconds))
        if proc.poll() is not None:
            raise RuntimeError(f"trial {trial}: the run ended before it could be killed (exit {proc.returncode})")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        in_write = any(out.glob(".mnist_n3.ckpt.*.tmp"))
        epoch = _epoch(ckpt)
        resume = ["--resume"] if ckpt.is_file() else []
        code = _run([*_mnist_args(out, data_dir), *resume], env, stdout=subprocess.DEVNULL).wait()
        got = ckpt.read_bytes().split(b"\n", 1) if code == 0 else [b"{}", b""]
        header, want_header = json.loads(got[0]), json.loads(want[0])
        identical = code == 0 and got[1] == want[1] and _untimed(header) == _untimed(want_header)
        results.append(dict(killed_after_epoch=epoch, killed_inside_a_write=in_write, exit=code, identical=identical))
        print(results[-1], flush=True)
    return dict(
        trials=trials,
        identical=sum(r["identical"] for r in results),
        killed_inside_a_write=sum(r["killed_inside_a_write"] for r in results),
        uninterrupted_seconds=full_seconds,
        runs=results,
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="results/reliability.json")
    parser.add_argument("--data-dir", default=os.environ.get("JAMEM_DATA_DIR", str(REPO.parent / "shared" / "data")))
    args = parser.parse_args(argv)
    if args.quick:
        grid, trials, paths, kills = [(16, 3, (2, 3, 30)), (100, 6, (5, 100))], 2, 20, 2
    else:
        grid = [(16, 3, (2, 3, 4, 5, 7)), (100, 40, (2, 3, 5, 10)), (100, 6, (20, 30, 50, 100))]
        grid += [(784, 5, (3, 20, 30, 100)), (784, 20, (2, 30)), (2000, 3, (2, 3, 30, 100))]
        trials, paths, kills = 20, 1000, 24
    record = {"decisions": decision_cases(grid, trials=trials, seed=0)}
    print("decisions:", {k: v for k, v in record["decisions"].items() if k != "failures"}, flush=True)
    record["energies"] = energy_trajectories(trials=paths, seed=1)
    print("energies:", record["energies"], flush=True)
    record["kill_resume"] = kill_resume_trials(trials=kills, seed=2, data_dir=args.data_dir)
    save_json(args.out, record)
    ok = (
        record["decisions"]["mismatches"] == 0
        and record["energies"]["rises"] == 0
        and record["kill_resume"]["identical"] == record["kill_resume"]["trials"]
    )
    print("all checks passed" if ok else "FAILURES: see " + args.out)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
