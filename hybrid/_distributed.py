r"""Multi-process runs (`jax.distributed`): who writes which file, barriers, and
gathering sharded results to every process.

A multi-process JAX program (`jax.distributed.initialize(...)` called first in every
process; DISTRIBUTED.md) is one program run by $P$ processes in lockstep, each
driving its own devices. The library follows three rules in it:

- work is split by a rule every process computes alike from shared state (the
  missing chunks of a data set, the member blocks of a mesh), never handed out by a
  process pool;
- a file shared by the processes has one writer: process 0 writes metadata and
  records, and each process writes only its own data chunks or its own record file;
- a decision that must be the same everywhere (an error, the end of a phase) is
  agreed on with a collective (`all_ok`, `barrier`), so that one process failing
  does not leave the others waiting at the next collective.

With one process every function here is a no-op (or plain NumPy), so single-process
code paths are unchanged.
"""

import os
import pathlib
from typing import Any

import jax
import jax.tree_util as jtu
import numpy as np
from jax.experimental import multihost_utils


def process_count() -> int:
    return jax.process_count()


def is_primary() -> bool:
    """Whether this is process 0, the one that writes shared files."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process reached the barrier `name` (no-op with one process).
    Every process must pass the same barriers in the same order."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def all_ok(error: BaseException | None, what: str) -> None:
    """Agree on failure: every process reports whether it failed at `what`; if any
    did, every process raises (the failing ones their own exception, the others a
    `RuntimeError` naming the failed processes). With one process: raise `error` if
    given. A collective, so also a barrier."""
    if jax.process_count() == 1:
        if error is not None:
            raise error
        return
    failed = multihost_utils.process_allgather(np.asarray(error is not None, np.int32))
    bad = np.flatnonzero(np.asarray(failed).reshape(-1)).tolist()
    if error is not None:
        raise error
    if bad:
        raise RuntimeError(f"{what} failed on process(es) {bad} of {jax.process_count()}; "
                           "see their output.")


def to_host(tree: Any) -> Any:
    """Every array of `tree` that spans devices of other processes gathered whole onto
    this process (NumPy arrays); other leaves unchanged. The same call on every
    process (a collective when any array is global)."""

    def gather(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return multihost_utils.process_allgather(x, tiled=True)
        return x

    return jtu.tree_map(gather, tree)


def write_atomic(path: pathlib.Path, text: str) -> None:
    """Write `text` to `path` so that a reader (another process) sees the old file or
    the whole new one, never a partial write; flushed to disk."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
