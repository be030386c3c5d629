"""`solvers.OttAntonsenNetwork`: the closed form of one population, the large-N limit
of Kuramoto on a block graph, gradients through a rollout, argument checks."""

import equinox as eqx
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

import solvers
from solvers.graphs import Graph

OA = solvers.OttAntonsenNetwork


class BlockKuramoto(solvers.AbstractSystem):
    """Kuramoto on the complete block graph $w_{ij} = A_{mn}/|n|$ ($i \\in m$,
    $j \\in n$), evaluated in O(N) through the block mean fields (checked against
    `solvers.Kuramoto` on the dense graph below)."""

    omega: jax.Array
    a: jax.Array
    coupling: float
    labels: jax.Array

    @property
    def state_shape(self):
        return self.omega.shape

    def vector_field(self, t, theta, args):
        m = self.a.shape[0]
        count = jax.ops.segment_sum(jnp.ones_like(theta), self.labels, m)
        zx = jax.ops.segment_sum(jnp.cos(theta), self.labels, m) / count
        zy = jax.ops.segment_sum(jnp.sin(theta), self.labels, m) / count
        hx = (self.coupling * self.a @ zx)[self.labels]
        hy = (self.coupling * self.a @ zy)[self.labels]
        return self.omega + hy * jnp.cos(theta) - hx * jnp.sin(theta)


def _lattice(n, n_prev, centre, width, rho, psi):
    """n Lorentzian frequency quantiles paired with n wrapped-Cauchy phase quantiles
    along a Fibonacci lattice (n, n_prev consecutive Fibonacci numbers): a
    deterministic sample of independent laws whose empirical measure converges much
    faster than random draws."""
    i = np.arange(n)
    u = (i + 0.5) / n
    v = ((i * n_prev) % n + 0.5) / n
    omega = centre + width * np.tan(np.pi * (u - 0.5))
    s = (1 - rho) / (1 + rho)
    theta = psi + 2 * np.arctan(s * np.tan(np.pi * (v - 0.5)))
    return omega, theta


_A = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.05, 0.15, 0.8]])
_CENTRE = np.array([-0.3, 0.0, 0.4])
_WIDTH = np.array([0.2, 0.3, 0.25])
_K = 2.5


def _blocks(n, n_prev):
    rho, psi = [0.3, 0.6, 0.2], [0.0, 1.0, -2.0]
    parts = [_lattice(n, n_prev, _CENTRE[m], _WIDTH[m], rho[m], psi[m]) for m in range(3)]
    omega = np.concatenate([p[0] for p in parts])
    theta = np.concatenate([p[1] for p in parts])
    labels = np.repeat(np.arange(3), n)
    return BlockKuramoto(jnp.asarray(omega), jnp.asarray(_A), _K, jnp.asarray(labels)), \
        jnp.asarray(theta), labels


@pytest.mark.parametrize(
    "coupling, width, r0, omega0",
    [(3.0, 0.5, 0.1, 0.7), (1.0, 0.5, 0.8, -0.2), (1.0, 0.5, 0.4, 0.0), (4.0, 0.1, 0.99, 2.0)],
)
def test_one_population_is_the_closed_form(coupling, width, r0, omega0):
    # Above, at and below K_c = 2 Delta; Tsit5 at dt = 0.01 is exact to ~1e-12 here.
    system = OA(jnp.array([omega0]), jnp.array([width]), coupling,
                coupling_matrix=jnp.ones((1, 1)))
    ts = np.linspace(0.0, 10.0, 21)
    y0 = OA.initial_state(jnp.array([r0]), 0.3)
    z = OA.to_complex(solvers.solve(system, y0, ts, dt=0.01).ys)[:, 0]
    r = solvers.ott_antonsen_order_parameter(ts, r0, coupling, width)
    np.testing.assert_allclose(np.abs(z), r, rtol=0, atol=1e-9)
    # One population rotates rigidly at its centre frequency.
    np.testing.assert_allclose(np.angle(z * np.exp(-1j * (0.3 + omega0 * ts))), 0.0, atol=1e-9)


def test_default_matrix_is_all_to_all_mean_field():
    system = OA(jnp.array([0.0, 1.0]), jnp.array([0.5, 0.5]), 2.0)
    np.testing.assert_allclose(system.coupling_matrix, 0.5)


