"""`hybrid.stability` and `hybrid.testing.assert_stable`: blow-up found at the right
step of the right rollout, drifts, spectrum departures and decorrelation times
against closed forms, the `metrics.json` block, the failure messages, and the
`neuroscale stability DIR` command.

The systems here are linear with exact solutions: $\\dot y = r y$ (energy
$E_0 e^{2 r t}$), the heat equation per Fourier mode ($e^{-\\nu k^2 t}$), advection
$u(x - ct)$ (pattern correlation $\\cos ct$ with $\\sin x$), rotating clusters
($|z| = r e^{-\\gamma t}$). Tsit5 at the step sizes used has errors far below the
tolerances written next to each check."""

import json
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hybrid
import solvers
from hybrid import metrics as M
from hybrid.testing import assert_stable

N = 32
X = jnp.arange(N) * (2 * math.pi / N)
# Anti-diffusion amplifies the round-off in every mode, the highest fastest: its
# blow-up tests use a grid whose highest mode (k = 4) stays far below the bound.
N8 = 8
X8 = jnp.arange(N8) * (2 * math.pi / N8)


def _k(n):
    return jnp.fft.rfftfreq(n, 1.0 / n)


class Linear(solvers.AbstractSystem):
    """$\\dot y = r y$."""

    rate: jax.Array
    n: int = eqx.field(static=True)

    @property
    def state_shape(self):
        return (self.n,)

    def vector_field(self, t, y, args):
        return self.rate * y


class Heat(solvers.AbstractSystem):
    """$u_t = \\nu u_{xx}$, spectrally exact on the grid."""

    nu: float
    n: int = eqx.field(static=True)

    @property
    def state_shape(self):
        return (self.n,)

    def vector_field(self, t, u, args):
        return jnp.fft.irfft(-self.nu * _k(self.n) ** 2 * jnp.fft.rfft(u), n=self.n)


class Advect(solvers.AbstractSystem):
    """$u_t = -c u_x$: $u(x, t) = u_0(x - ct)$."""

    c: float
    n: int = eqx.field(static=True)

    @property
    def state_shape(self):
        return (self.n,)

    def vector_field(self, t, u, args):
        return jnp.fft.irfft(-self.c * 1j * _k(self.n) * jnp.fft.rfft(u), n=self.n)


class NaNAfter(solvers.AbstractSystem):
    """Nothing moves until `t_nan`; from then on the tendency is NaN."""

    t_nan: jax.Array
    n: int = eqx.field(static=True)

    @property
    def state_shape(self):
        return (self.n,)

    def vector_field(self, t, y, args):
        return jnp.where(t > self.t_nan, jnp.nan, 0.0) * jnp.ones_like(y)


class Rotate(solvers.AbstractSystem):
    """Cluster order parameters $\\dot z_m = (i\\omega - \\gamma_m) z_m$, state [M, 2]."""

    omega: float
    gamma: jax.Array

    @property
    def state_shape(self):
        return (self.gamma.shape[0], 2)

    def vector_field(self, t, y, args):
        g = self.gamma[:, None]
        return jnp.stack([-self.omega * y[:, 1], self.omega * y[:, 0]], axis=-1) - g * y


class AntiDiffusion(eqx.Module):
    """A closure $a\\,u_{xx}$: with $a$ above the viscosity, the model is unstable."""

    a: jax.Array

    def __call__(self, t, u, args):
        n = u.shape[-1]
        return jnp.fft.irfft(self.a * _k(n) ** 2 * jnp.fft.rfft(u), n=n)


def _first_step_above(rate_energy: float, dt: float, factor: float = 10.0) -> int:
    """The first step s with exp(rate_energy * s * dt) > factor."""
    return math.floor(math.log(factor) / (rate_energy * dt)) + 1


# ---------------------------------------------------------------------------------------
# blow-up


