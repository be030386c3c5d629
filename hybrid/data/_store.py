"""Reference data sets as zarr v3 stores: many fine trajectories generated at once,
written chunk by chunk (resumable), read lazily here or by xarray and dask.

Layout of a data set (one zarr v3 group; `xarray.open_zarr(path)` opens it with a
`time` coordinate):

- `ys` `[trajectory, time, *state]`: the trajectories. A storage chunk is `chunk_size`
  trajectories x all times x the whole state, cut along time (then trajectories, then
  the state's axes) where it would exceed `max_chunk_bytes`; Blosc-zstd compressed
  and CRC32C checksummed, so a corrupted chunk fails when it is read.
- `time` `[time]`: the save times (the coordinate).
- `blowup_index` `[trajectory]`: index into `time` of the first non-finite state, or -1.
- `inputs/y0` `[trajectory, *state0]` and `inputs/system.<field path>`
  `[trajectory, ...]`: what each trajectory was generated from: its initial state and
  every array leaf of its system (e.g. the forcing's amplitudes).
- the group's attributes: the format, the full configuration (save times, `dt`, the
  base key, shapes, the user's `config`), library versions, `completed_chunks` (the
  generation chunks fully on disk) and `complete`.
- only while a multi-process generation runs (or after it was interrupted):
  `completed_chunks.process-<p>.json`, the chunks process `p` has fully written;
  process 0 merges them into `completed_chunks` (at the end, or when resuming).
"""

import datetime
import importlib.metadata
import itertools
import json
import math
import os
import pathlib
import platform
import shutil
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
import numpy as np
import zarr
from jaxtyping import Array, PRNGKeyArray, PyTree
from zarr.codecs import BloscCodec, Crc32cCodec

import solvers

from .. import _distributed

FORMAT = "neuroscale-dataset"
FORMAT_VERSION = 2
# Largest storage chunk: big enough that per-chunk overheads vanish, small enough that
# a reader of one time step or one trajectory does not decode hundreds of MB.
MAX_CHUNK_BYTES = 64 * 2**20
# The store's own nodes (what `overwrite=True` deletes; anything else there stays).
_NODES = ("zarr.json", "ys", "time", "blowup_index", "inputs")
# The completed-chunk record of process p of an interrupted multi-process generation,
# `<root>/<prefix><p>.json` (merged into the attributes and deleted when it finishes).
_RECORD_PREFIX = "completed_chunks.process-"
# Salt of the per-trajectory key handed to `solve` (used only by noisy systems), so
# that it differs from the key handed to `sample`.
_NOISE_SALT = 0x6E6F6973
# The attributes that must agree for `resume=True` to continue a run.
_FINGERPRINT = (
    "n_trajectories",
    "chunk_size",
    "ts",
    "dt",
    "key",
    "system",
    "state_shape",
    "state_dims",
    "dtype",
    "inputs",
    "config",
)
_ATTRS = (*_FINGERPRINT, "format_version", "completed_chunks", "complete")


# -- arguments ------------------------------------------------------------------------


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be an int >= 1, got {value!r}.")
    return int(value)


def _check_ts(ts) -> np.ndarray:
    if isinstance(ts, jax.core.Tracer):
        raise ValueError("`ts` must be concrete (a NumPy or JAX array), not traced.")
    ts_np = np.asarray(ts, dtype=np.float64)
    if ts_np.ndim != 1 or ts_np.shape[0] < 1:
        raise ValueError(f"`ts` must be a 1D array of save times, got shape {ts_np.shape}.")
    if not np.all(np.isfinite(ts_np)) or not np.all(np.diff(ts_np) > 0):
        raise ValueError("`ts` must be finite and strictly increasing.")
    return ts_np


def _check_dt(dt) -> float:
    try:
        dt_f = float(dt)
    except (TypeError, ValueError):
        raise ValueError(f"`dt` must be a positive number, got {dt!r}.") from None
    if not (math.isfinite(dt_f) and dt_f > 0):
        raise ValueError(f"`dt` must be a positive number, got {dt!r}.")
    return dt_f


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
    return data if spec["impl"] is None else jr.wrap_key_data(data, impl=spec["impl"])


def _default_dims(ndim: int) -> tuple[str, ...]:
    return {1: ("x",), 2: ("y", "x"), 3: ("z", "y", "x")}.get(
        ndim, tuple(f"dim_{k}" for k in range(ndim)))


