"""Exact-arithmetic references for the binary rules (Krotov & Hopfield 2016, arXiv:1606.01164).

For +-1 memories and states every overlap is an integer, so the energy E(sigma) = - sum_mu
F(xi^mu . sigma) and the update gap of eq. 3 can be computed in Python integers, with no rounding
and no overflow at any degree. These functions are slow (pure Python) and meant for checking
`jamem.retrieve` and `jamem.capacity`: the test suite and experiments/reliability.py use them.
"""

from __future__ import annotations

import numpy as np


def _separation(kind: str, degree: int):
    if kind not in ("power", "rectified"):
        raise ValueError(f"`kind` must be 'power' or 'rectified', got {kind!r}.")
    if kind == "rectified":
        return lambda x: max(x, 0) ** degree
    return lambda x: x**degree


def _integers(array, name: str) -> np.ndarray:
    values = np.asarray(array)
    if not np.all(np.abs(values) == 1):
        raise ValueError(f"`{name}` must hold only -1 and +1 entries.")
    return values.astype(np.int64)


def exact_energy(memories, state, *, kind: str, degree: int) -> int:
    """E(sigma) = - sum_mu F(xi^mu . sigma) as a Python integer."""
    f = _separation(kind, degree)
    overlaps = _integers(memories, "memories") @ _integers(state, "state")
    return -sum(f(int(v)) for v in overlaps)


def exact_gaps(memories, state, *, kind: str, degree: int) -> list[int]:
    """For every neuron i: sum_mu F(r_mu + xi^mu_i) - F(r_mu - xi^mu_i), r_mu = sum_{j != i}
    xi^mu_j sigma_j (eq. 3), as Python integers. Its sign is the rule's decision; 0 keeps sigma_i."""
    f = _separation(kind, degree)
    xi, sigma = _integers(memories, "memories"), _integers(state, "state")
    overlaps = xi @ sigma
    values: dict[int, int] = {}

    def cached(x: int) -> int:
        if x not in values:
            values[x] = f(x)
        return values[x]

    gaps = []
    for i in range(sigma.size):
        rest = overlaps - xi[:, i] * sigma[i]
        gaps.append(sum(cached(int(r + c)) - cached(int(r - c)) for r, c in zip(rest, xi[:, i])))
    return gaps


def exact_sync_step(memories, state, *, kind: str, degree: int) -> np.ndarray:
    """One synchronous update from `state`: sign of each neuron's exact gap, ties keep."""
    gaps = np.sign(exact_gaps(memories, state, kind=kind, degree=degree))
    sigma = _integers(state, "state")
    return np.where(gaps == 0, sigma, gaps)


def exact_async_sweeps(memories, state, *, kind: str, degree: int, sweeps: int, order=None) -> np.ndarray:
    """The asynchronous rule replayed literally, neuron by neuron in `order` (default 0..N-1),
    exact gaps, ties keep; returns the states after 0, 1, ..., `sweeps` sweeps."""
    f = _separation(kind, degree)
    xi, sigma = _integers(memories, "memories"), _integers(state, "state").copy()
    order = range(sigma.size) if order is None else order
    states = [sigma.copy()]
    for _ in range(sweeps):
        for i in order:
            rest = xi @ sigma - xi[:, i] * sigma[i]
            gap = sum(f(int(r + c)) - f(int(r - c)) for r, c in zip(rest, xi[:, i]))
            if gap != 0:
                sigma[i] = 1 if gap > 0 else -1
        states.append(sigma.copy())
    return np.stack(states)
