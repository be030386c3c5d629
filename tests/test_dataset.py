"""Reference data sets: vmapped generation, chunked storage, lazy loading, resume."""

import json
import os
import pickle
import shutil

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import solvers
from solvers import _dataset

N, NU, DT = 64, 0.05, 0.05
TS = np.linspace(0.0, 1.0, 5)
CONFIG = {"system": "burgers", "n": N, "viscosity": NU, "forcing": "bar-sinai", "seed": 3}


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
        **kwargs,
    }
    return solvers.generate_dataset(path, sample, TS, **kwargs)


@pytest.fixture(scope="module")
def ds_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "burgers"
    _generate(path)
    return path


def test_layout_and_shapes(ds_path):
    ds = solvers.load_dataset(ds_path)
    assert len(ds) == 6 and ds.shape == (6, len(TS), N) and ds.dtype == np.float64
    assert ds.n_chunks == 2 and ds.chunk_sizes == [4, 2]
    assert sorted(os.listdir(ds_path)) == [
        "chunk_00000.npy", "chunk_00001.npy", "index.json", "params_00000.npz",
        "params_00001.npz",
    ]
    assert np.load(ds_path / "chunk_00001.npy").shape == (2, len(TS), N)
    np.testing.assert_array_equal(ds.ts, TS)
    assert ds.dt == DT
    assert [c.shape for c in ds.iter_chunks()] == [(4, len(TS), N), (2, len(TS), N)]
    assert ds[2:5].shape == (3, len(TS), N)
    np.testing.assert_array_equal(ds[[5, 0, -1]], np.stack([ds[5], ds[0], ds[5]]))
    np.testing.assert_array_equal(ds[np.arange(6) % 2 == 1], ds[1::2])
    np.testing.assert_array_equal(np.stack(list(ds)), ds[:])
    np.testing.assert_array_equal(ds.blowup_index, -np.ones(6))
    ds.verify()


def test_trajectories_equal_direct_solves(ds_path):
    # Each stored trajectory is the unbatched solve of sample(fold_in(key, i)): the
    # vmapped generation changes only round-off (batched FFTs), far below 1e-12.
    ds = solvers.Dataset(ds_path)
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
        # The stored forcing rebuilds the same system.
        rebuilt = ds.system(i, like=like)
        assert bool(eqx.tree_equal(rebuilt, system))
    batched = ds.system([4, 1], like=like)
    assert batched.forcing.phases.shape == (2, 20)
    np.testing.assert_array_equal(batched.forcing.phases[0], ds.system(4, like).forcing.phases)


def test_loading_is_lazy(ds_path, monkeypatch):
    calls = []
    real_load = np.load

    def counting_load(file, *args, **kwargs):
        calls.append((os.path.basename(file), kwargs.get("mmap_mode")))
        return real_load(file, *args, **kwargs)

    monkeypatch.setattr(_dataset.np, "load", counting_load)
    ds = solvers.Dataset(ds_path)
    assert calls == []  # opening reads the index only
    traj = ds[5]
    assert calls == [("chunk_00001.npy", "r")]  # only the chunk holding 5, memory-mapped
    assert type(traj) is np.ndarray and traj.shape == (len(TS), N)
    assert isinstance(ds.chunk(1), np.memmap)
    ds[4]
    assert len(calls) == 1  # the open memory map is reused
    assert isinstance(ds.chunk(0), np.memmap) and len(calls) == 2
    # Pickles without its memory maps (for data-loader workers).
    clone = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(clone[3], ds[3])


def test_config_round_trips(ds_path):
    ds = solvers.Dataset(ds_path)
    assert ds.config == CONFIG
    index = json.loads((ds_path / "index.json").read_text())
    assert index["config"] == CONFIG
    assert index["n_trajectories"] == 6 and index["chunk_size"] == 4
    assert index["state_shape"] == [N] and index["dtype"] == "float64"
    assert index["system"] == "solvers._burgers.Burgers1D"
    assert index["ts"] == TS.tolist() and index["dt"] == DT
    assert {"jax", "equinox", "diffrax", "numpy"} <= set(index["versions"])
    assert [c["file"] for c in index["chunks"]] == ["chunk_00000.npy", "chunk_00001.npy"]


