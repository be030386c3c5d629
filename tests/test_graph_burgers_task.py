"""The graph Burgers task: the conservative flux closure on a cluster graph, the task's
pieces (fine system, cluster means, the coarse physics on the renormalized graph),
and, slow, learning against the coarse physics alone and the example script."""

import json
import os
import subprocess
import sys
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import solvers
from hybrid.closures import FluxContext, GraphFluxClosure, make_closure
from neuroscale import build_config, task_class

# Eight clusters, two coarser scales: 8 -> 4 -> 2.
_PARENTS = ((0, 1, 1, 0, 2, 3, 2, 3), (1, 0, 1, 0))
_SIZES = np.array([30.0, 50, 20, 40, 10, 60, 25, 35])


def _cluster_graph(m=8, seed=0, isolated=()):
    """A random symmetric cluster graph (both directions stored), an antisymmetric
    flow on it, and a forcing."""
    rng = np.random.default_rng(seed)
    w = rng.uniform(0.1, 1.0, (m, m)) * (rng.random((m, m)) < 0.6)
    w = np.triu(w, 1)
    w[list(isolated), :] = 0.0
    w[:, list(isolated)] = 0.0
    b = np.triu(rng.normal(size=(m, m)), 1) * (w > 0)
    w, b = w + w.T, b - b.T
    r, s = np.nonzero(w)
    return s, r, w[r, s], b[r, s], rng.normal(size=m)


def _context(perm=None, isolated=()):
    s, r, w, b, f = _cluster_graph(isolated=isolated)
    sizes, parents = _SIZES, _PARENTS
    if perm is not None:  # cluster i of the new labelling is cluster perm[i] of the old
        inverse = np.argsort(perm)
        s, r, sizes, f = inverse[s], inverse[r], sizes[perm], f[perm]
        parents = (tuple(_PARENTS[0][p] for p in perm), _PARENTS[1])
    ctx = FluxContext.build(jnp.asarray(sizes), s, r, jnp.asarray(w), jnp.asarray(b),
                            parents=parents, forcing=jnp.asarray(f))
    return ctx, parents


def _closure(parents=_PARENTS, **kw):
    kw.setdefault("init_scale", 1.0)  # O(1) outputs: the symmetry tests must bite
    return GraphFluxClosure(0, key=jr.PRNGKey(0), n_clusters=8, parents=parents, width=16,
                            heads=2, depth=2, **kw)


_call = eqx.filter_jit(lambda c, y, ctx: c(0.0, y, ctx))


def test_flux_closure_conserves_the_total_and_leaves_unlinked_clusters_alone():
    ctx, _ = _context(isolated=(3,))
    y = jnp.asarray(np.random.default_rng(1).normal(size=8))
    dy = _call(_closure(), y, ctx)
    assert float(jnp.max(jnp.abs(dy))) > 1e-3  # it does something
    # sum_m |m| dy_m = 0 exactly: antisymmetric fluxes.
    assert abs(float(jnp.sum(jnp.asarray(_SIZES) * dy))) < 1e-12 * float(jnp.sum(jnp.abs(dy)))
    assert float(dy[3]) == 0.0  # cluster 3 shares no edge


def test_flux_closure_is_permutation_equivariant():
    perm = np.array([3, 0, 6, 1, 7, 2, 5, 4])
    y = np.random.default_rng(2).normal(size=8)
    ctx, _ = _context()
    ctx_p, parents_p = _context(perm)
    dy = _call(_closure(), jnp.asarray(y), ctx)
    dy_p = _call(_closure(parents=parents_p), jnp.asarray(y[perm]), ctx_p)
    np.testing.assert_allclose(dy_p, dy[perm], rtol=1e-10, atol=1e-12)


