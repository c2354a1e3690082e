"""Starting jamem on several processes with JAX's own multi-controller runtime (`jax.distributed`).

JAX runs one process per host (one per GPU is common too); together they see every device, and
jamem's training (`jamem.train.fit`) and capacity sweeps (`jamem.capacity.capacity_trials`) split
their batch over all of them. Each process runs the same program; call `initialize` first:

- on a TPU VM slice or a cluster JAX knows (SLURM, Open MPI, Kubernetes), with no arguments;
- otherwise with the coordinator's address, the number of processes and this one's index, as
  arguments or in the environment variables JAMEM_COORDINATOR (host:port), JAMEM_NUM_PROCESSES
  and JAMEM_PROCESS_ID (what `jamem --distributed` reads).

On CPUs the collectives go through gloo. Only process 0 writes files; checkpoints must be on a
filesystem every process can read to resume.

For your own training loops: `to_global(batch, data_sharding())` splits a batch every process
holds over all devices, `to_global(params)` replicates parameters, `to_host` brings results
back, `is_writer()` says which process writes; a jit-compiled step on such arrays is then
data-parallel across processes (XLA inserts the gradient all-reduce).
"""

from __future__ import annotations

import os

import jax

from .._sharding import data_mesh, data_sharding, is_writer, replicated, to_global, to_host

__all__ = ["initialize", "data_mesh", "data_sharding", "replicated", "to_global", "to_host", "is_writer"]


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None) -> None:
    """`jax.distributed.initialize`, from the arguments, else the JAMEM_* variables, else JAX's
    own detection of the cluster. A no-op when it has already run."""
    if jax.distributed.is_initialized():
        return
    coordinator = coordinator or os.environ.get("JAMEM_COORDINATOR")
    if num_processes is None and "JAMEM_NUM_PROCESSES" in os.environ:
        num_processes = int(os.environ["JAMEM_NUM_PROCESSES"])
    if process_id is None and "JAMEM_PROCESS_ID" in os.environ:
        process_id = int(os.environ["JAMEM_PROCESS_ID"])
    given = [value is not None for value in (coordinator, num_processes, process_id)]
    if any(given) and not all(given):
        raise ValueError(
            "`initialize` needs the coordinator (host:port), the number of processes and this process's id together "
            "(or none of them, to let JAX detect the cluster)."
        )
    if all(given) and not 0 <= process_id < num_processes:
        raise ValueError(f"`process_id` must lie in [0, {num_processes}), got {process_id}.")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU collectives across processes
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id)
