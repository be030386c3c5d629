"""Reference data sets as zarr v3 stores: vmapped generation, chunked compressed
storage, lazy loading, resume after a crash, refusal of corrupted or truncated
stores, and reading by xarray."""

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
import xarray as xr
import zarr
from zarr.storage import LocalStore

import solvers
from hybrid.data import Dataset, generate_dataset, load_dataset
from hybrid.data._store import _chunk_shape

N, NU, DT = 64, 0.05, 0.05
TS = np.linspace(0.0, 1.0, 5)
CONFIG = {"system": "burgers", "n": N, "viscosity": NU, "forcing": "bar-sinai", "seed": 3}
# 4 trajectories x 2 save times x N float64: each generation chunk of `ys` is stored
# as 3 time chunks (2 + 2 + 1 save times), the layout of a very large state.
SMALL = 4 * 2 * N * 8
ROOT = Path(__file__).resolve().parents[1]


def sample(key):
    # Module-level, so that every generate_dataset call below reuses one compilation.
    kf, ku = jr.split(key)
    system = solvers.Burgers1D(N, NU, forcing=solvers.BurgersForcing.random(kf))
    return system, solvers.random_smooth_field(ku, N)


def _generate(path, **kwargs):
    kwargs = {
        "dt": DT,
        "n_trajectories": 6,
        "key": jr.key(3),
        "chunk_size": 4,
        "config": CONFIG,
        "progress": False,
        "max_chunk_bytes": SMALL,
        **kwargs,
    }
    return generate_dataset(path, sample, TS, **kwargs)


def _files(path) -> dict[str, bytes]:
    """Every chunk file (and array metadata) under `path`, by relative name; the root
    zarr.json is left out (it records the dates)."""
    out = {}
    for f in sorted(Path(path).rglob("*")):
        rel = f.relative_to(path).as_posix()
        if f.is_file() and rel != "zarr.json":
            out[rel] = f.read_bytes()
    return out


def _record_reads(monkeypatch) -> list[str]:
    keys = []
    real = LocalStore.get

    async def get(self, key, *args, **kwargs):
        keys.append(key)
        return await real(self, key, *args, **kwargs)

    monkeypatch.setattr(LocalStore, "get", get)
    return keys


def _attrs(path) -> dict:
    return json.loads((Path(path) / "zarr.json").read_text())["attributes"]


@pytest.fixture(scope="module")
def ds_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "burgers"
    _generate(path)
    return path


def test_layout_and_shapes(ds_path):
    ds = load_dataset(ds_path)
    assert len(ds) == 6 and ds.shape == (6, len(TS), N) and ds.dtype == np.float64
    assert ds.n_chunks == 2 and ds.chunk_sizes == [4, 2]
    assert sorted(os.listdir(ds_path)) == ["blowup_index", "inputs", "time", "ys", "zarr.json"]
    ys = zarr.open_array(ds_path / "ys", mode="r")
    assert ys.shape == (6, len(TS), N) and ys.chunks == (4, 2, N)
    assert ys.metadata.dimension_names == ("trajectory", "time", "x")
    codecs = [type(c).__name__ for c in ys.metadata.codecs]
    assert codecs == ["BytesCodec", "BloscCodec", "Crc32cCodec"]
    assert sorted(p.relative_to(ds_path / "ys").as_posix()
                  for p in (ds_path / "ys").rglob("*") if p.is_file()) == [
        "c/0/0/0", "c/0/1/0", "c/0/2/0", "c/1/0/0", "c/1/1/0", "c/1/2/0", "zarr.json"]
    assert sorted(os.listdir(ds_path / "inputs")) == [
        "system.forcing.amplitudes", "system.forcing.frequencies", "system.forcing.phases",
        "system.forcing.wavenumbers", "y0", "zarr.json"]
    # Compressed: 2 full chunks of 4 trajectories (the last one padded with NaN) take
    # 20 kB raw, 14 kB stored (float64 noise in the low bits compresses little).
    stored = sum(len(b) for k, b in _files(ds_path).items() if k.startswith("ys/c/"))
    assert stored < 0.8 * 8 * len(TS) * N * 8
    np.testing.assert_array_equal(ds.ts, TS)
    assert ds.dt == DT
    assert [c.shape for c in ds.iter_chunks()] == [(4, len(TS), N), (2, len(TS), N)]
    assert ds[2:5].shape == (3, len(TS), N)
    np.testing.assert_array_equal(ds[2:5], ds[:][2:5])
    np.testing.assert_array_equal(ds[[5, 0, -1]], np.stack([ds[5], ds[0], ds[5]]))
    np.testing.assert_array_equal(ds[np.arange(6) % 2 == 1], ds[1::2])
    np.testing.assert_array_equal(ds[[]], np.empty((0, len(TS), N)))
    np.testing.assert_array_equal(np.stack(list(ds)), ds[:])
    np.testing.assert_array_equal(np.concatenate(list(ds.iter_chunks())), ds[:])
    np.testing.assert_array_equal(ds.blowup_index, -np.ones(6))
    assert np.all(np.isfinite(ds[:])) and np.ptp(ds[:]) > 0.1
    ds.verify()


