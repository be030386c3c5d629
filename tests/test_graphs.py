"""Sparse graphs: the `Graph` container, random hyperbolic, Erdős–Rényi and ring
graphs."""

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from solvers import graphs


def edge_set(g):
    return set(zip(np.asarray(g.senders).tolist(), np.asarray(g.receivers).tolist(), strict=True))


def check_structure(g):
    """Sorted by receiver, symmetric, no self-loops, no duplicate edges."""
    s, r = np.asarray(g.senders), np.asarray(g.receivers)
    assert s.dtype == np.int32 and r.dtype == np.int32
    assert np.all(np.diff(r) >= 0), "edges not sorted by receiver"
    assert not np.any(s == r), "self-loop"
    edges = edge_set(g)
    assert len(edges) == g.n_edges, "duplicate edges"
    assert edges == {(b, a) for a, b in edges}, "not symmetric"


def check_receiver_normalised(g):
    total = np.bincount(np.asarray(g.receivers), np.asarray(g.weights), minlength=g.n_nodes)
    has_edges = np.asarray(g.in_degree()) > 0
    np.testing.assert_allclose(total[has_edges], 1.0, rtol=1e-12)


# ---------------------------------------------------------------- Graph


def test_graph_sorts_by_receiver_then_sender():
    g = graphs.Graph([2, 0, 1, 0], [1, 2, 0, 1], [1.0, 2.0, 3.0, 4.0], n_nodes=3)
    assert np.asarray(g.receivers).tolist() == [0, 1, 1, 2]
    assert np.asarray(g.senders).tolist() == [1, 0, 2, 0]
    assert np.asarray(g.weights).tolist() == [3.0, 4.0, 1.0, 2.0]
    dense = np.asarray(g.to_dense())
    expected = np.zeros((3, 3))
    expected[1, 2], expected[2, 0], expected[0, 1], expected[1, 0] = 1.0, 2.0, 3.0, 4.0
    np.testing.assert_array_equal(dense, expected)
    assert np.asarray(g.in_degree()).tolist() == [1, 2, 1]
    assert np.asarray(g.out_degree()).tolist() == [2, 1, 1]
    np.testing.assert_allclose(np.asarray(g.in_degree(weighted=True)), [3.0, 5.0, 2.0])


def test_graph_default_weights_dense_roundtrip_and_normalisation():
    rng = np.random.default_rng(0)
    m = rng.random((30, 30)) * (rng.random((30, 30)) < 0.2)
    g = graphs.Graph.from_dense(m)
    np.testing.assert_array_equal(np.asarray(g.to_dense()), m)
    rows = np.asarray(g.normalized().to_dense()).sum(axis=1)
    np.testing.assert_allclose(rows[m.sum(axis=1) > 0], 1.0, rtol=1e-12)
    assert np.all(rows[m.sum(axis=1) == 0] == 0)
    cols = np.asarray(g.normalized(by="sender").to_dense()).sum(axis=0)
    np.testing.assert_allclose(cols[m.sum(axis=0) > 0], 1.0, rtol=1e-12)
    ones = graphs.Graph([0, 1], [1, 0], n_nodes=2)
    np.testing.assert_array_equal(np.asarray(ones.weights), [1.0, 1.0])


@pytest.mark.parametrize(
    "senders, receivers, weights, n_nodes, match",
    [
        ([0, 3], [1, 0], None, 3, r"`senders` must lie in \[0, n_nodes\)"),
        ([0, -1], [1, 0], None, 3, r"`senders` must lie in \[0, n_nodes\)"),
        ([0, 1], [1, 5], None, 3, r"`receivers` must lie in \[0, n_nodes\)"),
        ([0, 1, 2], [1, 0], None, 3, "same length"),
        ([0, 1], [1, 0], None, -1, "`n_nodes` must be an int >= 0"),
        ([0, 1], [1, 0], None, 2.0, "`n_nodes` must be an int"),
        ([0, 1], [1, 0], [1.0], 2, "`weights` must have one entry per edge"),
        ([0, 1], [1, 0], [1.0, np.nan], 2, "`weights` must be finite"),
        ([0.0, 1.0], [1, 0], None, 2, "`senders` must hold integer"),
        ([[0, 1]], [[1, 0]], None, 2, "`senders` must be a 1D array"),
    ],
)
def test_graph_bad_input(senders, receivers, weights, n_nodes, match):
    with pytest.raises(ValueError, match=match):
        graphs.Graph(senders, receivers, weights, n_nodes=n_nodes)


def test_graph_normalized_bad_by():
    with pytest.raises(ValueError, match="`by` must be"):
        graphs.ring_lattice(5, 2).normalized(by="both")


def test_graph_indices_must_be_concrete():
    with pytest.raises(ValueError, match="`senders` must be concrete"):
        jax.jit(lambda s: graphs.Graph(s, s, n_nodes=3).weights)(np.array([0, 1]))


# ---------------------------------------------------------------- random hyperbolic


def hyperbolic_cosh_distance(r, theta):
    dtheta = theta[:, None] - theta[None, :]
    return np.cosh(r[:, None] - r[None, :]) + 2 * np.sinh(r)[:, None] * np.sinh(r)[
        None, :
    ] * np.sin(dtheta / 2) ** 2


