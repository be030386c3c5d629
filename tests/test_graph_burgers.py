"""GraphBurgers: the 1D finite-volume scheme on a ring, convergence to Cole–Hopf,
conservation, the maximum principle (and how it fails), the divergence-free
transport flow, layout vs segment sum, gradients; SSPRK3's order."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import solvers
from solvers import graphs

FLUXES = ["engquist-osher", "godunov", "rusanov"]

# The numerical fluxes of u^2/2, written out again in NumPy for the references.
NUMPY_FLUX = {
    "engquist-osher": lambda a, b: 0.5 * (np.maximum(a, 0) ** 2 + np.minimum(b, 0) ** 2),
    "godunov": lambda a, b: 0.5 * np.maximum(np.maximum(a, 0) ** 2, np.minimum(b, 0) ** 2),
    "rusanov": lambda a, b: 0.25 * (a * a + b * b)
    - 0.5 * np.maximum(np.abs(a), np.abs(b)) * (b - a),
}

# Cole–Hopf, as in tests/test_burgers.py: phi = 2 + sum_k c_k exp(-nu k^2 t)
# cos(k x + p_k) solves the heat equation, u = -2 nu phi_x / phi viscous Burgers.
NU = 0.1
MODES = [(1, 0.5, 0.3), (2, 0.3, 1.0), (3, 0.2, 2.0)]


def cole_hopf(x, t, nu=NU, modes=MODES):
    phi = 2.0 + sum(c * np.exp(-nu * k * k * t) * np.cos(k * x + p) for k, c, p in modes)
    dphi = sum(-c * k * np.exp(-nu * k * k * t) * np.sin(k * x + p) for k, c, p in modes)
    return -2 * nu * dphi / phi


def ring(n, length=2 * np.pi):
    """Unweighted ring of n nodes and its spacing: the 1D finite-volume grid."""
    return graphs.ring_lattice(n, 2, normalize=False), length / n


def hyperbolic(n=400, avg_degree=8, seed=0):
    """A random hyperbolic graph with unit (symmetric) weights, and its angles."""
    g, coords = graphs.random_hyperbolic(
        n, avg_degree=avg_degree, key=jax.random.PRNGKey(seed), return_coordinates=True
    )
    return graphs.Graph(g.senders, g.receivers, n_nodes=n), coords


def every_step(system, u0, dt, steps):
    """The states after each of `steps` steps of size dt (one step per save)."""
    ts = jnp.arange(steps + 1) * dt
    return np.asarray(solvers.solve(system, u0, ts, dt=dt, throw=False).ys)


def new_extrema(ys):
    """Largest rise of max(u) and largest fall of min(u) over one step."""
    return np.max(np.diff(ys.max(axis=1))), np.max(-np.diff(ys.min(axis=1)))


# ---------------------------------------------------------------- the scheme


@pytest.mark.parametrize("flux", FLUXES)
def test_ring_is_the_finite_volume_scheme(flux):
    # On the unweighted ring with h = L/n the tendency is, to 1e-12, the standard
    # first-order finite-volume scheme -(F_{i+1/2} - F_{i-1/2})/h + nu (u_{i+1} -
    # 2u_i + u_{i-1})/h^2 with F_{i+1/2} = F(u_i, u_{i+1}).
    n, nu = 96, 0.07
    g, h = ring(n)
    rng = np.random.default_rng(0)
    u = rng.normal(size=n) + 0.2
    up, um = np.roll(u, -1), np.roll(u, 1)
    F = NUMPY_FLUX[flux]
    want = -(F(u, up) - F(um, u)) / h + nu * (up - 2 * u + um) / h**2
    for layout in (False, True):
        system = solvers.GraphBurgers(g, nu, spacing=h, flux=flux, layout=layout)
        field = jax.jit(lambda x, s=system: s.vector_field(0.0, x, None))
        got = np.asarray(field(jnp.asarray(u)))
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * np.abs(want).max())


def test_flow_is_antisymmetric_divergence_free_hodge_projection():
    # b_ij = -b_ji exactly; sum_j b_ij = 0 at every node to round-off (measured
    # ~1e-15 of the largest node total); b - w sigma is a graph gradient (its
    # circulation around the rows of a least-squares fit vanishes); on the ring the
    # raw orientation is kept as it is.
    g, coords = hyperbolic()
    system = solvers.GraphBurgers(g, 0.1, coordinates=coords)
    s, r = np.asarray(g.senders), np.asarray(g.receivers)
    b = np.asarray(system.flow)
    flow = np.zeros((g.n_nodes, g.n_nodes))
    flow[r, s] = b
    assert np.array_equal(flow, -flow.T)
    div = np.bincount(r, b, minlength=g.n_nodes)
    scale = np.bincount(r, np.abs(b), minlength=g.n_nodes).max()
    assert np.abs(div).max() < 1e-13 * scale, np.abs(div).max() / scale
    phi = np.asarray(coords.angle)
    raw = np.sign(np.sin(phi[s] - phi[r]))  # orientation receiver -> sender
    # raw - b = p_s - p_r for some node potential p: fit it, the residual is 0.
    incidence = np.zeros((s.size, g.n_nodes))
    incidence[np.arange(s.size), s] = 1.0
    incidence[np.arange(s.size), r] -= 1.0
    p = np.linalg.lstsq(incidence, raw - b, rcond=None)[0]
    assert np.abs(incidence @ p - (raw - b)).max() < 1e-10
    assert np.linalg.norm(b) < 0.95 * np.linalg.norm(raw)  # the projection did work
    raw_system = solvers.GraphBurgers(g, 0.1, coordinates=coords, balanced=False)
    np.testing.assert_array_equal(np.asarray(raw_system.flow), raw)
    # Many components and isolated nodes (the Laplacian is singular on each): still
    # divergence free, with weights of both directions averaged.
    sparse = graphs.erdos_renyi(300, avg_degree=1.2, key=jax.random.PRNGKey(2))
    b = np.asarray(solvers.GraphBurgers(sparse, 0.1).flow)
    r = np.asarray(sparse.receivers)
    assert np.bincount(r, minlength=300).min() == 0
    div = np.bincount(r, b, minlength=300)
    assert np.abs(div).max() < 1e-13 * np.bincount(r, np.abs(b), minlength=300).max()
    g_ring, h = ring(50)
    ring_system = solvers.GraphBurgers(g_ring, 0.1, spacing=h)
    s, r = np.asarray(g_ring.senders), np.asarray(g_ring.receivers)
    phi = 2 * np.pi * np.arange(50) / 50
    np.testing.assert_array_equal(np.asarray(ring_system.flow), np.sign(np.sin(phi[s] - phi[r])))


def test_float32_flow_is_solved_to_what_float32_holds():
    # Without x64 the flow is stored in float32 and the Laplacian solve stops at
    # rtol 1e-9 (rounding to float32 alone leaves a divergence of ~1e-8): the stored
    # flow equals the float64 one rounded, and its divergence sits at that floor.
    g, coords = hyperbolic(n=3000, avg_degree=10, seed=3)
    degree = np.bincount(np.asarray(g.receivers), minlength=g.n_nodes)
    s, r = np.asarray(g.senders), np.asarray(g.receivers)
    w = 1.0 / np.maximum(degree[s], degree[r])  # the graph-burgers task's weights
    g = graphs.Graph(s, r, w, n_nodes=g.n_nodes)
    b64 = np.asarray(solvers.GraphBurgers(g, 0.1, coordinates=coords).flow)
    with jax.enable_x64(False):
        b32 = solvers.GraphBurgers(g, 0.1, coordinates=coords).flow
    assert b32.dtype == jnp.float32 and b64.dtype == np.float64
    b32 = np.asarray(b32, np.float64)
    scale = np.bincount(r, np.abs(b64), minlength=g.n_nodes).max()
    assert np.abs(b32 - b64).max() < 1e-6 * np.abs(b64).max()
    div32 = np.abs(np.bincount(r, b32, minlength=g.n_nodes)).max() / scale
    assert div32 < 1e-7, div32
    assert np.abs(np.bincount(r, b64, minlength=g.n_nodes)).max() / scale < 1e-13


def test_a_flow_computed_before_is_taken_as_is_and_checked():
    # `flow=`: the construction skips the Laplacian solve and gives the same system;
    # a flow of the wrong shape, not antisymmetric or not divergence free is refused.
    g, coords = hyperbolic(n=800, avg_degree=8, seed=5)
    ref = solvers.GraphBurgers(g, 0.1, coordinates=coords, spacing=0.5)
    again = solvers.GraphBurgers(g, 0.1, coordinates=coords, spacing=0.5,
                                 flow=np.asarray(ref.flow))
    np.testing.assert_array_equal(np.asarray(again.flow), np.asarray(ref.flow))
    np.testing.assert_array_equal(np.asarray(again.flow_degree), np.asarray(ref.flow_degree))
    u = jr.normal(jr.PRNGKey(0), (g.n_nodes,))
    np.testing.assert_array_equal(again.vector_field(0.0, u, None),
                                  ref.vector_field(0.0, u, None))
    b = np.asarray(ref.flow)
    with pytest.raises(ValueError, match="`flow` must be a real array of shape"):
        solvers.GraphBurgers(g, 0.1, coordinates=coords, flow=b[:-1])
    with pytest.raises(ValueError, match="`flow` must be finite"):
        solvers.GraphBurgers(g, 0.1, coordinates=coords, flow=np.where(b > 0, np.nan, b))
    with pytest.raises(ValueError, match="`flow` must be antisymmetric"):
        solvers.GraphBurgers(g, 0.1, coordinates=coords, flow=np.abs(b))
    # the raw orientation: antisymmetric but not divergence free
    raw = np.asarray(solvers.GraphBurgers(g, 0.1, coordinates=coords, balanced=False).flow)
    with pytest.raises(ValueError, match="`flow` has a divergence of"):
        solvers.GraphBurgers(g, 0.1, coordinates=coords, flow=raw)
    solvers.GraphBurgers(g, 0.1, coordinates=coords, flow=raw, balanced=False)


@pytest.mark.parametrize(
    "kind, flux",
    [("hyperbolic", f) for f in FLUXES] + [("erdos_renyi", FLUXES[0]), ("weighted", FLUXES[1])],
)
def test_layout_equals_segment_sum_equals_flux_form(kind, flux):
    # The column layout (values w and b laid out per edge), the segment sum and an
    # edge loop in NumPy over the flux form agree to 1e-12 (float64). "weighted":
    # receiver-normalised, non-symmetric weights with a hub of > 16 edges.
    key = jax.random.PRNGKey(3)
    coords = None
    if kind == "hyperbolic":
        g, coords = hyperbolic(300)
    elif kind == "erdos_renyi":
        g = graphs.erdos_renyi(300, avg_degree=7, key=key, normalize=False)
    else:
        g = graphs.random_hyperbolic(300, avg_degree=8, key=key, gamma=2.1)
    if kind != "erdos_renyi":
        assert int(np.bincount(np.asarray(g.receivers)).max()) > 16  # chunked rows
    u = jax.random.normal(jax.random.PRNGKey(4), (g.n_nodes,), jnp.float64) + 0.3
    fields = []
    for layout in (True, False):
        system = solvers.GraphBurgers(g, 0.3, coordinates=coords, spacing=0.5, flux=flux,
                                      layout=layout)
        assert (system.layout is not None) == layout
        field = jax.jit(lambda x, s=system: s.vector_field(0.0, x, None))
        fields.append(np.asarray(field(u)))
    np.testing.assert_allclose(fields[0], fields[1], rtol=0, atol=1e-12)
    s, r, w = (np.asarray(x) for x in (g.senders, g.receivers, g.weights))
    b, un = np.asarray(system.flow), np.asarray(u)
    sign = np.sign(b)
    terms = -b * NUMPY_FLUX[flux](sign * un[r], sign * un[s]) / 0.5
    terms += 0.3 * w * (un[s] - un[r]) / 0.5**2
    want = np.bincount(r, terms, minlength=g.n_nodes)
    np.testing.assert_allclose(fields[0], want, rtol=0, atol=1e-12)


def test_column_layout_edge_sum_and_neighbour_sum():
    # edge_sum passes the laid-out values to edge_fn; neighbour_sum refuses a layout
    # of several values; the default layout still sums weights times edge_fn.
    g = graphs.random_hyperbolic(200, avg_degree=8, key=jax.random.PRNGKey(0), gamma=2.1)
    a = jnp.asarray(np.random.default_rng(1).normal(size=g.n_edges))
    layout = graphs.ColumnLayout(g, values=(g.weights, a))
    x = jnp.asarray(np.random.default_rng(2).normal(size=200))
    got = jax.jit(lambda x: layout.edge_sum(lambda xs, xr, w, c: w * xs + c * xr**2, x))(x)
    s, r = np.asarray(g.senders), np.asarray(g.receivers)
    xn = np.asarray(x)
    want = np.bincount(r, np.asarray(g.weights) * xn[s] + np.asarray(a) * xn[r] ** 2, minlength=200)
    np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="use `edge_sum`"):
        layout.neighbour_sum(jnp.multiply, x)
    with pytest.raises(ValueError, match="`values` must be per-edge arrays"):
        graphs.ColumnLayout(g, values=(a[:-1],))
    plain = graphs.ColumnLayout(g)
    single = jax.jit(lambda x: plain.neighbour_sum(lambda xs, xr: xs - xr, x))(x)
    np.testing.assert_allclose(
        np.asarray(single), np.bincount(r, np.asarray(g.weights) * (xn[s] - xn[r]), minlength=200),
        rtol=0, atol=1e-12,
    )


def test_forcing_adds_its_value():
    g, coords = hyperbolic(100)
    forcing = lambda t, phi: jnp.sin(phi) * jnp.cos(t)  # noqa: E731
    plain = solvers.GraphBurgers(g, 0.1, coordinates=coords)
    forced = solvers.GraphBurgers(g, 0.1, coordinates=coords, forcing=forcing)
    u = jax.random.normal(jax.random.PRNGKey(0), (100,), jnp.float64)
    diff = forced.vector_field(0.7, u, None) - plain.vector_field(0.7, u, None)
    want = np.sin(np.asarray(coords.angle)) * np.cos(0.7)
    np.testing.assert_allclose(np.asarray(diff), want, rtol=0, atol=1e-12)


# ---------------------------------------------------------------- conservation


@pytest.mark.parametrize("kind", ["hyperbolic", "erdos_renyi"])
def test_sum_conserved_on_symmetric_graph(kind):
    # 200 SSPRK3 steps at 0.9 stable_dt: |sum u(t) - sum u(0)| / sum |u(0)| below
    # 1e-12 (measured ~3e-15), with a shock-forming mixed-sign state of mean 0.3.
    if kind == "hyperbolic":
        g, coords = hyperbolic()
    else:
        g = graphs.erdos_renyi(400, avg_degree=6, key=jax.random.PRNGKey(1), normalize=False)
        coords = None
    system = solvers.GraphBurgers(g, 0.05, coordinates=coords)
    u0 = jax.random.normal(jax.random.PRNGKey(2), (g.n_nodes,), jnp.float64) + 0.3
    ys = every_step(system, u0, 0.9 * float(system.stable_dt(u0)), 200)
    drift = np.abs(ys.sum(axis=1) - ys[0].sum()).max() / np.abs(ys[0]).sum()
    assert drift < 1e-12, f"relative drift of sum(u): {drift:.1e}"
    assert np.abs(ys[-1] - ys[0]).max() > 0.1  # it did evolve


def test_sum_not_conserved_with_non_symmetric_weights():
    # The control: receiver-normalised weights (w_ij = w_j / sum, not symmetric) make
    # the diffusion non-conservative: the sum drifts by ~1e-2 (relative) instead.
    g, coords = graphs.random_hyperbolic(
        400, avg_degree=8, key=jax.random.PRNGKey(0), return_coordinates=True
    )
    system = solvers.GraphBurgers(g, 0.05, coordinates=coords)
    u0 = jax.random.normal(jax.random.PRNGKey(2), (400,), jnp.float64) + 0.3
    ys = every_step(system, u0, 0.9 * float(system.stable_dt(u0)), 200)
    drift = np.abs(ys.sum(axis=1) - ys[0].sum()).max() / np.abs(ys[0]).sum()
    assert drift > 1e-3, drift


# ---------------------------------------------------------------- maximum principle

# A new extremum is a rise of max(u) (or fall of min(u)) over one step above
# round-off: 1e-14 of max|u0| (about 50 ulp). Measured: max(u) and min(u) moved
# inwards at every step (largest step-to-step change of the extremes below 0).
ROUND_OFF = 1e-14


def test_maximum_principle_on_random_graph():
    g, coords = hyperbolic()
    system = solvers.GraphBurgers(g, 0.05, coordinates=coords)
    u0 = jax.random.normal(jax.random.PRNGKey(1), (g.n_nodes,), jnp.float64) + 0.3
    ys = every_step(system, u0, 0.9 * float(system.stable_dt(u0)), 200)
    rise, fall = new_extrema(ys)
    tol = ROUND_OFF * float(jnp.abs(u0).max())
    assert rise <= tol and fall <= tol, f"max rose by {rise:.1e}, min fell by {fall:.1e}"
    assert ys[-1].max() < ys[0].max() - 0.1 and ys[-1].min() > ys[0].min() + 0.1


def test_maximum_principle_on_ring_with_shock():
    # u0 = sin x + 1/2, nu = 1e-3: a shock forms at t = 1 (jump > 0.5 over one cell
    # at t = 2) and no new extrema appear at 0.9 stable_dt.
    n = 256
    g, h = ring(n)
    system = solvers.GraphBurgers(g, 1e-3, spacing=h)
    u0 = jnp.asarray(np.sin(np.arange(n) * h) + 0.5)
    dt = 0.9 * float(system.stable_dt(u0))
    ys = every_step(system, u0, dt, int(2.0 / dt))
    rise, fall = new_extrema(ys)
    assert rise <= ROUND_OFF * 1.5 and fall <= ROUND_OFF * 1.5, (rise, fall)
    assert np.abs(np.diff(ys[-1])).max() > 0.5  # the shock


def test_maximum_principle_fails_far_above_stable_dt():
    # The same shock at 4x the bound: new extrema by t = 2 (then a blow-up; at 2x
    # the bound none appear, at 3x they do: the bound is within a factor 2-3 here).
    n = 256
    g, h = ring(n)
    system = solvers.GraphBurgers(g, 1e-3, spacing=h)
    u0 = jnp.asarray(np.sin(np.arange(n) * h) + 0.5)
    dt = 4 * float(system.stable_dt(u0))
    ys = every_step(system, u0, dt, int(2.0 / dt))
    # Measured: the states stay finite for 25 steps and overshoot by 1e122 first.
    finite = ys[np.all(np.isfinite(ys), axis=1)]
    assert finite.max() - 1.5 > 0.1, finite.max()


def test_raw_orientation_breaks_the_maximum_principle():
    # Without the divergence-free projection a node with more neighbours on one side
    # is a source of u^2/2: from u0 = 1 + 1e-2 noise new extrema of ~0.4 appear
    # within 50 steps at the stable step; with it, none (and a constant is steady).
    g, coords = hyperbolic(500)
    u0 = 1.0 + 0.01 * jax.random.normal(jax.random.PRNGKey(1), (500,), jnp.float64)
    balanced = solvers.GraphBurgers(g, 0.05, coordinates=coords)
    raw = solvers.GraphBurgers(g, 0.05, coordinates=coords, balanced=False)
    constant = jnp.full(500, 0.7)
    assert np.abs(np.asarray(balanced.vector_field(0.0, constant, None))).max() < 1e-12
    assert np.abs(np.asarray(raw.vector_field(0.0, constant, None))).max() > 0.1
    rises = []
    for system in (balanced, raw):
        ys = every_step(system, u0, 0.9 * float(system.stable_dt(u0)), 50)
        rises.append(ys.max() - float(u0.max()))
    assert rises[0] <= ROUND_OFF and rises[1] > 0.1, rises


# ---------------------------------------------------------------- consistency


@pytest.mark.parametrize("flux", FLUXES)
def test_converges_to_cole_hopf_at_first_order(flux):
    # Ring of n nodes, h = 2 pi / n, nu = 0.1, t = 1: relative L2 error against
    # Cole–Hopf, slope fitted over n = 64 ... 512. Measured slopes 0.90 (EO,
    # Godunov) and 0.96 (Rusanov), errors 7.8e-3 ... 1.2e-3 (the ratio between
    # successive n tends to 2 from below: 1.76, 1.88, 1.94).
    ns = np.array([64, 128, 256, 512])
    errors = []
    for n in ns:
        g, h = ring(n)
        system = solvers.GraphBurgers(g, NU, spacing=h, flux=flux)
        x = np.arange(n) * h
        u0 = jnp.asarray(cole_hopf(x, 0.0))
        # Half the stable step: the time error (third order) is far below the
        # spatial one.
        dt = 0.5 * float(system.stable_dt(u0))
        u1 = solvers.solve(system, u0, jnp.array([0.0, 1.0]), dt=dt).ys[-1]
        exact = cole_hopf(x, 1.0)
        errors.append(np.linalg.norm(np.asarray(u1) - exact) / np.linalg.norm(exact))
    slope = np.polyfit(np.log(2 * np.pi / ns), np.log(errors), 1)[0]
    assert abs(slope - 1.0) < 0.15, f"slope {slope:.2f}, errors {errors}"
    assert errors[-1] < 2e-3, errors


def test_ssprk3_converges_at_third_order():
    # A non-autonomous nonlinear ODE with a closed form: y1' = y1 (1 - y1) (logistic),
    # y2' = cos(t) y2 (y2 = y2(0) e^{sin t}), to t = 2; slope over four dt.
    term = diffrax.ODETerm(lambda t, y, args: jnp.stack([y[0] * (1 - y[0]), jnp.cos(t) * y[1]]))
    y0 = jnp.array([0.2, 1.0])
    exact = np.array([1 / (1 + 4 * np.exp(-2.0)), np.exp(np.sin(2.0))])
    dts = np.array([0.2, 0.1, 0.05, 0.025])
    errors = []
    for dt in dts:
        sol = diffrax.diffeqsolve(term, solvers.SSPRK3(), 0.0, 2.0, float(dt), y0,
                                  max_steps=1000)
        errors.append(float(np.abs(np.asarray(sol.ys[-1]) - exact).max()))
    slope = np.polyfit(np.log(dts), np.log(errors), 1)[0]
    assert abs(slope - 3.0) < 0.3, f"slope {slope:.2f}, errors {errors}"
    assert isinstance(solvers.GraphBurgers(ring(8)[0], 0.1).default_solver(), solvers.SSPRK3)


# ---------------------------------------------------------------- autodiff, jit, vmap


@pytest.mark.parametrize(
    "kind, layout",
    [
        ("hyperbolic", False),
        ("ring", True),
        pytest.param("hyperbolic", True, marks=pytest.mark.slow),
    ],
    ids=["segment-sum", "column-layout-ring", "column-layout-hyperbolic"],
)
def test_gradient_through_rollout_matches_finite_differences(kind, layout):
    # Reverse mode through 40 SSPRK3 steps against central differences (float64):
    # d/dnu and a directional derivative with respect to u0, rtol 1e-6. The layout's
    # gradient compiles in ~4 s on a ring (one bucket) but ~85 s on the hyperbolic
    # graph (12 buckets, nested checkpoints): that case is marked slow.
    if kind == "ring":
        g, coords = graphs.ring_lattice(80, 4, normalize=False), None
    else:
        g, coords = hyperbolic(80, avg_degree=6)
    u0 = jax.random.normal(jax.random.PRNGKey(5), (80,), jnp.float64) + 0.2
    direction = jax.random.normal(jax.random.PRNGKey(6), (80,), jnp.float64)
    dt = 0.9 * float(solvers.GraphBurgers(g, 0.2, coordinates=coords).stable_dt(u0))
    ts = jnp.array([0.0, 40 * dt])

    def loss(nu, u0):
        system = solvers.GraphBurgers(g, nu, coordinates=coords, layout=layout)
        u = solvers.solve(system, u0, ts, dt=dt).ys[-1]
        return jnp.sum(u**3)

    dnu, du0 = jax.jit(jax.grad(loss, argnums=(0, 1)))(0.15, u0)
    f, eps = jax.jit(loss), 1e-5
    fd_nu = (f(0.15 + eps, u0) - f(0.15 - eps, u0)) / (2 * eps)
    fd_dir = (f(0.15, u0 + eps * direction) - f(0.15, u0 - eps * direction)) / (2 * eps)
    np.testing.assert_allclose(float(dnu), float(fd_nu), rtol=1e-6)
    np.testing.assert_allclose(float(jnp.dot(du0, direction)), float(fd_dir), rtol=1e-6)


def test_jit_vmap_and_float32():
    g, coords = hyperbolic(100)
    system = solvers.GraphBurgers(g, 0.1, coordinates=coords)
    batch = jax.random.normal(jax.random.PRNGKey(0), (3, 100), jnp.float64)
    dt = 0.9 * float(system.stable_dt(batch))
    ts = jnp.arange(3) * 10 * dt
    ys = jax.jit(jax.vmap(lambda u: solvers.solve(system, u, ts, dt=dt).ys))(batch)
    single = solvers.solve(system, batch[1], ts, dt=dt).ys
    np.testing.assert_allclose(np.asarray(ys[1]), np.asarray(single), rtol=0, atol=1e-13)
    # float32 in, float32 out, on both paths (the layout on a one-bucket ring: its
    # compile time grows with the number of buckets).
    ring_system = solvers.GraphBurgers(graphs.ring_lattice(100, 4, normalize=False), 0.1,
                                       layout=True)
    ring_segment = solvers.GraphBurgers(graphs.ring_lattice(100, 4, normalize=False), 0.1,
                                        layout=False)
    for s in (system, ring_system, ring_segment):
        u64 = solvers.solve(s, batch[0], ts, dt=dt).ys
        u32 = solvers.solve(s, batch[0].astype(jnp.float32), ts, dt=dt).ys
        assert s.vector_field(0.0, batch[0].astype(jnp.float32), None).dtype == jnp.float32
        assert u32.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(u32), np.asarray(u64), rtol=0, atol=1e-5)
    assert ring_system.layout is not None and system.layout is None


# ---------------------------------------------------------------- bad input


def test_bad_input():
    g, h = ring(12)
    directed = graphs.Graph([0, 1], [1, 2], n_nodes=3)
    negative = graphs.Graph(g.senders, g.receivers, -np.ones(g.n_edges), n_nodes=12)
    out_of_range = eqx.tree_at(lambda x: x.senders, g, g.senders.at[0].set(40))

    def traced(weights):
        graph = graphs.Graph(g.senders, g.receivers, weights, n_nodes=12)
        return solvers.GraphBurgers(graph, 0.1).flow

    cases = [
        (lambda: solvers.GraphBurgers(g, 0.0), "`viscosity` must be positive"),
        (lambda: solvers.GraphBurgers(g, -1.0), "`viscosity` must be positive"),
        (lambda: solvers.GraphBurgers(g, float("nan")), "`viscosity` must be positive"),
        (lambda: solvers.GraphBurgers(g, 0.1, spacing=0.0), "`spacing` must be positive"),
        (lambda: solvers.GraphBurgers(g, 0.1, spacing=-h), "`spacing` must be positive"),
        (lambda: solvers.GraphBurgers(g, 0.1, spacing="x"), "`spacing` must be a number"),
        (lambda: solvers.GraphBurgers(np.eye(12), 0.1), "`graph` must be a solvers.graphs"),
        (lambda: solvers.GraphBurgers(out_of_range, 0.1), r"`graph` has senders outside"),
        (lambda: solvers.GraphBurgers(directed, 0.1), "`graph` must be undirected"),
        (lambda: solvers.GraphBurgers(negative, 0.1), "`graph` must have finite non-negative"),
        (lambda: jax.jit(traced)(g.weights), "`graph` must be concrete"),
        (lambda: solvers.GraphBurgers(g, 0.1, coordinates=np.zeros(11)), "`coordinates` must"),
        (lambda: solvers.GraphBurgers(g, 0.1, coordinates=np.full(12, np.nan)),
         "`coordinates` must be real and finite"),
        (lambda: solvers.GraphBurgers(g, 0.1, flux="upwind"), "`flux` must be one of"),
        (lambda: solvers.GraphBurgers(g, 0.1, forcing=1.0), "`forcing` must be None or"),
        (lambda: solvers.GraphBurgers(g, 0.1, balanced=None), "`balanced` must be True"),
        (lambda: solvers.GraphBurgers(g, 0.1, layout="yes"), "`layout` must be None"),
    ]
    for build, match in cases:
        with pytest.raises(ValueError, match=match):
            build()


@pytest.mark.parametrize(
    "u0, match",
    [
        (jnp.zeros(11), r"`y0` must have shape \(12,\)"),
        (jnp.zeros((2, 12)), r"`y0` must have shape \(12,\).*jax.vmap"),
        (jnp.zeros(12, jnp.int32), "`y0` must have a real floating dtype"),
    ],
)
def test_solve_bad_state(u0, match):
    system = solvers.GraphBurgers(ring(12)[0], 0.1)
    with pytest.raises(ValueError, match=match):
        solvers.solve(system, u0, jnp.array([0.0, 1.0]), dt=0.1)