def test_flux_closure_bad_arguments():
    with pytest.raises(ValueError, match="`ndim` must be 0"):
        GraphFluxClosure(1, key=jr.PRNGKey(0), n_clusters=8)
    with pytest.raises(ValueError, match=r"`heads` \(3\) must divide `width` \(16\)"):
        GraphFluxClosure(0, key=jr.PRNGKey(0), n_clusters=8, width=16, heads=3)
    with pytest.raises(ValueError, match=r"`parents\[0\]` must map the 8 clusters"):
        GraphFluxClosure(0, key=jr.PRNGKey(0), n_clusters=8, parents=((0, 1),))
    closure = _closure()
    ctx, _ = _context()
    with pytest.raises(ValueError, match=r"`y` must be one floating cluster state of shape"):
        closure(0.0, jnp.zeros((2, 8)), ctx)
    with pytest.raises(ValueError, match="`args` must be the trajectory's FluxContext"):
        closure(0.0, jnp.zeros(8), None)
    with pytest.raises(ValueError, match="`weights` must have shape"):
        FluxContext.build(jnp.ones(8), np.array([0, 1]), np.array([1, 0]), jnp.ones(3))
    with pytest.raises(ValueError, match="`senders` and `receivers` must be"):
        FluxContext.build(jnp.ones(8), np.array([0, 9]), np.array([1, 0]), jnp.ones(2))
    assert isinstance(make_closure("graph-flux", 0, key=jr.PRNGKey(0), n_clusters=4),
                      GraphFluxClosure)


# ---------------------------------------------------------------------------------------
# The task.

GB = task_class("graph-burgers")


def _task(**kw):
    sets = dict(fine_n=1500, coarse_n=8, clustering="geometric", avg_degree=8.0, width=16,
                heads=2, depth=1, forcing=0.3)
    sets.update(kw)
    return GB(build_config(GB, sets=[f"{k}={v}" for k, v in sets.items()]))


def test_task_pieces_fit_together():
    task = _task()
    fine, u0 = eqx.filter_jit(task.sample)(jr.PRNGKey(0))
    assert u0.shape == (1500,) and fine.coefficients.shape == (6,)
    # The fine system: GraphBurgers on the graph with weights 1/max(k_i, k_j), plus
    # the forcing modes of the hyperbolic angle.
    graph = task.network.graph
    degree = np.bincount(np.asarray(graph.receivers), minlength=1500)
    s, r = np.asarray(graph.senders), np.asarray(graph.receivers)
    w = 1.0 / np.maximum(degree[s], degree[r])
    ref = solvers.GraphBurgers(solvers.graphs.Graph(s, r, w, n_nodes=1500), 0.05,
                               coordinates=task.network.coordinates,
                               spacing=task.cfg.spacing)
    phi = np.asarray(task.network.coordinates.angle)
    c = np.asarray(fine.coefficients)
    forcing = sum(c[2 * k - 2] * np.cos(k * phi) + c[2 * k - 1] * np.sin(k * phi)
                  for k in (1, 2, 3))
    np.testing.assert_allclose(fine.vector_field(0.0, u0, None),
                               ref.vector_field(0.0, u0, None) + forcing, atol=1e-12)
    # Coarse state: the cluster means.
    y0 = task.coarse_grain(u0, 8)
    labels = np.asarray(task.renormalization.labels)
    np.testing.assert_allclose(y0, [np.asarray(u0)[labels == m].mean() for m in range(8)],
                               rtol=1e-12)
    assert task.coarse_grain(jnp.stack([u0, u0]), 8).shape == (2, 8)
    # Coarse physics: conserves sum_m |m| u_m up to the forcing, whose cluster means
    # it adds exactly.
    coarse = task.coarse_physics(fine, 8)
    sizes = np.asarray(task.renormalization.sizes)
    np.testing.assert_allclose(coarse.forcing, [forcing[labels == m].mean() for m in range(8)],
                               atol=1e-12)
    du = coarse.vector_field(0.0, y0, None) - coarse.forcing
    assert abs(float(jnp.sum(sizes * du))) < 1e-12 * float(jnp.sum(sizes * jnp.abs(du)))
    assert float(jnp.max(jnp.abs(du))) > 0
    # Stacked fine systems (as a data set rebuilds them) give stacked coarse models.
    stacked = eqx.filter_jit(eqx.filter_vmap(
        lambda k: task.coarse_physics(task.sample(k)[0], 8)))(jr.split(jr.PRNGKey(1), 3))
    assert stacked.forcing.shape == (3, 8)
    closure = task.make_closure(jr.PRNGKey(0))
    dy = _call(closure, y0, task.closure_args(coarse))
    assert dy.shape == (8,)
    assert abs(float(jnp.sum(sizes * dy))) < 1e-12 + 1e-9 * float(jnp.max(jnp.abs(dy)))
    # the size-weighted cluster mean is the mean over the nodes
    np.testing.assert_allclose(float(jnp.sum(sizes * y0)) / 1500, np.mean(np.asarray(u0)),
                               rtol=1e-12)
    np.testing.assert_allclose(task.energy(y0), 0.5 * np.sum(sizes * np.asarray(y0) ** 2)
                               / 1500, rtol=1e-12)
    with pytest.raises(ValueError, match="coarse-grains to its 8 clusters only"):
        task.coarse_grain(u0, 16)