def test_chunk_shape():
    mib = 2**20
    # Small: one chunk holds chunk_size trajectories, all times, the whole state.
    assert _chunk_shape(32, (200, 64), 8, 64 * mib, time_axis=True) == (32, 200, 64)
    # 1M nodes x 200 times of float32 is 800 MB a trajectory: cut along time.
    assert _chunk_shape(1, (200, 10**6), 4, 64 * mib, time_axis=True) == (1, 16, 10**6)
    # 32 such trajectories do not fit at one time step: then trajectories (a divisor
    # of chunk_size), and the state only when a single state is too big.
    assert _chunk_shape(32, (200, 10**6), 4, 64 * mib, time_axis=True) == (16, 1, 10**6)
    assert _chunk_shape(24, (200, 3 * 10**6), 4, 64 * mib, time_axis=True) == (4, 1, 3 * 10**6)
    assert _chunk_shape(2, (5, 2**25), 4, 64 * mib, time_axis=True) == (1, 1, 2**24)
    assert _chunk_shape(8, (4096, 4096), 4, 64 * mib, time_axis=False) == (1, 4096, 4096)
    assert _chunk_shape(8, (8192, 4096), 4, 64 * mib, time_axis=False) == (1, 4096, 4096)
    for shape in [(1, 200, 10**6), (32, 200, 10**6), (7, 33, 513, 513)]:
        chunk = _chunk_shape(shape[0], shape[1:], 4, 64 * mib, time_axis=True)
        assert np.prod(chunk) * 4 <= 64 * mib and shape[0] % chunk[0] == 0


def test_trajectories_equal_direct_solves(ds_path):
    # Each stored trajectory is the unbatched solve of sample(fold_in(key, i)): the
    # vmapped generation changes only round-off (batched FFTs), far below 1e-12.
    ds = Dataset(ds_path)
    direct = eqx.filter_jit(lambda s, y0: solvers.solve(s, y0, TS, dt=DT).ys)
    like = sample(jr.key(0))[0]
    for i in range(6):
        key_i = jr.fold_in(jr.key(3), i)
        assert jnp.array_equal(jr.key_data(ds.trajectory_key(i)), jr.key_data(key_i))
        system, y0 = sample(key_i)
        ref = np.asarray(direct(system, y0))
        assert np.max(np.abs(ds[i] - ref)) < 1e-12, i
        params = ds.params(i)
        # y0 = u(key) recomputed outside vmap differs by round-off (a max-normalisation).
        np.testing.assert_allclose(params["y0"], y0, rtol=0, atol=1e-14)
        np.testing.assert_array_equal(params["system.forcing.amplitudes"],
                                      system.forcing.amplitudes)
        rebuilt = ds.system(i, like=like)  # the stored forcing rebuilds the same system
        assert bool(eqx.tree_equal(rebuilt, system))
    batched = ds.system([4, 1], like=like)
    assert batched.forcing.phases.shape == (2, 20)
    np.testing.assert_array_equal(batched.forcing.phases[0], ds.system(4, like).forcing.phases)
    assert ds.system(slice(0, 6), like).forcing.amplitudes.shape == (6, 20)
    other = solvers.Burgers1D(N, NU, forcing=solvers.BurgersForcing.random(jr.key(0),
                                                                         n_modes=5))
    match = r"leaf 'system.forcing.amplitudes' has shape \(5,\), the data set stores \(20,\)"
    with pytest.raises(ValueError, match=match):
        ds.system(0, like=other)


