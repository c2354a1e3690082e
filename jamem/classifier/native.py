"""The class gaps of `model.rectified_power_gaps` as a fused CPU kernel (XLA FFI, `class_gaps.cc`).

On CPU, XLA's fusions of the (B, C, K) reductions of arXiv:1606.01164, eq. 9 and of their gradient
run at a fraction of the vector units' speed and were a third of a training epoch. `class_gaps.cc`
reduces every class from registers instead. It is compiled on first use, once per machine, with
the C++ compiler found as `$CXX` or `c++` and jaxlib's FFI headers, and cached in
`$JAMEM_CACHE_DIR` (default `~/.cache/jamem`). Where it cannot be built (no compiler, an
unsupported one, a compile past 10 minutes, or another process that holds the build's lock past
that), jamem warns once and keeps the XLA form, which computes the same gaps.
`JAMEM_NATIVE_KERNELS=0` or `set_native_kernels(False)` turns the kernel off.

Under `jax.vmap` over images the rows of every image go to one kernel call (the batching rules of
`model._native_kernels`). `jax.export` refuses the kernel's custom call, which has no compatibility
guarantee across machines: export with `set_native_kernels(False)`, for a portable program with
the same results.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import pathlib
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np
from jaxtyping import Array, Float

from ..tooling.data import _exclusive, default_cache_dir

_SOURCE = pathlib.Path(__file__).with_name("class_gaps.cc")
# -fassociative-math lets the compiler keep 16 partial sums per class; NaNs and infinities are
# still honoured (no -ffast-math), so a NaN input gives a NaN gap as in the XLA form.
_FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-fassociative-math", "-fno-signed-zeros", "-fno-trapping-math"]
_FORWARD, _BACKWARD = "jamem_class_gaps_forward", "jamem_class_gaps_backward"
_BUILD_TIMEOUT_S = 600.0  # a hung compiler must not hang the first training step for ever
_LOCK_GRACE_S = 60.0  # past its compile's timeout, a live lock holder has finished its build

_lock = threading.Lock()
_OFF = ("0", "false", "no", "off")
_state: dict = {"enabled": os.environ.get("JAMEM_NATIVE_KERNELS", "1").strip().lower() not in _OFF, "loaded": None}


def set_native_kernels(enabled: bool) -> None:
    """Use the compiled CPU kernel (True, the default) or XLA's fusion (False) from now on.

    The choice is made when a function is traced, so a change clears JAX's caches: every jitted
    function is traced again on its next call, with the new choice."""
    if bool(enabled) != _state["enabled"]:
        _state["enabled"] = bool(enabled)
        jax.clear_caches()


def native_kernels_enabled() -> bool:
    """Whether functions traced now use the compiled kernel: enabled, and built for this machine."""
    return _state["enabled"] and _load()


def class_gaps_forward(base: Float[Array, "B K"], shift: Float[Array, "C K"], degree: int) -> Float[Array, "B C"]:
    """sum_k [relu(base_bk + shift_ck)^n - relu(base_bk)^n] (float32, CPU; `native_kernels_enabled()` must hold)."""
    out = jax.ShapeDtypeStruct((base.shape[0], shift.shape[0]), jnp.float32)
    return jax.ffi.ffi_call(_FORWARD, out, vmap_method="sequential")(base, shift, degree=np.int64(degree))


def class_gaps_backward(
    base: Float[Array, "B K"], shift: Float[Array, "C K"], cotangent: Float[Array, "B C"], degree: int
) -> tuple[Float[Array, "B K"], Float[Array, "C K"]]:
    """The vector-Jacobian product of `class_gaps_forward` for `cotangent` g: (d_base, d_shift) with
    d_base_bk = sum_c g_bc [f(base_bk + shift_ck) - f(base_bk)], d_shift_ck = sum_b g_bc f(base_bk + shift_ck),
    f(x) = n relu(x)^(n-1)."""
    outs = (jax.ShapeDtypeStruct(base.shape, jnp.float32), jax.ShapeDtypeStruct(shift.shape, jnp.float32))
    call = jax.ffi.ffi_call(_BACKWARD, outs, vmap_method="sequential")
    return tuple(call(base, shift, cotangent, degree=np.int64(degree)))


def _machine_signature() -> str:
    """What the binary depends on besides its source: -march=native makes it this CPU's."""
    try:  # the instruction sets: "flags" on x86, "Features" on ARM
        lines = pathlib.Path("/proc/cpuinfo").read_text().splitlines()
        cpu_flags = "\n".join(sorted({line for line in lines if line.startswith(("flags", "Features", "CPU part"))}))
    except OSError:
        cpu_flags = platform.platform()
    return "\n".join([platform.machine(), cpu_flags, jaxlib.__version__])


