"""Bounded memory at scale: `solve(..., save_fn=...)` saves a function of each state
(never the fine trajectory), generation chunks sized from the state, and the test
split stored coarse where no finer baseline needs it."""

import diffrax
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import neuroscale
import solvers
from neuroscale import _data


@pytest.fixture
def burgers():
    return solvers.Burgers1D(64, 0.05)


def test_save_fn_saves_a_function_of_each_state(burgers, key):
    u0 = solvers.random_smooth_field(key, 64)
    fn = lambda y: 2.0 * y[::4]  # noqa: E731
    for ts, kwargs in [(np.linspace(0.0, 1.0, 11), {}),  # uniform
                       (np.array([0.0, 0.1, 0.35, 0.4, 1.0]), {}),  # non-uniform
                       (np.array([0.0]), {}),
                       (np.linspace(0.0, 1.0, 6),
                        dict(solver=diffrax.Tsit5(),
                             stepsize_controller=diffrax.PIDController(rtol=1e-6,
                                                                       atol=1e-8)))]:
        full = solvers.solve(burgers, u0, ts, dt=0.01, **kwargs)
        saved = solvers.solve(burgers, u0, ts, dt=0.01, save_fn=fn, **kwargs)
        assert saved.ys.shape == (len(ts), 16)
        np.testing.assert_allclose(saved.ys, fn(full.ys.T).T, rtol=1e-12, atol=1e-14)
    # Blow-ups are still found on the state (not on what is saved).
    bad = u0.at[3].set(jnp.nan)
    sol = solvers.solve(burgers, bad, np.linspace(0.0, 1.0, 5), dt=0.01, throw=False,
                        save_fn=lambda y: y[:2])
    assert int(sol.blowup_index) == 0
    with pytest.raises(ValueError, match="`save_fn` must be None or a callable"):
        solvers.solve(burgers, u0, np.linspace(0.0, 1.0, 5), dt=0.01, save_fn=3)


def test_save_fn_bounds_the_memory_of_a_long_rollout():
    # 2**16 all-to-all oscillators (float32, 256 KiB a state), 200 saves: saved whole
    # the trajectory is 51 MiB; saving the order parameter the program needs a few
    # states, whatever the number of saves (XLA's own accounting, deterministic).
    n = 2**16
    omega = solvers.gaussian_frequencies(jr.PRNGKey(0), n).astype(jnp.float32)
    system = solvers.Kuramoto(omega, 1.0)
    theta0 = jnp.zeros(n, jnp.float32)
    ts = np.arange(201) * 0.1
    state = n * 4

    def program(save_fn):
        run = jax.jit(lambda y: solvers.solve(system, y, ts, dt=0.05, save_fn=save_fn).ys)
        mem = run.lower(theta0).compile().memory_analysis()
        return mem.temp_size_in_bytes + mem.output_size_in_bytes

    whole = program(None)
    coarse = program(lambda y: jnp.stack([jnp.mean(jnp.cos(y)), jnp.mean(jnp.sin(y))]))
    assert whole >= 200 * state, whole
    assert coarse < 20 * state, coarse


def _kuramoto(**sets):
    cls = neuroscale.task_class("kuramoto")
    base = dict(fine_n=1200, coarse_n=8, clustering="geometric", avg_degree=8.0, width=16,
                heads=2, depth=1, fine_dt=0.1, n_test=2, n_val=2, n_train=2, t_train=2.0,
                eval_horizon=10, horizon=4)
    base.update(sets)
    return cls(neuroscale.build_config(cls, sets=[f"{k}={v}" for k, v in base.items()]))


def test_generation_chunks_are_sized_from_the_state(monkeypatch):
    task = _kuramoto()
    state = 1200 * 8  # float64 in the tests
    assert _data.chunk_size(task, 40, 201, fine=False) == 16  # at most 16
    assert _data.chunk_size(task, 5, 201, fine=False) == 5  # at most the split
    monkeypatch.setattr(_data, "CHUNK_BYTES", 6 * 16 * state)
    assert _data.chunk_size(task, 40, 201, fine=False) == 6  # 16 working states each
    assert _data.chunk_size(task, 40, 201, fine=True) == 1  # + 201 saves each
    monkeypatch.setattr(_data, "CHUNK_BYTES", 2 * (16 + 20) * state)
    assert _data.chunk_size(task, 40, 20, fine=True) == 2


def test_kuramoto_test_split_is_stored_coarse(tmp_path):
    # The evaluation window starts at the sampled state (no spin-up): the test split
    # is coarse-grained as it is generated, like the others (at 1M oscillators 0.4 GB
    # less per trajectory), and the finer solvers start from re-sampled fine states.
    task = _kuramoto()
    assert not _data.stores_fine_test(task)
    ds = _data.dataset(task, tmp_path, "test", progress=False)
    assert ds.shape == (2, 11, 8, 2) and ds.config["filter_n"] == 8
    test, fine_y0, fine = _data.test_set(task, tmp_path, progress=False)
    assert fine_y0.shape == (2, task.cfg.fine_n) and test.ys.shape == (2, 11, 8, 2)
    np.testing.assert_allclose(task.coarse_grain(fine_y0, 8), test.ys[:, 0], atol=1e-12)
    # The stored states are the coarse-graining of the fine rollout.
    system, theta0 = task.sample(ds.trajectory_key(1))
    ref = solvers.solve(system, theta0, ds.ts, dt=task.cfg.fine_dt).ys
    np.testing.assert_allclose(ds[1], task.coarse_grain(ref, 8), atol=1e-12)
    # Burgers keeps its fine test split: its 2x/4x/8x baselines start from it.
    cls = neuroscale.task_class("burgers")
    assert _data.stores_fine_test(cls(neuroscale.build_config(cls)))
