"""The library on a system it does not ship, through the public API only (issue 10):
train, calibrate, evaluate, save, reload, `assert_stable`; the same through
`neuroscale train --task`; and the bugs a user met on the way."""

import json
import sys
from pathlib import Path

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import hybrid
import solvers

sys.path.insert(0, str(Path(__file__).parent))
from plugin_system import DuffingRing, SiteClosure, initial_state  # noqa: E402

N = 8


def _data(key, count, saves, dt=0.1):
    truth = DuffingRing(N, 1.0)
    ts = np.arange(saves + 1) * dt
    y0s = jax.vmap(lambda k: initial_state(k, N))(jr.split(key, count))
    ys = jax.vmap(lambda y0: solvers.solve(truth, y0, ts, dt=dt / 5).ys)(y0s)
    return hybrid.Trajectories(ys, ts)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    physics = DuffingRing(N, 0.0)
    train, val, test = (_data(jr.PRNGKey(i), c, 30) for i, c in ((1, 8), (2, 4), (3, 4)))
    out = tmp_path_factory.mktemp("plugin")
    setup = dict(dt=0.1, key=jr.PRNGKey(0), horizon=4, members=3, batch_size=8,
                 learning_rate=3e-2, curriculum=False)  # one compilation

    def make(key):
        return SiteClosure(key=key)

    ens = hybrid.fit(physics, make, train, steps=150, checkpoint_dir=out / "ckpt",
                     progress=False, **setup)
    cal, info = hybrid.calibrate(ens, val, dt=0.1, key=jr.PRNGKey(1), return_info=True)
    template = hybrid.fit(physics, make, train, steps=0, progress=False, **setup)
    return dict(physics=physics, train=train, val=val, test=test, ens=ens, cal=cal, info=info,
                out=out, template=template)


def test_user_system_trains_calibrates_and_evaluates(trained):
    m = hybrid.evaluate(trained["cal"], trained["test"], dt=0.1, key=jr.PRNGKey(2))
    h, b = m["hybrid"], m["baseline"]
    # the closure learns the missing cubic spring: measured 11x lower rmse on held-out
    # trajectories (3 time units, 7.5x the training window; float64); asserted 3x
    assert h["rmse"] < b["rmse"] / 3, (h, b)
    assert h["blowups"] == 0 and m["members"] == 3
    uq = m["uq"]
    assert 0.0 < uq["crps"] < b["rmse"]
    assert uq["spread_skill"] > 0 and 0.0 <= uq["coverage90"] <= 1.0
    info = trained["info"]
    assert info["selected"] in info["validation"]
    assert info["validation"][info["selected"]]["crps"] == min(
        v["crps"] for v in info["validation"].values())


def test_calibrate_warns_when_the_closure_does_harm(trained):
    # closure_check: the members' mean against the physics alone on validation data
    check = trained["info"]["closure_check"]
    assert check["closure_helps"] and check["rmse"] < check["physics_rmse"] / 3, check
    # the same members on top of the exact physics add a second cubic spring: the
    # physics alone is now the better forecast, and calibrate says so
    harmful = eqx.tree_at(lambda e: e.physics, trained["ens"], DuffingRing(N, 1.0))
    with pytest.warns(UserWarning, match="the closure does harm"):
        _, info = hybrid.calibrate(harmful, trained["val"], dt=0.1, key=jr.PRNGKey(1),
                                   return_info=True)
    assert not info["closure_check"]["closure_helps"]
    assert info["closure_check"]["physics_rmse"] < 1e-3 * info["closure_check"]["rmse"]


def test_user_system_saves_reloads_and_is_stable(trained):
    path = trained["out"] / "model"
    hybrid.save(path, trained["cal"])
    back = hybrid.load(path, trained["template"])
    for a, b in zip(jax.tree.leaves(eqx.filter(trained["cal"], eqx.is_array)),
                    jax.tree.leaves(eqx.filter(back, eqx.is_array)), strict=True):
        np.testing.assert_array_equal(a, b)
    assert back.method == "anchored" and back.size == 3
    test = trained["test"]
    ts = np.asarray(test.ts)
    np.testing.assert_array_equal(
        back.rollout(test.ys[:, 0], ts, dt=0.1, key=jr.PRNGKey(5)),
        trained["cal"].rollout(test.ys[:, 0], ts, dt=0.1, key=jr.PRNGKey(5)))
    report = hybrid.testing.assert_stable(back, test.ys[:, 0], steps=400, dt=0.1,
                                          reference=test.ys)
    assert report.stable and report.members == 3
    with pytest.raises(ValueError, match="holds no saved ensemble"):
        hybrid.load(trained["out"] / "nothing", trained["template"])
    other = hybrid.Ensemble.init(lambda k: SiteClosure(key=k), size=2, key=jr.PRNGKey(0),
                                 physics=trained["physics"])
    with pytest.raises(ValueError, match="do not fit `like`"):
        hybrid.load(path, other)


