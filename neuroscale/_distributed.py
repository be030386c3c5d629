"""The pipeline as a multi-process JAX program (`jax.distributed`; DISTRIBUTED.md):
starting it, and the one-writer rule for the run folder (process 0 writes
`config.json`, `model/`, `uq.json`; the library splits data generation and training
over the processes by itself)."""

import jax
from jax.experimental import multihost_utils


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
    """`jax.distributed.initialize`: with no arguments the cluster is detected
    (SLURM, Open MPI, ...); by hand, all three. Must run before any other JAX call."""
    given = [x is not None for x in (coordinator, num_processes, process_id)]
    if any(given) and not all(given):
        raise ValueError("`--coordinator`, `--num-processes` and `--process-id` go together: "
                         "pass all three, or none to detect the cluster (SLURM, Open MPI).")
    if num_processes is not None and num_processes < 1:
        raise ValueError(f"`--num-processes` must be >= 1, got {num_processes}.")
    if process_id is not None and not 0 <= process_id < (num_processes or 0):
        raise ValueError(f"`--process-id` must be in [0, {num_processes}), got {process_id}.")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id)


def is_primary() -> bool:
    """Whether this process writes the run folder's own files (process 0)."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Every process waits here for the others (no-op with one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)
