"""Arrays a task derives once per run (a renormalized graph, a transport flow) kept in
the run folder, so that `neuroscale evaluate` and `--resume` read them back instead of
recomputing them, and every process of a run uses the same ones as the data did."""

import contextlib
import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

_FOLDERS: list[Path] = []
_KEPT: set[Path] = set()


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
    # run) sees the whole file or none
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})
    os.replace(tmp, path)
    _KEPT.add(path)


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
    if path is not None and path.exists():
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    arrays = build()
    if path is not None:
        _write(path, arrays)
    return arrays


def keep(name: str, key: tuple, arrays: Callable[[], dict[str, np.ndarray]]) -> None:
    """Inside `run_store`, write `arrays()` as `stored` would if the folder lacks them
    (once per file and process; a no-op outside one)."""
    path = _path(name, key)
    if path is None or path in _KEPT:
        return
    if not path.exists():
        _write(path, arrays())
    _KEPT.add(path)