def test_fit_resumes_exactly_from_its_checkpoints(trained, tmp_path):
    physics, train = trained["physics"], trained["train"]
    setup = dict(dt=0.1, key=jr.PRNGKey(0), horizon=4, members=3, batch_size=8,
                 learning_rate=3e-2, steps=150, checkpoint_every=50, progress=False,
                 curriculum=False)
    make = lambda k: SiteClosure(key=k)  # noqa: E731
    hybrid.fit(physics, make, train, checkpoint_dir=tmp_path, stop_after=70, **setup)
    resumed = hybrid.fit(physics, make, train, checkpoint_dir=tmp_path, **setup)
    for a, b in zip(jax.tree.leaves(eqx.filter(trained["ens"].members, eqx.is_array)),
                    jax.tree.leaves(eqx.filter(resumed.members, eqx.is_array)), strict=True):
        np.testing.assert_array_equal(a, b)
    # checkpoints of another run are refused, naming what differs
    with pytest.raises(ValueError, match="another training run.*horizon"):
        hybrid.fit(physics, make, train, checkpoint_dir=tmp_path,
                   **{**setup, "horizon": 3})


def test_one_member_path_for_everything(trained):
    # `Ensemble.map` is the one place members become systems: rollout == member systems
    cal, test = trained["cal"], trained["test"]
    ts = np.asarray(test.ts[:6])
    ys = cal.rollout(test.ys[:, 0], ts, dt=0.1, calibrated=False)
    for m in range(cal.size):
        for b in range(len(test)):
            one = solvers.solve(cal.member(m), test.ys[b, 0], ts, dt=0.1).ys
            np.testing.assert_allclose(ys[m, b], one, rtol=1e-10, atol=1e-12)


