"""Storage capacity of Dense Associative Memory: patterns, recall, batched sweeps and theory.

Theory is Krotov & Hopfield 2016 (arXiv:1606.01164, section 2). Experiments run
the asynchronous rule (arXiv:1606.01164, eq. 3) on many starts at once: `run_to_convergence` keeps a fixed pool of
vmapped slots busy, refilling a slot as soon as its start has converged, so a batch costs the
sum of the sweeps its starts need rather than (batch size) x (slowest start).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from .._checks import (
    IntLike,
    as_float_array,
    check_binary,
    check_degree,
    check_feature_dims,
    check_key,
    check_positive_int,
)
from .._sharding import data_mesh, data_sharding, to_global, to_host
from .dynamics import AbstractSolver, AsyncBinary
from .energies import DenseEnergy, overlaps
from .separation import AbstractSeparation, Power, RectifiedPower, as_separation, gap_sign

# ---------------------------------------------------------------------------------------------
# Patterns and recall criteria


def random_patterns(key: PRNGKeyArray, *, num_patterns: int, dim: int) -> Float[Array, "K N"]:
    """Independent uniform +-1 patterns, shape (num_patterns, dim), float32."""
    num_patterns = check_positive_int(num_patterns, name="num_patterns")
    dim = check_positive_int(dim, name="dim")
    return jax.random.rademacher(check_key(key), (num_patterns, dim), dtype=jnp.float32)


def flip_bits(key: PRNGKeyArray, patterns: Float[Array, "*batch N"], *, fraction: float) -> Float[Array, "*batch N"]:
    """Flip exactly round(fraction * N) randomly chosen bits of each +-1 pattern."""
    # a Python number: it fixes how many bits flip, a static count (a traced value cannot)
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not 0.0 <= fraction <= 1.0:
        raise ValueError(f"`fraction` must be a number in [0, 1], got {fraction!r}.")
    patterns = as_float_array(patterns, name="patterns")
    n = patterns.shape[-1]
    count = int(round(fraction * n))
    batch = patterns.shape[:-1]
    ranks = jnp.argsort(jax.random.uniform(check_key(key), batch + (n,)), axis=-1).argsort(axis=-1)
    return jnp.where(ranks < count, -patterns, patterns)


def is_stored_memory(state: Float[Array, " N"], memories: Float[Array, "K N"]) -> Bool[Array, ""]:
    """True when the +-1 `state` equals one of the +-1 memories exactly (overlap N)."""
    state = as_float_array(state, name="state", ndim=1)
    memories = as_float_array(memories, name="memories", ndim=2)
    check_feature_dims(state, memories, state_name="state")
    check_binary(state, name="state")
    check_binary(memories, name="memories")
    return jnp.max(overlaps(state, memories)) == state.shape[-1]


# ---------------------------------------------------------------------------------------------
# Batched convergence


def run_to_convergence(
    energy,
    starts: Float[Array, "S N"],
    memories: Float[Array, "K N"],
    *,
    solver: AbstractSolver | None = None,
    steps: int = 100,
    pool_size: int = 1024,
    key: PRNGKeyArray | None = None,
) -> tuple[Float[Array, "S N"], Int[Array, " S"], Bool[Array, " S"]]:
    """Run a binary rule from every start until a sweep flips nothing (or `steps`).

    `pool_size` starts are swept at once (vmap); a finished slot immediately takes the next
    start. Everything runs in one `lax.while_loop`, so the call jit-compiles and vmaps (over
    memory sets, say).

    Returns:
        (final states (S, N), sweeps taken (S,), converged (S,)).
    """
    solver = AsyncBinary() if solver is None else solver
    if not isinstance(solver, AbstractSolver) or not solver.binary:
        raise ValueError(f"`solver` must be a binary rule (AsyncBinary or SyncBinary), got {type(solver).__name__}.")
    if not callable(energy):
        raise TypeError(f"`energy` must be a callable E(state, memories), got {type(energy).__name__}.")
    starts = as_float_array(starts, name="starts", ndim=2)
    memories = as_float_array(memories, name="memories", ndim=2)
    check_binary(starts, name="starts")
    check_feature_dims(starts, memories, state_name="starts")
    check_positive_int(steps, name="steps")
    check_positive_int(pool_size, name="pool_size")
    key = jax.random.key(0) if key is None else check_key(key)
    num_starts, dim = starts.shape
    pool = min(pool_size, num_starts)
    clamped = jnp.zeros((dim,), bool)
    sweep = jax.vmap(lambda state, k: solver.step(energy, state, memories, clamped, k)[:2])

    def cond(carry):
        return jnp.any(carry[1] < num_starts)

    def body(carry):
        slots, slot_start, slot_sweeps, next_start, finals, sweeps, converged, t = carry
        new, flips = sweep(slots, jax.random.split(jax.random.fold_in(key, t), pool))
        slot_sweeps = slot_sweeps + 1
        active = slot_start < num_starts
        done = active & ((flips == 0) | (slot_sweeps >= steps))
        # Index num_starts is out of range: mode="drop" discards writes from unfinished slots.
        target = jnp.where(done, slot_start, num_starts)
        finals = finals.at[target].set(new, mode="drop")
        sweeps = sweeps.at[target].set(slot_sweeps, mode="drop")
        converged = converged.at[target].set(flips == 0, mode="drop")
        refill = jnp.where(done, next_start + jnp.cumsum(done) - 1, slot_start)
        refill = jnp.where(done & (refill >= num_starts), num_starts, refill)
        loads = done & (refill < num_starts)
        slots = jnp.where(loads[:, None], starts[jnp.clip(refill, 0, num_starts - 1)], new)
        slot_sweeps = jnp.where(done, 0, slot_sweeps)
        return slots, refill, slot_sweeps, next_start + jnp.sum(done), finals, sweeps, converged, t + 1

    init = (
        starts[:pool],
        jnp.arange(pool),
        jnp.zeros((pool,), jnp.int32),
        jnp.asarray(pool),
        jnp.zeros_like(starts),
        jnp.zeros((num_starts,), jnp.int32),
        jnp.zeros((num_starts,), bool),
        jnp.asarray(0),
    )
    _, _, _, _, finals, sweeps, converged, _ = jax.lax.while_loop(cond, body, init)
    return finals, sweeps, converged


def capacity_trials(
    key: PRNGKeyArray,
    *,
    dim: int,
    num_memories: int,
    separation,
    num_sets: int = 10,
    starts_per_set: int = 100,
    flip_fraction: float | None = None,
    steps: int = 100,
    pool_size: int = 256,
    solver: AbstractSolver | None = None,
) -> dict[str, np.ndarray]:
    """Retrieval trials at one (N, K): `num_sets` random memory sets (vmapped), each with
    `starts_per_set` starts, run to convergence under the asynchronous rule.

    Starts are uniformly random states (`flip_fraction=None`, the Appendix B protocol, arXiv:1606.01164, App. B) or
    memories with that fraction of bits flipped (recall of the cued memory).

    Returns numpy arrays over all trials: `max_overlap` (largest xi . sigma at the end),
    `on_memory` (ended exactly on a stored memory), `on_mirror` (ended on a negated memory, -xi,
    which is a minimum too for power F of even degree), `recalled` (ended on the cued memory;
    equal to `on_memory` for random starts), `sweeps`, `converged`.
    """
    dim = check_positive_int(dim, name="dim")
    num_memories = check_positive_int(num_memories, name="num_memories")
    num_sets = check_positive_int(num_sets, name="num_sets")
    starts_per_set = check_positive_int(starts_per_set, name="starts_per_set")
    energy = DenseEnergy(as_separation(separation))
    run = _trial_runner(energy, solver or AsyncBinary(), steps, pool_size, flip_fraction)
    # the memory sets are split over every device of every process (padded to a multiple of their
    # number with copies of the last set, dropped again), so the table is the same for any count
    keys = jax.random.key_data(jax.random.split(check_key(key), num_sets))
    devices = jax.device_count()
    padded = -(-num_sets // devices) * devices
    keys = np.concatenate([np.asarray(keys), np.repeat(np.asarray(keys)[-1:], padded - num_sets, axis=0)])
    out = to_host(run(to_global(keys, data_sharding(axis=0, ndim=keys.ndim)), dim, num_memories, starts_per_set))
    return {name: value[:num_sets].reshape(-1) for name, value in out.items()}


_RUNNERS: dict = {}


def _trial_runner(energy, solver, steps, pool_size, flip_fraction):
    """One jitted function per configuration (jit then caches one compilation per shape)."""
    config = (energy, solver, steps, pool_size, flip_fraction)
    if config in _RUNNERS:
        return _RUNNERS[config]

    def one_set(key, dim, num_memories, num_starts):
        k_mem, k_start, k_cue, k_run = jax.random.split(key, 4)
        memories = jax.random.rademacher(k_mem, (num_memories, dim), dtype=jnp.float32)
        if flip_fraction is None:
            starts = jax.random.rademacher(k_start, (num_starts, dim), dtype=jnp.float32)
            cues = jnp.full((num_starts,), -1)
        else:
            cues = jax.random.randint(k_cue, (num_starts,), 0, num_memories)
            starts = flip_bits(k_start, memories[cues], fraction=flip_fraction)
        finals, sweeps, converged = run_to_convergence(
            energy, starts, memories, solver=solver, steps=steps, pool_size=pool_size, key=k_run
        )
        ov = finals @ memories.T
        on_memory = jnp.max(ov, axis=-1) == dim
        if flip_fraction is None:
            recalled = on_memory
        else:
            recalled = jnp.take_along_axis(ov, cues[:, None], axis=-1)[:, 0] == dim
        return dict(
            max_overlap=jnp.max(ov, axis=-1),
            on_memory=on_memory,
            on_mirror=jnp.min(ov, axis=-1) == -dim,
            recalled=recalled,
            sweeps=sweeps,
            converged=converged,
        )

    def run(key_data, dim, num_memories, num_starts):
        # each device runs its own sets to convergence: no collective inside the loops
        local = jax.vmap(lambda k: one_set(jax.random.wrap_key_data(k), dim, num_memories, num_starts))
        spec = PartitionSpec("data")
        return jax.shard_map(local, mesh=data_mesh(), in_specs=spec, out_specs=spec, check_vma=False)(key_data)

    run = jax.jit(run, static_argnums=(1, 2, 3))
    _RUNNERS[config] = run
    return run


def capacity_sweep(
    key: PRNGKeyArray,
    grid: Iterable[dict],
    *,
    num_sets: int = 10,
    starts_per_set: int = 100,
    flip_fraction: float | None = None,
    steps: int = 100,
    pool_size: int = 256,
    progress: bool = True,
) -> list[dict]:
    """Run `capacity_trials` over a grid of configurations, one row each.

    Each grid entry is a dict with `dim` (N), `num_memories` (K), `degree` (n), `kind`
    ("power" or "rectified") and optional `seed`. Configurations of one shape share one
    compilation; a progress bar shows the grid.
    """
    from tqdm.auto import tqdm

    if isinstance(grid, dict):
        raise TypeError("`grid` must be a sequence of configuration dicts, got one dict: wrap it in a list.")
    grid = list(grid)
    if not grid:
        raise ValueError("`grid` is empty: give at least one configuration.")
    check_key(key)
    # every entry checked before the first one runs
    checked = [_check_sweep_entry(config, i) for i, config in enumerate(grid)]
    rows = []
    for config, (dim, num_memories, separation, seed) in zip(
        tqdm(grid, desc="capacity sweep", disable=not progress), checked
    ):
        out = capacity_trials(
            jax.random.fold_in(key, seed),
            dim=dim,
            num_memories=num_memories,
            separation=separation,
            num_sets=num_sets,
            starts_per_set=starts_per_set,
            flip_fraction=flip_fraction,
            steps=steps,
            pool_size=pool_size,
        )
        rows.append(
            dict(
                config,
                trials=int(out["recalled"].size),
                recall_fraction=float(out["recalled"].mean()),
                on_memory_fraction=float(out["on_memory"].mean()),
                mirror_fraction=float(out["on_mirror"].mean()),
                mean_sweeps=float(out["sweeps"].mean()),
                converged_fraction=float(out["converged"].mean()),
            )
        )
    return rows


def _check_sweep_entry(config, index: int):
    """(dim, num_memories, separation, seed) of grid entry `index`, or an error naming it."""
    if not isinstance(config, dict):
        raise TypeError(f"`grid[{index}]` must be a dict, got {type(config).__name__}.")
    missing = [name for name in ("dim", "num_memories", "degree", "kind") if name not in config]
    if missing:
        raise ValueError(f"`grid[{index}]` lacks {', '.join(map(repr, missing))}.")
    name = f"grid[{index}]"
    return (
        check_positive_int(config["dim"], name=f"{name}['dim']"),
        check_positive_int(config["num_memories"], name=f"{name}['num_memories']"),
        make_separation(config["kind"], config["degree"]),
        check_positive_int(config.get("seed", 0), name=f"{name}['seed']", minimum=0),
    )


def make_separation(kind: str, degree: int) -> AbstractSeparation:
    """`Power(degree)` for kind "power", `RectifiedPower(degree)` for "rectified"."""
    kinds = {"power": Power, "rectified": RectifiedPower}
    if kind not in kinds:
        raise ValueError(f"`kind` must be one of {sorted(kinds)}, got {kind!r}.")
    return kinds[kind](degree)


def k_half(num_memories: Sequence[int | float], fractions: Sequence[int | float], *, level: float = 0.5) -> float:
    """K_1/2: the K at which the success fraction first falls through `level`, by linear
    interpolation between the grid points on either side (A6b). NaN if it never does; the
    first K if it starts below."""
    ks = np.asarray(num_memories, float)
    fs = np.asarray(fractions, float)
    if ks.ndim != 1 or ks.shape != fs.shape or ks.size == 0:
        raise ValueError("`num_memories` and `fractions` must be non-empty 1-D sequences of equal length.")
    if not (np.all(np.isfinite(ks)) and np.all(np.isfinite(fs))):
        raise ValueError("`num_memories` and `fractions` must be finite (a NaN fraction would be skipped silently).")
    if isinstance(level, bool) or not isinstance(level, numbers.Real) or not 0 < level < 1:
        raise ValueError(f"`level` must be a number in (0, 1), got {level!r}.")
    order = np.argsort(ks)
    ks, fs = ks[order], fs[order]
    if fs[0] < level:
        return float(ks[0])
    for i in range(1, ks.size):
        if fs[i] < level:
            k0, k1, f0, f1 = ks[i - 1], ks[i], fs[i - 1], fs[i]
            return float(k0 + (f0 - level) * (k1 - k0) / (f0 - f1))
    return float("nan")


# ---------------------------------------------------------------------------------------------
# Theory (Krotov & Hopfield 2016, section 2)


def double_factorial(m: int) -> int:
    """m!! = m (m-2) (m-4) ...; (-1)!! = 0!! = 1."""
    if m < -1:
        raise ValueError(f"`m` must be >= -1, got {m}.")
    return math.prod(range(m, 0, -2)) if m > 0 else 1


def log_double_factorial_odd(m: int) -> float:
    """log m!! for odd m >= -1: m!! = 2^((m+1)/2) Gamma(m/2 + 1) / sqrt(pi)."""
    if m <= 1:
        return 0.0
    return 0.5 * (m + 1) * math.log(2) + math.lgamma(m / 2 + 1) - 0.5 * math.log(math.pi)


def _exp_or_inf(log_value: float) -> float:
    """exp(log_value), or inf where it exceeds the float range (a capacity beyond 1e308)."""
    return math.exp(log_value) if log_value < 709.0 else math.inf


def bit_error_probability(dim: IntLike, num_memories: IntLike, degree: IntLike) -> float:
    """Probability that one bit of a stored memory is unstable (arXiv:1606.01164, sec. 2), large-N approximation:

    P ~= sqrt((2n-3)!! / (2 pi) * K / N^(n-1)) * exp(- N^(n-1) / (2 K (2n-3)!!)).

    Evaluated in logs, so any degree gives a number (0.0 where it is below 1e-308). Refused where
    the approximation gives more than 1/2 (K (2n-3)!! / N^(n-1) above about 2.6): far outside the
    large-N regime, where it is no probability (it grows without bound).
    """
    n = check_degree(degree, minimum=2)
    dim = check_positive_int(dim, name="dim")
    num_memories = check_positive_int(num_memories, name="num_memories")
    log_c = log_double_factorial_odd(2 * n - 3)
    log_ratio = math.log(num_memories) - (n - 1) * math.log(dim)  # log K / N^(n-1)
    exponent = -0.5 * _exp_or_inf(-(log_ratio + log_c))  # - 1 / (2 K (2n-3)!! / N^(n-1))
    log_p = 0.5 * (log_c - math.log(2 * math.pi) + log_ratio) + exponent
    if log_p > math.log(0.5):
        raise ValueError(
            f"the large-N approximation gives a bit-error probability above 1/2 at dim = {dim}, num_memories = "
            f"{num_memories}, degree = {n} (K (2n-3)!! / N^(n-1) = {math.exp(log_ratio + log_c):.3g}): outside its "
            "regime; use more dimensions or fewer memories."
        )
    return math.exp(log_p) if log_p > -745 else 0.0


def perfect_recall_capacity(dim: IntLike, degree: IntLike) -> float:
    """K_max ~= N^(n-1) / (2 (2n-3)!! ln N): all memories stable with high probability (arXiv:1606.01164, sec. 2).
    inf where it exceeds the float range."""
    n = check_degree(degree, minimum=2)
    dim = check_positive_int(dim, name="dim", minimum=2)
    log_k = (n - 1) * math.log(dim) - math.log(2) - log_double_factorial_odd(2 * n - 3) - math.log(math.log(dim))
    return _exp_or_inf(log_k)


def small_error_alpha(degree: IntLike) -> float:
    """alpha_n ~= 0.146 / (2n-3)!!, with K_max = alpha_n N^(n-1) at a small error rate (arXiv:1606.01164, sec. 2)."""
    n = check_degree(degree, minimum=2)
    return math.exp(math.log(0.146) - log_double_factorial_odd(2 * n - 3))


def small_error_capacity(dim: IntLike, degree: IntLike) -> float:
    """K_max = alpha_n N^(n-1) (arXiv:1606.01164, sec. 2); inf where it exceeds the float range."""
    n = check_degree(degree, minimum=2)
    dim = check_positive_int(dim, name="dim")
    return _exp_or_inf(math.log(0.146) - log_double_factorial_odd(2 * n - 3) + (n - 1) * math.log(dim))


# ---------------------------------------------------------------------------------------------
# XOR (Krotov & Hopfield 2016, section 3; arXiv:1606.01164, sec. 3)

XOR_MEMORIES = np.array([[1, 1, -1], [1, -1, 1], [-1, 1, 1], [-1, -1, -1]], dtype=np.float32)


def xor_readout(separation, x: float, y: float) -> tuple[float, float]:
    """z = Sign[E(x, y, -1) - E(x, y, +1)] for the 4 XOR memories; returns (z, energy gap).
    A zero gap gives z = 0 (undecided). z is the exact sign (`gap_sign`) at any degree; the gap
    itself is float32 and overflows to inf past it (F = x^n of overlaps up to 3: n > 80)."""
    separation = as_separation(separation)
    energy = DenseEnergy(separation)
    memories = jnp.asarray(XOR_MEMORIES)
    up, down = jnp.array([x, y, 1.0]), jnp.array([x, y, -1.0])
    gap = energy(down, memories) - energy(up, memories)
    # E(down) - E(up) = sum_mu F(xi . up) - F(xi . down)
    sign = gap_sign(separation, memories @ up, memories @ down)
    return float(sign), float(gap)


def solves_xor(separation) -> bool:
    """True when the readout gives z = XOR(x, y) for all four +-1 inputs, by enumeration."""
    return all(xor_readout(separation, x, y)[0] == -x * y for x in (-1.0, 1.0) for y in (-1.0, 1.0))