@pytest.mark.parametrize("n_edges", [0, 400])
def test_column_layout_neighbour_sum_equals_dense(n_edges):
    # Degrees from 0 (isolated nodes) through every bucket width to a hub of 70 edges
    # (split into chunks of 16): exact to 1e-12 in float64 against the dense sum.
    rng = np.random.default_rng(3)
    n = 60
    senders = np.concatenate([rng.integers(0, n, n_edges), np.arange(n), np.arange(10)])
    receivers = np.concatenate(
        [rng.integers(1, n // 2, n_edges), np.zeros(n, int), np.zeros(10, int)]
    )
    if n_edges == 0:
        senders, receivers = senders[:0], receivers[:0]
    g = graphs.Graph(senders, receivers, rng.normal(size=senders.size), n_nodes=n)
    layout = graphs.ColumnLayout(g)
    x = jnp.asarray(rng.uniform(-3, 3, n))
    got = jax.jit(lambda x: layout.neighbour_sum(lambda xs, xr: jnp.sin(xs - 2 * xr), x))(x)
    dense = np.asarray(g.to_dense())
    diff = np.asarray(x)[None, :] - 2 * np.asarray(x)[:, None]
    want = (dense * np.sin(diff)).sum(1)
    np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=1e-12)
    if n_edges:
        assert layout.n_wide >= 1 and int(np.bincount(receivers).max()) > 16


def test_random_hyperbolic_matches_brute_force_threshold_model():
    # Exact: the banded search must find exactly the pairs at distance < R (all
    # O(N^2) pairs checked), for several exponents.
    for gamma, seed in [(2.5, 0), (2.1, 1), (3.5, 2)]:
        n = 1500
        g, c = graphs.random_hyperbolic(
            n, avg_degree=8, key=jax.random.PRNGKey(seed), gamma=gamma, return_coordinates=True
        )
        r, theta = np.asarray(c.radius), np.asarray(c.angle)
        assert np.all((r >= 0) & (r <= c.disk_radius)) and np.all(np.diff(theta) >= 0)
        assert c.alpha == pytest.approx((gamma - 1) / 2)
        near = hyperbolic_cosh_distance(r, theta) < np.cosh(c.disk_radius)
        np.fill_diagonal(near, False)
        adjacency = np.zeros((n, n), bool)
        adjacency[np.asarray(g.receivers), np.asarray(g.senders)] = True
        mismatched = int((adjacency != near).sum())
        assert mismatched == 0, f"gamma={gamma}: {mismatched} entries differ from brute force"


def test_random_hyperbolic_degrees_weights_structure():
    n, k = 5000, 10
    g = graphs.random_hyperbolic(n, avg_degree=k, key=jax.random.PRNGKey(0))
    check_structure(g)
    check_receiver_normalised(g)
    degree = np.asarray(g.in_degree())
    np.testing.assert_array_equal(degree, np.asarray(g.out_degree()))
    # Realised average degree within 25% of the target (hubs make it fluctuate).
    assert abs(degree.mean() - k) < 0.25 * k, f"average degree {degree.mean():.2f} vs {k}"
    # Heavy tail (gamma = 2.5): the largest hub has far more than the mean; an
    # Erdős–Rényi graph of the same mean degree has max degree ~ 25.
    assert degree.max() > 20 * degree.mean(), f"max degree {degree.max()}"
    # Weights of j -> i proportional to sqrt(k_j) within each receiver.
    s, r, w = np.asarray(g.senders), np.asarray(g.receivers), np.asarray(g.weights)
    ratio = w / np.sqrt(degree[s])
    per_receiver = np.bincount(r, ratio, minlength=n) / np.maximum(degree, 1)
    np.testing.assert_allclose(ratio, per_receiver[r], rtol=1e-12)


def test_random_hyperbolic_heavier_tail_for_smaller_gamma():
    # P(k) ~ k^-gamma: the fraction of nodes above 5x the mean grows as gamma falls.
    def tail(gamma):
        g = graphs.random_hyperbolic(4000, avg_degree=10, gamma=gamma, key=jax.random.PRNGKey(3))
        d = np.asarray(g.in_degree())
        return np.mean(d > 5 * d.mean())

    assert tail(2.2) > 2 * tail(3.5) > 0


def test_random_hyperbolic_reproducible_by_key():
    a = graphs.random_hyperbolic(500, avg_degree=6, key=jax.random.PRNGKey(1))
    b = graphs.random_hyperbolic(500, avg_degree=6, key=jax.random.PRNGKey(1))
    c = graphs.random_hyperbolic(500, avg_degree=6, key=jax.random.PRNGKey(2))
    assert edge_set(a) == edge_set(b)
    assert edge_set(a) != edge_set(c)
    typed = graphs.random_hyperbolic(500, avg_degree=6, key=jax.random.key(1))
    assert edge_set(typed) == edge_set(a)


def test_random_hyperbolic_temperature():
    # T > 0: every pair within the cutoff is an edge with probability p(d); the edge
    # count matches sum p(d) over pairs within 5 standard deviations.
    n, T = 1200, 0.5
    g, c = graphs.random_hyperbolic(
        n, avg_degree=8, key=jax.random.PRNGKey(4), temperature=T, return_coordinates=True
    )
    check_structure(g)
    check_receiver_normalised(g)
    cosh_d = hyperbolic_cosh_distance(np.asarray(c.radius), np.asarray(c.angle))
    d = np.arccosh(np.maximum(cosh_d, 1))
    p = 1 / (1 + np.exp((d - c.disk_radius) / (2 * T)))
    p[d > c.disk_radius + 2 * T * np.log(1 / 1e-4 - 1)] = 0
    iu = np.triu_indices(n, 1)
    mean, std = p[iu].sum(), np.sqrt((p[iu] * (1 - p[iu])).sum())
    edges = g.n_edges / 2
    assert abs(edges - mean) < 5 * std, f"{edges} edges, expected {mean:.0f} +- {std:.0f}"
    # And longer-range edges than the threshold model: some pairs beyond R.
    s, r = np.asarray(g.senders), np.asarray(g.receivers)
    assert np.any(d[r, s] > c.disk_radius)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n=1, avg_degree=2), "`n` must be an int >= 2"),
        (dict(n=100, avg_degree=0.0), "`avg_degree` must be positive"),
        (dict(n=100, avg_degree=120), "`avg_degree` must be below n - 1"),
        (dict(n=100, avg_degree=5, gamma=2.0), "`gamma` must be > 2"),
        (dict(n=100, avg_degree=5, temperature=1.0), r"`temperature` must be in \[0, 1\)"),
        (dict(n=100, avg_degree=5, temperature=-0.1), "`temperature` must be non-negative"),
        (dict(n=100, avg_degree=5, key=None), "`key` is required"),
        (dict(n=100, avg_degree=5, key=3), "`key` must be a JAX PRNG key"),
    ],
)
def test_random_hyperbolic_bad_input(kwargs, match):
    kwargs = {"key": jax.random.PRNGKey(0), **kwargs}
    with pytest.raises(ValueError, match=match):
        graphs.random_hyperbolic(**kwargs)