def _build(compiler: list[str]) -> pathlib.Path:
    """The cached library for this source, compiler and machine, compiled first if there is none."""
    source = _SOURCE.read_bytes()
    version = _run_compiler([*compiler, "--version"], check=True).stdout
    key = hashlib.sha256(source + shlex.join([*compiler, *_FLAGS]).encode() + version.encode())
    key.update(_machine_signature().encode())
    library = default_cache_dir() / f"class_gaps-{key.hexdigest()[:16]}.so"
    if library.exists():
        return library
    library.parent.mkdir(parents=True, exist_ok=True)
    failure = library.with_suffix(".failed")  # what the last build that failed said
    waiting_since = time.time()
    # one build per machine: concurrent processes (test workers) wait for the first one's library,
    # but not on a holder that is paused or hung past its own compile's timeout (then: XLA, warned)
    with _exclusive(library.parent / ".class_gaps.lock", timeout=_BUILD_TIMEOUT_S + _LOCK_GRACE_S):
        if library.exists():
            return library
        if failure.exists() and failure.stat().st_mtime >= waiting_since:
            # it failed while this process waited (a hung compiler, say): not once more per waiter
            raise RuntimeError(f"another process's build just failed: {failure.read_text()[-2000:]}")
        print(f"jamem: building the CPU class-gap kernel for this machine ({library})", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory(dir=library.parent) as scratch:
            target = pathlib.Path(scratch) / library.name
            command = [*compiler, *_FLAGS, "-std=c++17", "-shared", "-fPIC", f"-I{jax.ffi.include_dir()}"]
            try:
                result = _run_compiler([*command, str(_SOURCE), "-o", str(target)], check=False)
                if result.returncode:
                    raise RuntimeError(result.stderr[-2000:])
            except (RuntimeError, OSError, subprocess.SubprocessError) as error:
                failure.write_text(str(error))
                raise
            os.replace(target, library)  # atomic: where there is no lock, a reader never sees half a file
        failure.unlink(missing_ok=True)
    return library


def _run_compiler(command: list[str], *, check: bool) -> subprocess.CompletedProcess:
    """Run `command` with `_BUILD_TIMEOUT_S`; past it, kill its whole process group: a driver such as
    `ccache g++` or `g++` leaves the compiler proper running if only the driver is killed."""
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=_BUILD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            if hasattr(os, "killpg"):  # POSIX; elsewhere there is no process group to kill
                os.killpg(process.pid, signal.SIGKILL)
            else:
                process.kill()
            process.communicate()
            raise
    if check and process.returncode:
        raise subprocess.CalledProcessError(process.returncode, command, stdout, stderr)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def _compiler_command() -> list[str]:
    """$CXX (default c++) as a command: a path to an executable as it stands, even with spaces;
    otherwise split as a shell would, so that "ccache g++" is a compiler too."""
    raw = os.environ.get("CXX", "c++")
    command = [raw] if raw.strip() and shutil.which(raw) else shlex.split(raw)
    if not command or shutil.which(command[0]) is None:
        raise RuntimeError(f"no C++ compiler (set $CXX; it is {raw!r})")
    return command


def _load() -> bool:
    """Build (once per machine) and register the kernel (once per process); False where it cannot."""
    if _state["loaded"] is not None:
        return _state["loaded"]
    with _lock:
        if _state["loaded"] is None:
            try:
                library = ctypes.cdll.LoadLibrary(str(_build(_compiler_command())))
                symbols = {_FORWARD: library.JamemClassGapsForward, _BACKWARD: library.JamemClassGapsBackward}
                for name, symbol in symbols.items():
                    jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(symbol), platform="cpu")
                _state["loaded"] = True
            except (OSError, RuntimeError, ValueError, subprocess.SubprocessError, AttributeError) as error:
                warnings.warn(
                    f"jamem could not build its CPU class-gap kernel ({error}); the classifier uses XLA's "
                    "fusion instead, with the same results and a slower epoch.",
                    RuntimeWarning,
                    stacklevel=3,
                )
                _state["loaded"] = False
    return _state["loaded"]