def test_config_checks_for_graph_burgers():
    with pytest.raises(ValueError, match="`viscosity` must be > 0"):
        build_config(GB, sets=["viscosity=0"])
    with pytest.raises(ValueError, match="`spacing` must be > 0"):
        build_config(GB, sets=["spacing=-1"])
    with pytest.raises(ValueError, match="`forcing` must be >= 0"):
        build_config(GB, sets=["forcing=-0.1"])
    with pytest.raises(ValueError, match="`closure` must be one of"):
        build_config(GB, sets=["closure=stencil"])
    with pytest.raises(ValueError, match="`clustering` must be 'spectral' or 'geometric'"):
        build_config(GB, sets=["clustering=louvain"])


@pytest.mark.parametrize("forcing", [0.0, pytest.param(0.3, marks=pytest.mark.slow)])
def test_energy_limiter_keeps_the_hybrid_from_creating_energy(forcing):
    # A closure with large random fluxes (init_scale 30) makes the unforced hybrid's
    # energy grow (the measure can fail); with the task's default `energy_limiter` the
    # physics bounds the same closure (`ClusterBurgers.limit_closure`): at every state
    # of the rollout the energy rate of the hybrid without its forcing is <= 0, the
    # total is conserved, and where the closure removes energy it is left unchanged.
    # The coarse physics alone dissipates.
    import hybrid

    energies, rates = {}, {}
    for limiter in (False, True):
        task = _task(forcing=forcing, energy_limiter=limiter)
        fine, u0 = task.sample(jr.PRNGKey(3))
        y0 = task.coarse_grain(u0, 8)
        physics = task.coarse_physics(fine, 8)
        closure = task.make_closure(jr.PRNGKey(1), init_scale=30.0)
        model = hybrid.Hybrid(physics, closure)
        args = task.closure_args(physics)
        sol = solvers.solve(model, y0, jnp.arange(0, 50.01, 0.5), dt=0.05, args=args,
                            throw=False)
        e = np.asarray(task.energy(sol.ys))
        energies[limiter] = np.where(np.isfinite(e), e, np.inf)  # a blow-up: infinite
        volume = np.asarray(physics.coarse.volume)

        @jax.jit
        @jax.vmap
        def rate(y, model=model, args=args, physics=physics, volume=volume):
            dev = y - jnp.sum(volume * y) / volume.sum()
            unforced = model.vector_field(0.0, y, args) - physics.forcing
            return jnp.sum(volume * dev * unforced), jnp.sum(volume * y**2)

        rates[limiter] = rate(sol.ys)
    if forcing == 0:
        assert energies[False].max() > 1.2 * energies[False][0]
        # this closure saturates the bound (rate 0): the energy moves only by SSPRK3's
        # time-discretisation error
        assert energies[True].max() <= energies[True][0] * (1 + 1e-9)
    r, norm = (np.asarray(x) for x in rates[True])
    assert np.all(r <= 1e-12 * norm), r
    r_free = np.asarray(rates[False][0])
    assert np.nanmax(r_free) > 0  # without the limiter this closure does create energy
    total = np.asarray(jnp.sum(task.renormalization.sizes * sol.ys, axis=-1))
    if forcing == 0:
        np.testing.assert_allclose(total, total[0], rtol=1e-10)
    # the physics' own energy rate is negative on random states
    c = physics.coarse
    ys = 2 * jr.normal(jr.PRNGKey(5), (200, 8))
    own = jax.vmap(lambda y: c.burgers.vector_field(0.0, y, None))(ys)
    dev = ys - (volume * ys).sum(1, keepdims=True) / volume.sum()
    assert float(jnp.max(jnp.sum(dev * own, axis=1))) < 0
    # where the closure removes energy it is passed through unchanged
    for y in ys[:50]:
        dy = closure(0.0, y, args)
        dev = y - jnp.sum(volume * y) / volume.sum()
        if float(jnp.sum(volume * dev * dy)) <= 0:
            np.testing.assert_array_equal(physics.limit_closure(0.0, y, dy, args), dy)
            break
    else:
        raise AssertionError("no state where the random closure removes energy")


