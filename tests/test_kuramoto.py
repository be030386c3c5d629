"""Kuramoto: Ott–Antonsen exactness, the synchronisation threshold, sparse vs dense
coupling, gradients through rollouts, time-dependent coupling and phase noise."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import solvers
from solvers import graphs
from solvers._kuramoto import _sin

DELTA = 1.0  # Lorentzian half width: K_c = 2 DELTA


def oa_phases(n, r0):
    """Wrapped-Cauchy phase quantiles (order parameter r0: on the Ott–Antonsen
    manifold) paired with the frequency quantiles by a rank-1 lattice (golden
    ratio). A random pairing leaves O(1/sqrt N) fluctuations in r(t): 0.006–0.009
    at N = 20k–50k against the 0.01 tolerance; the lattice gives about 0.0015."""
    u = np.mod((np.arange(n) + 0.5) * (np.sqrt(5.0) - 1.0) / 2.0, 1.0)
    s = (1.0 - r0) / (1.0 + r0)
    return jnp.asarray(2.0 * np.arctan(s * np.tan(np.pi * (u - 0.5))))


def lorentzian(n):
    return solvers.lorentzian_frequencies(None, n, width=DELTA, quantiles=True)


def order(sol):
    return np.abs(np.asarray(solvers.order_parameter(sol.ys)))


def dense_tendency(omega, coupling, w, theta):
    omega, w, theta = (np.asarray(x, np.float64) for x in (omega, w, theta))
    return omega + coupling * np.sum(w * np.sin(theta[None, :] - theta[:, None]), axis=1)


# ---------------------------------------------------------------- exact solutions


def test_ott_antonsen_above_threshold():
    # K = 4 > K_c = 2: r(t) from r0 = 0.2 to r_inf = sqrt(1 - 2 Delta / K) follows the
    # Ott–Antonsen solution within 0.01 (measured ~0.0015 at N = 50k).
    n, K = 50_000, 4.0
    ts = jnp.linspace(0.0, 20.0, 201)
    sol = solvers.solve(solvers.Kuramoto(lorentzian(n), K), oa_phases(n, 0.2), ts, dt=0.05)
    r = order(sol)
    r_oa = np.asarray(solvers.ott_antonsen_order_parameter(ts, r[0], K, DELTA))
    err = np.abs(r - r_oa)
    assert abs(r[0] - 0.2) < 1e-4
    assert err.max() < 0.01, f"max |r - r_OA| = {err.max():.4f} at t = {ts[err.argmax()]}"
    assert abs(r[-1] - np.sqrt(1 - 2 * DELTA / K)) < 0.01, r[-1]


def test_ott_antonsen_below_threshold_decays():
    # K = 1 < K_c: from r0 = 0.5 on the OA manifold r decays as OA predicts (0.01).
    n, K = 20_000, 1.0
    ts = jnp.linspace(0.0, 40.0, 81)
    sol = solvers.solve(solvers.Kuramoto(lorentzian(n), K), oa_phases(n, 0.5), ts, dt=0.05)
    r = order(sol)
    r_oa = np.asarray(solvers.ott_antonsen_order_parameter(ts, r[0], K, DELTA))
    assert np.abs(r - r_oa).max() < 0.01, np.abs(r - r_oa).max()


def test_no_synchrony_below_threshold_from_incoherence():
    # K = 1 < K_c, iid uniform phases: r stays at the finite-size level. Bound: the
    # mean of r over t in [20, 40] below 3/sqrt(N) = 0.021 (measured 0.0085; K = 1.9,
    # just below K_c, already gives 0.028, and K = 4 gives 0.7).
    n = 20_000
    theta0 = jax.random.uniform(jax.random.PRNGKey(0), (n,), jnp.float64, 0.0, 2 * np.pi)
    ts = jnp.linspace(0.0, 40.0, 81)
    r = order(solvers.solve(solvers.Kuramoto(lorentzian(n), 1.0), theta0, ts, dt=0.05))
    late = r[np.asarray(ts) >= 20].mean()
    bound = 3 / np.sqrt(n)
    assert late < bound, f"mean r(t >= 20) = {late:.4f} vs 3/sqrt(N) = {bound:.4f}"


def test_ott_antonsen_closed_form():
    # The closed form solves dr/dt = -Delta r + K/2 r (1 - r^2), also at a = 0.
    for K in (4.0, 2.0, 1.0):
        term = diffrax.ODETerm(lambda t, r, args, K=K: -DELTA * r + 0.5 * K * r * (1 - r**2))
        ts = jnp.linspace(0.0, 10.0, 11)
        sol = diffrax.diffeqsolve(
            term,
            diffrax.Tsit5(),
            0.0,
            10.0,
            0.01,
            jnp.array(0.3),
            saveat=diffrax.SaveAt(ts=ts),
            stepsize_controller=diffrax.PIDController(rtol=1e-12, atol=1e-14),
        )
        closed = solvers.ott_antonsen_order_parameter(ts, 0.3, K, DELTA)
        np.testing.assert_allclose(np.asarray(closed), np.asarray(sol.ys), rtol=1e-9)
    assert float(solvers.ott_antonsen_order_parameter(1e3, 0.1, 4.0, 1.0)) == pytest.approx(
        np.sqrt(0.5)
    )


# ---------------------------------------------------------------- sparse vs dense


@pytest.mark.parametrize("layout", [False, True], ids=["segment-sum", "column-layout"])
@pytest.mark.parametrize("kind", ["erdos_renyi", "hyperbolic", "ring", "directed"])
def test_sparse_tendency_equals_dense(kind, layout):
    # Exact to 1e-12 in float64 against sum_j W_ij sin(theta_j - theta_i).
    n, key = 200, jax.random.PRNGKey(1)
    if kind == "erdos_renyi":
        g = graphs.erdos_renyi(n, avg_degree=8, key=key)
    elif kind == "hyperbolic":
        g = graphs.random_hyperbolic(n, avg_degree=8, key=key)
    elif kind == "ring":
        g = graphs.ring_lattice(n, 6)
    else:
        rng = np.random.default_rng(0)
        m = rng.normal(size=(n, n)) * (rng.random((n, n)) < 0.05)
        g = graphs.Graph.from_dense(m)
    omega = solvers.gaussian_frequencies(key, n)
    # Unwrapped phases of a few turns, as after a rollout.
    theta = jax.random.uniform(jax.random.PRNGKey(2), (n,), jnp.float64, -30.0, 30.0)
    system = solvers.Kuramoto(omega, 1.7, graph=g, layout=layout)
    assert (system.layout is not None) == layout
    got = np.asarray(jax.jit(lambda th: system.vector_field(0.0, th, None))(theta))
    want = dense_tendency(omega, 1.7, g.to_dense(), theta)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_all_to_all_mean_field_equals_dense():
    n = 300
    omega = solvers.lorentzian_frequencies(jax.random.PRNGKey(0), n)
    theta = jax.random.uniform(jax.random.PRNGKey(1), (n,), jnp.float64, -30.0, 30.0)
    got = np.asarray(solvers.Kuramoto(omega, 2.5).vector_field(0.0, theta, None))
    want = dense_tendency(omega, 2.5, np.full((n, n), 1.0 / n), theta)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    # And through a complete graph with weights 1/N (self-loops add sin 0 = 0).
    s, r = np.meshgrid(np.arange(n), np.arange(n))
    complete = graphs.Graph(s.ravel(), r.ravel(), np.full(n * n, 1.0 / n), n_nodes=n)
    sparse = solvers.Kuramoto(omega, 2.5, graph=complete).vector_field(0.0, theta, None)
    np.testing.assert_allclose(np.asarray(sparse), want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype, tol", [(jnp.float64, 3e-16), (jnp.float32, 2.5e-7)])
def test_fast_sin_cos(dtype, tol):
    # The tendency's sin/cos: a few ulp from the float64 reference, derivatives too.
    x = np.concatenate([np.linspace(-40, 40, 400_001), np.linspace(-4e3, 4e3, 100_001)])
    x = x.astype(dtype)
    xj = jnp.asarray(x)
    ref = x.astype(np.float64)
    for cos, f, df in [(False, np.sin, np.cos), (True, np.cos, lambda y: -np.sin(y))]:
        value = np.asarray(_sin(xj, cos))
        grad = np.asarray(jax.vmap(jax.grad(lambda y, c=cos: _sin(y, c)))(xj[::50]))
        assert np.abs(value - f(ref)).max() < 2 * tol, np.abs(value - f(ref)).max()
        assert np.abs(grad - df(ref[::50])).max() < 2 * tol


def test_float32_state_stays_float32():
    g = graphs.random_hyperbolic(100, avg_degree=6, key=jax.random.PRNGKey(0))
    omega = solvers.lorentzian_frequencies(jax.random.PRNGKey(0), 100)
    theta = jnp.zeros(100, jnp.float32)
    for system in (solvers.Kuramoto(omega, 1.0), solvers.Kuramoto(omega, 1.0, graph=g)):
        assert system.vector_field(0.0, theta, None).dtype == jnp.float32
        sol = solvers.solve(system, theta, jnp.array([0.0, 0.5]), dt=0.1)
        assert sol.ys.dtype == jnp.float32


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("sparse", [False, True])
def test_gradient_through_rollout_matches_finite_differences(sparse):
    # Reverse mode through 100 Tsit5 steps vs central differences (float64):
    # d/dK |r(T)|^2 and a directional derivative with respect to theta0, rtol 1e-6.
    n = 200
    key = jax.random.PRNGKey(5)
    g = graphs.random_hyperbolic(n, avg_degree=8, key=key) if sparse else None
    omega = solvers.gaussian_frequencies(key, n, std=0.5)
    theta0 = jax.random.uniform(jax.random.PRNGKey(6), (n,), jnp.float64, 0.0, 2.0)
    direction = jax.random.normal(jax.random.PRNGKey(7), (n,), jnp.float64)
    ts = jnp.array([0.0, 1.0])

    def loss(K, theta0):
        sol = solvers.solve(solvers.Kuramoto(omega, K, graph=g), theta0, ts, dt=0.01)
        return jnp.abs(solvers.order_parameter(sol.ys[-1])) ** 2

    K = 1.3
    dK, dtheta = jax.jit(jax.grad(loss, argnums=(0, 1)))(K, theta0)
    f = jax.jit(loss)
    h = 1e-5
    fd_K = (f(K + h, theta0) - f(K - h, theta0)) / (2 * h)
    fd_dir = (f(K, theta0 + h * direction) - f(K, theta0 - h * direction)) / (2 * h)
    np.testing.assert_allclose(float(dK), float(fd_K), rtol=1e-6)
    np.testing.assert_allclose(float(jnp.dot(dtheta, direction)), float(fd_dir), rtol=1e-6)


@pytest.mark.parametrize("layout", [False, True], ids=["segment-sum", "column-layout"])
def test_gradient_with_respect_to_graph_weights(layout):
    # degrees 0..7 here: several buckets of the column layout (its compile time grows
    # with their number: 41 s at avg_degree 6 on 100 nodes, for the same check)
    n = 60
    g = graphs.erdos_renyi(n, avg_degree=3, key=jax.random.PRNGKey(0))
    omega = solvers.gaussian_frequencies(jax.random.PRNGKey(1), n, std=0.5)
    theta0 = jax.random.uniform(jax.random.PRNGKey(2), (n,), jnp.float64, 0.0, 3.0)
    direction = jax.random.normal(jax.random.PRNGKey(3), (g.n_edges,), jnp.float64)

    def loss(weights):
        graph = graphs.Graph(g.senders, g.receivers, weights, n_nodes=n)
        system = solvers.Kuramoto(omega, 2.0, graph=graph, layout=layout)
        sol = solvers.solve(system, theta0, ts, dt=0.02)
        return jnp.abs(solvers.order_parameter(sol.ys[-1])) ** 2

    ts = jnp.array([0.0, 1.0])
    grad = jax.grad(loss)(g.weights)
    h, f = 1e-5, jax.jit(loss)
    fd = (f(g.weights + h * direction) - f(g.weights - h * direction)) / (2 * h)
    np.testing.assert_allclose(float(jnp.dot(grad, direction)), float(fd), rtol=1e-6)


# ---------------------------------------------------------------- K(t) and noise


def test_time_dependent_coupling():
    n = 2_000
    omega, theta0 = lorentzian(n), oa_phases(n, 0.3)
    ts = jnp.linspace(0.0, 5.0, 11)
    constant = solvers.solve(solvers.Kuramoto(omega, 3.0), theta0, ts, dt=0.05)
    as_callable = solvers.solve(
        solvers.Kuramoto(omega, lambda t: 3.0 + 0.0 * t), theta0, ts, dt=0.05
    )
    np.testing.assert_allclose(np.asarray(as_callable.ys), np.asarray(constant.ys), atol=1e-13)


def test_time_dependent_coupling_follows_ott_antonsen():
    # K(t) ramps from 1 to 4 across K_c: r(t) follows the OA equation with the same
    # K(t) (integrated by diffrax to 1e-10) within 0.01.
    def coupling(t):
        return 2.5 + 1.5 * jnp.tanh(t - 5.0)

    n = 20_000
    ts = jnp.linspace(0.0, 15.0, 151)
    system = solvers.Kuramoto(lorentzian(n), coupling)
    r = order(solvers.solve(system, oa_phases(n, 0.3), ts, dt=0.05))
    term = diffrax.ODETerm(lambda t, r, args: -DELTA * r + 0.5 * coupling(t) * r * (1 - r**2))
    ref = diffrax.diffeqsolve(
        term,
        diffrax.Tsit5(),
        0.0,
        15.0,
        0.01,
        jnp.asarray(r[0]),
        saveat=diffrax.SaveAt(ts=ts),
        stepsize_controller=diffrax.PIDController(rtol=1e-10, atol=1e-12),
    ).ys
    err = np.abs(r - np.asarray(ref))
    assert err.max() < 0.01, f"max |r - r_OA| = {err.max():.4f}"
    assert r[20] < 0.3 and r[-1] > 0.6  # decays below K_c, then synchronises


def test_noise_phase_diffusion():
    # Identical oscillators (omega = 0), K = 0: theta(t) - theta(0) = sigma W(t), so
    # the variance over N = 4000 oscillators is sigma^2 t; sampling error ~ sqrt(2/N)
    # = 2.2%, tolerance 10%.
    n, sigma = 4_000, 0.5
    system = solvers.Kuramoto(jnp.zeros(n), 0.0, noise=sigma)
    theta0 = jax.random.uniform(jax.random.PRNGKey(0), (n,), jnp.float64, 0.0, 6.0)
    ts = jnp.linspace(0.0, 2.0, 5)
    sol = solvers.solve(system, theta0, ts, dt=0.02, key=jax.random.PRNGKey(1))
    var = np.var(np.asarray(sol.ys - theta0), axis=1)
    np.testing.assert_allclose(var[1:], sigma**2 * np.asarray(ts[1:]), rtol=0.1)


def test_noise_per_oscillator_and_coupled():
    # sigma as an array: oscillators with sigma = 0 do not diffuse; with coupling the
    # noisy run stays finite and differs from the deterministic one.
    n = 1_000
    sigma = jnp.where(jnp.arange(n) < n // 2, 0.0, 0.3)
    system = solvers.Kuramoto(jnp.zeros(n), 0.0, noise=sigma)
    sol = solvers.solve(system, jnp.zeros(n), jnp.array([0.0, 1.0]), dt=0.01,
                        key=jax.random.PRNGKey(0))
    assert np.all(np.asarray(sol.ys[-1, : n // 2]) == 0.0)
    assert np.std(np.asarray(sol.ys[-1, n // 2 :])) > 0.2


def test_noise_reproducible_by_key_and_requires_key():
    n = 500
    omega = lorentzian(n)
    g = graphs.random_hyperbolic(n, avg_degree=6, key=jax.random.PRNGKey(0))
    system = solvers.Kuramoto(omega, 2.0, graph=g, noise=0.2)
    theta0 = oa_phases(n, 0.3)
    ts = jnp.linspace(0.0, 2.0, 3)

    run = jax.jit(lambda key: solvers.solve(system, theta0, ts, dt=0.02, key=key).ys)
    a, b, c = (np.asarray(run(jax.random.PRNGKey(seed))) for seed in (0, 0, 1))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-2
    assert system.diffusion(0.0, theta0, None).shape == (n,)
    assert solvers.Kuramoto(omega, 2.0).diffusion(0.0, theta0, None) is None
    with pytest.raises(ValueError, match="`key` is required"):
        solvers.solve(system, theta0, ts, dt=0.02)


# ---------------------------------------------------------------- API and bad input


def test_jit_vmap_and_samplers():
    n = 64
    omega = solvers.gaussian_frequencies(jax.random.PRNGKey(0), n)
    g = graphs.ring_lattice(n, 4)
    system = solvers.Kuramoto(omega, 1.0, graph=g)
    batch = jax.random.uniform(jax.random.PRNGKey(1), (3, n), jnp.float64)
    ts = jnp.linspace(0.0, 1.0, 3)
    ys = jax.jit(jax.vmap(lambda th: solvers.solve(system, th, ts, dt=0.1).ys))(batch)
    single = solvers.solve(system, batch[1], ts, dt=0.1).ys
    np.testing.assert_allclose(np.asarray(ys[1]), np.asarray(single), atol=1e-13)
    # Quantile samplers: deterministic, sorted without a key, shuffled with one.
    q = solvers.lorentzian_frequencies(None, 1001, center=0.5, width=2.0, quantiles=True)
    assert float(jnp.median(q)) == pytest.approx(0.5) and bool(jnp.all(jnp.diff(q) > 0))
    # Quartiles of a Lorentzian are center +- width.
    assert float(q[250]) == pytest.approx(0.5 - 2.0, rel=0.02)
    shuffled = solvers.gaussian_frequencies(jax.random.PRNGKey(2), 1001, std=3.0, quantiles=True)
    sorted_ = solvers.gaussian_frequencies(None, 1001, std=3.0, quantiles=True)
    np.testing.assert_allclose(np.sort(np.asarray(shuffled)), np.asarray(sorted_))
    assert float(jnp.std(sorted_)) == pytest.approx(3.0, rel=0.01)
    phases = solvers.wrapped_cauchy_phases(None, 10_000, r0=0.4, mean_phase=1.0, quantiles=True)
    z = solvers.order_parameter(phases)
    assert abs(z - 0.4 * np.exp(1j)) < 1e-6
    random = solvers.wrapped_cauchy_phases(jax.random.PRNGKey(0), 100_000, r0=0.4)
    assert abs(abs(solvers.order_parameter(random)) - 0.4) < 0.01
    with pytest.raises(ValueError, match="`key` is required"):
        solvers.lorentzian_frequencies(None, 10)
    with pytest.raises(ValueError, match=r"`r0` must be in \[0, 1\)"):
        solvers.wrapped_cauchy_phases(None, 10, r0=1.0, quantiles=True)


def test_order_parameter():
    theta = jnp.array([[0.0, 0.0, 0.0], [0.0, 2 * np.pi / 3, 4 * np.pi / 3]])
    z = solvers.order_parameter(theta)
    assert z.shape == (2,) and jnp.iscomplexobj(z)
    np.testing.assert_allclose(np.abs(np.asarray(z)), [1.0, 0.0], atol=1e-15)
    np.testing.assert_allclose(
        np.asarray(solvers.order_parameter(theta.T, axis=0)), np.asarray(z), atol=1e-15
    )


def test_kuramoto_bad_input():
    omega, omega12 = jnp.zeros(10), jnp.zeros(12)
    g = graphs.ring_lattice(12, 2)

    def traced_layout(graph):
        return solvers.Kuramoto(omega12, 1.0, graph=graph, layout=True).omega
    cases = [
        (lambda: solvers.Kuramoto(jnp.zeros((2, 5)), 1.0), "`omega` must be a non-empty 1D"),
        (lambda: solvers.Kuramoto(jnp.arange(10), 1.0), "`omega` must be a non-empty 1D"),
        (lambda: solvers.Kuramoto(jnp.zeros(0), 1.0), "`omega` must be a non-empty 1D"),
        (lambda: solvers.Kuramoto(omega, "strong"), "`coupling` must be a number or a callable"),
        (lambda: solvers.Kuramoto(omega, True), "`coupling` must be a number or a callable"),
        (lambda: solvers.Kuramoto(omega, jnp.ones(3)), "`coupling` must be a real scalar"),
        (lambda: solvers.Kuramoto(omega, float("nan")), "`coupling` must be finite"),
        (lambda: solvers.Kuramoto(omega, 1.0, graph=g), r"`graph` has n_nodes=12 but `omega`"),
        (lambda: solvers.Kuramoto(omega, 1.0, graph=np.eye(10)), "`graph` must be None or"),
        (lambda: solvers.Kuramoto(omega, 1.0, noise=-0.1), "`noise` must be >= 0"),
        (lambda: solvers.Kuramoto(omega, 1.0, noise=jnp.ones(3)), r"`noise` must be a scalar or"),
        (lambda: solvers.Kuramoto(omega, 1.0, noise="loud"), "`noise` must be a number"),
        (lambda: solvers.Kuramoto(omega12, 1.0, graph=g, layout="yes"), "`layout` must be None"),
        (lambda: jax.jit(traced_layout)(g), "`layout=True` needs a graph with concrete"),
    ]
    for build, match in cases:
        with pytest.raises(ValueError, match=match):
            build()


@pytest.mark.parametrize(
    "theta0, match",
    [
        (jnp.zeros(9), r"`y0` must have shape \(10,\)"),
        (jnp.zeros((2, 10)), r"`y0` must have shape \(10,\).*jax.vmap"),
        (jnp.zeros(10, jnp.int32), "`y0` must have a real floating dtype"),
        ([0.0] * 10, "`y0` must be an array"),
    ],
)
def test_solve_bad_state(theta0, match):
    system = solvers.Kuramoto(jnp.zeros(10), 1.0, graph=graphs.ring_lattice(10, 2))
    with pytest.raises(ValueError, match=match):
        solvers.solve(system, theta0, jnp.array([0.0, 1.0]), dt=0.1)
