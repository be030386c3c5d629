"""Past one machine with `jax.distributed`: two local CPU processes (one device each,
on the loopback interface) generate one data set together and train a 2-member
ensemble with one member per process, with orbax checkpoints and a resume; the
results are compared with the same program run as a single process. Plus the
bookkeeping of an interrupted multi-process generation, checked in this process."""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import orbax.checkpoint as ocp
import pytest

import hybrid
import solvers
from hybrid.closures import StencilClosure
from hybrid.data import generate_dataset, load_dataset

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 300  # seconds for one launch; every process is killed after it

# What every process runs: argv = process id, process count, coordinator port, out dir,
# and "1" to stop the training after 2 of its 4 steps and resume it, or "0".
WORKER = textwrap.dedent(
    """
    import json, socket, sys
    from pathlib import Path
    import jax

    pid, nproc, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
    interrupt = sys.argv[5] == "1"
    if nproc > 1:
        try:
            # gloo's TCP transport listens on the address of this machine's hostname
            # unless told otherwise: keep the test on the loopback interface (private
            # API; without it, run only where the hostname is loopback).
            from jax._src import distributed, xla_bridge
            from jaxlib import _jax

            def cpu_backend():
                gloo = _jax.make_gloo_tcp_collectives(
                    distributed_client=distributed.global_state.client,
                    hostname="127.0.0.1")
                return xla_bridge.make_cpu_client(collectives=gloo)

            xla_bridge.register_backend_factory("cpu", cpu_backend, priority=0,
                                                fail_quietly=False)
        except (ImportError, AttributeError, TypeError):
            if not socket.gethostbyname(socket.gethostname()).startswith("127."):
                sys.exit(77)
        jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}",
                                   num_processes=nproc, process_id=pid,
                                   initialization_timeout=60,
                                   heartbeat_timeout_seconds=30,
                                   shutdown_timeout_seconds=30)
    jax.config.update("jax_enable_x64", True)
    import equinox as eqx, jax.numpy as jnp, jax.random as jr, numpy as np
    import hybrid, solvers
    import hybrid.data._store as store
    from hybrid.closures import StencilClosure
    from hybrid.data import generate_dataset

    # which chunks this process generates (their first trajectory)
    starts, run_chunk = [], store._run_chunk
    store._run_chunk = lambda *a: (starts.append(int(a[2])), run_chunk(*a))[1]

    def sample(key):
        return solvers.Burgers1D(32, 0.05), solvers.random_smooth_field(key, 32)

    def coarse(ys):
        return hybrid.coarse_grain(ys, 16, ndim=1)

    data = dict(dt=0.02, n_trajectories=5, key=jr.PRNGKey(7), chunk_size=2,
                filter_fn=coarse, progress=False)
    ds = generate_dataset(out / "data", sample, np.linspace(0.0, 1.0, 6), **data)
    train = hybrid.Trajectories(jnp.asarray(ds[:]), ds.ts)
    make = lambda k: StencilClosure(1, key=k, width=4, depth=2)
    seen = []
    kw = dict(dt=0.05, key=jr.PRNGKey(0), horizon=2, steps=4, members=2, batch_size=2,
              checkpoint_dir=out / "ckpt", checkpoint_every=2, curriculum=False,
              progress=False, callback=lambda s, m: seen.append([s, m["mse"].tolist()]))
    physics = solvers.Burgers1D(16, 0.05)
    if interrupt:
        hybrid.fit(physics, make, train, stop_after=2, **kw)
    ens = hybrid.fit(physics, make, train, **kw)
    params = [np.asarray(x) for x in jax.tree.leaves(ens.members) if eqx.is_array(x)]

    # errors are agreed on: no process is left waiting at a collective
    errors = []
    try:  # refused by process 0 alone (it checks the store)
        generate_dataset(out / "data", sample, np.linspace(0.0, 1.0, 6), resume=True,
                         **{**data, "n_trajectories": 6})
    except Exception as e:
        errors.append(f"{type(e).__name__}: {e}")
    if nproc > 1:
        try:
            hybrid.fit(physics, make, train, **{**kw, "members": 3, "checkpoint_dir": None})
        except Exception as e:
            errors.append(f"{type(e).__name__}: {e}")
    print("RESULT" + json.dumps({
        "process": jax.process_index(), "processes": jax.process_count(),
        "devices": len(jax.devices()), "local_devices": len(jax.local_devices()),
        "chunk_starts": starts, "params": [x.tolist() for x in params],
        "callback": seen, "errors": errors,
    }), flush=True)
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(out: Path, nproc: int, *, devices: int = 1, interrupt: bool) -> list[dict]:
    """Run WORKER as `nproc` processes with `devices` CPU devices each and return what
    each printed; every process is killed if the launch exceeds TIMEOUT."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT),
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    port = _free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(i), str(nproc), str(port), str(out),
             "1" if interrupt else "0"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(nproc)
    ]
    deadline = time.monotonic() + TIMEOUT
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=max(1.0, deadline - time.monotonic())))
    except subprocess.TimeoutExpired:
        pytest.fail(f"the {nproc}-process run took more than {TIMEOUT} s")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    if any(p.returncode == 77 for p in procs):
        pytest.skip("gloo cannot be held to the loopback interface on this machine")
    results = []
    for p, (stdout, stderr) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, stderr[-4000:]
        line = next(x for x in stdout.splitlines() if x.startswith("RESULT"))
        results.append(json.loads(line[len("RESULT"):]))
    return results


