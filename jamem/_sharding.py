"""Data parallelism over every device of every process, with JAX's own multi-controller runtime.

One process per host (or per GPU), started with `jamem.tooling.distributed.initialize`; within
one process, these are the single-process defaults. All helpers build on one 1-D mesh named
"data" over `jax.devices()`: a batch axis is split over it, parameters are replicated. Arrays
that every process holds in full (the dataset, the initial parameters, made from the same seed)
become global arrays with `to_global`; results come back to each host with `to_host`.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec


def data_mesh() -> jax.sharding.Mesh:
    """The 1-D mesh "data" over all devices of all processes."""
    return jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


def data_sharding(*, axis: int = 0, ndim: int = 2) -> NamedSharding:
    """Split axis `axis` of an ndim-array over every device of every process."""
    spec = [None] * ndim
    spec[axis] = "data"
    return NamedSharding(data_mesh(), PartitionSpec(*spec))


def replicated() -> NamedSharding:
    """A full copy on every device of every process."""
    return NamedSharding(data_mesh(), PartitionSpec())


def to_global(tree, sharding: NamedSharding | None = None):
    """Global arrays from host data that every process holds in full (the same values in each):
    each device takes its part of it. `sharding` defaults to `replicated()`."""
    sharding = replicated() if sharding is None else sharding

    def put(leaf):
        if not isinstance(leaf, (jax.Array, np.ndarray)):
            return leaf
        if jax.process_count() == 1:
            return jax.device_put(leaf, sharding)
        host = np.asarray(leaf)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(put, tree)


def to_host(tree):
    """NumPy copies of (global) arrays on this host: a replicated array from its local copy, a
    sharded one gathered from every process."""

    def get(leaf):
        if not isinstance(leaf, jax.Array):
            return leaf
        if leaf.is_fully_addressable:
            return np.asarray(leaf)
        if leaf.sharding.is_fully_replicated:
            return np.asarray(leaf.addressable_data(0))
        return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))

    return jax.tree.map(get, tree)


def is_writer() -> bool:
    """Whether this process writes files (process 0; every process when there is one)."""
    return jax.process_index() == 0
