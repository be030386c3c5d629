"""Arrays a task derives once per run (a renormalized graph, a transport flow) kept in
the run folder, so that `neuroscale evaluate` and `--resume` read them back instead of
recomputing them, and every process of a run uses the same ones as the data did."""

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

_FOLDERS: list[Path] = []
# (folder, name, key) written, read or checked by this process
_KEPT: set[tuple] = set()


@contextlib.contextmanager
def run_store(folder: str | Path) -> Iterator[Path]:
    """Within the block, `stored` keeps its arrays in `folder` (the pipeline uses
    `DIR/data/derived` of the run it works on)."""
    _FOLDERS.append(Path(folder))
    try:
        yield _FOLDERS[-1]
    finally:
        _FOLDERS.pop()


def _name(name: str, key: tuple) -> str:
    digest = hashlib.sha256(repr(key).encode()).hexdigest()[:12]
    return f"{name}-{digest}.npz"


def _path(name: str, key: tuple) -> Path | None:
    return _FOLDERS[-1] / _name(name, key) if _FOLDERS else None


def _write(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # written under a private name and renamed: a reader (or a second process of the
    # run, on any host) sees the whole file or none
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _read(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def stored(name: str, key: tuple, build: Callable[[], dict[str, np.ndarray]]
           ) -> dict[str, np.ndarray]:
    """The arrays `build()` returns (a dict of NumPy arrays), computed once per run.

    Inside `run_store(folder)` (as in `neuroscale train`, `evaluate` and `stability`)
    they are read from `folder/<name>-<hash of key>.npz` when it exists and written
    there otherwise; outside one, `build()` is simply called. `key` is a tuple of the
    values the arrays depend on (sizes, seeds, dtype): another key is another file.

    Use it in an `AbstractTask` for host-side work that costs minutes on large
    systems and gives the same arrays every time, e.g.

        flow = neuroscale.stored("flow", (cfg.seed, cfg.fine_n), lambda: {"flow": f()})

    If the object the arrays describe is also cached in memory (built before a
    `run_store` was entered), pair it with `keep` so that the run still gets the file.
    """
    path = _path(name, key)
    if path is None:
        return build()
    if path.exists():
        arrays = _read(path)
    else:
        arrays = build()
        _write(path, arrays)
    _KEPT.add((_FOLDERS[-1], name, key))  # `keep` has nothing left to check
    return arrays


def keep(name: str, key: tuple, arrays: Callable[[], dict[str, np.ndarray]]) -> None:
    """Inside `run_store`, write `arrays()` as `stored` would if the folder lacks them,
    or, if it has them, check that they are the same (`ValueError` if not: the run's
    data were made with other arrays); once per file and process, a no-op outside a
    `run_store`."""
    if not _FOLDERS or (_FOLDERS[-1], name, key) in _KEPT:
        return  # asked for at every trace: decided before any hashing
    path = _path(name, key)
    mine = {k: np.asarray(v) for k, v in arrays().items()}
    if not path.exists():
        _write(path, mine)
    else:
        theirs = _read(path)
        if set(mine) != set(theirs) or not all(
                mine[k].dtype == theirs[k].dtype and np.array_equal(mine[k], theirs[k])
                for k in mine):
            raise ValueError(
                f"{path} holds other `{name}` arrays than this process computed for the "
                "same key: the run's data were made with them. Build the task inside "
                "`neuroscale.run_store` (as train_run and evaluate_run do) so that they "
                "are read back, or start a new run folder.")
    _KEPT.add((_FOLDERS[-1], name, key))