def test_a_run_keeps_its_renormalization_and_transport_flow(tmp_path, monkeypatch):
    # What `evaluate` (a new process) would recompute for minutes at a million nodes is
    # kept with the run: inside `run_store` the renormalization and the fine system's
    # transport flow are written once, then read back instead of recomputed, and the
    # systems built from them are the same.
    import importlib

    from neuroscale import run_store
    from neuroscale.tasks import _network

    gb_module = importlib.import_module("solvers._graph_burgers")
    task = _task(fine_n=1100, seed=7)
    with run_store(tmp_path):
        fine = task.sample(jr.PRNGKey(0))[0]
        system = fine.system()
    assert _kinds(tmp_path) == ["graph-burgers-flow", "renormalization"]
    labels = np.asarray(task.renormalization.labels)

    def recomputed(*args, **kwargs):
        raise AssertionError("recomputed instead of read from the run")

    _network._network.cache_clear()  # as in a new process
    monkeypatch.setattr(_network, "renormalize", recomputed)
    monkeypatch.setattr(gb_module, "_transport_flow", recomputed)
    with run_store(tmp_path):
        again = _task(fine_n=1100, seed=7)
        np.testing.assert_array_equal(np.asarray(again.renormalization.labels), labels)
        np.testing.assert_array_equal(np.asarray(again.renormalization.coupling_matrix),
                                      np.asarray(task.renormalization.coupling_matrix))
        assert again.renormalization.parents == task.renormalization.parents
        system2 = again.sample(jr.PRNGKey(0))[0].system()
    np.testing.assert_array_equal(np.asarray(system2.flow), np.asarray(system.flow))
    # another graph (seed) is another file: it is computed, not confused with this one
    monkeypatch.undo()
    other = tmp_path / "other"
    with run_store(other):
        _task(fine_n=1100, seed=8).sample(jr.PRNGKey(0))[0].system()
    assert len(list(other.iterdir())) == 2
    assert not np.array_equal(
        np.asarray(_task(fine_n=1100, seed=8).renormalization.coupling_matrix),
        np.asarray(task.renormalization.coupling_matrix))
    # built before the store was entered (cached in memory): still kept with the run
    late = tmp_path / "late"
    with run_store(late):
        _task(fine_n=1100, seed=8).sample(jr.PRNGKey(0))[0].system()
    assert _kinds(late) == ["graph-burgers-flow", "renormalization"]
    # ... and checked against what the folder holds: other arrays under the same key
    # are refused (the run's data were made with those)
    path = next(late.glob("renormalization-*.npz"))
    with np.load(path) as z:
        tampered = {k: z[k] for k in z.files}
    tampered["labels"] = tampered["labels"][::-1].copy()
    np.savez(path, **tampered)
    _network._network.cache_clear()  # a new process: nothing built, nothing checked
    monkeypatch.setattr(importlib.import_module("neuroscale._store"), "_KEPT", set())
    cfg = _task(fine_n=1100, seed=8).cfg
    _network.network(cfg)  # built outside the store: in memory
    with run_store(late), pytest.raises(ValueError, match="other `renormalization` arrays"):
        _network.network(cfg)
    # nothing half-written is left behind
    assert not [p for p in tmp_path.rglob(".*")]


