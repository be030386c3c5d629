"""The Kuramoto part of the hybrid core: the cluster/graph attention closure, the
Kuramoto task, and a tiny end-to-end learning test against Ott–Antonsen alone."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import solvers
from hybrid import Hybrid
from hybrid.closures import ClusterContext, GraphAttentionClosure, make_closure
from neuroscale import build_config, task_class

OA = solvers.OttAntonsenNetwork

# Eight clusters, two coarser scales: 8 -> 4 -> 2.
_PARENTS = ((0, 1, 1, 0, 2, 3, 2, 3), (1, 0, 1, 0))


def _physics(m=8, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.uniform(0, 1, (m, m)) * (rng.random((m, m)) < 0.6) + np.eye(m)
    a = a / a.sum(1, keepdims=True)
    return OA(jnp.asarray(rng.normal(0, 0.3, m)), jnp.asarray(rng.uniform(0.2, 0.9, m)),
              2.5, coupling_matrix=jnp.asarray(a))


def _state(m=8, seed=1):
    rng = np.random.default_rng(seed)
    return OA.initial_state(jnp.asarray(rng.uniform(0.1, 0.95, m)),
                            jnp.asarray(rng.uniform(-np.pi, np.pi, m)))


@eqx.filter_jit
def _call(closure, t, y, args):
    return closure(t, y, args)


class _Jitted(eqx.Module):
    closure: GraphAttentionClosure

    def __call__(self, t, y, args):
        return _call(self.closure, t, y, args)

    def context(self, physics):
        return self.closure.context(physics)


def _closure(sizes, parents=_PARENTS, **kw):
    kw.setdefault("init_scale", 1.0)  # O(1) outputs: the symmetry tests must bite
    return _Jitted(GraphAttentionClosure(0, key=jr.PRNGKey(0), sizes=jnp.asarray(sizes),
                                         parents=parents, **kw))


_SIZES = np.array([30.0, 50, 20, 40, 10, 60, 25, 35])


def test_closure_is_permutation_equivariant_over_clusters():
    physics, y = _physics(), _state()
    closure = _closure(_SIZES)
    out = closure(0.0, y, physics)
    assert float(jnp.max(jnp.abs(out))) > 1e-2
    perm = np.random.default_rng(3).permutation(8)
    parents = (tuple(_PARENTS[0][p] for p in perm), _PARENTS[1])
    permuted = _closure(_SIZES[perm], parents)
    phys_p = OA(physics.omega[perm], physics.width[perm], physics.coupling,
                coupling_matrix=physics.coupling_matrix[perm][:, perm])
    np.testing.assert_allclose(permuted(0.0, y[perm], phys_p), out[perm], rtol=0, atol=1e-12)


def test_closure_commutes_with_phase_rotation_and_ignores_frequency_shift():
    physics, y = _physics(), _state()
    closure = _closure(_SIZES)
    out = OA.to_complex(closure(0.0, y, physics))
    c = 0.7
    rotated = OA.from_complex(OA.to_complex(y) * np.exp(1j * c))
    np.testing.assert_allclose(OA.to_complex(closure(0.0, rotated, physics)),
                               out * np.exp(1j * c), rtol=0, atol=1e-12)
    shifted = eqx.tree_at(lambda p: p.omega, physics, physics.omega + 1.3)
    np.testing.assert_allclose(closure(0.0, y, shifted), OA.from_complex(out), atol=1e-12)


def test_closure_is_tangent_to_the_unit_circle():
    physics = _physics()
    y = OA.initial_state(jnp.array([1.0, 0.5, 1.0, 0.2, 1.0, 0.9, 0.3, 1.0]),
                         jnp.linspace(0, 5, 8))
    dz = _closure(_SIZES)(0.0, y, physics)
    radial = jnp.sum(y * dz, axis=-1)  # Re(conj(z) dz)
    on_circle = np.isclose(np.sum(np.asarray(y) ** 2, -1), 1.0)
    np.testing.assert_allclose(radial[on_circle], 0.0, atol=1e-12)
    assert float(jnp.max(jnp.abs(radial[~on_circle]))) > 1e-3


def test_context_gives_the_same_closure_and_is_vmappable():
    physics, y = _physics(), _state()
    closure = _closure(_SIZES)
    ctx = closure.context(physics)
    np.testing.assert_allclose(closure(0.0, y, ctx), closure(0.0, y, physics), atol=1e-14)
    # Token order parameters are the exact size-weighted pooling.
    z = ctx.pool @ y
    members = np.asarray(_PARENTS[0]) == 2
    np.testing.assert_allclose(z[8 + 2], (_SIZES[members] @ y[members]) / _SIZES[members].sum())
    batch = eqx.filter_vmap(lambda o: ClusterContext.build(
        eqx.tree_at(lambda p: p.omega, physics, o), _SIZES, _PARENTS))(
        jnp.stack([physics.omega, physics.omega + 1.0]))
    assert batch.tokens.shape == (2, 15, 7)  # 8 + 4 + 2 + the whole network


def test_untrained_hybrid_is_close_to_ott_antonsen():
    physics, y = _physics(), _state()
    closure = make_closure("graph-attention", 0, key=jr.PRNGKey(1), sizes=_SIZES,
                           parents=_PARENTS)
    assert isinstance(closure, GraphAttentionClosure)
    dz, f = _Jitted(closure)(0.0, y, physics), physics.vector_field(0.0, y, None)
    assert float(jnp.max(jnp.abs(dz))) < 0.05 * float(jnp.max(jnp.abs(f)))
    # So over one time unit the rollouts part by a small fraction of OA's own change.
    ts = np.linspace(0, 1, 11)
    hyb = solvers.solve(Hybrid(physics, closure), y, ts, dt=0.05, args=closure.context(physics))
    oa = solvers.solve(physics, y, ts, dt=0.05)
    change = float(jnp.max(jnp.abs(oa.ys - y)))
    assert float(jnp.max(jnp.abs(hyb.ys - oa.ys))) < 0.1 * change


def test_closure_follows_float32():
    physics = _physics()
    y = _state().astype(jnp.float32)
    out = _closure(_SIZES)(0.0, y, physics)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, _closure(_SIZES)(0.0, y.astype(jnp.float64), physics),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(ndim=1), "`ndim` must be 0"),
        (dict(width=30, heads=4), r"`heads` \(4\) must divide `width` \(30\)"),
        (dict(parents=((0, 1),)), r"`parents\[0\]` must map the 8 clusters"),
        (dict(parents=((0, 2, 0, 2, 0, 2, 0, 2),)), r"`parents\[0\]` must use every parent"),
        (dict(sizes=np.array([1.0, -1.0])), "`sizes` must be a non-empty 1D array of positive"),
        (dict(depth=0), "`depth` must be an int >= 1"),
    ],
)
def test_bad_closure_arguments_are_refused(kwargs, match):
    args = dict(ndim=0, sizes=_SIZES, parents=_PARENTS)
    args.update(kwargs)
    ndim = args.pop("ndim")
    with pytest.raises(ValueError, match=match):
        GraphAttentionClosure(ndim, key=jr.PRNGKey(0), **args)


def test_bad_call_arguments_are_refused():
    closure = _closure(_SIZES).closure
    with pytest.raises(ValueError, match=r"`y` must be one floating cluster state of shape"):
        closure(0.0, jnp.zeros((7, 2)), _physics())
    with pytest.raises(ValueError, match="`args` must be the cluster model"):
        closure(0.0, _state(), None)
    with pytest.raises(ValueError, match=r"`args.omega` must have shape \(8,\)"):
        closure(0.0, _state(), _physics(m=5))


# ---------------------------------------------------------------------------------------
# The task.


def _cfg(**kw):
    sets = dict(fine_n=1200, coarse_n=8, clustering="geometric", avg_degree=8.0, width=16,
                heads=2, depth=1)
    sets.update(kw)
    return build_config(KURAMOTO, sets=[f"{k}={v}" for k, v in sets.items()])


KURAMOTO = task_class("kuramoto")


def make_task(cfg):
    return KURAMOTO(cfg)


def test_task_pieces_fit_together():
    task = make_task(_cfg())
    fine, theta0 = eqx.filter_jit(task.sample)(jr.PRNGKey(0))
    assert theta0.shape == (1200,) and fine.omega.shape == (1200,)
    y0 = task.coarse_grain(theta0, 8)
    assert y0.shape == (8, 2)
    np.testing.assert_allclose(OA.to_complex(y0)[0],
                               solvers.order_parameter(theta0[task.renormalization.labels == 0]),
                               atol=1e-12)
    # The fine system is Kuramoto on the run's graph.
    graph = task.network.graph
    ref = solvers.Kuramoto(fine.omega, 3.0, graph=graph).vector_field(0.0, theta0, None)
    np.testing.assert_allclose(fine.vector_field(0.0, theta0, None), ref)
    coarse = task.coarse_physics(fine, 8)
    assert coarse.state_shape == (8, 2)
    # Stacked fine systems (as a data set rebuilds them) give stacked cluster models.
    stacked = eqx.filter_jit(eqx.filter_vmap(
        lambda k: task.coarse_physics(task.sample(k)[0], 8)))(jr.split(jr.PRNGKey(1), 3))
    assert stacked.physics.omega.shape == (3, 8)
    ctx = task.closure_args(coarse)
    closure = _Jitted(task.make_closure(jr.PRNGKey(0)))
    assert closure(0.0, y0, ctx).shape == (8, 2)
    assert task.energy(jnp.stack([y0, y0])).shape == (2,)
    np.testing.assert_allclose(task.energy(y0), 0.5 * jnp.mean(jnp.abs(OA.to_complex(y0)) ** 2))
    with pytest.raises(ValueError, match="coarse-grains to its 8 clusters only"):
        task.coarse_grain(theta0, 16)


def test_finer_cluster_models_map_back_onto_the_clusters():
    # The "finer solvers" of the task: the cluster model alone on 2x / 4x more clusters
    # of the same graph. Mapped back onto the task's
    # clusters, a finer state of the same phases is the task's state exactly (the
    # order parameter of a cluster is the node-weighted mean of its parts').
    task = make_task(_cfg())
    assert task.finer_factors == (2, 4) and task.reference_in_frontier
    fine, theta0 = eqx.filter_jit(task.sample)(jr.PRNGKey(0))
    direct = task.coarse_grain(theta0, 8)
    for k in (2, 4):
        physics, dt, grain = task.finer(fine, k)
        finer_state = grain(theta0)
        assert finer_state.shape == (8 * k, 2) and physics.state_shape == (8 * k, 2)
        assert dt == task.cfg.dt
        np.testing.assert_allclose(task.finer_to_coarse(finer_state[None], k)[0], direct,
                                   atol=1e-5)
        # and the finer model is a different one, not the task's clusters again
        assert not np.allclose(physics.omega[:8], task.coarse_physics(fine, 8).omega)
    assert task.finer(fine, 8) is None


def test_config_checks_for_kuramoto():
    with pytest.raises(ValueError, match=r"`heads` \(3\) must divide `width` \(32\)"):
        build_config(KURAMOTO, sets=["heads=3"])
    with pytest.raises(ValueError, match="`clustering` must be 'spectral' or 'geometric'"):
        build_config(KURAMOTO, sets=["clustering=louvain"])
    with pytest.raises(ValueError, match="`frequencies` must be 'gaussian' or 'lorentzian'"):
        build_config(KURAMOTO, sets=["frequencies=uniform"])
    with pytest.raises(ValueError, match=r"`avg_degree` .* must be in \(0, `fine_n` - 1\)"):
        build_config(KURAMOTO, sets=["fine_n=8", "coarse_n=4", "avg_degree=7.5"])


def _trajectories(task, keys, ts):
    def one(k):
        fine, theta0 = task.sample(k)
        ys = solvers.solve(fine, theta0, ts, dt=task.cfg.fine_dt).ys
        n = task.cfg.coarse_n
        return task.coarse_grain(ys, n), task.coarse_physics(fine, n)

    return eqx.filter_jit(eqx.filter_vmap(one))(keys)


@pytest.mark.slow
def test_hybrid_beats_ott_antonsen_on_held_out_trajectories():
    # A tiny case: 2000 oscillators, 8 clusters, one small closure trained end to end
    # through 5-step rollouts (0.5 time units) for 200 Adam steps on 8 trajectories.
    # Held out: 4 trajectories with other frequencies and initial phases on the same
    # graph, rolled out for 5 time units (10x the training horizon). Measured: rmse
    # 0.102 against 0.198 for Ott-Antonsen alone (ratio 0.51); asserted: at least 1.5x
    # lower. (Slow: ~30-90 s on 2 shared cores, mostly compilation.)
    cfg = _cfg(fine_n=2000, fine_dt=0.1)
    task = make_task(cfg)
    ts = np.arange(51) * 0.1
    ys, phys = _trajectories(task, jr.split(jr.PRNGKey(0), 12), ts)
    split = lambda tree, sl: jax.tree.map(lambda x: x[sl] if eqx.is_array(x) else x, tree)  # noqa: E731
    train_ys, train_phys = ys[:8], split(phys, slice(0, 8))
    test_ys, test_phys = ys[8:], split(phys, slice(8, 12))
    horizon = 5
    rel = np.arange(horizon + 1) * 0.1

    def rollout(closure, phys, y0, times):
        system = phys if closure is None else Hybrid(phys, closure)
        return solvers.solve(system, y0, times, dt=0.1, args=task.closure_args(phys)).ys

    def loss(closure, key):
        def window(k):
            ki, ks = jr.split(k)
            i = jr.randint(ki, (), 0, train_ys.shape[0])
            s = jr.randint(ks, (), 0, train_ys.shape[1] - horizon)
            target = jax.lax.dynamic_slice_in_dim(train_ys[i], s, horizon + 1)
            return jnp.mean((rollout(closure, split(train_phys, i), target[0], rel) - target) ** 2)

        return jnp.mean(jax.vmap(window)(jr.split(key, 8)))

    closure = task.make_closure(jr.PRNGKey(2))
    opt = optax.adam(optax.cosine_decay_schedule(3e-3, 200, alpha=0.1))
    state = opt.init(eqx.filter(closure, eqx.is_array))

    @eqx.filter_jit
    def step(closure, state, key):
        grads = eqx.filter_grad(loss)(closure, key)
        updates, state = opt.update(grads, state)
        return eqx.apply_updates(closure, updates), state

    for i in range(200):
        closure, state = step(closure, state, jr.PRNGKey(100 + i))

    @eqx.filter_jit
    def rmse(closure):
        pred = eqx.filter_vmap(lambda p, y: rollout(closure, p, y[0], ts))(test_phys, test_ys)
        return jnp.sqrt(jnp.mean((pred - test_ys) ** 2))

    hybrid, baseline = float(rmse(closure)), float(rmse(None))
    print(f"held-out rmse: hybrid {hybrid:.4f}, Ott-Antonsen {baseline:.4f}")
    assert hybrid < baseline / 1.5, (hybrid, baseline)


@pytest.mark.slow
def test_pipeline_trains_and_evaluates_kuramoto(tmp_path):
    # `neuroscale train kuramoto` then `evaluate(..., figures=False)`, tiny: the
    # generic pipeline runs the cluster task end to end (closure args, ndim 0, the
    # 100x-horizon stability rollouts).
    from neuroscale import evaluate_run, train_run

    cfg = _cfg(train_steps=3, n_train=2, n_test=2, n_val=2, members=2, curriculum=False,
               horizon=4, eval_horizon=20, t_train=4.0)
    train_run(make_task(cfg), tmp_path, progress=False)
    metrics = evaluate_run(tmp_path, progress=False, figures=False)
    assert metrics["system"] == "kuramoto" and metrics["coarse_n"] == 8
    assert np.isfinite(metrics["hybrid"]["rmse"]) and np.isfinite(metrics["baseline"]["rmse"])
    assert metrics["stability"]["horizon_steps"] == 100 * 4
    assert (tmp_path / "metrics.json").exists()
    # the run's renormalization is kept with it, and so are those of the finer cluster
    # models that evaluate compares with (2x and 4x the clusters)
    kept = list((tmp_path / "data" / "derived").glob("renormalization-*.npz"))
    assert len(metrics["finer"]) == 2 and len(kept) == 1 + len(metrics["finer"])
