"""`hybrid.Hybrid` and `hybrid.Ensemble`: plugging closures into the solvers."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hybrid
import solvers


class Damping(eqx.Module):
    """A closure with one parameter: dy = -rate * y (+ a shift, to test grads)."""

    rate: jax.Array
    shift: jax.Array

    def __call__(self, t, y, args):
        return -self.rate * y + self.shift * jnp.sin(y)


@pytest.fixture
def physics():
    return solvers.Burgers1D(64, 0.05)


@pytest.fixture
def u0(key):
    return solvers.random_smooth_field(key, 64)


TS = jnp.linspace(0.0, 1.0, 5)


def test_zero_closure_is_the_physics(physics, u0):
    ref = solvers.solve(physics, u0, TS, dt=0.01).ys
    for mode in ("tendency", "correction"):
        out = solvers.solve(hybrid.Hybrid(physics, hybrid.zero_closure, mode=mode), u0, TS, dt=0.01)
        np.testing.assert_allclose(out.ys, ref, atol=1e-14)


def test_tendency_mode_integrates_physics_plus_closure(physics, u0):
    # ETDRK4 with the closure in the explicit part vs Tsit5 on the summed vector field.
    closure = Damping(jnp.array(0.7), jnp.array(0.2))
    model = hybrid.Hybrid(physics, closure)
    ours = solvers.solve(model, u0, TS, dt=0.005).ys

    class Summed(solvers.AbstractSystem):
        inner: hybrid.Hybrid

        @property
        def state_shape(self):
            return self.inner.state_shape

        def vector_field(self, t, y, args):
            return self.inner.vector_field(t, y, args)

    ref = solvers.solve(
        Summed(model), u0, TS, dt=1e-3, solver=diffrax.Tsit5(),
        stepsize_controller=diffrax.PIDController(rtol=1e-10, atol=1e-10),
    ).ys
    np.testing.assert_allclose(ours, ref, atol=1e-8)
    # and the closure matters: the damped solution differs from the physics alone
    assert float(jnp.max(jnp.abs(ours[-1] - solvers.solve(physics, u0, TS, dt=0.005).ys[-1]))) > 0.1


def test_correction_mode_adds_after_each_step(physics, u0):
    closure = Damping(jnp.array(0.05), jnp.array(0.0))
    dt = 0.01
    out = solvers.solve(hybrid.Hybrid(physics, closure, mode="correction"), u0,
                        jnp.array([0.0, 3 * dt]), dt=dt).ys[-1]
    y = u0
    for k in range(3):
        y = solvers.solve(physics, y, jnp.array([k * dt, (k + 1) * dt]), dt=dt).ys[-1]
        y = y + closure(None, y, None)
    np.testing.assert_allclose(out, y, atol=1e-13)


def test_correction_applies_to_a_caller_given_solver(physics, u0):
    closure = Damping(jnp.array(0.05), jnp.array(0.0))
    model = hybrid.Hybrid(physics, closure, mode="correction")
    a = solvers.solve(model, u0, TS, dt=0.01, solver=solvers.CrankNicolsonRK4()).ys
    b = solvers.solve(physics, u0, TS, dt=0.01, solver=solvers.CrankNicolsonRK4()).ys
    assert float(jnp.max(jnp.abs(a[-1] - b[-1]))) > 1e-3


@pytest.mark.parametrize("mode", ["tendency", "correction"])
def test_gradient_to_closure_parameters_matches_fd(physics, u0, mode):
    def loss(rate, shift):
        model = hybrid.Hybrid(physics, Damping(rate, shift), mode=mode)
        return jnp.mean(solvers.solve(model, u0, jnp.array([0.0, 1.0]), dt=0.01).ys[-1] ** 2)

    g = jax.grad(loss, argnums=(0, 1))(0.02, 0.01)
    eps = 1e-6
    fd = ((loss(0.02 + eps, 0.01) - loss(0.02 - eps, 0.01)) / (2 * eps),
          (loss(0.02, 0.01 + eps) - loss(0.02, 0.01 - eps)) / (2 * eps))
    np.testing.assert_allclose(g, fd, rtol=1e-6)


def test_bad_arguments(physics):
    with pytest.raises(ValueError, match="`physics`"):
        hybrid.Hybrid(lambda t, y, a: y, hybrid.zero_closure)
    with pytest.raises(ValueError, match="`closure`"):
        hybrid.Hybrid(physics, 3.0)
    with pytest.raises(ValueError, match="`mode`"):
        hybrid.Hybrid(physics, hybrid.zero_closure, mode="sideways")


def test_ensemble_one_vmapped_solve(physics, u0, key):
    def make(k):
        a, b = jax.random.uniform(k, (2,), maxval=0.3)
        return Damping(a, b)

    ens = hybrid.Ensemble.init(make, size=3, key=key, physics=physics)
    assert ens.size == 3
    sol = ens.solve(u0, TS, dt=0.01)
    assert sol.ys.shape == (3, len(TS), 64)
    assert sol.blowup_index.shape == (3,)
    for i in range(3):
        ref = solvers.solve(ens.member(i), u0, TS, dt=0.01).ys
        np.testing.assert_allclose(sol.ys[i], ref, atol=1e-13)
    # members differ
    assert float(jnp.std(sol.ys[:, -1], axis=0).max()) > 1e-4


def test_ensemble_stack_of_hybrids(physics, u0):
    models = [hybrid.Hybrid(physics, Damping(jnp.array(r), jnp.array(0.0))) for r in (0.1, 0.2)]
    ens = hybrid.Ensemble.stack(models)
    sol = ens.solve(u0, TS, dt=0.01)
    np.testing.assert_allclose(sol.ys[1], solvers.solve(models[1], u0, TS, dt=0.01).ys, atol=1e-13)


def test_ensemble_members_get_independent_noise_paths(key):
    # Noisy physics (Kuramoto with phase noise) and identical closures: any difference
    # between the members' trajectories comes from their own Brownian paths.
    omega = solvers.lorentzian_frequencies(key, 16)
    physics = solvers.Kuramoto(omega, 1.0, noise=0.3)
    members = eqx.filter_vmap(lambda k: Damping(jnp.zeros(()), jnp.zeros(())))(
        jax.random.split(key, 3))
    ens = hybrid.Ensemble(members, physics)
    ts = jnp.linspace(0.0, 1.0, 3)
    sol = ens.solve(jnp.zeros(16), ts, dt=0.05, key=jax.random.PRNGKey(3))
    assert sol.ys.shape == (3, 3, 16)
    assert not np.allclose(sol.ys[0, -1], sol.ys[1, -1])
    assert not np.allclose(sol.ys[1, -1], sol.ys[2, -1])
    # the same key gives the same paths (reproducible)
    again = ens.solve(jnp.zeros(16), ts, dt=0.05, key=jax.random.PRNGKey(3))
    np.testing.assert_array_equal(sol.ys, again.ys)
