"""Every experiment and benchmark runs at its --quick size, from another folder, and writes its
record (JSON with provenance), so none of them can rot. The longer ones are marked slow."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SHARED_DATA

REPO = Path(__file__).resolve().parents[1]

# script, extra arguments, the JSON it writes under --out (a folder, or the file itself)
FAST = [
    ("experiments/epanechnikov.py", [], "epanechnikov_quick.json"),
    ("experiments/modern_hopfield.py", [], "modern_hopfield_quick.json"),
    ("experiments/implicit_training.py", [], "implicit_training_quick.json"),
    ("experiments/hierarchical.py", [], "hierarchical_completion_quick.json"),
    ("experiments/competing_units.py", ["--no-progress"], "competing_units_quick.json"),
    ("experiments/clustering.py", [], "clustering_quick.json"),
    ("experiments/sequence_capacity.py", [], "sequence_capacity_quick.json"),
    ("experiments/diffusion_memory.py", [], "diffusion_memory_quick.json"),
    ("experiments/mnist_dam.py", ["--degrees", "3"], "summary.json"),
    ("benchmarks/capacity_sweep.py", [], None),
    ("benchmarks/retrieval_throughput.py", [], None),
    ("benchmarks/retrieval_peers.py", [], None),  # peers not installed (the bench extra) are reported skipped
]
SLOW = [
    ("experiments/capacity.py", [], "capacity_appendix_b_quick.json"),
    ("experiments/random_features.py", [], "random_features_quick.json"),
    ("experiments/energy_transformer.py", [], None),
    ("benchmarks/mnist_epoch.py", ["--degrees", "3", "--repeats", "1"], None),
    ("benchmarks/distributed_epoch.py", ["--processes", "1,2", "--repeats", "1"], None),
]


def _run(script, args, out, cache, cwd):
    env = {**os.environ, "JAMEM_DATA_DIR": str(SHARED_DATA), "JAMEM_CACHE_DIR": str(cache), "PYTHONPATH": str(REPO)}
    command = [sys.executable, str(REPO / script), "--quick", "--out", str(out), *args]
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]


def _check(out: Path, expected):
    path = out / expected if expected else out
    record = json.loads(path.read_text())
    assert {"command", "date", "hardware"} <= set(record["meta"])


@pytest.mark.parametrize("script,args,expected", FAST, ids=[s for s, *_ in FAST])
def test_quick_run(script, args, expected, tmp_path, cache, mnist):
    out = tmp_path / "out" if expected else tmp_path / "record.json"
    _run(script, args, out, cache, cwd=tmp_path)  # another working directory than the repository
    _check(out, expected)


@pytest.mark.slow
@pytest.mark.parametrize("script,args,expected", SLOW, ids=[s for s, *_ in SLOW])
def test_quick_run_slow(script, args, expected, tmp_path, cache, mnist):
    out = tmp_path / "out" if expected else tmp_path / "record.json"
    if script.endswith("energy_transformer.py"):  # its --out is the stem of the JSON and PNG
        out = tmp_path / "record"
    _run(script, args, out, cache, cwd=tmp_path)
    _check(out.with_suffix(".json") if script.endswith("energy_transformer.py") else out, expected)


@pytest.mark.slow
@pytest.mark.parametrize("script", ["experiments/adversarial.py", "experiments/gradient_masking.py"])
def test_quick_attacks_on_a_trained_model(script, small_mnist_run, tmp_path, cache):
    _, _, checkpoint = small_mnist_run
    args = ["--models", str(checkpoint.parent), "--degrees", "3"]
    _run(script, args, tmp_path / "out", cache, cwd=tmp_path)
    names = {
        "experiments/adversarial.py": "adversarial.json",
        "experiments/gradient_masking.py": "gradient_masking.json",
    }
    _check(tmp_path / "out", names[script])