def test_resume_after_crash_gives_the_same_bytes(ds_path, tmp_path):
    path = tmp_path / "crashed"
    shutil.copytree(ds_path, path)
    original = (ds_path / "chunk_00001.npy").read_bytes()
    original_params = (ds_path / "params_00001.npz").read_bytes()
    # What a crash during the last chunk leaves: the index lists chunk 0 only and is
    # not complete; the last chunk is missing or half-written to its temporary file.
    index = json.loads((path / "index.json").read_text())
    index["complete"] = False
    index["chunks"] = index["chunks"][:1]
    (path / "index.json").write_text(json.dumps(index))
    (path / "chunk_00001.npy").unlink()
    (path / "chunk_00001.npy.tmp").write_bytes(original[:100])
    with pytest.raises(ValueError, match="incomplete.*resume=True"):
        solvers.Dataset(path)
    with pytest.raises(FileExistsError, match="incomplete.*resume=True"):
        _generate(path)
    with pytest.raises(ValueError, match="Cannot resume.*config"):
        _generate(path, resume=True, config={**CONFIG, "seed": 4})
    first = os.stat(path / "chunk_00000.npy").st_mtime_ns

    ds = _generate(path, resume=True)
    assert (path / "chunk_00001.npy").read_bytes() == original
    assert (path / "params_00001.npz").read_bytes() == original_params
    assert os.stat(path / "chunk_00000.npy").st_mtime_ns == first  # skipped, not rewritten
    assert not (path / "chunk_00001.npy.tmp").exists()
    np.testing.assert_array_equal(ds[:], solvers.Dataset(ds_path)[:])

    # A listed chunk whose file vanished is regenerated too.
    (path / "chunk_00000.npy").unlink()
    with pytest.raises(FileNotFoundError, match="chunk_00000.npy"):
        solvers.Dataset(path)
    _generate(path, resume=True)
    assert (path / "chunk_00000.npy").read_bytes() == (ds_path / "chunk_00000.npy").read_bytes()


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
        "chunk_00000.npy", "index.json", "notes.txt", "params_00000.npz"
    ]
    other = tmp_path / "not_a_dataset"
    other.mkdir()
    (other / "thesis.tex").write_text("precious")
    with pytest.raises(FileExistsError, match="without a data set"):
        _generate(other, overwrite=True)
    assert (other / "thesis.tex").read_text() == "precious"


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
    ],
)
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        _generate(tmp_path / "bad", **kwargs)
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("ts", [[0.0, 0.5, 0.5, 1.0], [1.0, 0.0], [[0.0, 1.0]]])
def test_bad_ts(tmp_path, ts):
    with pytest.raises(ValueError, match="`ts`"):
        solvers.generate_dataset(tmp_path / "bad", sample, ts, dt=DT, n_trajectories=2,
                                 key=jr.key(0), progress=False)


def test_bad_sample(tmp_path):
    with pytest.raises(ValueError, match="AbstractSystem"):
        solvers.generate_dataset(tmp_path / "bad", lambda k: (None, jnp.zeros(N)), TS, dt=DT,
                                 n_trajectories=2, key=jr.key(0), progress=False)
    with pytest.raises(ValueError, match="`y0` must have shape"):
        solvers.generate_dataset(tmp_path / "bad", lambda k: (sample(k)[0], jnp.zeros(N + 1)),
                                 TS, dt=DT, n_trajectories=2, key=jr.key(0), progress=False)


def test_missing_or_corrupted_index(ds_path, tmp_path):
    with pytest.raises(FileNotFoundError, match="No data set"):
        solvers.Dataset(tmp_path / "nothing")
    path = tmp_path / "corrupt"
    shutil.copytree(ds_path, path)
    (path / "index.json").write_text('{"format": "neuroscale-dataset", "vers')
    with pytest.raises(ValueError, match="not valid JSON"):
        solvers.Dataset(path)
    (path / "index.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(ValueError, match="not a neuroscale-dataset index"):
        solvers.Dataset(path)
    index = json.loads((ds_path / "index.json").read_text())
    index["chunks"][1]["start"] = 3
    (path / "index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="do not cover"):
        solvers.Dataset(path)
    (path / "index.json").unlink()
    with pytest.raises(FileNotFoundError, match="index.json is missing"):
        solvers.Dataset(path)


def test_out_of_range_and_tampered_chunks(ds_path, tmp_path):
    ds = solvers.Dataset(ds_path)
    with pytest.raises(IndexError, match="out of range"):
        ds[6]
    with pytest.raises(IndexError, match="out of range"):
        ds[-7]
    with pytest.raises(IndexError, match="out of range"):
        ds[[0, 9]]
    with pytest.raises(IndexError, match="out of range"):
        ds.params(6)
    with pytest.raises(TypeError, match="index"):
        ds[1.5]
    path = tmp_path / "tampered"
    shutil.copytree(ds_path, path)
    np.save(path / "chunk_00001.npy", np.zeros((2, len(TS), N + 1)))
    bad = solvers.Dataset(path)
    bad[0]
    with pytest.raises(ValueError, match="chunk_00001.npy has shape"):
        bad[4]
    with pytest.raises(ValueError, match="chunk_00001.npy does not match its SHA-256"):
        bad.verify()


def _nan_sample(key):
    system, y0 = sample(key)
    return system, y0 * jnp.where(jr.uniform(key) < 0.5, jnp.nan, 1.0)


def test_blowup_raises_or_is_recorded(tmp_path):
    kwargs = {"dt": DT, "n_trajectories": 6, "chunk_size": 6, "key": jr.PRNGKey(0),
              "progress": False}
    bad = [i for i in range(6) if jr.uniform(jr.fold_in(jr.PRNGKey(0), i)) < 0.5]
    assert 0 < len(bad) < 6
    with pytest.raises(RuntimeError, match=rf"{len(bad)} trajectories .* blew up.*throw=False"):
        solvers.generate_dataset(tmp_path / "nan", _nan_sample, TS, **kwargs)
    assert not (tmp_path / "nan" / "chunk_00000.npy").exists()
    ds = solvers.generate_dataset(tmp_path / "nan", _nan_sample, TS, throw=False, resume=True,
                                  **kwargs)
    np.testing.assert_array_equal(np.flatnonzero(ds.blowup_index >= 0), bad)
    assert np.all(ds.blowup_index[bad] == 0)
    assert np.all(np.isnan(ds[bad[0]])) and np.all(np.isfinite(np.delete(ds[:], bad, 0)))


def test_filter_fn_is_applied_before_storing(ds_path, tmp_path):
    # E.g. coarse-graining: keep every other grid point; float32 storage.
    ds = _generate(tmp_path / "coarse",
                   filter_fn=lambda ys: ys[:, ::2].astype(jnp.float32))
    assert ds.shape == (6, len(TS), N // 2) and ds.dtype == np.float32
    np.testing.assert_array_equal(ds[:], solvers.Dataset(ds_path)[:][:, :, ::2].astype(np.float32))
