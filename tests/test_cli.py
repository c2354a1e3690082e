import json

import pytest

from jamem.tooling.cli import main


def test_xor_command(capsys, tmp_path):
    assert main(["xor", "--max-degree", "3", "--json", str(tmp_path / "x.json")]) == 0
    out = capsys.readouterr().out
    assert "solves_xor" in out
    rows = json.loads((tmp_path / "x.json").read_text())
    solved = {(r["kind"], r["degree"]): r["solves_xor"] for r in rows}
    assert solved == {
        ("power", 1): False,
        ("power", 2): False,
        ("power", 3): True,
        ("rectified", 1): False,
        ("rectified", 2): True,
        ("rectified", 3): True,
    }


def test_capacity_command_writes_json(tmp_path, capsys):
    path = tmp_path / "cap.json"
    assert (
        main(
            [
                "capacity",
                "--dims",
                "32",
                "--memories",
                "4,400",
                "--degrees",
                "3",
                "--sets",
                "1",
                "--starts",
                "8",
                "--flip-fraction",
                "0.1",
                "--json",
                str(path),
                "--csv",
                str(tmp_path / "cap.csv"),
            ]
        )
        == 0
    )
    data = json.loads(path.read_text())
    assert {"command", "date", "hardware"} <= set(data["meta"])
    fractions = {r["num_memories"]: r["recall_fraction"] for r in data["rows"]}
    assert fractions[4] == 1.0 and fractions[400] < 0.5
    assert "recall_fraction" in capsys.readouterr().out
    import csv

    with open(tmp_path / "cap.csv") as f:
        table = list(csv.DictReader(f))
    assert {int(r["num_memories"]): float(r["recall_fraction"]) for r in table} == fractions


def test_mnist_evaluate_reports_the_saved_models_error(small_mnist_run, cache, capsys, monkeypatch):
    from conftest import SHARED_DATA

    from jamem import mnist

    _, history, path = small_mnist_run
    monkeypatch.setenv("JAMEM_CACHE_DIR", str(cache))
    assert main(["mnist", "--evaluate", str(path), "--data-dir", str(SHARED_DATA)]) == 0
    out = capsys.readouterr().out
    final = history.rows[-1]["test_error"]
    assert f"test error {100 * final:.2f}%" in out and "prototypes:" in out
    summary = mnist.evaluate(path, data_dir=str(SHARED_DATA))
    assert summary["test_error"] == pytest.approx(final, abs=1e-6)  # recomputed, not read back
    silent = summary["memories_silent_on_eval_images"]
    assert f"{silent} of {summary['config']['num_memories']} memories add to no class on any test image" in out


def test_accelerator_script_dry_run(tmp_path, cache):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from conftest import SHARED_DATA

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "JAMEM_CACHE_DIR": str(cache), "PYTHONPATH": str(repo)}
    command = [sys.executable, str(repo / "benchmarks" / "accelerator.py"), "--dry-run", "--out", str(tmp_path)]
    command += ["--data-dir", str(SHARED_DATA), "--degrees", "3,2"]
    subprocess.run(command, check=True, env=env, capture_output=True, timeout=600)
    report = json.loads((tmp_path / "accelerator.json").read_text())
    assert [m["degree"] for m in report["models"]] == [3, 2] and all(m["complete"] for m in report["models"])
    assert report["epoch_timing"]["seconds"]["epoch"] > 0 and report["epoch_timing"]["seconds"]["matmul_floor"] > 0
    assert (tmp_path / "mnist_n3.eqx").is_file()
    assert all(row["jamem fraction of bare matmuls"] > 0 for row in report["retrieval"])
    # a second slot finds both complete and skips them, saying why
    subprocess.run(command, check=True, env=env, capture_output=True, timeout=600)
    report = json.loads((tmp_path / "accelerator.json").read_text())
    assert report["models"] == [] and all("already complete" in s["why"] for s in report["skipped"])


def test_mnist_command_trains_and_evaluates_in_float64(tmp_path, cache, mnist):
    import os
    import subprocess
    import sys

    from conftest import SHARED_DATA

    # in processes of their own: 64-bit JAX is for a whole process
    env = {**os.environ, "JAMEM_DATA_DIR": str(SHARED_DATA), "JAMEM_CACHE_DIR": str(cache)}
    cli = [sys.executable, "-m", "jamem.tooling.cli", "mnist"]
    small = ["--quick", "--memories", "20", "--epochs", "1", "--train-size", "1000", "--no-progress"]
    out = tmp_path / "run"
    result = subprocess.run([*cli, *small, "--dtype", "float64", "--out", str(out)], env=env, capture_output=True)
    assert result.returncode == 0, result.stderr[-2000:]
    checkpoint = out / "mnist_n3.ckpt"
    header = json.loads(checkpoint.read_bytes().split(b"\n", 1)[0])
    assert header["config"]["dtype"] == "float64"
    evaluate = [*cli, "--evaluate", str(checkpoint)]
    refused = subprocess.run(evaluate, env=env, capture_output=True, text=True)
    assert refused.returncode == 1 and "was trained in float64" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    loaded = subprocess.run([*evaluate, "--dtype", "float64"], env=env, capture_output=True, text=True)
    assert loaded.returncode == 0 and "n = 3, K = 20, 1 of 1 epochs" in loaded.stdout, loaded.stderr[-2000:]
