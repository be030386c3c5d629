"""Burgers1D against Cole–Hopf, convergence orders, conservation, gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import solvers

NU = 0.1
# phi = 2 + sum_k c_k exp(-nu k^2 t) cos(k x + p_k) > 0 solves the heat equation;
# u = -2 nu phi_x / phi then solves viscous Burgers exactly (Cole–Hopf).
MODES = [(1, 0.5, 0.3), (2, 0.3, 1.0), (3, 0.2, 2.0)]


def cole_hopf(x, t, nu=NU, modes=MODES):
    phi = 2.0 + sum(c * np.exp(-nu * k * k * t) * np.cos(k * x + p) for k, c, p in modes)
    dphi = sum(-c * k * np.exp(-nu * k * k * t) * np.sin(k * x + p) for k, c, p in modes)
    return -2 * nu * dphi / phi


def rel_l2(a, b):
    return float(np.linalg.norm(np.asarray(a) - b) / np.linalg.norm(b))


def test_cole_hopf_exact():
    n = 256
    system = solvers.Burgers1D(n, NU)
    x = np.asarray(system.grid)
    ts = jnp.linspace(0.0, 2.0, 5)
    sol = solvers.solve(system, jnp.asarray(cole_hopf(x, 0.0)), ts, dt=1e-2)
    for t, u in zip(np.asarray(ts), sol.ys, strict=True):
        err = rel_l2(u, cole_hopf(x, t))
        assert err < 1e-6, f"t={t}: relative L2 error {err:.2e} vs Cole–Hopf (tol 1e-6)"


def test_cole_hopf_steep_front_low_viscosity():
    # A steeper front (nu = 0.02) still resolved at n = 512.
    n, nu = 512, 0.02
    modes = [(1, 0.9, 0.0)]
    system = solvers.Burgers1D(n, nu)
    x = np.asarray(system.grid)
    u0 = cole_hopf(x, 0.0, nu, modes)
    u0 = cole_hopf(x, 0.0, nu, [(1, 0.9, 0.0)])
    # phi = 2 + 0.9 cos x -> u has a sharp front near x = pi
    sol = solvers.solve(system, jnp.asarray(u0), jnp.array([0.0, 1.0]), dt=2e-3)
    err = rel_l2(sol.ys[-1], cole_hopf(x, 1.0, nu, modes))
    assert err < 1e-6, f"relative L2 error {err:.2e} (tol 1e-6)"


def _convergence_slope(solver, dts, n, t1=1.0):
    # Temporal error only: against the same spatial discretisation with a tiny dt.
    system = solvers.Burgers1D(n, NU)
    x = np.asarray(system.grid)
    u0 = jnp.asarray(cole_hopf(x, 0.0))
    exact = np.asarray(solvers.solve(system, u0, jnp.array([0.0, t1]), dt=1e-3).ys[-1])
    errors = []
    for dt in dts:
        sol = solvers.solve(system, u0, jnp.array([0.0, t1]), dt=dt, solver=solver)
        errors.append(rel_l2(sol.ys[-1], exact))
    slope = np.polyfit(np.log(dts), np.log(errors), 1)[0]
    return slope, errors


@pytest.mark.parametrize(
    "solver, order, dts, n",
    [
        (solvers.ETDRK4(), 4.0, [0.5, 0.25, 0.125, 0.0625], 128),
        (solvers.CrankNicolsonRK4(), 2.0, [0.2, 0.1, 0.05, 0.025], 128),
    ],
    ids=["etdrk4", "cnrk4"],
)
def test_convergence_order(solver, order, dts, n):
    slope, errors = _convergence_slope(solver, dts, n)
    assert abs(slope - order) < 0.3, f"slope {slope:.2f}, nominal {order}; errors {errors}"


def test_mean_conserved_with_zero_mean_forcing(key):
    k1, k2 = jax.random.split(key)
    forcing = solvers.BurgersForcing.random(k1)
    system = solvers.Burgers1D(128, 0.02, forcing=forcing)
    u0 = solvers.random_smooth_field(k2, 128, zero_mean=False)
    sol = solvers.solve(system, u0, jnp.linspace(0, 5.0, 6), dt=5e-3)
    drift = np.max(np.abs(np.asarray(sol.ys.mean(axis=1)) - float(u0.mean())))
    assert drift < 1e-13, f"mean drifted by {drift:.2e}"


def test_forced_solution_is_converged_in_dt(key):
    # No exact solution with forcing: compare dt against dt/4 (ETDRK4: error ~ 256x
    # smaller), which fails if the forcing's time dependence were mishandled.
    k1, k2 = jax.random.split(key)
    system = solvers.Burgers1D(128, 0.05, forcing=solvers.BurgersForcing.random(k1))
    u0 = solvers.random_smooth_field(k2, 128)
    ts = jnp.array([0.0, 2.0])
    ref = solvers.solve(system, u0, ts, dt=0.0025).ys[-1]
    coarse = solvers.solve(system, u0, ts, dt=0.04).ys[-1]
    fine = solvers.solve(system, u0, ts, dt=0.01).ys[-1]
    e_coarse, e_fine = rel_l2(coarse, np.asarray(ref)), rel_l2(fine, np.asarray(ref))
    assert e_fine < e_coarse / 50, (e_coarse, e_fine)


def test_float32_default_runs_in_float32(key):
    system = solvers.Burgers1D(64, 0.05)
    u0 = solvers.random_smooth_field(key, 64, dtype=jnp.float32)
    sol = solvers.solve(system, u0, jnp.linspace(0, 1, 3), dt=0.01)
    assert sol.ys.dtype == jnp.float32
    ref = solvers.solve(system, u0.astype(jnp.float64), jnp.linspace(0, 1, 3), dt=0.01).ys
    assert rel_l2(sol.ys[-1], np.asarray(ref[-1])) < 1e-5


def test_gradient_matches_finite_differences(key):
    # d/dnu and a directional derivative w.r.t. u0 of a loss after 100 ETDRK4 steps.
    n = 64
    k1, k2, k3 = jax.random.split(key, 3)
    forcing = solvers.BurgersForcing.random(k1)
    u0 = solvers.random_smooth_field(k2, n)
    v = jax.random.normal(k3, (n,))
    ts = jnp.array([0.0, 1.0])

    def loss(nu, u0):
        system = solvers.Burgers1D(n, nu, forcing=forcing)
        u = solvers.solve(system, u0, ts, dt=0.01).ys[-1]
        return jnp.sum(u**3) / n

    g_nu, g_u0 = jax.grad(loss, argnums=(0, 1))(0.05, u0)
    eps = 1e-6
    fd_nu = (loss(0.05 + eps, u0) - loss(0.05 - eps, u0)) / (2 * eps)
    fd_dir = (loss(0.05, u0 + eps * v) - loss(0.05, u0 - eps * v)) / (2 * eps)
    np.testing.assert_allclose(g_nu, fd_nu, rtol=1e-6)
    np.testing.assert_allclose(jnp.dot(g_u0, v), fd_dir, rtol=1e-6)


def test_vmap_over_forcings_and_states(key):
    keys = jax.random.split(key, 3)
    forcings = jax.vmap(solvers.BurgersForcing.random)(keys)
    u0s = jax.vmap(lambda k: solvers.random_smooth_field(k, 64))(keys)
    ts = jnp.linspace(0, 1, 3)

    def run(forcing, u0):
        return solvers.solve(solvers.Burgers1D(64, 0.05, forcing=forcing), u0, ts, dt=0.01).ys

    batched = jax.vmap(run)(forcings, u0s)
    for i in range(3):
        f_i = jax.tree_util.tree_map(lambda x, i=i: x[i], forcings)
        np.testing.assert_allclose(batched[i], run(f_i, u0s[i]), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n=0, viscosity=0.1), "`n`"),
        (dict(n=3.5, viscosity=0.1), "`n`"),
        (dict(n=64, viscosity=0.0), "`viscosity`"),
        (dict(n=64, viscosity=-1.0), "`viscosity`"),
        (dict(n=64, viscosity=float("nan")), "`viscosity`"),
        (dict(n=64, viscosity=0.1, length=0.0), "`length`"),
        (dict(n=64, viscosity=0.1, forcing=3.0), "`forcing`"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        solvers.Burgers1D(**kwargs)


def test_random_fields_bad_input(key):
    with pytest.raises(ValueError, match="`max_wavenumber`"):
        solvers.random_smooth_field(key, 16, max_wavenumber=8)
    with pytest.raises(ValueError, match="`n_modes`"):
        solvers.BurgersForcing.random(key, n_modes=0)


def test_matches_exponax_etdrk4_step(key):
    # An independent implementation: exponax's Burgers stepper (ETDRK order 4, 2/3
    # dealiasing, conservative form) must agree with ours step for step. n = 96: both
    # keep |m| <= 31 (at n = 128 we keep m = 42, 3 * 42 < 128, exponax stops at 41).
    exponax = pytest.importorskip("exponax")
    n, nu, dt = 96, 0.05, 0.01
    stepper = exponax.stepper.Burgers(
        1, 2 * np.pi, n, dt, diffusivity=nu, order=4, single_channel=True, conservative=True
    )
    u0 = solvers.random_smooth_field(key, n)
    ours = solvers.solve(solvers.Burgers1D(n, nu), u0, jnp.arange(11) * dt, dt=dt).ys
    theirs = exponax.rollout(stepper, 10, include_init=True)(u0[None])[:, 0]
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-13)