def test_energy_blowup_at_the_right_step_and_trajectory():
    rates = jnp.array([0.5, 0.0, 1.0])
    physics = eqx.filter_vmap(lambda r: Linear(r, N))(rates)
    y0s = jnp.stack([jnp.sin(X)] * 3)
    dt = 0.05
    report = hybrid.stability(None, y0s, steps=100, dt=dt, save_every=10, physics=physics,
                              physics_batched=True)
    # rates r=0.5, 1: E = E0 exp(2 r t) crosses 10 E0 at s = ln10 / (2 r dt) = 46.05, 23.03
    expected = [_first_step_above(1.0, dt), -1, _first_step_above(2.0, dt)]
    assert expected == [47, -1, 24]
    np.testing.assert_array_equal(report.blowup_step, expected)
    np.testing.assert_array_equal(report.energy_step, expected)
    np.testing.assert_array_equal(report.nonfinite_step, [-1, -1, -1])
    np.testing.assert_allclose(report.energy_bound, 10 * 0.25, rtol=1e-12)
    # the energy record at the saves is the closed form
    t = np.arange(0, 101, 10) * dt
    np.testing.assert_allclose(report.energy[2], 0.25 * np.exp(2.0 * t), rtol=1e-9)
    assert not report.stable
    assert report.first_blowup() == ((2,), 24, "energy")


def test_nonfinite_blowup_at_the_right_step_with_t0():
    physics = eqx.filter_vmap(lambda t: NaNAfter(t, N))(jnp.array([0.35, 100.0, 0.75]))
    y0s = jnp.stack([jnp.sin(X)] * 3)
    kw = dict(steps=20, dt=0.1, save_every=5, physics_batched=True)
    # step s covers (s-1) dt .. s dt: its stages first pass 0.35 at s = 4, 0.75 at s = 8
    model = hybrid.Hybrid(NaNAfter(jnp.asarray(0.0), N), hybrid.zero_closure)
    report = hybrid.stability(model, y0s, physics=physics, **kw)
    np.testing.assert_array_equal(report.nonfinite_step, [4, -1, 8])
    np.testing.assert_array_equal(report.blowup_step, [4, -1, 8])
    np.testing.assert_array_equal(report.energy_step, [-1, -1, -1])
    assert np.isnan(report.energy_drift[0]) and np.isfinite(report.energy_drift[1])
    # started at t0 = 0.2, trajectory 0 meets t = 0.35 in step 2
    later = hybrid.stability(model, y0s, physics=physics, t0=0.2, **kw)
    np.testing.assert_array_equal(later.nonfinite_step, [2, -1, 6])
    assert later.first_blowup() == ((0,), 2, "non-finite")


def test_ensemble_blowup_names_the_member():
    physics = Heat(0.01, N8)
    ens = hybrid.Ensemble.stack([AntiDiffusion(jnp.asarray(0.0)),
                                 AntiDiffusion(jnp.asarray(0.11))], physics=physics)
    y0s = jnp.stack([jnp.sin(X8), jnp.sin(2 * X8)])
    dt = 0.1
    report = hybrid.stability(ens, y0s, steps=200, dt=dt, save_every=20)
    assert report.batch_shape == (2, 2)
    # member 1: net anti-diffusion 0.1, mode k grows E0 exp(0.2 k^2 t)
    expected = [_first_step_above(0.2, dt), _first_step_above(0.8, dt)]
    assert expected == [116, 29]
    np.testing.assert_array_equal(report.blowup_step, [[-1, -1], expected])
    block = report.to_dict()
    assert (block["blowup_step"], block["blowup_trajectory"], block["blowup_member"]) == (29, 1, 1)
    assert block["n_blowups"] == 2 and block["n_rollouts"] == 4


def test_batch_chunks_give_the_same_report():
    rates = jnp.array([0.5, 0.0, 1.0])
    physics = eqx.filter_vmap(lambda r: Linear(r, N))(rates)
    y0s = jnp.stack([jnp.sin(X), jnp.cos(X), jnp.sin(2 * X)])
    kw = dict(steps=40, dt=0.05, save_every=10, physics=physics, physics_batched=True)
    model = Linear(jnp.asarray(0.0), N)
    whole = hybrid.stability(hybrid.Hybrid(model, hybrid.zero_closure), y0s, **kw)
    chunked = hybrid.stability(hybrid.Hybrid(model, hybrid.zero_closure), y0s,
                               batch_size=2, **kw)
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(chunked), strict=True):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------------------
# drift, spectrum, corr_time: closed forms


