"""`solvers.solve`: argument checks, blow-up reporting, save times, adaptive path,
memory of reverse mode."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import solvers


@pytest.fixture
def burgers():
    return solvers.Burgers1D(64, 0.05)


@pytest.fixture
def u0(key):
    return solvers.random_smooth_field(key, 64)


@pytest.fixture
def no_tracing(monkeypatch):
    """Fail if anything reaches lax.scan: errors must come before compilation."""

    def boom(*args, **kwargs):
        raise AssertionError("solve started tracing before rejecting its input")

    monkeypatch.setattr(jax.lax, "scan", boom)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(ts=jnp.array([0.0, 1.0, 0.5])), "`ts` must be strictly increasing"),
        (dict(ts=jnp.array([0.0, 0.0])), "`ts` must be strictly increasing"),
        (dict(ts=jnp.zeros((2, 2))), "`ts` must be a 1D array"),
        (dict(ts=jnp.array([0.0, jnp.nan])), "`ts` must be finite"),
        (dict(dt=0.0), "`dt`"),
        (dict(dt=-0.1), "`dt`"),
        (dict(dt=float("inf")), "`dt`"),
        (dict(dt="big"), "`dt`"),
        (dict(checkpoint_levels=0), "`checkpoint_levels`"),
    ],
)
def test_bad_arguments_raise_before_tracing(burgers, u0, no_tracing, kwargs, match):
    call = dict(ts=jnp.linspace(0, 1, 3), dt=0.01) | kwargs
    with pytest.raises(ValueError, match=match):
        solvers.solve(burgers, u0, call.pop("ts"), **call)


def test_bad_state_and_system(burgers, u0, no_tracing):
    ts = jnp.linspace(0, 1, 3)
    with pytest.raises(ValueError, match="`y0` must have shape \\(64,\\)"):
        solvers.solve(burgers, jnp.zeros(65), ts, dt=0.01)
    with pytest.raises(ValueError, match="`y0` must have shape"):
        solvers.solve(burgers, jnp.zeros((2, 64)), ts, dt=0.01)
    with pytest.raises(ValueError, match="`y0` must have a real floating dtype"):
        solvers.solve(burgers, jnp.zeros(64, dtype=jnp.int32), ts, dt=0.01)
    with pytest.raises(ValueError, match="`y0` must have a real floating dtype"):
        solvers.solve(burgers, jnp.zeros(64, dtype=jnp.complex64), ts, dt=0.01)
    with pytest.raises(ValueError, match="`system` must be a solvers.AbstractSystem"):
        solvers.solve(lambda t, y, a: -y, u0, ts, dt=0.01)


def test_traced_ts_is_refused(burgers, u0):
    with pytest.raises(ValueError, match="`ts` must be concrete"):
        jax.jit(lambda ts: solvers.solve(burgers, u0, ts, dt=0.01).ys)(jnp.linspace(0, 1, 3))


def _unstable():
    # Explicit Euler far outside its stability region on a stiff diffusion: blows up.
    return solvers.Burgers1D(64, 1.0), diffrax.Euler(), 0.5


def test_blowup_raises(u0):
    system, solver, dt = _unstable()
    with pytest.raises(Exception, match="blew up"):
        sol = solvers.solve(system, u0, jnp.linspace(0, 200, 5), dt=dt, solver=solver)
        jax.block_until_ready(sol.ys)


def test_blowup_reported_without_throw(u0):
    system, solver, dt = _unstable()
    ts = jnp.linspace(0, 200, 5)
    sol = solvers.solve(system, u0, ts, dt=dt, solver=solver, throw=False)
    assert not bool(sol.finite)
    i = int(sol.blowup_index)
    assert 1 <= i < len(ts)
    assert not np.all(np.isfinite(np.asarray(sol.ys[i])))
    assert np.all(np.isfinite(np.asarray(sol.ys[:i])))
    assert float(sol.blowup_time) == float(ts[i])


def test_finite_rollout_reports_no_blowup(burgers, u0):
    sol = solvers.solve(burgers, u0, jnp.linspace(0, 1, 3), dt=0.01, throw=False)
    assert bool(sol.finite) and int(sol.blowup_index) == -1
    assert np.isnan(float(sol.blowup_time))


def test_saves_at_ts_and_steps(burgers, u0):
    ts = jnp.linspace(0.5, 2.5, 5)
    sol = solvers.solve(burgers, u0, ts, dt=0.03)
    assert sol.ys.shape == (5, 64)
    np.testing.assert_array_equal(sol.ts, ts)
    np.testing.assert_array_equal(sol.ys[0], u0)
    # 0.5 / 0.03 -> 17 steps per interval
    assert sol.stats["num_steps"] == 4 * 17


def test_nonuniform_ts_match_a_uniform_run(burgers, u0):
    ts = jnp.array([0.0, 0.1, 0.35, 0.4, 1.0])
    dense = jnp.linspace(0.0, 1.0, 201)
    sol = solvers.solve(burgers, u0, ts, dt=0.005)
    ref = solvers.solve(burgers, u0, dense, dt=0.005)
    idx = [0, 20, 70, 80, 200]
    np.testing.assert_allclose(sol.ys, ref.ys[jnp.array(idx)], rtol=0, atol=1e-12)


def test_adaptive_path_agrees_with_fixed(burgers, u0):
    ts = jnp.linspace(0, 1, 4)
    fixed = solvers.solve(burgers, u0, ts, dt=0.005)
    adaptive = solvers.solve(
        burgers,
        u0,
        ts,
        dt=0.001,
        solver=diffrax.Tsit5(),
        stepsize_controller=diffrax.PIDController(rtol=1e-9, atol=1e-9),
    )
    np.testing.assert_allclose(adaptive.ys, fixed.ys, atol=1e-7)
    assert bool(adaptive.finite)


def test_jit_and_vmap_compose(burgers, key):
    u0s = jax.vmap(lambda k: solvers.random_smooth_field(k, 64))(jax.random.split(key, 4))
    ts = jnp.linspace(0, 1, 3)
    run = jax.jit(jax.vmap(lambda u: solvers.solve(burgers, u, ts, dt=0.01).ys))
    out = run(u0s)
    assert out.shape == (4, 3, 64)
    np.testing.assert_allclose(out[2], solvers.solve(burgers, u0s[2], ts, dt=0.01).ys, atol=1e-13)


def _grad_temp_bytes(steps, levels=None):
    system = solvers.Burgers1D(256, 0.05)
    u0 = solvers.random_smooth_field(jax.random.PRNGKey(0), 256, dtype=jnp.float32)
    ts = jnp.array([0.0, steps * 0.01])

    def loss(u):
        sol = solvers.solve(system, u, ts, dt=0.01, checkpoint_levels=levels)
        return jnp.sum(sol.ys[-1] ** 2)

    compiled = jax.jit(jax.grad(loss)).lower(u0).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_reverse_mode_memory_is_sublinear():
    # XLA's own accounting of the gradient program's temporaries (deterministic).
    m100, m1000 = _grad_temp_bytes(100), _grad_temp_bytes(1000)
    assert m1000 < 2 * m100, f"grad memory 100 steps {m100} B, 1000 steps {m1000} B"
    # Without checkpointing it is linear: the check above can fail.
    naive100, naive1000 = _grad_temp_bytes(100, 1), _grad_temp_bytes(1000, 1)
    assert naive1000 > 5 * naive100


def _many_saves(saves, levels=None, steps_per_save=2):
    # A training rollout: a loss on every save, few solver steps between saves.
    system = solvers.Burgers1D(256, 0.05)
    u0 = solvers.random_smooth_field(jax.random.PRNGKey(0), 256, dtype=jnp.float32)
    ts = jnp.arange(saves + 1) * (steps_per_save * 0.01)

    def loss(u):
        sol = solvers.solve(system, u, ts, dt=0.01, checkpoint_levels=levels)
        return jnp.mean(sol.ys**2)

    return jax.jit(jax.grad(loss)), u0


def test_reverse_mode_memory_is_sublinear_in_the_number_of_saves():
    def temp_bytes(saves, levels=None):
        grad, u0 = _many_saves(saves, levels)
        return grad.lower(u0).compile().memory_analysis().temp_size_in_bytes

    m16, m256 = temp_bytes(16), temp_bytes(256)
    naive16, naive256 = temp_bytes(16, 1), temp_bytes(256, 1)
    # 16x the saves. Naive taping grows about 16x. The saved states (an output the
    # loss and its gradient need) grow 16x either way; with checkpointing the taped
    # steps do not, so the growth is a fraction of the naive one (measured 0.23).
    assert naive256 > 10 * naive16
    assert m256 - m16 < (naive256 - naive16) / 3, (m16, m256, naive16, naive256)
    # Same gradient as taping every step.
    grad, u0 = _many_saves(64)
    naive, _ = _many_saves(64, 1)
    np.testing.assert_allclose(grad(u0), naive(u0), rtol=1e-5, atol=1e-9)


def test_float32_save_times_take_one_step_per_interval(burgers, key):
    # jnp.arange(T) * dt in float32 is uniform only up to rounding: that must not
    # double the steps nor fall back to the (slower) non-uniform path.
    u0 = solvers.random_smooth_field(key, 64, dtype=jnp.float32)
    ts = jnp.arange(101, dtype=jnp.float32) * jnp.float32(1e-3)
    sol = solvers.solve(burgers, u0, ts, dt=1e-3)
    assert sol.stats["num_steps"] == 100


def test_traced_time_offset(key):
    # A time-dependent forcing makes the offset matter; it may be traced under jit.
    k1, k2 = jax.random.split(key)
    system = solvers.Burgers1D(64, 0.05, forcing=solvers.BurgersForcing.random(k1))
    u0 = solvers.random_smooth_field(k2, 64)
    ts = jnp.linspace(0.0, 0.5, 3)
    shifted = jax.jit(lambda off: solvers.solve(system, u0, ts, dt=0.01, t_offset=off).ys)(1.5)
    direct = solvers.solve(system, u0, ts + 1.5, dt=0.01).ys
    np.testing.assert_allclose(shifted, direct, atol=1e-12)
    plain = solvers.solve(system, u0, ts, dt=0.01).ys
    assert float(jnp.max(jnp.abs(plain[-1] - direct[-1]))) > 1e-3