def _files(path: Path) -> dict[str, bytes]:
    """Every file under `path` by relative name, but the root zarr.json (it records the
    dates of the run)."""
    return {f.relative_to(path).as_posix(): f.read_bytes()
            for f in sorted(path.rglob("*")) if f.is_file() and f != path / "zarr.json"}


def _attrs(path: Path) -> dict:
    attrs = json.loads((path / "zarr.json").read_text())["attributes"]
    return {k: v for k, v in attrs.items() if k not in ("created", "completed")}


def _checkpoint(folder: Path, step: int) -> list[np.ndarray]:
    """The parameters stored in the orbax checkpoint `step`, restored whole by this
    (single) process."""
    one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    with ocp.StandardCheckpointer() as checkpointer:
        stored = checkpointer.metadata(folder / str(step) / "default").item_metadata.tree
        like = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype,
                                                           sharding=one_device), stored)
        tree = checkpointer.restore(folder / str(step) / "default", like)
    return [np.asarray(x) for x in tree["params"]]


def _log(folder: Path) -> list[tuple]:
    lines = (folder / "train_log.jsonl").read_text().splitlines()
    return [(r["step"], r["mse"], r["loss"]) for r in map(json.loads, lines)]


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    t0 = time.perf_counter()
    two = _launch(tmp_path / "two", 2, interrupt=True)
    t1 = time.perf_counter()
    # the same program in one process with 2 devices, and with 1 (members vmapped)
    wide = _launch(tmp_path / "wide", 1, devices=2, interrupt=False)[0]
    one = _launch(tmp_path / "one", 1, interrupt=False)[0]
    print(f"two processes {t1 - t0:.0f} s, the two single-process runs "
          f"{time.perf_counter() - t1:.0f} s")
    assert [r["process"] for r in two] == [0, 1]
    assert {(r["processes"], r["devices"], r["local_devices"]) for r in two} == {(2, 2, 1)}
    a = tmp_path / "two"

    # Data: 3 chunks, process 0 generates chunks 0 and 2, process 1 chunk 1; every
    # chunk and array metadata file bit for bit those of one process, the same
    # attributes (but the dates), no per-process record left.
    assert [r["chunk_starts"] for r in two] == [[0, 4], [2]]
    assert one["chunk_starts"] == [0, 2, 4]
    for ref in ("wide", "one"):
        assert _files(a / "data") == _files(tmp_path / ref / "data")
        assert _attrs(a / "data") == _attrs(tmp_path / ref / "data")
    assert _attrs(a / "data")["completed_chunks"] == [0, 1, 2]
    assert _attrs(a / "data")["complete"] is True
    np.testing.assert_array_equal(load_dataset(a / "data")[:],
                                  load_dataset(tmp_path / "one" / "data")[:])

    # Training: both processes return the whole ensemble, the same one.
    for x, y in zip(two[0]["params"], two[1]["params"], strict=True):
        np.testing.assert_array_equal(x, y)
    # Against one process with 2 devices (one member per device, the same compiled
    # per-device program): bit for bit, through the interruption and the resume.
    for x, y in zip(two[0]["params"], wide["params"], strict=True):
        np.testing.assert_array_equal(x, y)
    assert two[0]["callback"] == wide["callback"]
    # (the interrupted call logged its last step, 2, too)
    assert _log(a / "ckpt")[-1:] == _log(tmp_path / "wide" / "ckpt")
    # Against one process with 1 device, which vmaps both members in one program: XLA
    # fuses it differently, so round-off differs (measured: at most 1.4e-17 absolute
    # on parameters of size 1e-3..0.3 after 4 steps).
    for x, y in zip(two[0]["params"], one["params"], strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-15)
    for (s, mse), (s1, mse1) in zip(two[0]["callback"], one["callback"], strict=True):
        assert s == s1
        np.testing.assert_allclose(mse, mse1, rtol=1e-12)

    # Checkpoints: both members in every step, written by both processes, restored
    # whole by one process; the run's signature and log written once.
    for step in (2, 4):
        for x, y in zip(_checkpoint(a / "ckpt", step),
                        _checkpoint(tmp_path / "wide" / "ckpt", step), strict=True):
            np.testing.assert_array_equal(x, y)
    for x, y in zip(_checkpoint(a / "ckpt", 4), two[0]["params"], strict=True):
        np.testing.assert_array_equal(x, y)
    assert (a / "ckpt" / "fit.json").read_text() == (
        tmp_path / "one" / "ckpt" / "fit.json").read_text()
    assert [s for s, *_ in _log(a / "ckpt")] == [2, 4]

    # A checkpoint of two processes resumed by one (here, this process): each process
    # restores whole arrays, so the number of processes may change between runs.
    shutil.copytree(a / "ckpt", tmp_path / "moved")
    shutil.rmtree(tmp_path / "moved" / "4")
    ds = load_dataset(a / "data")
    resumed = hybrid.fit(solvers.Burgers1D(16, 0.05),
                         lambda k: StencilClosure(1, key=k, width=4, depth=2),
                         hybrid.Trajectories(jnp.asarray(ds[:]), ds.ts), dt=0.05,
                         key=jr.PRNGKey(0), horizon=2, steps=4, members=2, batch_size=2,
                         checkpoint_dir=tmp_path / "moved", checkpoint_every=2,
                         curriculum=False, progress=False)
    assert [s for s, *_ in _log(tmp_path / "moved")] == [2, 4]
    leaves = [x for x in jax.tree.leaves(resumed.members) if eqx.is_array(x)]
    for x, y in zip(leaves, one["params"], strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-15)

    # Errors: the refused resume raises on process 0 and, agreed, on process 1.
    assert one["errors"][0].startswith("ValueError: Cannot resume")
    assert two[0]["errors"][0].startswith("ValueError: Cannot resume")
    assert two[1]["errors"][0].startswith(
        "RuntimeError: generate_dataset: preparing") and "process(es) [0]" in two[1]["errors"][0]
    # 3 members cannot be split over 2 processes: refused alike by both
    for r in two:
        assert r["errors"][1].startswith("ValueError: `size` (3 members) must be a multiple")


