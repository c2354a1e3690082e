"""Input validation at the public boundary.

Every public function checks shapes, dtypes and hyperparameters before anything is traced, so a
mistake surfaces as a `ValueError`/`TypeError` naming the argument instead of an XLA error or a
silent NaN. Value checks (NaN, binary entries) run only on concrete arrays: under an outer
`jax.jit` they are skipped, shape checks still apply.
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np

IntLike = int | np.integer  # numpy integer scalars are accepted wherever Python ints are


def is_concrete(x) -> bool:
    """True when `x` holds actual values (not a tracer under jit/vmap/grad)."""
    return not isinstance(x, jax.core.Tracer)


def check_positive_int(value, *, name: str, minimum: int = 1) -> int:
    """An integer >= minimum (Python or numpy; bools and non-integral floats are refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, numbers.Real) and not isinstance(value, bool) and float(value).is_integer():
            value = int(value)
        else:
            raise TypeError(f"`{name}` must be an integer, got {value!r} ({type(value).__name__}).")
    if value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value}.")
    return int(value)


def check_key(key, *, name: str = "key"):
    """A JAX PRNG key: a typed key (`jax.random.key`) or a raw uint32 one (`jax.random.PRNGKey`);
    an int or None would fail deep inside jax.random without naming the argument."""
    if key is None:
        raise ValueError(f"`{name}` is required: pass jax.random.key(seed).")
    dtype = getattr(key, "dtype", None)
    if dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key):
        return key
    if dtype == jnp.uint32 and np.ndim(key) >= 1 and np.shape(key)[-1] in (2, 4):
        return key
    raise TypeError(f"`{name}` must be a jax.random key (jax.random.key(seed)), got {key!r:.60}.")


def check_bool(value, *, name: str) -> bool:
    """A Python or numpy boolean ("no" or 0 would be read as a truth value, silently)."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"`{name}` must be True or False, got {value!r}.")
    return bool(value)


def check_degree(degree, *, name: str = "degree", minimum: int = 1) -> int:
    """A polynomial degree n >= minimum (an integer)."""
    return check_positive_int(degree, name=name, minimum=minimum)


def check_positive(value, *, name: str, allow_zero: bool = False) -> float | jax.Array:
    """A finite real scalar > 0 (or >= 0); a traced scalar is returned with its value unchecked.
    Booleans, strings and arrays of any other shape are refused: an array would broadcast into a
    hyperparameter per entry, and a vector of them passes no range check."""
    if isinstance(value, bool | np.bool_):
        raise TypeError(f"`{name}` must be a real number, got the boolean {value!r}.")
    if not isinstance(value, numbers.Real):
        if getattr(value, "dtype", None) is None:
            raise TypeError(f"`{name}` must be a real number, got {value!r} ({type(value).__name__}).")
        _check_real_dtype(value.dtype, name=name)
        if np.ndim(value) != 0:
            raise ValueError(f"`{name}` must be a scalar, got an array of shape {tuple(np.shape(value))}.")
        if not is_concrete(value):
            return value  # traced hyperparameter: trust the caller
        value = float(value)
    if not np.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"`{name}` must be a finite number {bound}, got {value!r}.")
    return float(value)


def _check_real_dtype(dtype, *, name: str) -> None:
    """A real numeric dtype: not bool, not complex, not object or string."""
    # jnp's issubdtype: numpy does not count bfloat16 (an ml_dtypes float) as a number
    if dtype == np.bool_ or not jnp.issubdtype(dtype, jnp.number):
        raise TypeError(f"`{name}` must have a numeric dtype, got {dtype}.")
    if jnp.issubdtype(dtype, jnp.complexfloating):
        raise TypeError(f"`{name}` must be real, got {dtype}.")


def as_float_array(x, *, name: str, ndim: int | tuple[int, ...] | None = None):
    """Convert to a floating JAX array, checking rank and refusing empty or non-numeric input."""
    if x is None:
        raise ValueError(f"`{name}` is required, got None.")
    if not hasattr(x, "dtype"):
        try:
            x = np.asarray(x)
        except Exception as err:  # noqa: BLE001 - any conversion failure is the caller's input
            raise TypeError(f"`{name}` must be an array, got {type(x).__name__}.") from err
    dtype = np.dtype(x.dtype)
    _check_real_dtype(dtype, name=name)
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if x.ndim not in allowed:
            raise ValueError(
                f"`{name}` must have {' or '.join(map(str, allowed))} dimension(s), got shape {tuple(x.shape)}."
            )
    if any(s == 0 for s in x.shape):
        raise ValueError(f"`{name}` is empty (shape {tuple(x.shape)}).")
    if not jnp.issubdtype(dtype, jnp.floating):
        x = jnp.asarray(x, dtype=jnp.float32)
    else:
        x = jnp.asarray(x)
    # numpy, not jnp: inside an outer trace a jnp reduction of a concrete array is a tracer.
    if is_concrete(x) and not np.all(np.isfinite(np.asarray(x))):
        raise ValueError(f"`{name}` contains NaN or infinite values.")
    return x


# Entries up to 1e16 keep every squared difference |x - xi|^2 finite in float32 (4e32 per entry,
# 784 of them); beyond, the squared distances overflow to inf and a softmax over them is NaN.
MAX_ENTRY = 1e16


def check_magnitude(array, *, name: str) -> None:
    """Refuse a concrete array with entries beyond MAX_ENTRY in magnitude (squared distances to it overflow)."""
    if is_concrete(array) and array.size and float(np.max(np.abs(np.asarray(array, np.float64)))) > MAX_ENTRY:
        raise ValueError(f"`{name}` has entries beyond {MAX_ENTRY:g} in magnitude; rescale the data.")


def at_least_float32(dtype):
    """The dtype a computation runs in for inputs of `dtype`: float32, or wider if they are.
    Half precision rounds the overlaps of a few hundred bits and overflows squared distances."""
    return jnp.promote_types(dtype, jnp.float32)


def check_binary(x, *, name: str) -> None:
    """Entries must be exactly -1 or +1 (concrete arrays only)."""
    if is_concrete(x) and not np.all(np.abs(np.asarray(x)) == 1):
        raise ValueError(f"`{name}` must contain only -1 and +1 entries.")


def check_feature_dims(state, memories, *, state_name: str = "x0", memories_name: str = "memories") -> None:
    """The last axis of the state must match the memories' feature axis."""
    if state.shape[-1] != memories.shape[-1]:
        raise ValueError(
            f"`{state_name}` has {state.shape[-1]} features but `{memories_name}` has "
            f"{memories.shape[-1]} (shape {tuple(memories.shape)}): they must match."
        )


def check_writable(path, *, name: str) -> None:
    """Fail now, not after the work, if the file `path` cannot be written (its folder is made)."""
    import os
    from pathlib import Path

    target = Path(path)
    if target.is_dir():
        raise ValueError(f"`{name}` {path} is a folder; give a file path.")
    folder = target.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".jamem-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"`{name}` {path}: its folder cannot be written ({err.strerror or err}).") from err
