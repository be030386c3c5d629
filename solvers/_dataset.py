"""Reference data: many fine trajectories generated at once, stored in chunks on disk.

Layout of a data set directory:

- `index.json`: the format version, the full configuration (save times, `dt`, the
  base key, the user's `config`), the stored shape and dtype, library versions and
  one entry per chunk (file names, size, SHA-256, blow-up indices).
- `chunk_00000.npy`, ...: `[chunk, T, *state]` trajectories, plain `.npy` so that
  they are memory-mapped with `np.load(mmap_mode="r")`.
- `params_00000.npz`, ...: per-trajectory inputs of those trajectories: the initial
  state `y0` and every array leaf of the system (e.g. the forcing's amplitudes).
"""

import datetime
import hashlib
import importlib.metadata
import json
import math
import os
import pathlib
import platform
import re
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
import numpy as np
from jaxtyping import Array, PRNGKeyArray, PyTree

from ._solve import _check_dt, _check_ts, solve
from ._system import AbstractSystem
from ._validation import check_positive_int

FORMAT = "neuroscale-dataset"
FORMAT_VERSION = 1
INDEX_NAME = "index.json"
_CHUNK_RE = re.compile(r"^(chunk_\d{5,}\.npy|params_\d{5,}\.npz)(\.tmp)?$")
# Salt of the per-trajectory key handed to `solve` (used only by noisy systems), so
# that it differs from the key handed to `sample`.
_NOISE_SALT = 0x6E6F6973
# The fields of the index that must agree for `resume=True` to continue a run.
_FINGERPRINT = (
    "n_trajectories",
    "chunk_size",
    "ts",
    "dt",
    "key",
    "system",
    "state_shape",
    "dtype",
    "config",
)