def test_loading_is_lazy(ds_path, monkeypatch):
    keys = _record_reads(monkeypatch)
    ds = load_dataset(ds_path)
    assert keys and all(k.endswith("zarr.json") for k in keys)  # metadata only
    keys.clear()
    traj = ds[5]
    # Only the storage chunks of trajectory 5: generation chunk 1, its 3 time chunks.
    assert sorted(keys) == ["ys/c/1/0/0", "ys/c/1/1/0", "ys/c/1/2/0"]
    assert type(traj) is np.ndarray and traj.shape == (len(TS), N)
    keys.clear()
    ds[[0, 2]]
    assert sorted(keys) == ["ys/c/0/0/0", "ys/c/0/1/0", "ys/c/0/2/0"]
    keys.clear()
    ds.params(1)
    assert sorted(keys) == sorted(f"inputs/{name}/c/0/0" for name in ds.attrs["inputs"])
    # Pickles (for data-loader workers), and the copy reads the same data.
    clone = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(clone[3], ds[3])


def test_config_round_trips(ds_path):
    ds = Dataset(ds_path)
    assert ds.config == CONFIG
    attrs = _attrs(ds_path)
    assert attrs["format"] == "neuroscale-dataset" and attrs["format_version"] == 2
    assert attrs["config"] == CONFIG and attrs["complete"] is True
    assert attrs["n_trajectories"] == 6 and attrs["chunk_size"] == 4
    assert attrs["state_shape"] == [N] and attrs["dtype"] == "float64"
    assert attrs["state_dims"] == ["x"]
    assert attrs["system"] == "solvers._burgers.Burgers1D"
    assert attrs["ts"] == TS.tolist() and attrs["dt"] == DT
    assert attrs["key"]["data"] == np.asarray(jr.key_data(jr.key(3))).tolist()
    assert {"jax", "equinox", "diffrax", "numpy", "zarr"} <= set(attrs["versions"])
    assert attrs["completed_chunks"] == [0, 1]
    assert attrs["inputs"]["y0"] == {"shape": [N], "dtype": "float64"}