def test_block_mean_field_equals_the_dense_graph():
    # The O(N) reference below is Kuramoto on the dense block graph w_ij = A_mn / |n|.
    fine, theta, labels = _blocks(21, 13)
    sizes = np.bincount(labels)
    dense = _A[labels][:, labels] / sizes[labels][None, :]
    kuramoto = solvers.Kuramoto(fine.omega, _K, graph=Graph.from_dense(dense))
    np.testing.assert_allclose(fine.vector_field(0.0, theta, None),
                               kuramoto.vector_field(0.0, theta, None), rtol=0, atol=1e-12)


def _cluster_error(n, n_prev):
    fine, theta, labels = _blocks(n, n_prev)
    ts = np.linspace(0.0, 4.0, 11)
    ys = np.asarray(solvers.solve(fine, theta, ts, dt=0.04).ys)
    z = np.stack([np.exp(1j * ys[:, labels == m]).mean(axis=1) for m in range(3)], axis=-1)
    system = OA(jnp.asarray(_CENTRE), jnp.asarray(_WIDTH), _K, coupling_matrix=jnp.asarray(_A))
    y0 = jnp.stack([z[0].real, z[0].imag], axis=-1)
    z_oa = np.asarray(OA.to_complex(solvers.solve(system, y0, ts, dt=0.04).ys))
    return np.abs(z - z_oa).max()


def test_block_graph_kuramoto_converges_to_ott_antonsen():
    # Lorentzian blocks of n oscillators: the cluster order parameters follow the OA
    # network up to finite-n error, which shrinks with n (measured: 1.5e-2 at n = 987,
    # 4.5e-3 at n = 4181, over t in [0, 4]).
    coarse = _cluster_error(987, 610)
    fine = _cluster_error(4181, 2584)
    assert fine < 1e-2, fine
    assert fine < 0.5 * coarse, (coarse, fine)


def test_sparse_coupling_matrix_equals_dense():
    a = np.array([[0.0, 0.7, 0.0], [0.2, 0.0, 0.5], [0.0, 0.0, 1.1]])
    dense = OA(jnp.array([0.1, -0.2, 0.3]), jnp.array([0.3, 0.2, 0.1]), 1.7,
               coupling_matrix=jnp.asarray(a))
    sparse = eqx.tree_at(lambda s: s.coupling_matrix, dense, Graph.from_dense(a))
    y = OA.initial_state(jnp.array([0.3, 0.9, 0.5]), jnp.array([0.1, 2.0, -1.0]))
    np.testing.assert_allclose(sparse.vector_field(0.0, y, None),
                               dense.vector_field(0.0, y, None), rtol=0, atol=1e-15)


def test_unit_disk_is_invariant():
    system = OA(jnp.array([1.0, -1.0]), jnp.array([0.05, 0.0]), 5.0,
                coupling_matrix=jnp.array([[0.2, 0.8], [0.9, 0.1]]))
    y0 = OA.initial_state(jnp.array([1.0, 0.999]), jnp.array([0.0, 2.0]))
    ys = solvers.solve(system, y0, np.linspace(0, 20, 41), dt=0.01).ys
    assert float(jnp.max(jnp.sum(ys**2, axis=-1))) <= 1.0 + 1e-9


def test_gradient_through_100_steps_matches_finite_differences():
    y0 = OA.initial_state(jnp.array([0.2, 0.5, 0.7]), jnp.array([0.0, 1.0, 2.5]))
    ts = np.array([0.0, 2.0])  # 100 steps of dt = 0.02
    weights = jnp.asarray(np.random.default_rng(1).standard_normal((3, 2)))
    params = dict(omega=jnp.array([0.3, -0.1, 0.5]), width=jnp.array([0.2, 0.4, 0.1]),
                  coupling=jnp.array(2.0), a=jnp.asarray(_A), y0=y0)

    def loss(p):
        system = OA(p["omega"], p["width"], p["coupling"], coupling_matrix=p["a"])
        sol = solvers.solve(system, p["y0"], ts, dt=0.02)
        assert sol.stats["num_steps"] == 100
        return jnp.sum(weights * sol.ys[-1])

    loss = jax.jit(loss)
    grads = jax.jit(jax.grad(loss))(params)
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    g = jax.flatten_util.ravel_pytree(grads)[0]
    rng = np.random.default_rng(2)
    eps = 1e-6
    for _ in range(4):
        d = jnp.asarray(rng.standard_normal(flat.shape))
        fd = (loss(unravel(flat + eps * d)) - loss(unravel(flat - eps * d))) / (2 * eps)
        np.testing.assert_allclose(float(g @ d), float(fd), rtol=1e-6, atol=1e-9)