def _chunk_names(c: int) -> tuple[str, str]:
    return f"chunk_{c:05d}.npy", f"params_{c:05d}.npz"


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("neuroscale", "jax", "jaxlib", "equinox", "diffrax", "numpy"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _json_normalise(value: Any, name: str) -> Any:
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise ValueError(f"`{name}` must be JSON-serialisable (dicts, lists, str, finite "
                         f"numbers, bool, None): {e}") from None


def _key_to_json(key: Any) -> dict[str, Any]:
    if not isinstance(key, jax.Array):
        raise ValueError(f"`key` must be a JAX PRNG key, got {type(key).__name__}.")
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(f"`key` must be a single PRNG key, got shape {key.shape}.")
        return {"impl": str(jr.key_impl(key)), "data": np.asarray(jr.key_data(key)).tolist()}
    if key.dtype != jnp.uint32 or key.ndim != 1:
        raise ValueError(
            "`key` must be a single PRNG key (`jax.random.key(seed)` or "
            f"`jax.random.PRNGKey(seed)`), got dtype {key.dtype} and shape {key.shape}."
        )
    return {"impl": None, "data": np.asarray(key).tolist()}


def _key_from_json(spec: Mapping[str, Any]) -> PRNGKeyArray:
    data = jnp.asarray(spec["data"], dtype=jnp.uint32)
    if spec["impl"] is None:
        return data
    return jr.wrap_key_data(data, impl=spec["impl"])


def _write_atomic(path: pathlib.Path, write: Callable[[Any], None]) -> str:
    """Write through a temporary file, fsync, then rename over `path`: a crash leaves
    either the old file or the new one, never a torn one. Returns the SHA-256."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return _sha256(path)


def _sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _write_index(root: pathlib.Path, index: Mapping[str, Any]) -> None:
    text = json.dumps(index, indent=1, allow_nan=False).encode()
    _write_atomic(root / INDEX_NAME, lambda f: f.write(text))


def _read_index(root: pathlib.Path) -> dict[str, Any]:
    path = root / INDEX_NAME
    if not root.is_dir():
        raise FileNotFoundError(f"No data set at {str(root)!r}: not a directory.")
    if not path.is_file():
        raise FileNotFoundError(f"No data set at {str(root)!r}: {INDEX_NAME} is missing.")
    try:
        index = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"Corrupted data set index {str(path)!r}: not valid JSON ({e}).") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise ValueError(f"Corrupted data set index {str(path)!r}: not a {FORMAT} index.")
    if index.get("version") != FORMAT_VERSION:
        raise ValueError(
            f"Data set {str(root)!r} has format version {index.get('version')!r}; this "
            f"library reads version {FORMAT_VERSION}."
        )
    missing = [k for k in (*_FINGERPRINT, "chunks", "complete") if k not in index]
    if missing:
        raise ValueError(f"Corrupted data set index {str(path)!r}: missing fields {missing}.")
    return index


def _system_leaves(systems: PyTree) -> dict[str, np.ndarray]:
    arrays = eqx.filter(systems, eqx.is_array)
    return {
        "system" + jtu.keystr(path): np.asarray(leaf)
        for path, leaf in jtu.tree_flatten_with_path(arrays)[0]
    }


@eqx.filter_jit
def _run_chunk(sample, key, start, size, ts, dt, solve_kwargs, filter_fn):
    # `size`, `ts`, `dt`, `sample` and `filter_fn` are static: one compilation serves
    # every chunk of a run (the last one is padded to `size`), and later runs with the
    # same `sample` function hit the cache.
    def one(i):
        k = jr.fold_in(key, i)
        system, y0 = sample(k)
        sol = solve(
            system,
            y0,
            np.asarray(ts),
            dt=dt,
            throw=False,
            key=jr.fold_in(k, _NOISE_SALT),
            **solve_kwargs,
        )
        ys = sol.ys if filter_fn is None else filter_fn(sol.ys)
        return ys, sol.blowup_index, system, y0

    return eqx.filter_vmap(one)(start + jnp.arange(size, dtype=start.dtype))


def generate_dataset(
    path: str | os.PathLike,
    sample: Callable[[PRNGKeyArray], tuple[AbstractSystem, Array]],
    ts: Any,
    *,
    dt: float,
    n_trajectories: int,
    key: PRNGKeyArray,
    chunk_size: int = 32,
    config: Mapping[str, Any] | None = None,
    filter_fn: Callable[[Array], Array] | None = None,
    solve_kwargs: Mapping[str, Any] | None = None,
    throw: bool = True,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> "Dataset":
    r"""Generate `n_trajectories` reference rollouts and store them in chunks on disk.

    Trajectory $i$ is fully determined by its key $k_i = $ `jax.random.fold_in(key, i)`:
    `system, y0 = sample(k_i)` and `solvers.solve(system, y0, ts, dt=dt, **solve_kwargs)`
    (the solve gets `key=fold_in(k_i, ...)`, used only by systems with noise). Each
    chunk of `chunk_size` trajectories is sampled and solved in one
    `eqx.filter_vmap`'d, `eqx.filter_jit`'d call — systems differing in array fields
    (e.g. `Burgers1D` holding different `BurgersForcing.random` draws) are batched
    like the initial states — and written to `chunk_00000.npy`, ... as
    `[chunk, T, *state]`, with `params_00000.npz` holding each trajectory's `y0` and
    the system's array leaves (the forcing a training pipeline needs), and
    `index.json` holding the full configuration.

    Every file is written to a temporary name and renamed into place, and the index
    is updated after each chunk, so an interrupted run loses at most the chunk in
    flight: calling again with `resume=True` and the same arguments skips the chunks
    already stored and produces the same bytes as an uninterrupted run. Since
    trajectory $i$ depends only on $k_i$, the data do not depend on `chunk_size`
    (up to round-off of batched FFTs).

    **Arguments:**

    - `path`: the data set directory; created if missing. An existing directory must
      be empty, or hold a data set (see `resume` and `overwrite`).
    - `sample`: `key -> (system, y0)`, one trajectory's system and initial physical
      state (a single floating array); traced under `vmap`, so it must be written in
      JAX (e.g. `Burgers1D(n, nu, forcing=BurgersForcing.random(k1))` and
      `random_smooth_field(k2, n)`). Keep the same function object between calls to
      reuse the compilation.
    - `ts`: `Float[Array, "T"]`, strictly increasing save times.
    - `dt`: solver step (the maximal step with adaptive control).
    - `n_trajectories`: number of trajectories, $\geq 1$.
    - `key`: the base PRNG key (`jax.random.key` or `jax.random.PRNGKey`).
    - `chunk_size`: trajectories per chunk and per vmapped solve (default 32; capped
      at `n_trajectories`). It bounds memory: one chunk of fine trajectories must fit,
      the data set need not.
    - `config`: JSON-serialisable dict recorded in the index, meant to describe the
      run completely (system name, `n`, viscosity, forcing parameters, ...); part of
      what `resume` checks.
    - `filter_fn`: optional `[T, *state] -> [T, *state']` applied to each trajectory
      before storing (e.g. coarse-graining); stored shapes are then `state'`.
    - `solve_kwargs`: extra keywords for `solvers.solve` (e.g. `solver`,
      `stepsize_controller`); recorded by `repr` in the index.
    - `throw`: if a trajectory blows up (NaN/Inf), raise `RuntimeError` naming the
      trajectories and the first non-finite save index, before writing that chunk
      (default). With `throw=False` the chunk is stored and `Dataset.blowup_index`
      tells which trajectories blew up and where.
    - `resume`: continue a data set at `path` generated with the same arguments;
      raises `ValueError` naming the fields that differ.
    - `overwrite`: delete the data set at `path` (only its own files) and start over.
    - `progress`: show a tqdm progress bar over chunks.

    **Returns:** the `Dataset` at `path`.
    """
    root = pathlib.Path(path)
    ts_np = _check_ts(ts)
    dt = _check_dt(dt)
    n_trajectories = check_positive_int(n_trajectories, "n_trajectories")
    chunk_size = min(check_positive_int(chunk_size, "chunk_size"), n_trajectories)
    if not callable(sample):
        raise ValueError(f"`sample` must be a callable key -> (system, y0), got {sample!r}.")
    if filter_fn is not None and not callable(filter_fn):
        raise ValueError(f"`filter_fn` must be None or a callable, got {filter_fn!r}.")
    solve_kwargs = dict(solve_kwargs or {})
    clash = sorted({"dt", "key", "throw"} & set(solve_kwargs))
    if clash:
        raise ValueError(f"`solve_kwargs` must not set {clash}: generate_dataset sets them.")
    if resume and overwrite:
        raise ValueError("`resume` and `overwrite` are exclusive: pass at most one.")
    config = _json_normalise({} if config is None else dict(config), "config")
    key_json = _key_to_json(key)

    # Validate `sample` and find the stored shape by tracing only (no compilation).
    out = eqx.filter_eval_shape(sample, jr.fold_in(key, 0))
    if not (isinstance(out, tuple) and len(out) == 2):
        raise ValueError("`sample(key)` must return a tuple (system, y0).")
    system0, y0_struct = out
    if not isinstance(system0, AbstractSystem):
        raise ValueError(
            "`sample(key)` must return (system, y0) with a solvers.AbstractSystem, got "
            f"{type(system0).__name__}."
        )
    if not isinstance(y0_struct, jax.ShapeDtypeStruct):
        raise ValueError("`sample(key)` must return y0 as a single array (pytree states "
                         "are not supported by datasets).")
    system0.check_state(y0_struct, "y0")
    traj_struct = jax.ShapeDtypeStruct((len(ts_np), *y0_struct.shape), y0_struct.dtype)
    if filter_fn is not None:
        traj_struct = eqx.filter_eval_shape(filter_fn, traj_struct)
        if not isinstance(traj_struct, jax.ShapeDtypeStruct):
            raise ValueError("`filter_fn` must return a single array.")

    n_chunks = math.ceil(n_trajectories / chunk_size)
    index: dict[str, Any] = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "complete": False,
        "created": _now(),
        "versions": _versions(),
        "n_trajectories": n_trajectories,
        "chunk_size": chunk_size,
        "ts": ts_np.tolist(),
        "dt": dt,
        "key": key_json,
        "system": f"{type(system0).__module__}.{type(system0).__qualname__}",
        "state_shape": list(traj_struct.shape[1:]),
        "dtype": np.dtype(traj_struct.dtype).name,
        "filter_fn": None if filter_fn is None else getattr(filter_fn, "__qualname__",
                                                            repr(filter_fn)),
        "solve_kwargs": {k: repr(v) for k, v in sorted(solve_kwargs.items())},
        "config": config,
        "chunks": [],
    }
    done = _prepare_directory(root, index, resume=resume, overwrite=overwrite)
    if done.get("created"):
        index["created"] = done["created"]
    chunks: list[dict[str, Any] | None] = [None] * n_chunks
    for entry in done.get("chunks", []):
        chunks[entry["chunk"]] = entry
    index["chunks"] = [c for c in chunks if c is not None]
    _write_index(root, index)

    from tqdm.auto import tqdm

    n_done = sum(c is not None for c in chunks)
    bar = tqdm(total=n_chunks, initial=n_done, disable=not progress, unit="chunk",
               desc=f"generate_dataset {root.name}")
    try:
        for c in range(n_chunks):
            if chunks[c] is not None:
                continue
            start = c * chunk_size
            size = min(chunk_size, n_trajectories - start)
            ys, blowup, systems, y0s = _run_chunk(
                sample,
                key,
                jnp.asarray(start, jnp.int32),
                chunk_size,
                tuple(ts_np.tolist()),
                dt,
                solve_kwargs,
                filter_fn,
            )
            ys = np.asarray(ys)[:size]
            blowup = np.asarray(blowup)[:size]
            if throw and np.any(blowup >= 0):
                bad = np.flatnonzero(blowup >= 0)
                detail = ", ".join(
                    f"{start + j} (first non-finite at ts[{blowup[j]}] = "
                    f"{ts_np[blowup[j]]:g})" for j in bad[:10]
                )
                more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
                raise RuntimeError(
                    f"generate_dataset: {len(bad)} trajectories of chunk {c} blew up (NaN "
                    f"or Inf): {detail}{more}. Reduce `dt`, or pass `throw=False` to store "
                    "them and read `Dataset.blowup_index`. Chunks already written are kept "
                    "and `resume=True` continues from them."
                )
            params = {"y0": np.asarray(y0s)[:size]}
            params.update({k: v[:size] for k, v in _system_leaves(systems).items()})
            chunk_name, params_name = _chunk_names(c)
            params_sha = _write_atomic(root / params_name, lambda f, p=params: np.savez(f, **p))
            chunk_sha = _write_atomic(root / chunk_name, lambda f, a=ys: np.save(f, a))
            chunks[c] = {
                "chunk": c,
                "file": chunk_name,
                "params": params_name,
                "start": start,
                "size": size,
                "sha256": chunk_sha,
                "params_sha256": params_sha,
                "blowup_index": blowup.tolist(),
            }
            index["chunks"] = [e for e in chunks if e is not None]
            _write_index(root, index)
            bar.update(1)
    finally:
        bar.close()
    index["complete"] = True
    index["completed"] = _now()
    _write_index(root, index)
    return Dataset(root)


def _prepare_directory(root: pathlib.Path, index, *, resume: bool, overwrite: bool) -> dict:
    """Create `root`, or check what is there; returns the reusable part of an old index."""
    if root.exists() and not root.is_dir():
        raise FileExistsError(f"`path` {str(root)!r} exists and is not a directory.")
    if not root.exists():
        root.mkdir(parents=True)
        return {}
    entries = sorted(p.name for p in root.iterdir())
    if not entries:
        return {}
    if INDEX_NAME not in entries:
        raise FileExistsError(
            f"`path` {str(root)!r} is a non-empty directory without a data set: refusing to "
            "write into it (or to delete anything there)."
        )
    old = _read_index(root)
    if overwrite:
        # Delete only what a data set consists of; anything else there stays.
        for name in entries:
            if _CHUNK_RE.match(name) or name in (INDEX_NAME, INDEX_NAME + ".tmp"):
                (root / name).unlink()
        return {}
    if not resume:
        state = "complete" if old["complete"] else "incomplete"
        raise FileExistsError(
            f"A data set ({state}) already exists at {str(root)!r}. Pass `resume=True` to "
            "continue it with the same arguments, or `overwrite=True` to replace it."
        )
    differ = [k for k in _FINGERPRINT if old.get(k) != index[k]]
    if differ:
        lines = "; ".join(f"{k}: stored {old.get(k)!r}, given {index[k]!r}" for k in differ)
        raise ValueError(
            f"Cannot resume the data set at {str(root)!r}: its arguments differ ({lines}). "
            "Pass `overwrite=True` to replace it."
        )
    for name in entries:
        if name.endswith(".tmp"):
            (root / name).unlink()  # a write interrupted before its rename
    kept = []
    for entry in old["chunks"]:
        chunk_path, params_path = root / entry["file"], root / entry["params"]
        if not (chunk_path.is_file() and params_path.is_file()):
            continue
        try:
            shape = np.load(chunk_path, mmap_mode="r").shape
        except (ValueError, OSError):
            continue
        if shape == (entry["size"], len(index["ts"]), *index["state_shape"]):
            kept.append(entry)
    return {"created": old.get("created"), "chunks": kept}


class Dataset:
    """A data set written by `generate_dataset`, read lazily.

    Opening reads only `index.json`. Chunks are memory-mapped (`np.load(...,
    mmap_mode="r")`) when first touched, and a few recently used ones are kept open:
    `ds[i]` reads one trajectory of one chunk, so data sets larger than memory are
    streamed. A `Dataset` is a plain Python object (not a pytree); it pickles without
    its open memory maps, so it can be sent to data-loader workers.

    **Arguments:**

    - `path`: the data set directory.

    Raises `FileNotFoundError` when the index or a chunk file is missing, and
    `ValueError` when the index is corrupted or the generation is incomplete.

    **Indexing:** `ds[i]` -> `[T, *state]`; `ds[i:j]`, `ds[[i, j, ...]]`, or a boolean
    mask -> `[k, T, *state]` (NumPy arrays, copies). Out-of-range indices raise
    `IndexError`.
    """

    _CACHE = 4  # memory maps kept open (each holds a file descriptor)

    def __init__(self, path: str | os.PathLike):
        self.path = pathlib.Path(path)
        index = _read_index(self.path)
        if not index["complete"]:
            raise ValueError(
                f"The data set at {str(self.path)!r} is incomplete (its generation was "
                "interrupted): call generate_dataset again with `resume=True`."
            )
        chunks = sorted(index["chunks"], key=lambda e: e["start"])
        starts = [e["start"] for e in chunks]
        sizes = [e["size"] for e in chunks]
        expected = np.cumsum([0, *sizes[:-1]]).tolist()
        if starts != expected or sum(sizes) != index["n_trajectories"]:
            raise ValueError(
                f"Corrupted data set index in {str(self.path)!r}: the chunks do not cover "
                f"trajectories 0..{index['n_trajectories'] - 1} exactly once."
            )
        for e in chunks:
            for name in (e["file"], e["params"]):
                if not (self.path / name).is_file():
                    raise FileNotFoundError(
                        f"Data set {str(self.path)!r} is missing {name}: regenerate it with "
                        "generate_dataset(..., resume=True)."
                    )
        self.index = index
        self._chunks = chunks
        self._starts = np.asarray(starts, dtype=np.int64)
        self._open: OrderedDict[int, np.ndarray] = OrderedDict()

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_open"] = OrderedDict()
        return state

    def __repr__(self) -> str:
        return (f"Dataset({str(self.path)!r}, shape={self.shape}, dtype={self.dtype}, "
                f"chunks={self.n_chunks})")

    # -- metadata -------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self.index["n_trajectories"])

    @property
    def shape(self) -> tuple[int, ...]:
        """`(n_trajectories, T, *state)`."""
        return (len(self), len(self.index["ts"]), *self.index["state_shape"])

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.index["dtype"])

    @property
    def ts(self) -> np.ndarray:
        """`Float[ndarray, "T"]`, the save times (float64, exactly as given)."""
        return np.asarray(self.index["ts"], dtype=np.float64)

    @property
    def dt(self) -> float:
        return float(self.index["dt"])

    @property
    def config(self) -> dict[str, Any]:
        """The user's `config`, as recorded (a copy)."""
        return json.loads(json.dumps(self.index["config"]))

    @property
    def n_chunks(self) -> int:
        return len(self._chunks)

    @property
    def chunk_sizes(self) -> list[int]:
        return [e["size"] for e in self._chunks]

    @property
    def blowup_index(self) -> np.ndarray:
        """`Int[ndarray, "n_trajectories"]`: per trajectory, the index into `ts` of the
        first non-finite state, or -1 (only ever >= 0 with `throw=False`)."""
        return np.concatenate([np.asarray(e["blowup_index"], np.int64) for e in self._chunks])

    def trajectory_key(self, i: int) -> PRNGKeyArray:
        """The key $k_i$ trajectory `i` was generated from: `sample(k_i)` rebuilds its
        `(system, y0)`."""
        i = self._normalise_int(i)
        return jr.fold_in(_key_from_json(self.index["key"]), i)

    # -- data ---------------------------------------------------------------------------

    def chunk(self, c: int) -> np.ndarray:
        """Chunk `c` as a read-only `np.memmap` `[size, T, *state]` (nothing is read
        until it is indexed)."""
        if not 0 <= c < self.n_chunks:
            raise IndexError(f"chunk {c} out of range for {self.n_chunks} chunks.")
        if c in self._open:
            self._open.move_to_end(c)
            return self._open[c]
        entry = self._chunks[c]
        arr = np.load(self.path / entry["file"], mmap_mode="r")
        if arr.shape != (entry["size"], *self.shape[1:]) or arr.dtype != self.dtype:
            raise ValueError(
                f"Corrupted data set {str(self.path)!r}: {entry['file']} has shape "
                f"{arr.shape} and dtype {arr.dtype}, the index says "
                f"{(entry['size'], *self.shape[1:])} and {self.dtype}."
            )
        self._open[c] = arr
        while len(self._open) > self._CACHE:
            self._open.popitem(last=False)
        return arr

    def iter_chunks(self) -> Iterator[np.ndarray]:
        """Yield the chunks in order, each a memory-mapped `[size, T, *state]` array."""
        for c in range(self.n_chunks):
            yield self.chunk(c)

    def __iter__(self) -> Iterator[np.ndarray]:
        for arr in self.iter_chunks():
            for traj in arr:
                yield np.array(traj)

    def __getitem__(self, index) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            c, j = self._locate(self._normalise_int(index))
            return np.array(self.chunk(c)[j])
        idx = self._normalise_many(index)
        out = np.empty((len(idx), *self.shape[1:]), dtype=self.dtype)
        owners = np.searchsorted(self._starts, idx, side="right") - 1
        for c in np.unique(owners):
            sel = owners == c
            out[sel] = self.chunk(int(c))[idx[sel] - self._starts[c]]
        return out

    def params(self, index) -> dict[str, np.ndarray]:
        """The stored inputs of trajectories `index` (int, slice, list or mask): `"y0"`
        and `"system.<field path>"` for every array leaf of the system, stacked along a
        leading axis unless `index` is an int."""
        single = isinstance(index, (int, np.integer))
        idx = (np.asarray([self._normalise_int(index)]) if single
               else self._normalise_many(index))
        owners = np.searchsorted(self._starts, idx, side="right") - 1
        parts: dict[str, np.ndarray] = {}
        for c in np.unique(owners):
            sel = owners == c
            with np.load(self.path / self._chunks[c]["params"]) as npz:
                for name in npz.files:
                    arr = npz[name]
                    if name not in parts:
                        parts[name] = np.empty((len(idx), *arr.shape[1:]), arr.dtype)
                    parts[name][sel] = arr[idx[sel] - self._starts[c]]
        return {k: v[0] for k, v in parts.items()} if single else parts

    def system(self, index, like: AbstractSystem) -> AbstractSystem:
        """The system of trajectories `index`, rebuilt from the stored array leaves.

        **Arguments:** `index` as for `params`; `like`, any system of the same
        structure (e.g. `sample(key)[0]`), which supplies the non-array fields.

        **Returns:** `like` with its array leaves replaced: unbatched for an int
        `index`, else batched along a leading axis (use `eqx.filter_vmap`).
        """
        single = isinstance(index, (int, np.integer))
        stored = self.params(index)
        arrays, static = eqx.partition(like, eqx.is_array)
        leaves, treedef = jtu.tree_flatten_with_path(arrays)
        new = []
        for path, leaf in leaves:
            name = "system" + jtu.keystr(path)
            if name not in stored:
                raise ValueError(f"`like` has an array leaf {name!r} the data set does not "
                                 f"store (it stores {sorted(stored)}).")
            value = stored[name]
            if tuple(value.shape[0 if single else 1:]) != tuple(leaf.shape):
                raise ValueError(f"`like`'s leaf {name!r} has shape {leaf.shape}, the data "
                                 f"set stores {value.shape}.")
            new.append(jnp.asarray(value))
        return eqx.combine(jtu.tree_unflatten(treedef, new), static)

    def verify(self) -> None:
        """Check every file against the SHA-256 in the index (reads everything);
        raises `ValueError` naming the first file that differs."""
        for e in self._chunks:
            for name, digest in ((e["file"], e["sha256"]), (e["params"], e["params_sha256"])):
                if _sha256(self.path / name) != digest:
                    raise ValueError(f"Corrupted data set {str(self.path)!r}: {name} does "
                                     "not match its SHA-256 in the index.")

    # -- helpers --------------------------------------------------------------------------

    def _normalise_int(self, i) -> int:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"index must be an int, got {type(i).__name__}.")
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"trajectory index {i} out of range for {n} trajectories.")
        return int(i) % n

    def _normalise_many(self, index) -> np.ndarray:
        n = len(self)
        if isinstance(index, slice):
            return np.arange(n)[index]
        idx = np.asarray(index)
        if idx.dtype == bool:
            if idx.shape != (n,):
                raise IndexError(f"boolean mask must have shape ({n},), got {idx.shape}.")
            return np.flatnonzero(idx)
        if idx.ndim != 1 or not (idx.size == 0 or np.issubdtype(idx.dtype, np.integer)):
            raise TypeError(
                "index must be an int, a slice, a 1D sequence of ints or a boolean mask, "
                f"got {index!r}."
            )
        idx = idx.astype(np.int64)
        bad = (idx < -n) | (idx >= n)
        if np.any(bad):
            raise IndexError(
                f"trajectory index {int(idx[bad][0])} out of range for {n} trajectories."
            )
        return idx % n if n else idx

    def _locate(self, i: int) -> tuple[int, int]:
        c = int(np.searchsorted(self._starts, i, side="right") - 1)
        return c, i - int(self._starts[c])


def load_dataset(path: str | os.PathLike) -> Dataset:
    """Open the data set at `path` lazily: `Dataset(path)`."""
    return Dataset(path)