def _kinds(folder):
    return sorted(p.name.rsplit("-", 1)[0] for p in folder.iterdir() if p.is_file())


def test_float32_run_reads_back_its_float32_flow(tmp_path):
    # The 1M-node runs are float32: the stored flow (float32, divergence ~1e-8 after
    # rounding) is accepted when read back into a float32 system, and a float64
    # process gets its own files (the dtype is part of the key).
    from neuroscale import run_store
    from neuroscale.tasks import _network

    with jax.enable_x64(False):
        task = _task(fine_n=1200, seed=9)
        with run_store(tmp_path):
            flow = np.asarray(task.sample(jr.PRNGKey(0))[0].system().flow)
        assert flow.dtype == np.float32
        _network._network.cache_clear()
        with run_store(tmp_path):
            again = np.asarray(_task(fine_n=1200, seed=9).sample(jr.PRNGKey(0))[0]
                               .system().flow)
        np.testing.assert_array_equal(again, flow)
    assert len(_kinds(tmp_path)) == 2
    with run_store(tmp_path):
        flow64 = np.asarray(_task(fine_n=1200, seed=9).sample(jr.PRNGKey(0))[0].system().flow)
    assert flow64.dtype == np.float64 and len(_kinds(tmp_path)) == 4
    np.testing.assert_allclose(flow64, flow, rtol=1e-5, atol=1e-6 * np.abs(flow64).max())


@pytest.mark.slow
def test_pipeline_hybrid_beats_the_coarse_physics(tmp_path):
    # `neuroscale train graph-burgers` then `evaluate`, small: 3000 nodes, 8 clusters,
    # 8 training trajectories; held out: 4 trajectories on the same graph, 10 time
    # units (10x the training horizon). Asserted: the hybrid at least 1.5x below the
    # coarse physics alone, stable and conservative over the long rollouts.
    from neuroscale import evaluate_run, train_run

    task = _task(fine_n=3000, spacing=0.25, fine_dt=0.02, n_train=8, n_val=2, n_test=4,
                 t_train=10.0, train_steps=150, members=2, horizon=10, eval_horizon=100,
                 stability_factor=20, batch_size=4, curriculum=False)
    train_run(task, tmp_path, progress=False)
    metrics = evaluate_run(tmp_path, progress=False, figures=False)
    h, b = metrics["hybrid"]["rmse"], metrics["baseline"]["rmse"]
    print(f"held-out rmse: hybrid {h:.4g}, coarse physics {b:.4g} (ratio {h / b:.3f})")
    assert h < b / 1.5, (h, b)
    assert metrics["stability"]["stable"]
    assert metrics["closure_helps"]
    assert metrics["calibration"]["closure_check"]["closure_helps"]
    assert len(list((tmp_path / "data" / "derived").glob("*.npz"))) == 2


@pytest.mark.slow
def test_example_runs(tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("JAX_ENABLE_X64", None)
    script = Path(__file__).resolve().parents[1] / "examples" / "graph_burgers.py"
    proc = subprocess.run([sys.executable, str(script), "--quick", "--out",
                           str(tmp_path / "run")], capture_output=True, text=True,
                          timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for line in ("hybrid     rmse", "no closure rmse", "ensemble: crps", "long rollouts"):
        assert line in proc.stdout, proc.stdout
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["system"] == "graph-burgers"