@pytest.mark.slow
def test_random_hyperbolic_one_million_nodes():
    t = time.perf_counter()
    g = graphs.random_hyperbolic(1_000_000, avg_degree=10, key=jax.random.PRNGKey(0))
    elapsed = time.perf_counter() - t
    degree = np.asarray(g.in_degree())
    print(f"1M-node hyperbolic graph: {elapsed:.1f} s, {g.n_edges} directed edges")
    assert abs(degree.mean() - 10) < 2.5
    assert np.all(np.diff(np.asarray(g.receivers)) >= 0)
    check_receiver_normalised(g)


# ---------------------------------------------------------------- Erdős–Rényi, ring


@pytest.mark.parametrize("n", [400, 20_000])  # coin flips; sparse pair sampling
def test_erdos_renyi(n):
    k = 8.0
    g = graphs.erdos_renyi(n, avg_degree=k, key=jax.random.PRNGKey(0))
    check_structure(g)
    check_receiver_normalised(g)
    # The edge count is Binomial(n(n-1)/2, p): within 5 standard deviations.
    pairs, p = n * (n - 1) / 2, k / (n - 1)
    edges = g.n_edges / 2
    assert abs(edges - pairs * p) < 5 * np.sqrt(pairs * p * (1 - p)), edges
    # Poisson-like degrees, unlike the hyperbolic graph: no hubs.
    assert np.asarray(g.in_degree()).max() < 4 * k
    unit = graphs.erdos_renyi(n, k / (n - 1), key=jax.random.PRNGKey(0), normalize=False)
    assert np.all(np.asarray(unit.weights) == 1.0)
    assert edge_set(unit) == edge_set(g)


def test_erdos_renyi_extremes_and_bad_input():
    assert graphs.erdos_renyi(50, 0.0, key=jax.random.PRNGKey(0)).n_edges == 0
    assert graphs.erdos_renyi(50, 1.0, key=jax.random.PRNGKey(0)).n_edges == 50 * 49
    with pytest.raises(ValueError, match="exactly one of `p` and `avg_degree`"):
        graphs.erdos_renyi(50, 0.1, avg_degree=3, key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"`p` must be in \[0, 1\]"):
        graphs.erdos_renyi(50, 1.5, key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="`avg_degree` must be at most n - 1"):
        graphs.erdos_renyi(50, avg_degree=60, key=jax.random.PRNGKey(0))


def test_ring_lattice():
    n, k = 12, 4
    g = graphs.ring_lattice(n, k)
    check_structure(g)
    dense = np.asarray(g.to_dense())
    i, j = np.indices((n, n))
    dist = np.minimum((i - j) % n, (j - i) % n)
    np.testing.assert_allclose(dense, np.where((dist >= 1) & (dist <= k // 2), 1 / k, 0.0))
    with pytest.raises(ValueError, match="`k` must be even and below n"):
        graphs.ring_lattice(10, 3)
    with pytest.raises(ValueError, match="`k` must be even and below n"):
        graphs.ring_lattice(10, 10)