def test_energy_and_enstrophy_drift_closed_form():
    r, dt, steps = 0.01, 0.05, 200
    y0 = jnp.sin(X) + 0.5 * jnp.sin(3 * X)
    diag = hybrid.Field1DDiagnostics()
    report = hybrid.stability(Linear(jnp.asarray(r), N), y0[None], steps=steps, dt=dt,
                              save_every=10, diagnostics=diag, baseline_fraction=0.1)
    s = np.arange(steps + 1)
    growth = np.exp(2 * r * s * dt)
    # late: N/2 < s <= N; baseline: 0 <= s <= 0.1 N
    expected = growth[steps // 2 + 1 :].mean() / growth[: steps // 10 + 1].mean() - 1
    np.testing.assert_allclose(report.energy_drift[0], expected, rtol=1e-9)
    # u -> e^{rt} u scales the enstrophy like the energy
    np.testing.assert_allclose(report.enstrophy_drift[0], expected, rtol=1e-9)
    # against a reference: the drift is relative to its mean energy
    e0 = 0.25 * (1 + 0.25)
    ref = jnp.broadcast_to(y0, (1, 5, N))
    with_ref = hybrid.stability(Linear(jnp.asarray(r), N), y0[None], steps=steps, dt=dt,
                                save_every=10, diagnostics=diag, reference=ref)
    np.testing.assert_allclose(with_ref.reference_energy[0], e0, rtol=1e-12)
    np.testing.assert_allclose(with_ref.energy_drift[0], growth[steps // 2 + 1 :].mean() - 1,
                               rtol=1e-9)


def test_spectrum_departure_closed_form_heat():
    nu, dt, steps, save = 0.02, 0.05, 100, 10
    ks = np.arange(1, 11)  # the resolved shells 1 <= k < 32/3
    y0 = sum(jnp.sin(k * X + 0.3 * k) / k for k in ks)
    diag = hybrid.Field1DDiagnostics()
    ref = jnp.broadcast_to(y0, (1, 3, N))
    report = hybrid.stability(Heat(nu, N), y0[None], steps=steps, dt=dt, save_every=save,
                              diagnostics=diag, reference=ref)
    t_late = np.arange(60, 101, 10) * dt  # saves in the second half
    decay = np.exp(-2 * nu * ks[:, None] ** 2 * t_late[None]).mean(axis=1)
    expected = np.mean(np.abs(np.log10(decay)))
    np.testing.assert_allclose(report.spectrum_departure[0], expected, rtol=1e-7)
    # without a reference: against step 0 and the saves of the baseline window (s <= 10)
    own = hybrid.stability(Heat(nu, N), y0[None], steps=steps, dt=dt, save_every=save,
                           diagnostics=diag)
    base = (1 + np.exp(-2 * nu * ks**2 * 10 * dt)) / 2
    expected_own = np.mean(np.abs(np.log10(decay) - np.log10(base)))
    np.testing.assert_allclose(own.spectrum_departure[0], expected_own, rtol=1e-7)
    # heat only loses energy: both drifts negative, the enstrophy's more so
    assert own.energy_drift[0] < 0 and own.enstrophy_drift[0] < own.energy_drift[0]


def test_cluster_moduli_departure_closed_form():
    gamma = jnp.array([0.0, 0.1, 0.3])
    r0 = np.array([0.9, 0.5, 0.7])
    y0 = jnp.stack([r0 * np.cos(1.0), r0 * np.sin(1.0)], axis=-1)
    system = Rotate(2.0, gamma)
    ref = jnp.broadcast_to(y0, (1, 4, 3, 2))
    dt = 0.025
    # a state [M, 2] of a system of one's own: its diagnostics are named, not guessed
    # from the shape (a user's [n, 2] state need not hold cluster order parameters)
    guessed = hybrid.stability(system, y0[None], steps=160, dt=dt, save_every=20,
                               reference=ref)
    assert guessed.diagnostics == "EnergyDiagnostics" and guessed.profile_name is None
    report = hybrid.stability(system, y0[None], steps=160, dt=dt, save_every=20, reference=ref,
                              diagnostics=hybrid.ClusterDiagnostics())
    assert report.profile_name == "order-parameter moduli"
    t_late = np.arange(100, 161, 20) * dt  # the saves with s > 80
    late = (r0[:, None] * np.exp(-np.asarray(gamma)[:, None] * t_late)).mean(axis=1)
    np.testing.assert_allclose(report.spectrum_departure[0], np.mean(np.abs(late - r0)),
                               rtol=1e-8)
    assert report.enstrophy_drift is None and report.enstrophy is None


def test_corr_time_matches_metrics_and_closed_form():
    dt, c = 0.05, 1.0
    y0 = jnp.sin(X)
    ref = jnp.broadcast_to(y0, (1, 40, N))  # a frozen reference: rho(t) = cos(ct)
    report = hybrid.stability(Advect(c, N), y0[None], steps=100, dt=dt, save_every=10,
                              reference=ref)
    ts = np.arange(40) * dt
    sol = solvers.solve(Advect(c, N), y0, ts, dt=dt)
    times, censored = M.corr_time_per_trajectory(sol.ys, ref[0], ts, time_axis=0)
    np.testing.assert_allclose(report.corr_time[0], times, rtol=1e-10)
    assert not bool(report.corr_censored[0]) and not bool(censored)
    # cos(ct) crosses 0.95 between s = 6 and 7: linear interpolation of cos
    c6, c7 = math.cos(6 * dt), math.cos(7 * dt)
    np.testing.assert_allclose(report.corr_time[0], 6 * dt + (c6 - 0.95) / (c6 - c7) * dt,
                               rtol=1e-6)
    # slow advection never drops within the reference: censored at dt
    slow = hybrid.stability(Advect(0.1, N), y0[None], steps=100, dt=dt, save_every=10,
                            reference=ref)
    assert bool(slow.corr_censored[0])
    np.testing.assert_allclose(slow.corr_time[0], 39 * dt, rtol=1e-12)
    # a reference longer than the rollout is cut at the last step
    long_ref = jnp.broadcast_to(y0, (1, 200, N))
    short = hybrid.stability(Advect(0.1, N), y0[None], steps=20, dt=dt, save_every=10,
                             reference=long_ref)
    np.testing.assert_allclose(short.corr_time[0], 20 * dt, rtol=1e-12)


# ---------------------------------------------------------------------------------------
# diagnostics and the report


def test_field1d_diagnostics_parseval_and_enstrophy():
    diag = hybrid.Field1DDiagnostics(length=2 * math.pi)
    u = jnp.sin(3 * X) + 0.5 * jnp.cos(5 * X) + 0.2
    spectrum = diag.profile(u)
    np.testing.assert_allclose(spectrum.sum(), diag.energy(u), rtol=1e-12)
    np.testing.assert_allclose(spectrum[np.array([0, 3, 5])], [0.02, 0.25, 0.0625],
                               rtol=1e-12)
    np.testing.assert_allclose(diag.enstrophy(u), 9 * 0.25 + 25 * 0.0625, rtol=1e-12)
    assert np.flatnonzero(diag.profile_mask((N,))).tolist() == list(range(1, 11))


def test_vorticity_diagnostics_follow_solvers():
    n = 16
    x = jnp.arange(n) * (2 * math.pi / n)
    xx, yy = jnp.meshgrid(x, x, indexing="ij")
    omega = jnp.sin(xx) * jnp.cos(2 * yy) + 0.5 * jnp.cos(3 * xx + yy) + 0.1 * jnp.sin(5 * yy)
    diag = hybrid.VorticityDiagnostics()
    np.testing.assert_allclose(diag.energy(omega), solvers.energy(omega), rtol=1e-12)
    np.testing.assert_allclose(diag.enstrophy(omega), solvers.enstrophy(omega), rtol=1e-12)
    spectrum = diag.profile(omega)
    assert diag.profile_mask((n, n)).shape == spectrum.shape
    np.testing.assert_allclose(spectrum.sum(), solvers.energy(omega), rtol=1e-10)
    assert np.flatnonzero(diag.profile_mask((n, n))).tolist() == [1, 2, 3, 4, 5]


def test_default_diagnostics_by_system():
    from hybrid.stability_tests import default_diagnostics

    burgers = solvers.Burgers1D(16, 0.05, length=3.0)
    assert default_diagnostics(burgers, (16,)) == hybrid.Field1DDiagnostics(3.0)
    assert isinstance(default_diagnostics(hybrid.Hybrid(burgers, hybrid.zero_closure), (16,)),
                      hybrid.Field1DDiagnostics)
    ns = solvers.NavierStokes2D(8, 1e-3)
    assert isinstance(default_diagnostics(ns, (8, 8)), hybrid.VorticityDiagnostics)
    oa = solvers.OttAntonsenNetwork(jnp.zeros(3), jnp.ones(3), 1.0)
    assert isinstance(default_diagnostics(oa, (3, 2)), hybrid.ClusterDiagnostics)
    assert default_diagnostics(Heat(0.1, 8), (8,)) == hybrid.EnergyDiagnostics(1)
    # by type, never by shape: a state [8, 2] of another system is just a state
    assert default_diagnostics(Heat(0.1, 8), (8, 2)) == hybrid.EnergyDiagnostics(2)


def test_metrics_block_is_json_with_the_api_keys():
    rates = jnp.array([0.0, 2.0])
    physics = eqx.filter_vmap(lambda r: Linear(r, N))(rates)
    y0s = jnp.stack([jnp.sin(X), jnp.sin(X)])
    kw = dict(steps=50, dt=0.05, save_every=10, physics_batched=True)
    model = hybrid.Hybrid(Linear(jnp.asarray(0.0), N), hybrid.zero_closure)
    bad = hybrid.stability(model, y0s, physics=physics, **kw).to_dict()
    good = hybrid.stability(model, y0s[:1], physics=jax.tree.map(lambda x: x[:1], physics),
                            **kw).to_dict()
    for block in (bad, good):
        assert json.loads(json.dumps(block)) == block
        assert isinstance(block["stable"], bool) and block["horizon_steps"] == 50
    assert good["stable"] and good["blowup_step"] is None and good["blowup_time"] is None
    # rate 2: 10 E0 at s = ln10 / (4 dt) = 11.5
    assert not bad["stable"]
    assert (bad["blowup_step"], bad["blowup_trajectory"], bad["blowup_reason"]) == (12, 1, "energy")
    assert bad["blowup_member"] is None and bad["members"] is None
    np.testing.assert_allclose(bad["blowup_time"], 0.6, rtol=1e-12)
    # drifts are averaged over the rollouts that did not blow up: trajectory 0 only
    assert bad["energy_drift"] == pytest.approx(0.0, abs=1e-12)
    assert bad["spectrum_departure"] is None and bad["corr_time"] is None


def test_summary_reads():
    ens = hybrid.Ensemble.stack([AntiDiffusion(jnp.asarray(0.0)),
                                 AntiDiffusion(jnp.asarray(0.11))], physics=Heat(0.01, N8))
    report = hybrid.stability(ens, jnp.sin(2 * X8)[None], steps=50, dt=0.1, save_every=10)
    text = report.summary()
    assert "2 rollouts: 1 blew up" in text
    assert "trajectory 0 (member 1): blew up: energy above the bound 2.5" in text
    assert "at step 29 (t=2.9)" in text


# ---------------------------------------------------------------------------------------
# assert_stable


def _heat_hybrid(a, n=N8):
    return hybrid.Hybrid(Heat(0.01, n), AntiDiffusion(jnp.asarray(a)))


def test_assert_stable_passes_for_a_stable_closure():
    y0s = jnp.stack([jnp.sin(X8), jnp.sin(2 * X8)])
    report = assert_stable(_heat_hybrid(0.005), y0s, steps=200, dt=0.1, save_every=20,
                           max_energy_drift=0.5)
    assert report.stable and report.batch_shape == (2,)


def test_assert_stable_fails_on_anti_diffusion_naming_step_and_trajectory():
    y0s = jnp.stack([jnp.sin(X8), jnp.sin(2 * X8)])
    with pytest.raises(AssertionError, match=r"(?s)2 of 2 rollouts failed over 200 steps.*"
                       r"trajectory 0: blew up: energy above the bound 2\.5 \(= 10 x reference\) "
                       r"at step 116 \(t=11\.6\).*"
                       r"trajectory 1: blew up: energy above the bound 2\.5 .* at step 29 "
                       r"\(t=2\.9\)"):
        assert_stable(_heat_hybrid(0.11), y0s, steps=200, dt=0.1, save_every=20)


def test_assert_stable_reports_nan_after_the_energy():
    # anti-diffusion this strong overflows to Inf/NaN within the run: both are named
    y0s = (jnp.sin(X) + 0.1 * jnp.sin(10 * X))[None]
    with pytest.raises(AssertionError, match=r"trajectory 0: blew up: energy above the bound "
                       r".* at step \d+ .*; then non-finite state \(NaN/Inf\) at step \d+"):
        assert_stable(_heat_hybrid(1.0, N), y0s, steps=200, dt=0.1, save_every=20)


def test_assert_stable_thresholds_on_drift_spectrum_and_corr_time():
    y0 = sum(jnp.sin(k * X) / k for k in range(1, 11))
    kw = dict(steps=100, dt=0.05, save_every=10, diagnostics=hybrid.Field1DDiagnostics())
    model = _heat_hybrid(0.0, N)  # plain heat, nu = 0.01: decays, stable
    with pytest.raises(AssertionError, match=r"trajectory 0: energy drift -0\.\d+ exceeds "
                       r"`max_energy_drift`=0\.01"):
        assert_stable(model, y0[None], max_energy_drift=0.01, **kw)
    with pytest.raises(AssertionError, match=r"trajectory 0: spectrum departure \d\.\d+ exceeds "
                       r"`max_spectrum_departure`=0\.001"):
        assert_stable(model, y0[None], max_spectrum_departure=1e-3, **kw)
    advect = hybrid.Hybrid(Advect(1.0, N), hybrid.zero_closure)
    ref = jnp.broadcast_to(jnp.sin(X), (1, 40, N))
    with pytest.raises(AssertionError, match=r"trajectory 0: corr_time 0\.3\d+ is below "
                       r"`min_corr_time`=1"):
        assert_stable(advect, jnp.sin(X)[None], reference=ref, min_corr_time=1.0, **kw)
    # heat over t = 5 takes the k = 10 shell down e^{-2 nu k^2 t}: about 4 decades
    assert assert_stable(model, y0[None], max_energy_drift=0.5, max_spectrum_departure=2.0,
                         **kw).stable


def test_assert_stable_refuses_thresholds_it_cannot_check():
    y0s = jnp.sin(X)[None]
    with pytest.raises(ValueError, match="measure no spectrum departure"):
        assert_stable(Heat(0.01, N), y0s, steps=10, dt=0.1, max_spectrum_departure=1.0)
    with pytest.raises(ValueError, match="pass a `reference`"):
        assert_stable(Heat(0.01, N), y0s, steps=10, dt=0.1, min_corr_time=1.0)
    with pytest.raises(ValueError, match="`max_energy_drift` must be >= 0"):
        assert_stable(Heat(0.01, N), y0s, steps=10, dt=0.1, max_energy_drift=-1.0)


# ---------------------------------------------------------------------------------------
# bad input


def test_bad_input_names_the_argument():
    y0s = jnp.sin(X)[None]
    heat = Heat(0.01, N)
    cases = [
        (dict(steps=1, dt=0.1), "`steps` must be an int >= 2"),
        (dict(steps=10, dt=0.0), "`dt` must be a positive number"),
        (dict(steps=10, dt=0.1, save_every=3), r"`steps` \(10\) must be a multiple of "
                                               r"`save_every` \(3\)"),
        (dict(steps=10, dt=0.1, energy_factor=0.0), "`energy_factor` must be > 0"),
        (dict(steps=10, dt=0.1, baseline_fraction=0.7), "`baseline_fraction` must be in"),
        (dict(steps=10, dt=0.1, reference=jnp.zeros((1, 5, 8))), "`reference` must have shape"),
        (dict(steps=10, dt=0.1, physics=heat), "`physics` is only used with a `hybrid.Hybrid`"),
        (dict(steps=10, dt=0.1, physics_batched=True), "`physics_batched=True` needs"),
        (dict(steps=10, dt=0.1, t0=jnp.zeros(3)), "`t0` must be a scalar or"),
        (dict(steps=10, dt=0.1, batch_size=0), "`batch_size` must be a positive int"),
    ]
    for kwargs, match in cases:
        with pytest.raises(ValueError, match=match):
            hybrid.stability(heat, y0s, **kwargs)
    with pytest.raises(ValueError, match="`y0s` must be a floating array"):
        hybrid.stability(heat, jnp.zeros((1, N), jnp.int32), steps=10, dt=0.1)
    stacked = eqx.filter_vmap(lambda r: Linear(r, N))(jnp.zeros(3))
    with pytest.raises(ValueError, match="batched over 3 systems but `y0s` holds 1"):
        hybrid.stability(hybrid.Hybrid(heat, hybrid.zero_closure), y0s, steps=10, dt=0.1,
                         physics=stacked, physics_batched=True)
    with pytest.raises(ValueError, match="`physics` is required when `model` is a bare closure"):
        hybrid.stability(AntiDiffusion(jnp.asarray(0.0)), y0s, steps=10, dt=0.1)
    with pytest.raises(ValueError, match="`model=None` rolls out `physics` alone"):
        hybrid.stability(None, y0s, steps=10, dt=0.1)
    with pytest.raises(ValueError, match="`physics` is required for an Ensemble of closures"):
        hybrid.stability(hybrid.Ensemble.stack([AntiDiffusion(jnp.asarray(0.0))]), y0s,
                         steps=10, dt=0.1)


# ---------------------------------------------------------------------------------------
# the pipeline: evaluate's block and `neuroscale stability DIR`

TINY = [
    "fine_n=64", "coarse_n=16", "viscosity=0.05", "train_steps=6", "horizon=2",
    "n_train=4", "n_test=2", "t_train=2.0", "t_spinup=0.5", "eval_horizon=10",
    "members=2", "width=8", "depth=2", "checkpoint_every=2", "batch_size=2",
    "stability_factor=5", "curriculum=false",
]


@pytest.fixture(scope="module")
def untrained_run(tmp_path_factory):
    """A run folder holding freshly initialised closures: what `load_run` reads,
    without the cost of training."""
    import jax.random as jr

    from neuroscale import build_config, task_class
    from neuroscale._run import template

    cls = task_class("burgers")
    task = cls(build_config(cls, sets=TINY))
    out = tmp_path_factory.mktemp("stability_run")
    task.cfg.save(out / "config.json")
    physics = task.coarse_physics(task.sample(jr.PRNGKey(0))[0], task.cfg.coarse_n)
    hybrid.save(out / "model", template(task, physics))
    return task.cfg, out


def test_cli_stability_refuses_bad_input_before_work(tmp_path, capsys):
    from neuroscale import build_config, task_class
    from neuroscale._cli import main

    assert main(["stability", str(tmp_path / "missing"), "--quiet"]) == 2
    assert "holds no run" in capsys.readouterr().err
    build_config(task_class("burgers"), sets=TINY).save(tmp_path / "config.json")
    assert main(["stability", str(tmp_path), "--quiet"]) == 2
    assert "holds no trained model (model/ missing)" in capsys.readouterr().err
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "ensemble.json").write_text("{}")
    assert main(["stability", str(tmp_path), "--factor", "0"]) == 2
    assert "`--factor` must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "metrics.json").exists()


# The pipeline tests below cost about 10 s of JAX compilation each on an idle 2-core
# machine (fine data, the coarse solver with the closure); evaluate's use of the
# stability run is also covered by tests/test_train.py in the default run.


@pytest.mark.slow
def test_cli_stability_writes_the_block_and_figure(untrained_run, capsys):
    from neuroscale._cli import main

    cfg, out = untrained_run
    (out / "metrics.json").write_text(json.dumps({"system": "burgers", "hybrid": {"rmse": 1}}))
    assert main(["stability", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "stability over 10 steps" in printed and "metrics.json" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["hybrid"] == {"rmse": 1}  # other blocks kept
    block = metrics["stability"]
    assert block["horizon_steps"] == cfg.stability_factor * cfg.horizon
    assert block["stable"] is True and block["blowup_step"] is None
    assert block["n_rollouts"] == cfg.members * cfg.n_test
    assert block["corr_time"] is not None and block["spectrum_departure"] is not None
    png = (out / "stability_energy.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_cli_stability_factor_and_fresh_metrics(untrained_run):
    from neuroscale._cli import main

    cfg, out = untrained_run
    (out / "metrics.json").unlink(missing_ok=True)
    assert main(["stability", str(out), "--quiet", "--factor", "3", "--no-figure"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["system"] == "burgers"
    assert metrics["stability"]["horizon_steps"] == 3 * cfg.horizon


@pytest.mark.slow
def test_evaluate_stability_keeps_its_keys(untrained_run):
    from neuroscale import load_run
    from neuroscale._data import test_set
    from neuroscale._run import run_stability

    _, out = untrained_run
    task, ens = load_run(out)
    test, _, _ = test_set(task, out, progress=False)
    block = run_stability(task, ens, test).to_dict()  # as evaluate calls it
    assert {"stable", "horizon_steps", "blowup_step", "energy_bound", "max_energy",
            "energy_drift"} <= set(block)
    assert block["horizon_steps"] == task.cfg.stability_factor * task.cfg.horizon
    ref_energy = float(jnp.max(task.energy(test.ys)))
    np.testing.assert_allclose(block["energy_bound"], 10 * ref_energy, rtol=1e-12)
