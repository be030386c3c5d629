"""ETDRK4's coefficients against the phi-functions, and its step-size cache."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import solvers
from solvers._etdrk4 import etdrk4_coefficients, with_fixed_step


def _phi(x: float) -> tuple[float, float, float]:
    r"""$\varphi_1, \varphi_2, \varphi_3$ at $x$ in float64: the series below |x| = 1
    (no cancellation), the closed forms above (cancellation of at most ~2 digits)."""
    if abs(x) < 1:
        return tuple(sum(x**m / math.factorial(m + k) for m in range(30)) for k in (1, 2, 3))
    e = math.exp(x)
    return (e - 1) / x, (e - 1 - x) / x**2, (e - 1 - x - x * x / 2) / x**3


def _exact(hl: float, h: float) -> list[float]:
    p1, p2, p3 = _phi(hl)
    return [
        math.exp(hl),
        math.exp(hl / 2),
        h / 2 * _phi(hl / 2)[0],
        h * (p1 - 3 * p2 + 4 * p3),
        h * (p2 - 2 * p3),
        h * (-p2 + 4 * p3),
    ]


def test_coefficients_match_phi_functions():
    # Real operator (Burgers, Navier-Stokes): hL from 0 through the stiff range, and a
    # few growing modes. The contour integral's own error grows with |hL| (cancellation
    # in the integrand on the unit circle), 5e-13 relative at hL = -100: tolerance 2e-12.
    h = 0.1
    hl = np.concatenate([[0.0, -1e-9, -1e-3], -np.logspace(-2, 2, 60), [0.3, 1.0, 2.0]])
    got = etdrk4_coefficients(jnp.asarray(hl / h), jnp.asarray(h))
    want = np.array([_exact(x, h) for x in hl]).T
    names = ["E", "E_1/2", "Q", "f1", "f2", "f3"]
    for name, g, w in zip(names, got, want, strict=True):
        assert g.dtype == jnp.float64, f"{name}: a real operator gives real coefficients"
        np.testing.assert_allclose(g, w, rtol=2e-12, atol=0, err_msg=name)


def test_complex_operator_coefficients():
    # A complex L (dispersion): the full contour; same exact values off the real axis.
    h = 0.05
    hl = np.array([-0.5 + 2.0j, -3.0 - 1.0j, 0.2j, -20.0 + 5.0j])
    got = etdrk4_coefficients(jnp.asarray(hl / h), jnp.asarray(h))

    def phi(x):
        if abs(x) < 1:
            return [sum(x**m / math.factorial(m + k) for m in range(30)) for k in (1, 2, 3)]
        e = np.exp(x)
        return [(e - 1) / x, (e - 1 - x) / x**2, (e - 1 - x - x * x / 2) / x**3]

    for i, x in enumerate(hl):
        p1, p2, p3 = phi(x)
        want = [np.exp(x), np.exp(x / 2), h / 2 * phi(x / 2)[0], h * (p1 - 3 * p2 + 4 * p3),
                h * (p2 - 2 * p3), h * (-p2 + 4 * p3)]
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(complex(g[i]), w, rtol=2e-12)


@pytest.fixture
def burgers_state(key):
    system = solvers.Burgers1D(64, 0.05)
    z0 = system.to_internal(solvers.random_smooth_field(key, 64))
    return system, system.terms(), z0


def test_default_recomputes_for_a_new_step_size(burgers_state):
    system, terms, z0 = burgers_state
    solver = solvers.ETDRK4()
    state = solver.init(terms, 0.0, 0.01, z0, None)
    z1, _, _, new_state, _ = solver.step(terms, 0.0, 0.004, z0, None, state, False)
    fresh = solver.init(terms, 0.0, 0.004, z0, None)
    z_ref = solver.step(terms, 0.0, 0.004, z0, None, fresh, False)[0]
    np.testing.assert_allclose(z1, z_ref, rtol=1e-14, atol=1e-14)
    assert float(new_state[0]) == pytest.approx(0.004), "the cache follows the new size"


def test_fixed_step_is_the_same_step_and_keeps_its_state(burgers_state):
    system, terms, z0 = burgers_state
    state = solvers.ETDRK4().init(terms, 0.0, 0.01, z0, None)
    z_default = solvers.ETDRK4().step(terms, 0.0, 0.01, z0, None, state, False)[0]
    fixed = solvers.ETDRK4(fixed_step=True)
    z_fixed, _, _, new_state, _ = fixed.step(terms, 0.0, 0.01, z0, None, state, False)
    np.testing.assert_array_equal(z_fixed, z_default)
    # Returned as is: what makes the coefficients loop-invariant inside a scan.
    assert new_state is state


def test_with_fixed_step_reaches_wrapped_solvers():
    import hybrid

    # hybrid's solver-in-the-loop wrapper holds the ETDRK4 it steps with
    model = hybrid.Hybrid(solvers.Burgers1D(16, 0.05), hybrid.zero_closure, mode="correction")
    wrapped = with_fixed_step(model.wrap_solver(solvers.ETDRK4()))
    assert isinstance(wrapped, hybrid.CorrectedSolver)
    assert wrapped.solver.fixed_step
    assert with_fixed_step(solvers.ETDRK4()).fixed_step
    other = solvers.CrankNicolsonRK4()
    assert with_fixed_step(other) == other


def test_solve_gradient_is_the_same_with_fixed_steps(key):
    # solve's uniform path uses fixed_step=True; a non-uniform `ts` takes the cached
    # default path. Same rollout, same gradient (to round-off).
    system = solvers.Burgers1D(64, 0.05)
    u0 = solvers.random_smooth_field(key, 64)

    def loss(u, ts):
        return jnp.sum(solvers.solve(system, u, ts, dt=0.01).ys[-1] ** 2)

    uniform = np.array([0.0, 0.1, 0.2, 0.3])
    nonuniform = np.array([0.0, 0.1, 0.2, 0.25, 0.3])  # same 30 steps of 0.01
    g1 = jax.grad(loss)(u0, uniform)
    g2 = jax.grad(loss)(u0, nonuniform)
    np.testing.assert_allclose(g1, g2, rtol=1e-11, atol=1e-13)