def _check_state_dims(state_dims, shape: tuple[int, ...]) -> list[str]:
    dims = _default_dims(len(shape)) if state_dims is None else tuple(state_dims)
    if (len(dims) != len(shape) or len(set(dims)) != len(dims)
            or not all(isinstance(d, str) and d for d in dims)
            or {"trajectory", "time"} & set(dims)):
        raise ValueError(f"`state_dims` must be {len(shape)} distinct names (not "
                         f"'trajectory' or 'time') for the stored state of shape {shape}, "
                         f"got {state_dims!r}.")
    return list(dims)


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("neuroscale", "jax", "jaxlib", "equinox", "diffrax", "numpy", "zarr"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


# -- storage layout ---------------------------------------------------------------------


def _chunk_shape(chunk_size: int, rest: Sequence[int], itemsize: int, limit: int, *,
                 time_axis: bool) -> tuple[int, ...]:
    """The storage chunk of an array `[trajectory, *rest]`.

    `chunk_size` trajectories x everything else, cut while it exceeds `limit` bytes:
    first along time (`rest[0]` when `time_axis`), so that a chunk still holds whole
    states; then along trajectories, to a divisor of `chunk_size` so that no storage
    chunk straddles two generation chunks (rewriting an unfinished one never touches
    a finished one); last along the state's axes, outermost first.
    """
    shape = [chunk_size, *rest]
    axes = [1, 0, *range(2, len(shape))] if time_axis else list(range(len(shape)))
    for ax in axes:
        nbytes = math.prod(shape) * itemsize
        if nbytes <= limit:
            break
        fit = max(1, limit // (nbytes // shape[ax]))
        if ax == 0:
            fit = max(d for d in range(1, min(fit, chunk_size) + 1) if chunk_size % d == 0)
        shape[ax] = min(shape[ax], fit)
    return tuple(shape)


def _codecs() -> dict[str, Any]:
    # Byte shuffle groups the exponents of floats, which zstd then compresses well; the
    # CRC32C over the compressed bytes makes a flipped bit on disk an error on read.
    return {
        "compressors": [BloscCodec(cname="zstd", clevel=5, shuffle="shuffle"),
                        Crc32cCodec()],
        "config": {"write_empty_chunks": True},  # every chunk on disk, even all-NaN
    }


def _chunk_files(root: pathlib.Path, arr: zarr.Array, chunks: Sequence[int], chunk_size: int,
                 n: int) -> Iterator[tuple[int, tuple[int, ...], pathlib.Path]]:
    """`(generation chunk, block coordinates, file)` for every storage chunk of `arr`
    holding trajectories of the generation chunks `chunks`."""
    ct = arr.chunks[0]
    rest = [range(k) for k in arr.cdata_shape[1:]]
    for c in chunks:
        lo, hi = c * chunk_size // ct, -(-min((c + 1) * chunk_size, n) // ct)
        for coords in itertools.product(range(lo, hi), *rest):
            yield c, coords, root / arr.path / arr.metadata.encode_chunk_key(coords)


def _fsync(path: pathlib.Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _attrs_of(root: pathlib.Path) -> tuple[zarr.Group, dict[str, Any]]:
    """Open the group at `root` (its metadata only) and check its attributes."""
    meta = root / "zarr.json"
    if not meta.is_file():
        if root.is_dir() and any((root / name).exists() for name in _NODES[1:]):
            raise ValueError(f"Truncated data set {str(root)!r}: zarr.json is missing.")
        what = "zarr.json is missing" if root.is_dir() else "not a directory"
        raise FileNotFoundError(f"No data set at {str(root)!r}: {what}.")
    try:
        group = zarr.open_group(root, mode="r", zarr_format=3, use_consolidated=False)
        attrs = group.attrs.asdict()
    except (ValueError, zarr.errors.BaseZarrError) as e:
        raise ValueError(f"Corrupted data set {str(meta)!r}: not a zarr v3 group "
                         f"({e}).") from None
    if attrs.get("format") != FORMAT:
        raise ValueError(f"{str(root)!r} is a zarr store but not a {FORMAT}.")
    if attrs.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"Data set {str(root)!r} has format version {attrs.get('format_version')!r}; "
            f"this library reads version {FORMAT_VERSION}."
        )
    missing = [k for k in _ATTRS if k not in attrs]
    if missing:
        raise ValueError(f"Corrupted data set {str(meta)!r}: missing attributes {missing}.")
    return group, attrs


def _layout(attrs: Mapping[str, Any]) -> dict[str, tuple[tuple[int, ...], str, list[str]]]:
    """Every array of the data set: its shape, dtype and dimension names (what xarray
    wants), all derived from the attributes."""
    n, n_t, dims = attrs["n_trajectories"], len(attrs["ts"]), attrs["state_dims"]
    out = {
        "ys": ((n, n_t, *attrs["state_shape"]), attrs["dtype"], ["trajectory", "time", *dims]),
        "time": ((n_t,), "float64", ["time"]),
        "blowup_index": ((n,), "int32", ["trajectory"]),
    }
    for name, spec in attrs["inputs"].items():
        shape = spec["shape"]
        leaf_dims = (dims if name == "y0" and shape == attrs["state_shape"]
                     else list(_default_dims(len(shape))) if name == "y0"
                     else [f"{name}_dim{k}" for k in range(len(shape))])
        out["inputs/" + name] = ((n, *shape), spec["dtype"], ["trajectory", *leaf_dims])
    return out


def _open_arrays(root: pathlib.Path, group: zarr.Group,
                 attrs: Mapping[str, Any]) -> dict[str, zarr.Array]:
    """The data set's arrays (metadata only), checked against the attributes."""
    arrays = {}
    for name, (shape, dtype, _) in _layout(attrs).items():
        if not (root / name / "zarr.json").is_file():
            raise ValueError(f"Truncated data set {str(root)!r}: {name}/zarr.json is missing.")
        try:
            arr = group[name]
        except (KeyError, ValueError, zarr.errors.BaseZarrError) as e:
            raise ValueError(f"Corrupted data set {str(root)!r}: cannot open {name} "
                             f"({e!r}).") from None
        if not isinstance(arr, zarr.Array) or arr.shape != shape or arr.dtype != dtype:
            raise ValueError(
                f"Corrupted data set {str(root)!r}: {name} has shape "
                f"{getattr(arr, 'shape', None)} and dtype {getattr(arr, 'dtype', None)}, "
                f"the attributes say {shape} and {dtype}."
            )
        arrays[name] = arr
    return arrays


def _create_arrays(group: zarr.Group, attrs: Mapping[str, Any], max_chunk_bytes: int, *,
                   keep: bool) -> tuple[dict[str, zarr.Array], bool]:
    """Open the arrays of `group` (with `keep`) or create those missing or not as
    `attrs` describe; returns them and whether any was (re)created."""
    arrays, created, chunk_size = {}, False, attrs["chunk_size"]
    for name, (shape, dtype, dims) in _layout(attrs).items():
        arr = group.get(name) if keep else None
        if (isinstance(arr, zarr.Array) and arr.shape == shape and arr.dtype == dtype
                and list(arr.metadata.dimension_names or ()) == dims
                and (name == "time" or chunk_size % arr.chunks[0] == 0)):
            arrays[name] = arr.with_config({"write_empty_chunks": True})
            continue
        created = True
        chunks = shape if name == "time" else _chunk_shape(
            chunk_size, shape[1:], np.dtype(dtype).itemsize, max_chunk_bytes,
            time_axis=name == "ys")
        parent, _, leaf = name.rpartition("/")
        node = group.require_group(parent) if parent else group
        arrays[name] = node.create_array(
            leaf, shape=shape, chunks=chunks, dtype=dtype, dimension_names=dims,
            fill_value=np.nan if np.issubdtype(dtype, np.inexact) else 0,  # never plausible
            overwrite=True, **_codecs())
    if created:
        arrays["time"][:] = np.asarray(attrs["ts"], np.float64)
    return arrays, created


# -- generation ---------------------------------------------------------------------------


def _system_leaves(systems: PyTree, is_leaf=eqx.is_array) -> dict[str, Any]:
    leaves = jtu.tree_flatten_with_path(eqx.filter(systems, is_leaf))[0]
    return {"system" + jtu.keystr(path): leaf for path, leaf in leaves}


@eqx.filter_jit
def _run_chunk(sample, key, start, size, ts, dt, solve_kwargs, filter_fn):
    # `size`, `ts`, `dt`, `sample` and `filter_fn` are static: one compilation serves
    # every chunk of a run (the last one is padded to `size`), and later runs with the
    # same `sample` function hit the cache.
    def one(i):
        k = jr.fold_in(key, i)
        system, y0 = sample(k)
        # The filter is applied to each state as it is saved: a fine trajectory is
        # never held whole (1M nodes x 200 saves would be 0.8 GB per trajectory).
        save_fn = None if filter_fn is None else (lambda y: filter_fn(y[None])[0])
        sol = solvers.solve(system, y0, np.asarray(ts), dt=dt, throw=False,
                            key=jr.fold_in(k, _NOISE_SALT), save_fn=save_fn, **solve_kwargs)
        return sol.ys, sol.blowup_index, system, y0

    return eqx.filter_vmap(one)(start + jnp.arange(size, dtype=start.dtype))


def generate_dataset(
    path: str | os.PathLike,
    sample: Callable[[PRNGKeyArray], tuple[solvers.AbstractSystem, Array]],
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
    state_dims: Sequence[str] | None = None,
    max_chunk_bytes: int = MAX_CHUNK_BYTES,
    distributed: bool = True,
) -> "Dataset":
    r"""Generate `n_trajectories` reference rollouts into a zarr v3 store, chunk by chunk.

    Trajectory $i$ is fully determined by its key $k_i = $ `jax.random.fold_in(key, i)`:
    `system, y0 = sample(k_i)` and `solvers.solve(system, y0, ts, dt=dt, **solve_kwargs)`
    (the solve gets `key=fold_in(k_i, ...)`, used only by systems with noise). Each
    generation chunk of `chunk_size` trajectories is sampled and solved in one
    `eqx.filter_vmap`'d, `eqx.filter_jit`'d call -- systems differing in array fields
    (e.g. different `BurgersForcing.random` draws) are batched like the initial
    states -- and written to the arrays `ys`, `blowup_index` and `inputs/*` (see the
    module's docstring for the layout).

    A chunk counts once all of its files are written and flushed to disk and its
    number is then added to the group's `completed_chunks` (in a multi-process run,
    to the record file of the process that wrote it): an interrupted run (an
    exception, or the process killed) loses at most the chunk in flight, and calling
    again with `resume=True` and the same arguments writes only the chunks missing,
    giving the same bytes as an uninterrupted run. Since trajectory $i$ depends only
    on $k_i$, the data do not depend on `chunk_size` (up to round-off of batched FFTs).

    **Arguments:**

    - `path`: the store's directory; created if missing. An existing directory must
      be empty, or hold a data set (see `resume` and `overwrite`).
    - `sample`: `key -> (system, y0)`, one trajectory's `solvers.AbstractSystem` and
      initial physical state (a single floating array); traced under `vmap`, so it
      must be written in JAX. Keep the same function object between calls to reuse
      the compilation.
    - `ts`: `Float[Array, "T"]`, strictly increasing save times.
    - `dt`: solver step (the maximal step with adaptive control).
    - `n_trajectories`: number of trajectories, $\geq 1$.
    - `key`: the base PRNG key (`jax.random.key` or `jax.random.PRNGKey`).
    - `chunk_size`: trajectories per generation chunk and per vmapped solve (default
      32; capped at `n_trajectories`). It bounds memory: one chunk of stored
      trajectories (filtered, with `filter_fn`) and the solver's working states
      must fit, the data set need not.
    - `config`: JSON-serialisable dict recorded in the attributes, meant to describe
      the run completely (system name, `n`, viscosity, ...); part of what `resume`
      checks.
    - `filter_fn`: optional `[T, *state] -> [T, *state']` applied to each trajectory
      before storing (e.g. coarse-graining); stored shapes are then `state'`. It is
      applied to each saved state as the solve produces it (as `filter_fn(y[None])[0]`,
      `solvers.solve(..., save_fn=...)`), so it must treat the times independently,
      and a chunk holds only the filtered trajectories, never the fine ones.
    - `solve_kwargs`: extra keywords for `solvers.solve` (e.g. `solver`); recorded by
      `repr`.
    - `throw`: if a trajectory blows up (NaN/Inf), raise `RuntimeError` naming the
      trajectories and the first non-finite save index, before writing that chunk
      (default). With `throw=False` the chunk is stored and `Dataset.blowup_index`
      tells which trajectories blew up and where.
    - `resume`: continue a data set at `path` generated with the same arguments;
      raises `ValueError` naming the path and the fields that differ.
    - `overwrite`: delete the data set at `path` (only its own files) and start over.
    - `progress`: show a tqdm progress bar over chunks.
    - `state_dims`: names of the stored state's axes (what xarray calls its
      dimensions), e.g. `("node",)`; default `("x",)`, `("y", "x")`, `("z", "y", "x")`.
    - `max_chunk_bytes`: largest storage chunk before compression (default 64 MiB);
      only the layout depends on it, not the data.
    - `distributed`: in a multi-process JAX program (`jax.distributed.initialize`
      called, `jax.process_count() > 1`), split the chunks over the processes
      (default). Every process then makes the same call with the same arguments, on a
      `path` that all of them see (a shared file system): process 0 alone creates or
      checks the store and writes its attributes; each process generates every
      $P$-th missing chunk, writes its storage chunks (never shared with another
      chunk) and records them in its own file; process 0 marks the data set complete
      once every process is done. The bytes are those of a single-process run. With
      `False`, this process generates every chunk by itself (and no other process
      may write to `path`).

    **Returns:** the `Dataset` at `path` (on every process).
    """
    root = pathlib.Path(path)
    ts_np = _check_ts(ts)
    dt = _check_dt(dt)
    n_trajectories = _positive_int(n_trajectories, "n_trajectories")
    chunk_size = min(_positive_int(chunk_size, "chunk_size"), n_trajectories)
    max_chunk_bytes = _positive_int(max_chunk_bytes, "max_chunk_bytes")
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
    if not isinstance(distributed, bool):
        raise ValueError(f"`distributed` must be a bool, got {distributed!r}.")
    config = _json_normalise({} if config is None else dict(config), "config")
    key_json = _key_to_json(key)

    # Validate `sample` and find the stored shapes by tracing only (no compilation).
    out = eqx.filter_eval_shape(sample, jr.fold_in(key, 0))
    if not (isinstance(out, tuple) and len(out) == 2):
        raise ValueError("`sample(key)` must return a tuple (system, y0).")
    system0, y0_struct = out
    if not isinstance(system0, solvers.AbstractSystem):
        raise ValueError("`sample(key)` must return (system, y0) with a "
                         f"solvers.AbstractSystem, got {type(system0).__name__}.")
    if not isinstance(y0_struct, jax.ShapeDtypeStruct):
        raise ValueError("`sample(key)` must return y0 as a single array (pytree states "
                         "are not supported by data sets).")
    system0.check_state(y0_struct, "y0")
    traj = jax.ShapeDtypeStruct((len(ts_np), *y0_struct.shape), y0_struct.dtype)
    if filter_fn is not None:
        traj = eqx.filter_eval_shape(filter_fn, traj)
        if not isinstance(traj, jax.ShapeDtypeStruct) or traj.ndim < 1:
            raise ValueError("`filter_fn` must return a single array `[T, *state']`.")
    dims = _check_state_dims(state_dims, traj.shape[1:])
    inputs = {"y0": y0_struct, **_system_leaves(
        system0, lambda x: isinstance(x, jax.ShapeDtypeStruct))}

    attrs: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "complete": False,
        "created": _now(),
        "versions": _versions(),
        "n_trajectories": n_trajectories,
        "chunk_size": chunk_size,
        "ts": ts_np.tolist(),
        "dt": dt,
        "key": key_json,
        "system": f"{type(system0).__module__}.{type(system0).__qualname__}",
        "state_shape": list(traj.shape[1:]),
        "state_dims": dims,
        "dtype": np.dtype(traj.dtype).name,
        "inputs": {k: {"shape": list(v.shape), "dtype": np.dtype(v.dtype).name}
                   for k, v in inputs.items()},
        "filter_fn": None if filter_fn is None else getattr(filter_fn, "__qualname__",
                                                            repr(filter_fn)),
        "solve_kwargs": {k: repr(v) for k, v in sorted(solve_kwargs.items())},
        "config": config,
        "completed_chunks": [],
    }
    n_chunks = math.ceil(n_trajectories / chunk_size)
    n_proc, proc = ((jax.process_count(), jax.process_index()) if distributed else (1, 0))

    # 1. One writer for the store's metadata: this process alone, or process 0 of a
    #    multi-process run while the others wait (`all_ok` is also the barrier).
    error, prepared = None, None
    if proc == 0:
        try:
            prepared = _prepare_store(root, attrs, n_chunks, resume=resume,
                                      overwrite=overwrite, max_chunk_bytes=max_chunk_bytes)
        except Exception as e:  # reported to every process by all_ok
            error = e
    if n_proc > 1:
        _distributed.all_ok(error, f"generate_dataset: preparing {str(root)!r}")
    elif error is not None:
        raise error
    if prepared is None:
        # another process of the run prepared the store: read what it recorded
        group = zarr.open_group(root, mode="r+", zarr_format=3, use_consolidated=False)
        _, stored = _attrs_of(root)
        arrays = {name: arr.with_config({"write_empty_chunks": True})
                  for name, arr in _open_arrays(root, group, stored).items()}
        attrs.update(created=stored["created"], completed_chunks=stored["completed_chunks"],
                     complete=stored["complete"])
        prepared = group, arrays, set(stored["completed_chunks"])
    group, arrays, done = prepared
    if attrs["complete"]:
        return Dataset(root)

    # 2. Every process generates its share of the missing chunks (round robin over
    #    them, so that a resumed run stays balanced) into its own storage chunks:
    #    storage chunks never straddle generation chunks, so no file has two writers.
    todo = [c for c in range(n_chunks) if c not in done]
    mine = todo[proc::n_proc]
    from tqdm.auto import tqdm

    desc = f"generate_dataset {root.name}" + (f" [{proc}/{n_proc}]" if n_proc > 1 else "")
    bar = tqdm(total=n_chunks if n_proc == 1 else len(mine),
               initial=len(done) if n_proc == 1 else 0, disable=not progress,
               unit="chunk", desc=desc)
    error = None
    try:
        for c in mine:
            start = c * chunk_size
            size = min(chunk_size, n_trajectories - start)
            ys, blowup, systems, y0s = _run_chunk(
                sample, key, jnp.asarray(start, jnp.int32), chunk_size,
                tuple(ts_np.tolist()), dt, solve_kwargs, filter_fn,
            )
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
            rows = slice(start, start + size)
            values = {"inputs/y0": y0s, "blowup_index": blowup, "ys": ys}
            values.update({"inputs/" + k: v for k, v in _system_leaves(systems).items()})
            if set(values) != set(arrays) - {"time"}:
                raise ValueError(f"`sample` returned systems with array leaves "
                                 f"{sorted(values)}, its traced shape promised "
                                 f"{sorted(arrays)}.")
            for name, value in values.items():
                arrays[name][rows] = np.asarray(value)[:size]
            # Data first, durably (the files and their directory entries); only then
            # the record that makes the chunk count.
            files = [f for name, arr in arrays.items() if name != "time"
                     for *_, f in _chunk_files(root, arr, [c], chunk_size, n_trajectories)]
            for f in [*files, *{f.parent for f in files}]:
                _fsync(f)
            done.add(c)
            if n_proc == 1:
                attrs["completed_chunks"] = sorted(done)
                group.update_attributes(attrs)
            else:
                # one record file per process: the group's attributes keep one writer
                _write_record(root, proc, sorted(set(mine) & done))
            bar.update(1)
    except Exception as e:
        if n_proc == 1:
            raise
        error = e
    finally:
        bar.close()

    # 3. Every chunk on disk: the one writer marks the data set complete.
    if n_proc > 1:
        _distributed.all_ok(error, "generate_dataset: generating chunks")
    if proc == 0:
        try:
            done |= _recorded_chunks(root)
            missing = sorted(set(range(n_chunks)) - done)
            if missing:
                raise RuntimeError(f"generate_dataset: chunks {missing} of {str(root)!r} "
                                   "were not recorded as written.")
            _finish_store(root, group, attrs, done)
        except Exception as e:
            error = e
    if n_proc > 1:
        _distributed.all_ok(error, f"generate_dataset: finishing {str(root)!r}")
    elif error is not None:
        raise error
    return Dataset(root)


def _record_path(root: pathlib.Path, proc: int) -> pathlib.Path:
    return root / f"{_RECORD_PREFIX}{proc}.json"


def _write_record(root: pathlib.Path, proc: int, chunks: list[int]) -> None:
    _distributed.write_atomic(_record_path(root, proc),
                              json.dumps({"process": proc, "completed_chunks": chunks}))


def _recorded_chunks(root: pathlib.Path) -> set[int]:
    """The chunks recorded in the per-process record files of a multi-process run."""
    out: set[int] = set()
    for f in root.glob(f"{_RECORD_PREFIX}*.json"):
        try:
            out.update(int(c) for c in json.loads(f.read_text())["completed_chunks"])
        except (ValueError, KeyError, TypeError):
            pass  # a record cut by a crash only loses its chunks (they are redone)
    return out


def _prepare_store(root: pathlib.Path, attrs: dict[str, Any], n_chunks: int, *,
                   resume: bool, overwrite: bool, max_chunk_bytes: int):
    """Create or continue the store (the metadata writer's part): returns the group,
    its arrays and the chunks already done, with `attrs` updated and written."""
    old = _prepare_directory(root, attrs, resume=resume, overwrite=overwrite)
    if old is None:
        group = zarr.create_group(root, zarr_format=3, attributes=attrs)
    else:
        attrs["created"] = old["created"]
        group = zarr.open_group(root, mode="r+", zarr_format=3, use_consolidated=False)
    arrays, rebuilt = _create_arrays(group, attrs, max_chunk_bytes, keep=old is not None)
    if rebuilt:
        _fsync(root / "time" / arrays["time"].metadata.encode_chunk_key((0,)))

    # Chunks recorded as done (in the attributes, or in the record files of an
    # interrupted multi-process run) that still have all their files (a file deleted
    # since is regenerated); nothing is read.
    chunk_size, n = attrs["chunk_size"], attrs["n_trajectories"]
    done = (set() if old is None else
            (set(old["completed_chunks"]) | _recorded_chunks(root)) & set(range(n_chunks)))
    for arr in arrays.values():
        if arr is not arrays["time"]:
            done -= {c for c, _, f in _chunk_files(root, arr, sorted(done), chunk_size, n)
                     if not f.is_file()}
    if old is not None and old["complete"] and not rebuilt and len(done) == n_chunks:
        attrs.update(completed_chunks=old["completed_chunks"], complete=True)
        return group, arrays, done
    # The attributes are always written whole (one atomic replace of zarr.json), then
    # the merged records can go.
    attrs["completed_chunks"] = sorted(done)
    group.update_attributes(attrs)
    _fsync(root / "zarr.json")
    for f in root.glob(f"*{_RECORD_PREFIX}*"):  # with temporaries of a crash
        f.unlink()
    return group, arrays, done


def _finish_store(root: pathlib.Path, group: zarr.Group, attrs: dict[str, Any],
                  done: set[int]) -> None:
    attrs.update(completed_chunks=sorted(done), complete=True, completed=_now())
    group.update_attributes(attrs)
    with warnings.catch_warnings():
        # "Consolidated metadata is not part of the v3 spec" -- readers that do not know
        # it ignore it (must_understand: false); xarray opens the store faster with it.
        warnings.simplefilter("ignore", zarr.errors.ZarrUserWarning)
        zarr.consolidate_metadata(root, zarr_format=3)
    _fsync(root / "zarr.json")
    for f in root.glob(f"*{_RECORD_PREFIX}*"):  # with temporaries of a crash
        f.unlink()


def _prepare_directory(root: pathlib.Path, attrs: Mapping[str, Any], *, resume: bool,
                       overwrite: bool) -> dict[str, Any] | None:
    """Create `root` or check what is there; returns the attributes of the data set to
    continue, or None to start afresh."""
    if root.exists() and not root.is_dir():
        raise FileExistsError(f"`path` {str(root)!r} exists and is not a directory.")
    if not root.exists():
        root.mkdir(parents=True)
        return None
    if not any(root.iterdir()):
        return None
    if not (root / "zarr.json").is_file():
        raise FileExistsError(
            f"`path` {str(root)!r} is a non-empty directory without a data set: refusing to "
            "write into it (or to delete anything there)."
        )
    try:
        _, old = _attrs_of(root)
    except ValueError as e:
        raise FileExistsError(f"`path` {str(root)!r} holds no data set this library can "
                              f"continue or replace ({e}): refusing to touch it.") from None
    if overwrite:
        for name in _NODES:
            if (root / name).is_dir():
                shutil.rmtree(root / name)
            elif (root / name).exists():
                (root / name).unlink()
        for partial in [*root.glob("zarr.*.partial"), *root.glob(f"*{_RECORD_PREFIX}*")]:
            partial.unlink()
        return None
    if not resume:
        state = "complete" if old["complete"] else "incomplete"
        raise FileExistsError(
            f"A data set ({state}) already exists at {str(root)!r}. Pass `resume=True` to "
            "continue it with the same arguments, or `overwrite=True` to replace it."
        )
    differ = [k for k in _FINGERPRINT if old.get(k) != attrs[k]]
    if differ:
        lines = "; ".join(f"{k}: stored {old.get(k)!r}, given {attrs[k]!r}" for k in differ)
        raise ValueError(
            f"Cannot resume the data set at {str(root)!r}: its arguments differ ({lines}). "
            "Pass `overwrite=True` to replace it."
        )
    for name in _NODES:
        # Writes interrupted before their rename (zarr writes `<file>.<uuid>.partial`).
        for partial in (root / name).rglob("*.partial") if (root / name).is_dir() else ():
            partial.unlink()
    return old


# -- reading ---------------------------------------------------------------------------------


class Dataset:
    """A data set written by `generate_dataset`, read lazily.

    Opening reads only metadata (the `zarr.json` files) and checks that every storage
    chunk of every array is on disk. `ds[i]` reads the storage chunks holding
    trajectory `i` and nothing else, so data sets larger than memory are streamed;
    each chunk's CRC32C is checked as it is read. A `Dataset` is a plain Python
    object (not a pytree) and pickles, e.g. to data-loader workers.

    **Arguments:**

    - `path`: the store's directory.

    Raises `FileNotFoundError` when there is no data set at `path`, and `ValueError`
    naming the path when the generation is incomplete or the store is truncated (a
    missing chunk or metadata file) or corrupted (also on read: a chunk that fails
    its checksum).

    **Indexing:** `ds[i]` -> `[T, *state]`; `ds[i:j]`, `ds[[i, j, ...]]`, or a boolean
    mask -> `[k, T, *state]` (NumPy arrays). Out-of-range indices raise `IndexError`.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = pathlib.Path(path)
        group, attrs = _attrs_of(self.path)
        if not attrs["complete"]:
            raise ValueError(
                f"The data set at {str(self.path)!r} is incomplete (its generation was "
                "interrupted): call generate_dataset again with `resume=True`."
            )
        self.attrs = attrs
        if attrs["completed_chunks"] != list(range(self.n_chunks)):
            raise ValueError(f"Corrupted data set {str(self.path)!r}: completed_chunks "
                             f"does not list chunks 0..{self.n_chunks - 1}.")
        self._arrays = _open_arrays(self.path, group, attrs)
        for arr in self._arrays.values():
            self._check_files(arr, range(self.n_chunks))

    def __getstate__(self):
        return {"path": self.path, "attrs": self.attrs}

    def __setstate__(self, state):
        self.__dict__.update(state)
        group = zarr.open_group(self.path, mode="r", zarr_format=3, use_consolidated=False)
        self._arrays = _open_arrays(self.path, group, self.attrs)

    def __repr__(self) -> str:
        return (f"Dataset({str(self.path)!r}, shape={self.shape}, dtype={self.dtype}, "
                f"chunks={self.n_chunks})")

    # -- metadata -------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self.attrs["n_trajectories"])

    @property
    def shape(self) -> tuple[int, ...]:
        """`(n_trajectories, T, *state)`."""
        return (len(self), len(self.attrs["ts"]), *self.attrs["state_shape"])

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.attrs["dtype"])

    @property
    def ts(self) -> np.ndarray:
        """`Float[ndarray, "T"]`, the save times (float64, exactly as given)."""
        return np.asarray(self.attrs["ts"], dtype=np.float64)

    @property
    def dt(self) -> float:
        return float(self.attrs["dt"])

    @property
    def config(self) -> dict[str, Any]:
        """The user's `config`, as recorded (a copy)."""
        return json.loads(json.dumps(self.attrs["config"]))

    @property
    def chunk_size(self) -> int:
        return int(self.attrs["chunk_size"])

    @property
    def n_chunks(self) -> int:
        return math.ceil(len(self) / self.chunk_size)

    @property
    def chunk_sizes(self) -> list[int]:
        n, cs = len(self), self.chunk_size
        return [min(cs, n - c * cs) for c in range(self.n_chunks)]

    @property
    def blowup_index(self) -> np.ndarray:
        """`Int[ndarray, "n_trajectories"]`: per trajectory, the index into `ts` of the
        first non-finite state, or -1 (only ever >= 0 with `throw=False`)."""
        return self._rows("blowup_index", np.arange(len(self))).astype(np.int64)

    def trajectory_key(self, i: int) -> PRNGKeyArray:
        """The key $k_i$ trajectory `i` was generated from: `sample(k_i)` rebuilds its
        `(system, y0)`."""
        return jr.fold_in(_key_from_json(self.attrs["key"]), self._normalise_int(i))

    # -- data ---------------------------------------------------------------------------

    def chunk(self, c: int) -> np.ndarray:
        """Generation chunk `c`, `[chunk_sizes[c], T, *state]` (read from disk)."""
        if isinstance(c, bool) or not isinstance(c, (int, np.integer)):
            raise TypeError(f"chunk index must be an int, got {type(c).__name__}.")
        if not 0 <= c < self.n_chunks:
            raise IndexError(f"chunk {c} out of range for {self.n_chunks} chunks.")
        start = int(c) * self.chunk_size
        return self._rows("ys", np.arange(start, start + self.chunk_sizes[c]))

    def iter_chunks(self) -> Iterator[np.ndarray]:
        """Yield the generation chunks in order, each `[size, T, *state]`."""
        for c in range(self.n_chunks):
            yield self.chunk(c)

    def __iter__(self) -> Iterator[np.ndarray]:
        for arr in self.iter_chunks():
            yield from arr

    def __getitem__(self, index) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            return self._rows("ys", np.asarray([self._normalise_int(index)]))[0]
        return self._rows("ys", self._normalise_many(index))

    def params(self, index) -> dict[str, np.ndarray]:
        """The stored inputs of trajectories `index` (int, slice, list or mask): `"y0"`
        and `"system.<field path>"` for every array leaf of the system, stacked along a
        leading axis unless `index` is an int."""
        single = isinstance(index, (int, np.integer))
        idx = (np.asarray([self._normalise_int(index)]) if single
               else self._normalise_many(index))
        out = {name: self._rows("inputs/" + name, idx) for name in self.attrs["inputs"]}
        return {k: v[0] for k, v in out.items()} if single else out

    def system(self, index, like: solvers.AbstractSystem) -> solvers.AbstractSystem:
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
        """Read every storage chunk of every array (one at a time) and check its
        checksum, and the `time` array against the recorded save times; raises
        `ValueError` naming the first file that fails."""
        for arr in self._arrays.values():
            self._check_files(arr, range(self.n_chunks))
            for coords in itertools.product(*(range(k) for k in arr.cdata_shape)):
                self._read_block(arr, coords)
        if not np.array_equal(self._arrays["time"][:], self.ts):
            raise ValueError(f"Corrupted data set {str(self.path)!r}: the time array "
                             "differs from the recorded save times.")

    # -- helpers --------------------------------------------------------------------------

    def _check_files(self, arr: zarr.Array, chunks) -> None:
        if arr.path == "time":
            files = [(None, (0,), self.path / "time" / arr.metadata.encode_chunk_key((0,)))]
        else:
            files = _chunk_files(self.path, arr, chunks, self.chunk_size, len(self))
        for c, _, f in files:
            if not f.is_file():
                raise ValueError(
                    f"Truncated data set {str(self.path)!r}: {f.relative_to(self.path)} "
                    f"(of chunk {c}) is missing; regenerate it with generate_dataset(..., "
                    "resume=True)."
                )

    def _read_block(self, arr: zarr.Array, coords: tuple[int, ...]) -> np.ndarray:
        try:
            return arr.blocks[coords]
        except (ValueError, RuntimeError) as e:
            f = self.path / arr.path / arr.metadata.encode_chunk_key(coords)
            raise ValueError(f"Corrupted data set {str(self.path)!r}: chunk file "
                             f"{str(f)!r} cannot be decoded ({e}).") from e

    def _rows(self, name: str, idx: np.ndarray) -> np.ndarray:
        """Rows `idx` of array `name`, reading only the storage chunks holding them."""
        arr = self._arrays[name]
        if len(idx) == 0:
            return np.empty((0, *arr.shape[1:]), arr.dtype)
        uniq, inverse = np.unique(idx, return_inverse=True)
        chunks = np.unique(uniq // self.chunk_size).tolist()
        self._check_files(arr, chunks)
        contiguous = int(uniq[-1] - uniq[0]) + 1 == len(uniq)
        try:
            data = (arr[int(uniq[0]):int(uniq[-1]) + 1] if contiguous
                    else arr.oindex[uniq])
        except (ValueError, RuntimeError):
            # Name the chunk that fails (reads the blocks one by one: errors only).
            for _, coords, _ in _chunk_files(self.path, arr, chunks, self.chunk_size,
                                             len(self)):
                self._read_block(arr, coords)
            raise
        if len(uniq) == len(idx) and np.array_equal(uniq, idx):
            return data
        return data[inverse]

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
        return idx % n


def load_dataset(path: str | os.PathLike) -> Dataset:
    """Open the data set at `path` lazily: `Dataset(path)`."""
    return Dataset(path)
