"""Renormalization of a graph into clusters: planted partitions, the coupling matrix,
the coarse-graining operator, frequency parameters, scales, influence."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import solvers
from hybrid.coarse_graining import (
    GAUSSIAN_TO_LORENTZIAN,
    angular_clusters,
    cluster_coupling,
    node_influence,
    renormalize,
    spectral_embedding,
)
from solvers.graphs import Graph, erdos_renyi, random_hyperbolic, ring_lattice


def _planted(m=4, size=60, p_in=0.5, p_out=0.01, seed=0, weighted=False):
    """M dense blocks (of `size` nodes each, or of the sizes in a list) with sparse
    links between them, nodes shuffled."""
    rng = np.random.default_rng(seed)
    sizes = [size] * m if np.ndim(size) == 0 else list(size)
    n = sum(sizes)
    block = rng.permutation(np.repeat(np.arange(m), sizes))
    i, j = np.triu_indices(n, 1)
    p = np.where(block[i] == block[j], p_in, p_out)
    keep = rng.random(p.shape) < p
    i, j = i[keep], j[keep]
    w = rng.uniform(0.5, 1.5, i.shape) if weighted else np.ones(i.shape)
    graph = Graph(np.concatenate([i, j]), np.concatenate([j, i]), np.concatenate([w, w]),
                  n_nodes=n)
    return graph, block


def _same_partition(a, b):
    """Equal up to renaming the clusters."""
    pairs = set(zip(a.tolist(), b.tolist(), strict=True))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


@pytest.mark.parametrize("seed", [0, 1])
def test_spectral_recovers_planted_clusters(seed):
    graph, block = _planted(seed=seed)
    r = renormalize(graph, 4, key=jax.random.PRNGKey(seed), scales=1)
    assert _same_partition(np.asarray(r.labels), block)


def test_spectral_recovers_planted_clusters_of_unequal_sizes_with_weights():
    graph, block = _planted(m=3, size=[40, 80, 160], p_in=0.3, p_out=0.005, weighted=True)
    r = renormalize(graph, 3, key=jax.random.PRNGKey(3), scales=1)
    assert _same_partition(np.asarray(r.labels), block)


def test_coupling_matrix_is_the_cluster_mean_of_fine_weights():
    graph, _ = _planted(m=3, size=20, p_in=0.4, p_out=0.05, weighted=True)
    labels = np.random.default_rng(0).integers(0, 5, graph.n_nodes)
    labels[:5] = np.arange(5)  # every cluster non-empty
    a = cluster_coupling(graph, labels, 5)
    w = np.asarray(graph.to_dense())  # W[i, j]: weight of j -> i
    onehot = np.eye(5)[labels]  # [N, M]
    sizes = onehot.sum(0)
    np.testing.assert_allclose(a, onehot.T @ w @ onehot / sizes[:, None], rtol=1e-12)
    # Row sums: the mean total incoming weight of each cluster's nodes.
    np.testing.assert_allclose(a.sum(1), onehot.T @ w.sum(1) / sizes, rtol=1e-12)


def test_coupling_row_sums_on_a_hyperbolic_graph():
    graph, coords = random_hyperbolic(3000, avg_degree=8.0, key=jax.random.PRNGKey(0),
                                      return_coordinates=True)
    r = renormalize(graph, 12, method="geometric", coordinates=coords)
    fine_rows = np.asarray(graph.in_degree(weighted=True))
    labels = np.asarray(r.labels)
    expected = np.bincount(labels, weights=fine_rows) / np.bincount(labels)
    np.testing.assert_allclose(np.asarray(r.coupling_matrix).sum(1), expected, rtol=1e-12)


def test_coarse_grain_is_the_order_parameter_of_each_cluster():
    graph, block = _planted(m=3, size=10)
    r = renormalize(graph, 3, key=jax.random.PRNGKey(0), scales=1)
    theta = jnp.asarray(np.random.default_rng(0).uniform(0, 2 * np.pi, (2, 5, 30)))
    y = r.coarse_grain(theta)
    assert y.shape == (2, 5, 3, 2)
    labels = np.asarray(r.labels)
    for m in range(3):
        z = solvers.order_parameter(theta[..., labels == m])
        np.testing.assert_allclose(y[..., m, 0], jnp.real(z), atol=1e-14)
        np.testing.assert_allclose(y[..., m, 1], jnp.imag(z), atol=1e-14)
    with pytest.raises(ValueError, match="`theta` must end with the 30 nodes"):
        r.coarse_grain(theta[..., :7])


def test_frequency_parameters_match_numpy_quantiles_and_moments():
    graph, _ = _planted(m=3, size=41, p_in=0.3, p_out=0.02)
    r = renormalize(graph, 3, key=jax.random.PRNGKey(0), scales=1)
    omega = jnp.asarray(np.random.default_rng(1).standard_cauchy(graph.n_nodes))
    labels = np.asarray(r.labels)
    centre, width = jax.jit(lambda w: r.frequency_parameters(w))(omega)
    for m in range(3):
        q1, q2, q3 = np.quantile(np.asarray(omega)[labels == m], [0.25, 0.5, 0.75])
        np.testing.assert_allclose([centre[m], width[m]], [q2, 0.5 * (q3 - q1)], rtol=1e-12)
    mean, width = r.frequency_parameters(omega, law="gaussian")
    for m in range(3):
        x = np.asarray(omega)[labels == m]
        np.testing.assert_allclose([mean[m], width[m]],
                                   [x.mean(), np.sqrt(2 / np.pi) * x.std(ddof=1)], rtol=1e-12)
    with pytest.raises(ValueError, match="`law` must be"):
        r.frequency_parameters(omega, law="cauchy")


def test_lorentzian_parameters_of_large_samples():
    # Quartiles of a Cauchy law are centre +- width; of a normal law, mu +- 0.674 s.
    n = 30000
    graph = ring_lattice(n, 2)
    r = renormalize(graph, 2, method="geometric", coordinates=_ring_coordinates(n))
    omega = solvers.lorentzian_frequencies(jax.random.PRNGKey(0), n, center=0.5, width=0.3)
    centre, width = r.frequency_parameters(omega)
    np.testing.assert_allclose(centre, 0.5, atol=0.02)
    np.testing.assert_allclose(width, 0.3, atol=0.02)
    omega = solvers.gaussian_frequencies(jax.random.PRNGKey(1), n, mean=-1.0, std=2.0)
    mean, width = r.frequency_parameters(omega, law="gaussian")
    np.testing.assert_allclose(mean, -1.0, atol=0.05)
    np.testing.assert_allclose(width, 2.0 * GAUSSIAN_TO_LORENTZIAN, rtol=0.03)


def _ring_coordinates(n):
    from solvers.graphs import HyperbolicCoordinates

    angle = jnp.asarray(2 * np.pi * np.arange(n) / n)
    return HyperbolicCoordinates(radius=jnp.ones(n), angle=angle, disk_radius=1.0,
                                 alpha=1.0, temperature=0.0)


def test_spectral_embedding_matches_dense_eigenpairs():
    graph = erdos_renyi(120, avg_degree=6.0, key=jax.random.PRNGKey(0), normalize=False)
    k = 5
    vecs, evals = spectral_embedding(graph, k, key=jax.random.PRNGKey(1), dtype=jnp.float64,
                                     max_iterations=4000, tol=1e-12)
    w = np.asarray(graph.to_dense())
    ws = 0.5 * (w + w.T)
    n = w.shape[0]
    tau = ws.sum(1).mean()
    d = ws.sum(1) + tau
    s = (ws + tau / n) / np.sqrt(np.outer(d, d))
    exact, exact_vecs = np.linalg.eigh(s)
    np.testing.assert_allclose(evals, exact[::-1][:k], atol=1e-8)
    # Same invariant subspace (eigenvalues are simple here): projections agree.
    u = exact_vecs[:, ::-1][:, :k]
    np.testing.assert_allclose(vecs @ vecs.T, u @ u.T, atol=1e-6)


def test_geometric_clusters_are_balanced_contiguous_arcs():
    graph, coords = random_hyperbolic(2000, avg_degree=8.0, key=jax.random.PRNGKey(0),
                                      return_coordinates=True)
    labels = angular_clusters(coords, 16)
    order = np.argsort(np.asarray(coords.angle))
    assert np.all(np.diff(labels[order]) >= 0)  # contiguous in angle
    assert set(np.bincount(labels).tolist()) == {125}
    shells = angular_clusters(coords, 16, radial_bins=2)
    radius = np.asarray(coords.radius)
    for arc in range(8):
        inner, outer = radius[shells == 2 * arc], radius[shells == 2 * arc + 1]
        assert inner.max() <= outer.min()
    with pytest.raises(ValueError, match="`radial_bins` .* must divide"):
        angular_clusters(coords, 16, radial_bins=3)


@pytest.mark.parametrize("method", ["spectral", "geometric"])
def test_scales_halve_and_nest(method):
    graph, coords = random_hyperbolic(1500, avg_degree=8.0, key=jax.random.PRNGKey(2),
                                      return_coordinates=True)
    r = renormalize(graph, 12, method=method, scales=4, key=jax.random.PRNGKey(0),
                    coordinates=coords)
    assert r.scale_sizes == (12, 6, 3, 2)
    sizes = np.asarray(r.sizes)
    for s in range(1, 4):
        labels = r.labels_at(s)
        assert np.bincount(labels).sum() == 1500
        # Nested: each scale-(s-1) cluster lies inside one scale-s cluster.
        below = r.labels_at(s - 1)
        assert all(len(set(labels[below == c])) == 1 for c in np.unique(below))
    if method == "geometric":
        # Adjacent arcs merge: still contiguous in angle.
        order = np.argsort(np.asarray(coords.angle))
        assert np.all(np.diff(r.labels_at(2)[order]) >= 0)
    assert sizes.sum() == 1500


def test_matching_merges_the_strongest_linked_clusters():
    # Four planted blocks, linked in pairs (0-1 strongly, 2-3 strongly, weakly across):
    # the coarser scale must merge exactly those pairs.
    rng = np.random.default_rng(0)
    size = 40
    block = np.repeat(np.arange(4), size)
    i, j = np.triu_indices(4 * size, 1)
    same = block[i] == block[j]
    paired = (block[i] // 2 == block[j] // 2) & ~same
    p = np.where(same, 0.5, np.where(paired, 0.08, 0.005))
    keep = rng.random(p.shape) < p
    graph = Graph(np.concatenate([i[keep], j[keep]]), np.concatenate([j[keep], i[keep]]),
                  n_nodes=4 * size)
    r = renormalize(graph, 4, scales=2, key=jax.random.PRNGKey(0))
    assert _same_partition(np.asarray(r.labels), block)
    assert _same_partition(r.labels_at(1), block // 2)


def test_influence_is_stationary_and_proportional_to_degree_when_symmetric():
    graph = erdos_renyi(300, avg_degree=5.0, key=jax.random.PRNGKey(0), normalize=False)
    pi = node_influence(graph, tol=1e-13, iterations=20000)
    degree = np.asarray(graph.in_degree(), np.float64)
    # Unit symmetric weights: the random walk's stationary law is degree / 2E.
    np.testing.assert_allclose(pi, degree / degree.sum(), atol=1e-8)
    graph = random_hyperbolic(500, avg_degree=6.0, key=jax.random.PRNGKey(1))
    pi = node_influence(graph, tol=1e-13, iterations=20000)
    w = np.asarray(graph.to_dense())
    p = w / np.where(w.sum(1) > 0, w.sum(1), 1)[:, None]
    np.testing.assert_allclose(pi @ p, pi, atol=1e-9)
    assert abs(pi.sum() - 1) < 1e-12


def test_influence_frequency():
    graph, _ = _planted(m=2, size=20)
    r = renormalize(graph, 2, key=jax.random.PRNGKey(0), scales=1)
    omega = jnp.asarray(np.random.default_rng(0).standard_normal(40))
    labels = np.asarray(r.labels)
    pi = np.asarray(r.influence)
    got = r.influence_frequency(omega)
    for m in range(2):
        sel = labels == m
        np.testing.assert_allclose(got[m], (pi[sel] * omega[sel]).sum() / pi[sel].sum())
    np.testing.assert_allclose(r.cluster_influence().sum(), 1.0)


def test_bad_arguments_are_refused():
    graph, coords = random_hyperbolic(100, avg_degree=4.0, key=jax.random.PRNGKey(0),
                                      return_coordinates=True)
    with pytest.raises(ValueError, match="`n_clusters` .* must not exceed"):
        renormalize(graph, 101, method="geometric", coordinates=coords)
    with pytest.raises(ValueError, match="`n_clusters` must be an int >= 1"):
        renormalize(graph, 0, method="geometric", coordinates=coords)
    with pytest.raises(ValueError, match="`method` must be"):
        renormalize(graph, 4, method="louvain")
    with pytest.raises(ValueError, match="`coordinates`"):
        renormalize(graph, 4, method="geometric")
    with pytest.raises(ValueError, match="`key` is required"):
        renormalize(graph, 4)
    with pytest.raises(ValueError, match="`scales` must be an int >= 1"):
        renormalize(graph, 4, method="geometric", coordinates=coords, scales=0)
    with pytest.raises(ValueError, match="`graph` must be a solvers.graphs.Graph"):
        renormalize(np.eye(3), 2)
    with pytest.raises(ValueError, match="`k` must be an int in"):
        spectral_embedding(graph, 100, key=jax.random.PRNGKey(0))


@pytest.mark.slow
def test_spectral_renormalization_of_20k_nodes():
    # The sparse path at the Kuramoto task's default size: no dense N x N anywhere,
    # and no small components or dangling trees taking clusters (regularisation).
    graph = random_hyperbolic(20000, avg_degree=10.0, key=jax.random.PRNGKey(0))
    r = renormalize(graph, 32, key=jax.random.PRNGKey(1))
    sizes = np.asarray(r.sizes)
    assert sizes.min() >= 50, sizes
    a = np.asarray(r.coupling_matrix)
    # Most of the coupling stays inside the clusters.
    assert (np.diag(a) * sizes).sum() / sizes.sum() > 0.85


# ---------------------------------------------------------------------------------------
# Scale: k-means on a subsample, the stationary law in closed form.


def _blobs(n, d, k, spread, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d))
    labels = rng.integers(0, k, n)
    return centres[labels] + spread * rng.normal(size=(n, d)), labels


def _objective(x, labels):
    return sum(((x[labels == c] - x[labels == c].mean(0)) ** 2).sum() for c in np.unique(labels))


def test_sampled_kmeans_keeps_the_clusters_and_the_objective():
    # Separated blobs: the sampled path (seeding and restarts on 1,000 of 12,000
    # points, then Lloyd on all) finds the same partition as full k-means; on
    # overlapping blobs its objective is within 0.5% of full k-means' (measured:
    # 6e-7 relative).
    from hybrid.coarse_graining import kmeans

    x, truth = _blobs(12000, 6, 8, 0.05)
    key = jax.random.PRNGKey(0)
    sampled = kmeans(x, 8, key=key, sample_size=1000)
    full = kmeans(x, 8, key=key, sample_size=20000)
    assert _same_partition(sampled, truth) and _same_partition(full, truth)
    x, _ = _blobs(12000, 6, 8, 0.6, seed=1)
    sampled = _objective(x, kmeans(x, 8, key=key, sample_size=1000))
    full = _objective(x, kmeans(x, 8, key=key, sample_size=20000))
    assert sampled <= 1.005 * full, (sampled, full)
    assert set(np.unique(kmeans(x, 8, key=key, sample_size=200))) == set(range(8))


def test_kmeans_of_small_inputs_is_unchanged_by_the_sampling():
    # Up to `sample_size` points nothing is sampled: the same labels for any larger
    # sample_size.
    from hybrid.coarse_graining import kmeans

    x, _ = _blobs(3000, 4, 5, 0.5, seed=2)
    key = jax.random.PRNGKey(3)
    np.testing.assert_array_equal(kmeans(x, 5, key=key, sample_size=3000),
                                  kmeans(x, 5, key=key))


def test_kmeans_bad_arguments():
    from hybrid.coarse_graining import kmeans

    x = np.zeros((10, 2))
    with pytest.raises(ValueError, match="`sample_size` must be an int >= 1"):
        kmeans(x, 2, key=jax.random.PRNGKey(0), sample_size=0)
    with pytest.raises(ValueError, match="`refine_iterations` must be an int >= 1"):
        kmeans(x, 2, key=jax.random.PRNGKey(0), refine_iterations=1.5)
    with pytest.raises(ValueError, match=r"`x` must be \[N, d\]"):
        kmeans(np.zeros(10), 2, key=jax.random.PRNGKey(0))


def test_spectral_clusters_of_a_planted_partition_larger_than_the_sample():
    # 4 planted blocks of 300 nodes, k-means on a 256-point subsample of the
    # embedding then refined on all 1,200 nodes: the planted blocks exactly.
    from hybrid.coarse_graining import kmeans, spectral_embedding

    graph, block = _planted(m=4, size=300, p_in=0.05, p_out=0.001, seed=4)
    vecs, _ = spectral_embedding(graph, 4, key=jax.random.PRNGKey(0))
    x = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    labels = kmeans(x, 4, key=jax.random.PRNGKey(1), sample_size=256)
    assert _same_partition(labels, block)


def _power_iteration(graph, steps=20000):
    # The definition: lazy walk P = D^-1 W from the uniform law, renormalised.
    w = np.asarray(graph.to_dense())
    rows = w.sum(1)
    p = w / np.where(rows > 0, rows, 1)[:, None]
    pi = np.full(w.shape[0], 1.0 / w.shape[0])
    for _ in range(steps):
        pi = 0.5 * (pi + pi @ p)
        pi = pi / pi.sum()
    return pi


def test_influence_of_disconnected_graph_with_isolated_nodes():
    # Two components (hyperbolic, 150 nodes; a ring of 40) and 10 isolated nodes,
    # receiver-normalised weights: the closed form gives each component the mass it
    # holds from the uniform start (190 linked nodes share it) and the isolated
    # nodes none, as the power iteration does.
    g1 = random_hyperbolic(150, avg_degree=6.0, key=jax.random.PRNGKey(5))
    g2 = ring_lattice(40, 2)
    s = np.concatenate([np.asarray(g1.senders), np.asarray(g2.senders) + 150])
    r = np.concatenate([np.asarray(g1.receivers), np.asarray(g2.receivers) + 150])
    w = np.concatenate([np.asarray(g1.weights), np.asarray(g2.weights)])
    graph = Graph(s, r, w, n_nodes=200)
    pi = node_influence(graph, tol=1e-14, iterations=100)
    expected = _power_iteration(graph)
    np.testing.assert_allclose(pi, expected, atol=1e-10)
    assert np.all(pi[190:] == 0)
    linked = np.bincount(np.asarray(g1.receivers), minlength=150) > 0
    np.testing.assert_allclose(pi[:150].sum(), linked.sum() / (linked.sum() + 40), rtol=1e-12)


def test_influence_of_a_directed_graph_falls_back_to_the_power_iteration():
    # A directed cycle with a chord (no reverse edges): no closed form; the power
    # iteration gives the stationary law.
    s = np.array([1, 2, 3, 4, 0, 2])
    r = np.array([0, 1, 2, 3, 4, 0])
    order = np.lexsort((s, r))
    graph = Graph(s[order], r[order], np.ones(6), n_nodes=5)
    pi = node_influence(graph, tol=1e-15, iterations=20000)
    np.testing.assert_allclose(pi, _power_iteration(graph), atol=1e-12)
