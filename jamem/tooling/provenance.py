"""Where a result came from: command, machine, date and library versions, saved beside it."""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import sys
from pathlib import Path


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_metadata(argv: list[str] | None = None) -> dict:
    """Command line, date (UTC), machine (CPU, core count, JAX devices) and versions."""
    import jax

    argv = sys.argv if argv is None else argv
    return {
        "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *argv]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "hardware": {
            "cpu": _cpu_name(),
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "jax_devices": [str(d) for d in jax.devices()],
            "jax_backend": jax.default_backend(),
        },
        "versions": {"python": platform.python_version(), "jax": jax.__version__},
    }


def save_json(path: str | os.PathLike, payload: dict, *, argv: list[str] | None = None) -> Path:
    """Write `payload` plus `run_metadata()` under "meta" to `path` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps({"meta": run_metadata(argv), **payload}, indent=2, default=_jsonable))
    os.replace(tmp, path)
    return path


def _jsonable(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