def test_float32_state_stays_float32():
    system = OA(np.array([0.1, 0.2]), np.array([0.3, 0.3]), 2.0)
    y0 = OA.initial_state(jnp.array([0.5, 0.4], jnp.float32), 0.0)
    sol = solvers.solve(system, y0, np.array([0.0, 0.5]), dt=0.1)
    assert sol.ys.dtype == jnp.float32
    assert system.vector_field(0.0, y0, None).dtype == jnp.float32


def test_complex_round_trip():
    z = jnp.array([0.3 + 0.4j, -0.1j])
    np.testing.assert_array_equal(OA.to_complex(OA.from_complex(z)), z)
    assert OA.from_complex(z).shape == (2, 2)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(omega=np.zeros((2, 2))), "`omega` must be a non-empty 1D"),
        (dict(omega=np.zeros(0)), "`omega` must be a non-empty 1D"),
        (dict(omega=np.array([0, 1])), "`omega` must be a non-empty 1D array of floating"),
        (dict(omega=np.array([0.0, np.nan])), "`omega` must be finite"),
        (dict(width=np.ones(3)), r"`width` must have one entry per population, shape \(2,\)"),
        (dict(width=np.array([0.1, -0.1])), "`width` .* must be >= 0"),
        (dict(coupling=np.complex128(1j)), "`coupling` must be real"),
        (dict(coupling="strong"), "`coupling` must be a number"),
        (dict(coupling_matrix=np.ones((2, 3))), r"`coupling_matrix` must be a floating \(2, 2\)"),
        (dict(coupling_matrix=np.array([[1.0, np.inf], [0, 0]])),
         "`coupling_matrix` must be finite"),
        (dict(coupling_matrix=Graph([0], [1], n_nodes=3)), "`coupling_matrix` is a graph on 3"),
    ],
)
def test_bad_arguments_are_refused(kwargs, match):
    args = dict(omega=np.array([0.0, 1.0]), width=np.array([0.1, 0.2]), coupling=1.0)
    args.update(kwargs)
    matrix = args.pop("coupling_matrix", None)
    with pytest.raises(ValueError, match=match):
        OA(args["omega"], args["width"], args["coupling"], coupling_matrix=matrix)


def test_bad_state_is_refused():
    system = OA(np.array([0.0, 1.0]), np.array([0.1, 0.2]), 1.0)
    with pytest.raises(ValueError, match=r"`y0` must have shape \(2, 2\)"):
        solvers.solve(system, jnp.zeros(2), np.array([0.0, 1.0]), dt=0.1)
    with pytest.raises(ValueError, match="`y0` must have a real floating dtype"):
        solvers.solve(system, jnp.zeros((2, 2), jnp.complex64), np.array([0.0, 1.0]), dt=0.1)


def test_vmaps_over_systems():
    # Batched parameters (e.g. one cluster model per trajectory) under eqx.filter_vmap.
    omegas = jnp.array([[0.0, 1.0], [0.5, -0.5]])
    make = eqx.filter_vmap(lambda o: OA(o, jnp.array([0.1, 0.2]), 1.5))
    systems = make(omegas)
    y0 = OA.initial_state(jnp.array([0.5, 0.5]), 0.0)
    ys = eqx.filter_vmap(lambda s: solvers.solve(s, y0, np.array([0.0, 1.0]), dt=0.1).ys)(systems)
    assert ys.shape == (2, 2, 2, 2)


def test_ralston_rk3_converges_at_third_order():
    # One population against the closed form r(t); slope fitted over four dt.
    system = OA(jnp.array([0.7]), jnp.array([0.5]), 3.0, coupling_matrix=jnp.ones((1, 1)))
    y0 = OA.initial_state(jnp.array([0.1]), 0.3)
    ts = np.array([0.0, 4.0])
    exact = float(solvers.ott_antonsen_order_parameter(4.0, 0.1, 3.0, 0.5))
    dts = np.array([0.2, 0.1, 0.05, 0.025])
    errors = []
    for dt in dts:
        z = OA.to_complex(solvers.solve(system, y0, ts, dt=float(dt),
                                        solver=solvers.RalstonRK3()).ys)[-1, 0]
        errors.append(abs(float(jnp.abs(z)) - exact))
    slope = np.polyfit(np.log(dts), np.log(errors), 1)[0]
    assert abs(slope - 3.0) < 0.3, f"slope {slope:.2f}, errors {errors}"