def test_pipeline_runs_a_users_task(tmp_path, capsys):
    from neuroscale._cli import main

    spec = f"{Path(__file__).parent / 'plugin_system.py'}:DuffingTask"
    out = tmp_path / "run"
    assert main(["train", "--task", spec, "--out", str(out), "--quiet", "--set",
                 "curriculum=false"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["task"] == spec and config["cubic"] == 1.0
    assert main(["evaluate", str(out), "--quiet", "--no-figures"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["system"] == spec
    assert metrics["hybrid"]["rmse"] < metrics["baseline"]["rmse"]
    assert metrics["stability"]["stable"] and metrics["stability"]["horizon_steps"] == 40
    # its own keys, checked like the built-in tasks'
    assert main(["train", "--task", spec, "--out", str(tmp_path / "x"), "--set",
                 "viscosity=1"]) == 2
    assert "unknown config key `viscosity` for task" in capsys.readouterr().err
    # resume through the CLI: nothing left to do, same model
    assert main(["train", "--task", spec, "--out", str(out), "--quiet", "--resume", "--set",
                 "curriculum=false"]) == 0


# --- bugs met on the way (issue 10) --------------------------------------------------


class StiffHeat(solvers.AbstractSpectralSystem):
    """u_t = -u_xxxx on 64 points: stiff (|L| dt up to 1e3 at dt = 0.1)."""

    n: int = eqx.field(static=True, default=64)

    @property
    def state_shape(self):
        return (self.n,)

    @property
    def linear_operator(self):
        k = jnp.fft.rfftfreq(self.n, 1.0 / self.n)
        return -(k**4) / 10.0

    def nonlinear(self, t, z, args):
        return jnp.zeros_like(z)


def test_spectral_systems_default_to_etdrk4():
    system = StiffHeat()
    assert isinstance(system.default_solver(), solvers.ETDRK4)
    u0 = solvers.random_smooth_field(jr.PRNGKey(0), 64, amplitude=1.0) + 1e-3 * jr.normal(
        jr.PRNGKey(1), (64,))  # every mode present
    sol = solvers.solve(system, u0, np.array([0.0, 1.0]), dt=0.1)
    exact = jnp.fft.irfft(jnp.fft.rfft(u0) * jnp.exp(system.linear_operator), n=64)
    np.testing.assert_allclose(sol.ys[-1], exact, rtol=1e-9, atol=1e-13)
    # the old default (Tsit5) blows up at this step
    bad = solvers.solve(system, u0, np.array([0.0, 5.0]), dt=0.1, solver=diffrax.Tsit5(),
                        throw=False)
    assert int(bad.blowup_index) >= 0


def test_a_system_without_arrays_batches():
    physics = DuffingRing(N, 0.0)  # no array fields
    assert not jax.tree.leaves(eqx.filter(physics, eqx.is_array))
    ens = hybrid.Ensemble.init(lambda k: SiteClosure(key=k), size=2, key=jr.PRNGKey(0),
                               physics=physics)
    y0s = jax.vmap(lambda k: initial_state(k, N))(jr.split(jr.PRNGKey(1), 3))
    stacked = eqx.filter_vmap(lambda _: DuffingRing(N, 0.0))(jnp.arange(3))
    ys = ens.rollout(y0s, np.arange(4) * 0.1, dt=0.1, physics=stacked)
    assert ys.shape == (2, 3, 4, 2, N)
    report = hybrid.stability(ens, y0s, steps=10, dt=0.1, physics=stacked,
                              physics_batched=True)
    assert report.stable


def test_a_closure_of_the_wrong_shape_is_named():
    class Wrong(eqx.Module):
        def __call__(self, t, y, args):
            return y[:, :5]

    model = hybrid.Hybrid(DuffingRing(N, 0.0), Wrong())
    y0 = initial_state(jr.PRNGKey(0), N)
    with pytest.raises(ValueError, match=r"the closure Wrong returned .*\(2, 5\).* shape"):
        solvers.solve(model, y0, np.array([0.0, 0.1]), dt=0.1)
    burgers = hybrid.Hybrid(solvers.Burgers1D(16, 0.1), lambda t, u, a: u[:9])
    with pytest.raises(ValueError, match="the closure <lambda> returned"):
        solvers.solve(burgers, jnp.zeros(16), np.array([0.0, 0.1]), dt=0.05)


def test_stencil_closure_length_is_explicit():
    # default: grid units (no silent 2 pi); a length scales the flux divergence by n / L
    closure = hybrid.closures.StencilClosure(1, key=jr.PRNGKey(0))
    scaled = hybrid.closures.StencilClosure(1, key=jr.PRNGKey(0), length=4.0)
    assert closure.length is None
    u = jnp.sin(jnp.arange(16) * 2 * jnp.pi / 16)
    np.testing.assert_allclose(scaled(0.0, u, None), closure(0.0, u, None) * 16 / 4.0,
                               rtol=1e-12)
    with pytest.raises(ValueError, match="`length` must be a positive number or None"):
        hybrid.closures.StencilClosure(1, key=jr.PRNGKey(0), length=-1.0)


def test_trajectories_check_their_input():
    ys = jnp.zeros((3, 5, 4))
    with pytest.raises(ValueError, match=r"`ts` must have shape \[T\] = \[5\]"):
        hybrid.Trajectories(ys, np.arange(4.0))
    with pytest.raises(ValueError, match="equally spaced"):
        hybrid.Trajectories(ys, np.array([0.0, 1.0, 3.0, 4.0, 5.0]))
    with pytest.raises(ValueError, match=r"`args` must hold one entry per trajectory"):
        hybrid.Trajectories(ys, np.arange(5.0), args=jnp.zeros(2))
    data = hybrid.Trajectories(ys, np.arange(5.0), args={"a": jnp.arange(3.0)})
    assert len(data) == 3 and len(data[1:]) == 2 and data.save_dt == 1.0
    np.testing.assert_array_equal(data[[0, 2]].args["a"], [0.0, 2.0])


def test_training_lowers_the_loss(trained):
    log = hybrid.training.read_log(trained["out"] / "ckpt")
    assert [r["step"] for r in log] == list(range(10, 151, 10))
    first, last = np.mean(log[0]["mse"]), np.mean(log[-1]["mse"])
    # from the untrained closure's loss: evaluated on the same windows as step 1
    setup = dict(dt=0.1, horizon=4, members=3, batch_size=8)
    untrained = hybrid.fit(trained["physics"], lambda k: SiteClosure(key=k), trained["train"],
                           key=jr.PRNGKey(0), steps=0, progress=False, **setup)
    data = hybrid.training.Windows(trained["train"].ys, trained["train"].ts, None, None, 0.1)
    scale = jnp.mean(trained["train"].ys ** 2)

    @eqx.filter_jit
    def loss(closures):
        return eqx.filter_vmap(lambda c: hybrid.training.rollout_loss(
            c, trained["physics"], data, key=jr.PRNGKey(1), horizon=4, batch_size=64, dt=0.1,
            mode="tendency", scale=scale)[0])(closures)

    loss0 = float(jnp.mean(loss(untrained.members)))
    # measured: 0.157 untrained, 0.046 at step 10, 0.022 at step 150 (float64)
    assert last < first / 1.5 and last < loss0 / 3, (loss0, first, last)


def test_anchors_change_the_posterior(trained):
    # The same members, data and steps; only the anchor term's weight differs. A
    # strong prior (few effective data) holds each member near its own anchor; a
    # negligible one lets it go where the data take it, as in a deep ensemble.
    physics, train = trained["physics"], trained["train"]
    setup = dict(dt=0.1, key=jr.PRNGKey(0), horizon=2, members=2, batch_size=4,
                 learning_rate=3e-2, curriculum=False, progress=False,
                 start_at_anchors=True, method="anchored")
    make = lambda k: SiteClosure(key=k)  # noqa: E731

    def flat(ens):
        leaves = jax.tree.leaves(eqx.filter(ens.members, eqx.is_inexact_array))
        return jnp.concatenate([x.reshape(x.shape[0], -1) for x in leaves], axis=1)

    anchors = flat(hybrid.fit(physics, make, train, steps=0, **setup))
    moved = {n: float(jnp.mean(jnp.linalg.norm(
        flat(hybrid.fit(physics, make, train, steps=40, num_data=n, **setup)) - anchors,
        axis=1))) for n in (1.0, 1e12)}
    # measured: 0.016 against 2.79 (parameter distance from the anchor, float64)
    assert moved[1.0] < moved[1e12] / 10, moved