N = 16


def _sample(key):
    return solvers.Burgers1D(N, 0.05), solvers.random_smooth_field(key, N)


def _generate(path, **kwargs):
    return generate_dataset(path, _sample, np.linspace(0.0, 0.5, 3), dt=0.05,
                            n_trajectories=5, key=jr.PRNGKey(1), chunk_size=2,
                            progress=False, **kwargs)


def test_interrupted_multiprocess_generation_resumes(tmp_path):
    # The state a 2-process run leaves when killed: process 0 had recorded chunk 0 in
    # the attributes' earlier merge, process 1 chunk 1 in its own record file, chunk 2
    # was in flight. A resume (here by a single process) merges the record, generates
    # only chunk 2 and gives the bytes of an uninterrupted run.
    full = tmp_path / "full"
    _generate(full)
    path = tmp_path / "killed"
    _generate(path)
    meta = json.loads((path / "zarr.json").read_text())
    meta["attributes"].update(completed_chunks=[0], complete=False)
    meta.pop("consolidated_metadata", None)
    (path / "zarr.json").write_text(json.dumps(meta))
    (path / "completed_chunks.process-1.json").write_text(
        json.dumps({"process": 1, "completed_chunks": [1]}))
    (path / ".completed_chunks.process-0.json.123.tmp").write_text("{")  # cut by the kill
    for f in [f for f in path.rglob("*") if "/c/2" in f.as_posix() and f.is_file()]:
        f.unlink()
    with pytest.raises(ValueError, match="incomplete"):
        load_dataset(path)
    kept = {f: f.stat().st_mtime_ns for f in path.rglob("*")
            if f.is_file() and ("/c/0" in f.as_posix() or "/c/1" in f.as_posix())}
    ds = _generate(path, resume=True)
    assert _files(path) == _files(full)  # no record left, chunk 2 regenerated
    assert {f: f.stat().st_mtime_ns for f in kept} == kept  # chunks 0, 1 not rewritten
    assert _attrs(path) == _attrs(full)
    np.testing.assert_array_equal(ds[:], load_dataset(full)[:])


def test_bad_distributed_argument(tmp_path):
    with pytest.raises(ValueError, match="`distributed` must be a bool"):
        _generate(tmp_path / "x", distributed="yes")


def test_overwrite_removes_records(tmp_path):
    path = tmp_path / "d"
    _generate(path)
    (path / "completed_chunks.process-1.json").write_text("{}")
    _generate(path, overwrite=True)
    assert not list(path.glob("*completed_chunks.process-*"))


@pytest.mark.parametrize("args, match", [
    (["--coordinator", "127.0.0.1:1"], "go together"),
    (["--coordinator", "127.0.0.1:1", "--num-processes", "2", "--process-id", "2"],
     r"`--process-id` must be in \[0, 2\)"),
    (["--coordinator", "127.0.0.1:1", "--num-processes", "0", "--process-id", "0"],
     "`--num-processes` must be >= 1"),
])
def test_cli_refuses_bad_process_options(tmp_path, capsys, args, match):
    from neuroscale._cli import main

    assert main(["train", "burgers", "--out", str(tmp_path), *args]) == 2
    assert re.search(match, capsys.readouterr().err)
    assert not any(tmp_path.iterdir())  # refused before any work