def test_xarray_reads_it(ds_path):
    ds = Dataset(ds_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        xds = xr.open_zarr(ds_path)
    assert not [w for w in caught if "consolidated" in str(w.message)]  # metadata consolidated
    assert xds["ys"].dims == ("trajectory", "time", "x")
    assert "time" in xds.coords
    np.testing.assert_array_equal(xds["time"].values, TS)
    np.testing.assert_array_equal(xds["ys"].values, ds[:])
    np.testing.assert_array_equal(xds["ys"].sel(time=0.5).values, ds[:][:, 2])
    np.testing.assert_array_equal(xds["blowup_index"].values, ds.blowup_index)
    assert xds.attrs["config"] == CONFIG
    inputs = xr.open_zarr(ds_path, group="inputs")
    np.testing.assert_array_equal(inputs["y0"].values, ds.params(slice(None))["y0"])
    assert inputs["y0"].dims == ("trajectory", "x")


def _crash_on_write(monkeypatch, prefix, crash):
    """Call `crash()` right after the first file under `prefix` is written."""
    real = LocalStore.set

    async def set_(self, key, value, *args, **kwargs):
        await real(self, key, value, *args, **kwargs)
        if key.startswith(prefix):
            crash()

    monkeypatch.setattr(LocalStore, "set", set_)


def test_resume_after_crash_gives_the_same_bytes(ds_path, tmp_path, monkeypatch):
    path = tmp_path / "crashed"

    def crash():
        raise RuntimeError("simulated crash")

    # A crash after the first time chunk of generation chunk 1 reached the disk.
    with monkeypatch.context() as m:
        _crash_on_write(m, "ys/c/1/", crash)
        with pytest.raises(RuntimeError, match="simulated crash"):
            _generate(path)
    attrs = _attrs(path)
    assert attrs["completed_chunks"] == [0] and attrs["complete"] is False
    assert any((path / "ys" / "c" / "1").rglob("*"))  # chunk 1 was partly written
    with pytest.raises(ValueError, match="incomplete.*resume=True"):
        load_dataset(path)
    with pytest.raises(FileExistsError, match="incomplete.*resume=True"):
        _generate(path)
    with pytest.raises(ValueError, match=f"Cannot resume.*{path}.*config: stored"):
        _generate(path, resume=True, config={**CONFIG, "seed": 4})
    with pytest.raises(ValueError, match="Cannot resume.*key: stored"):
        _generate(path, resume=True, key=jr.key(4))
    with pytest.raises(ValueError, match="Cannot resume.*n_trajectories: stored"):
        _generate(path, resume=True, n_trajectories=7)
    first = os.stat(path / "ys" / "c" / "0" / "0" / "0").st_mtime_ns

    reads = _record_reads(monkeypatch)
    ds = _generate(path, resume=True)
    assert not [k for k in reads if "/c/0" in k]  # chunk 0 is neither read ...
    assert os.stat(path / "ys" / "c" / "0" / "0" / "0").st_mtime_ns == first  # ... nor rewritten
    assert _files(path) == _files(ds_path)  # the same bytes as an uninterrupted run
    np.testing.assert_array_equal(ds[:], Dataset(ds_path)[:])
    ds.verify()

    # Resuming a complete data set writes nothing.
    stamp = os.stat(path / "zarr.json").st_mtime_ns
    _generate(path, resume=True)
    assert os.stat(path / "zarr.json").st_mtime_ns == stamp

    # A completed chunk whose file vanished is refused, then regenerated by resume.
    (path / "ys" / "c" / "0" / "1" / "0").unlink()
    with pytest.raises(ValueError, match="Truncated.*ys/c/0/1/0.*chunk 0.*resume=True"):
        load_dataset(path)
    _generate(path, resume=True)
    assert _files(path) == _files(ds_path)
    # So is a whole array that vanished (every chunk then lacks a part).
    shutil.rmtree(path / "inputs" / "y0")
    with pytest.raises(ValueError, match="Truncated.*inputs/y0/zarr.json is missing"):
        load_dataset(path)
    _generate(path, resume=True)
    assert _files(path) == _files(ds_path)


_KILLED_RUN = """
import os, signal, sys
import jax
jax.config.update("jax_enable_x64", True)
sys.path.insert(0, "tests")
import test_store
test_store._crash_on_write(test_store.pytest.MonkeyPatch(), "ys/c/1/",
                           lambda: os.kill(os.getpid(), signal.SIGKILL))
test_store._generate(sys.argv[1])
"""


def test_sigkill_mid_chunk_loses_only_that_chunk(ds_path, tmp_path):
    # A real crash: the process is killed (no exception handler, no cleanup runs)
    # once part of chunk 1 is on disk.
    path = tmp_path / "killed"
    run = subprocess.run([sys.executable, "-c", _KILLED_RUN, str(path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == -signal.SIGKILL, run.stderr[-3000:]
    attrs = _attrs(path)
    assert attrs["completed_chunks"] == [0] and attrs["complete"] is False
    assert any(p.is_file() for p in (path / "ys" / "c" / "1").rglob("*"))
    for name, data in _files(path).items():
        if "/c/0" in name:
            assert data == _files(ds_path)[name], name  # chunk 0 intact
    with pytest.raises(ValueError, match="incomplete"):
        load_dataset(path)
    ds = _generate(path, resume=True)
    assert _files(path) == _files(ds_path)
    np.testing.assert_array_equal(ds[:], Dataset(ds_path)[:])


def _flip(file: Path) -> None:
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    file.write_bytes(bytes(data))


def test_corrupted_chunk_is_refused(ds_path, tmp_path):
    path = tmp_path / "corrupt"
    shutil.copytree(ds_path, path)
    bad = path / "ys" / "c" / "1" / "1" / "0"
    _flip(bad)
    ds = load_dataset(path)  # opening checks structure only, reads no chunk
    np.testing.assert_array_equal(ds[0], Dataset(ds_path)[0])  # other chunks still read
    for read in (lambda: ds[4], lambda: ds[:], lambda: ds.chunk(1), ds.verify):
        with pytest.raises(ValueError, match=f"Corrupted data set.*{bad}.*checksum"):
            read()
    # A truncated chunk file and corrupted inputs likewise.
    shutil.copy(ds_path / "ys" / "c" / "1" / "1" / "0", bad)
    bad.write_bytes(bad.read_bytes()[:-7])
    with pytest.raises(ValueError, match=f"Corrupted data set.*{bad}"):
        ds[5]
    shutil.copy(ds_path / "ys" / "c" / "1" / "1" / "0", bad)
    ds.verify()
    bad = path / "inputs" / "system.forcing.phases" / "c" / "0" / "0"
    _flip(bad)
    with pytest.raises(ValueError, match=f"Corrupted data set.*{bad}"):
        ds.params(2)
    with pytest.raises(ValueError, match=f"Corrupted data set.*{bad}"):
        ds.verify()


@pytest.mark.parametrize(
    "remove, match",
    [
        ("ys/c/1/2/0", r"Truncated.*ys/c/1/2/0 \(of chunk 1\) is missing"),
        ("inputs/y0/c/0/0", r"Truncated.*inputs/y0/c/0/0 \(of chunk 0\)"),
        ("blowup_index/c/1", r"Truncated.*blowup_index/c/1"),
        ("time/c/0", r"Truncated.*time/c/0"),
        ("ys/zarr.json", r"Truncated.*ys/zarr.json is missing"),
        ("inputs/system.forcing.phases", r"Truncated.*system.forcing.phases/zarr.json"),
        ("zarr.json", r"Truncated.*zarr.json is missing"),
    ],
)
def test_truncated_store_is_refused(ds_path, tmp_path, remove, match):
    path = tmp_path / "truncated"
    shutil.copytree(ds_path, path)
    target = path / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(ValueError, match=match) as info:
        load_dataset(path)
    assert str(path) in str(info.value)


def test_missing_or_corrupted_metadata(ds_path, tmp_path):
    with pytest.raises(FileNotFoundError, match="No data set.*not a directory"):
        Dataset(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="No data set.*zarr.json is missing"):
        Dataset(tmp_path / "empty")
    path = tmp_path / "corrupt"
    shutil.copytree(ds_path, path)
    meta = json.loads((path / "zarr.json").read_text())
    (path / "zarr.json").write_text('{"zarr_format": 3, "node_ty')
    with pytest.raises(ValueError, match="Corrupted data set.*zarr.json"):
        Dataset(path)
    zarr.create_group(tmp_path / "other", zarr_format=3, attributes={"hello": 1})
    with pytest.raises(ValueError, match="not a neuroscale-dataset"):
        Dataset(tmp_path / "other")

    def write(**attributes):
        (path / "zarr.json").write_text(json.dumps(
            {**meta, "attributes": {**meta["attributes"], **attributes}}))

    write(completed_chunks=[1])
    with pytest.raises(ValueError, match="completed_chunks"):
        Dataset(path)
    write(format_version=1)
    with pytest.raises(ValueError, match="format version 1"):
        Dataset(path)
    write(state_shape=[N + 1])
    with pytest.raises(ValueError, match=r"ys has shape \(6, 5, 64\).*\(6, 5, 65\)"):
        Dataset(path)
    write()
    Dataset(path)


def test_out_of_range(ds_path):
    ds = Dataset(ds_path)
    with pytest.raises(IndexError, match="out of range"):
        ds[6]
    with pytest.raises(IndexError, match="out of range"):
        ds[-7]
    with pytest.raises(IndexError, match="out of range"):
        ds[[0, 9]]
    with pytest.raises(IndexError, match="out of range"):
        ds.params(6)
    with pytest.raises(IndexError, match="out of range"):
        ds.chunk(2)
    with pytest.raises(IndexError, match="boolean mask"):
        ds[np.ones(5, bool)]
    with pytest.raises(TypeError, match="index"):
        ds[1.5]


def test_overwrite_protection(ds_path, tmp_path):
    path = tmp_path / "again"
    shutil.copytree(ds_path, path)
    (path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="already exists.*overwrite=True"):
        _generate(path)
    with pytest.raises(ValueError, match="`resume` and `overwrite`"):
        _generate(path, resume=True, overwrite=True)
    ds = _generate(path, overwrite=True, n_trajectories=4)
    assert ds.shape == (4, len(TS), N)
    assert sorted(os.listdir(path)) == [
        "blowup_index", "inputs", "notes.txt", "time", "ys", "zarr.json"]
    assert sorted(os.listdir(path / "ys" / "c")) == ["0"]
    np.testing.assert_array_equal(ds[:], Dataset(ds_path)[:4])
    other = tmp_path / "not_a_dataset"
    other.mkdir()
    (other / "thesis.tex").write_text("precious")
    with pytest.raises(FileExistsError, match="without a data set"):
        _generate(other, overwrite=True)
    assert (other / "thesis.tex").read_text() == "precious"
    zarr.create_group(tmp_path / "foreign", zarr_format=3, attributes={"hello": 1})
    with pytest.raises(FileExistsError, match="refusing to touch it"):
        _generate(tmp_path / "foreign", overwrite=True)
    assert _attrs(tmp_path / "foreign") == {"hello": 1}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"chunk_size": 0}, "`chunk_size`"),
        ({"chunk_size": 2.0}, "`chunk_size`"),
        ({"n_trajectories": 0}, "`n_trajectories`"),
        ({"n_trajectories": -3}, "`n_trajectories`"),
        ({"dt": 0.0}, "`dt`"),
        ({"key": 3}, "`key`"),
        ({"config": {"f": sample}}, "`config`"),
        ({"config": {"nu": float("nan")}}, "`config`"),
        ({"solve_kwargs": {"dt": 0.1}}, "`solve_kwargs`"),
        ({"max_chunk_bytes": 0}, "`max_chunk_bytes`"),
        ({"state_dims": ("y", "x")}, "`state_dims`"),
        ({"state_dims": ("time",)}, "`state_dims`"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        _generate(tmp_path / "bad", **kwargs)
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("ts", [[0.0, 0.5, 0.5, 1.0], [1.0, 0.0], [[0.0, 1.0]], []])
def test_bad_ts(tmp_path, ts):
    with pytest.raises(ValueError, match="`ts`"):
        generate_dataset(tmp_path / "bad", sample, ts, dt=DT, n_trajectories=2,
                         key=jr.key(0), progress=False)


def test_bad_sample(tmp_path):
    with pytest.raises(ValueError, match="AbstractSystem"):
        generate_dataset(tmp_path / "bad", lambda k: (None, jnp.zeros(N)), TS, dt=DT,
                         n_trajectories=2, key=jr.key(0), progress=False)
    with pytest.raises(ValueError, match="`y0` must have shape"):
        generate_dataset(tmp_path / "bad", lambda k: (sample(k)[0], jnp.zeros(N + 1)), TS,
                         dt=DT, n_trajectories=2, key=jr.key(0), progress=False)


def _nan_sample(key):
    system, y0 = sample(key)
    return system, y0 * jnp.where(jr.uniform(key) < 0.5, jnp.nan, 1.0)


def test_blowup_raises_or_is_recorded(tmp_path):
    kwargs = {"dt": DT, "n_trajectories": 6, "chunk_size": 6, "key": jr.PRNGKey(0),
              "progress": False}
    bad = [i for i in range(6) if jr.uniform(jr.fold_in(jr.PRNGKey(0), i)) < 0.5]
    assert 0 < len(bad) < 6
    with pytest.raises(RuntimeError, match=rf"{len(bad)} trajectories .* blew up.*throw=False"):
        generate_dataset(tmp_path / "nan", _nan_sample, TS, **kwargs)
    assert not (tmp_path / "nan" / "ys" / "c").exists()
    ds = generate_dataset(tmp_path / "nan", _nan_sample, TS, throw=False, resume=True,
                          **kwargs)
    np.testing.assert_array_equal(np.flatnonzero(ds.blowup_index >= 0), bad)
    assert np.all(ds.blowup_index[bad] == 0)
    assert np.all(np.isnan(ds[bad[0]])) and np.all(np.isfinite(np.delete(ds[:], bad, 0)))
    ds.verify()


def test_filter_fn_is_applied_before_storing(ds_path, tmp_path):
    # E.g. coarse-graining: keep every other grid point; float32 storage; the default
    # layout (one storage chunk per generation chunk).
    ds = generate_dataset(tmp_path / "coarse", sample, TS, dt=DT, n_trajectories=6,
                          key=jr.key(3), chunk_size=4, config=CONFIG, progress=False,
                          filter_fn=lambda ys: ys[:, ::2].astype(jnp.float32),
                          state_dims=("x_coarse",))
    assert ds.shape == (6, len(TS), N // 2) and ds.dtype == np.float32
    np.testing.assert_array_equal(ds[:], Dataset(ds_path)[:][:, :, ::2].astype(np.float32))
    assert zarr.open_array(tmp_path / "coarse" / "ys", mode="r").chunks == (4, len(TS), N // 2)
    xds = xr.open_zarr(tmp_path / "coarse")
    assert xds["ys"].dims == ("trajectory", "time", "x_coarse")
    # The fine initial state is kept as it was (a different dimension).
    assert ds.params(0)["y0"].shape == (N,)
    np.testing.assert_array_equal(ds.params(slice(None))["y0"],
                                  Dataset(ds_path).params(slice(None))["y0"])
