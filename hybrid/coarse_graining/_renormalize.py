r"""Renormalization of an oscillator network into clusters on several scales.

The nodes of a `solvers.graphs.Graph` are grouped into $M$ clusters, spectrally
(k-means on the leading eigenvectors of the normalized Laplacian, found by a sparse
subspace iteration) or geometrically (contiguous arcs of the hyperbolic angle of a
`random_hyperbolic` graph); clusters are then merged pairwise into $\lceil M/2
\rceil$, $\lceil M/4 \rceil$, ... coarser clusters (the renormalized scales). A
`Renormalization` holds the result and the maps a cluster model needs: the
coarse-graining of phases to cluster order parameters, the inter-cluster coupling
matrix, and per-cluster Lorentzian frequency parameters.
"""

import contextlib
import ctypes
import math
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
from jaxtyping import Array, ArrayLike, Float, Int
from scipy.sparse import csgraph

from solvers.graphs import Graph, HyperbolicCoordinates, numpy_rng, receiver_normalized

# Lorentzian half width with the density of N(mu, s^2) at its centre,
# Delta = 1 / (pi g(mu)) = sqrt(2/pi) s: both laws then share K_c = 2 Delta.
GAUSSIAN_TO_LORENTZIAN = math.sqrt(2.0 / math.pi)

def _check_clusters(m, n_nodes: int) -> int:
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
        raise ValueError(f"`n_clusters` must be an int >= 1, got {m!r}.")
    if m > n_nodes:
        raise ValueError(f"`n_clusters` ({m}) must not exceed the number of nodes ({n_nodes}).")
    return int(m)


# ---------------------------------------------------------------------------------------
# Spectral embedding: sparse subspace iteration (SciPy CSR products, host side).


def _symmetric_operator(graph: Graph, regularization: float):
    r"""Edges of $D_\tau^{-1/2} W_s D_\tau^{-1/2}$, $W_s = (W + W^\top)/2$, with the
    regularised degrees $d_i + \tau$ (`regularization` = $\tau / \bar d$), sorted by
    receiver, then sender."""
    s = np.asarray(graph.senders, np.int64)
    r = np.asarray(graph.receivers, np.int64)
    w = np.asarray(graph.weights, np.float64)
    n = graph.n_nodes
    # (W + W^T)/2 as an edge list: both directions with half the weight, the two
    # halves of an undirected edge merged into one entry (sorted by receiver).
    key = np.concatenate([r * n + s, s * n + r])
    order = np.argsort(key, kind="stable")
    key = key[order]
    half = 0.5 * np.concatenate([w, w])[order]
    del order
    first = np.concatenate([[True], key[1:] != key[:-1]]) if key.size else key.astype(bool)
    starts = np.flatnonzero(first)
    weights = np.add.reduceat(half, starts) if key.size else half
    receivers, senders = np.divmod(key[starts], n)
    degree = np.bincount(receivers, weights=weights, minlength=n)
    tau = float(regularization) * float(degree.mean())
    degree = degree + tau
    inv_sqrt = np.where(degree > 0, 1.0 / np.sqrt(np.where(degree > 0, degree, 1.0)), 0.0)
    values = weights * inv_sqrt[senders] * inv_sqrt[receivers]
    return senders, receivers, values, inv_sqrt, tau


def _make_product(graph: Graph, regularization: float, dtype):
    r"""`X [N, b] -> 2 S_\tau X`: one pass of a SciPy CSR matrix over the edges (each
    edge gathers a whole row of X) plus the rank-one teleportation term, added in
    place (BLAS `ger`): no temporary of the block's size besides the result."""
    s, r, v, inv_sqrt, tau = _symmetric_operator(graph, regularization)
    n = graph.n_nodes
    dtype = np.dtype(dtype)
    # The entries are sorted by receiver, then sender: CSR without a sort.
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(r, minlength=n), out=indptr[1:])
    index_dtype = np.int32 if s.size < 2**31 and n < 2**31 else np.int64
    matrix = sp.csr_matrix(
        ((2 * v).astype(dtype), s.astype(index_dtype), indptr.astype(index_dtype)),
        shape=(n, n))
    del s, r, v
    d = inv_sqrt.astype(dtype)
    ger = sla.get_blas_funcs("ger", dtype=dtype)

    def doubled(x):
        out = matrix @ x
        # + 2 (tau / N) D^-1/2 1 1^T D^-1/2 X, in O(N b): out^T += a (d^T X) d^T
        return ger(2 * tau / n, d @ x, d, a=out.T, overwrite_a=True).T

    return doubled, inv_sqrt


def _orthonormalize(q: np.ndarray) -> np.ndarray:
    """An orthonormal basis of the columns of `q` `[N, b]` (`N >> b`): Cholesky QR,
    twice (CholeskyQR2: as accurate as Householder for a condition number up to
    about 1e7, here at most about 81 after 4 steps), with the triangular factor
    inverted once (a 40 x 40 inverse, then one matrix product over the N rows):
    about 6x faster than a Householder QR of a 10^6 x 40 block. Householder if the
    Gram matrix is singular."""
    for _ in range(2):
        gram = q.T @ q
        try:
            c = np.linalg.cholesky(0.5 * (gram + gram.T))
        except np.linalg.LinAlgError:
            return np.linalg.qr(q)[0]
        q = q @ np.linalg.inv(c).T
    return q


@contextlib.contextmanager
def _single_blas_thread():
    """Run NumPy's OpenBLAS on one thread: the products here are tall and skinny
    (10^6 x 40) or small, and on a 2-core machine shared with other work its thread
    pool spins: a 20,000-node embedding took 44 s with two BLAS threads under a
    load of 7, 2.4 s with one. A no-op where OpenBLAS is not found."""
    libs = []
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower()}
        for path in sorted(paths):
            lib = ctypes.CDLL(path)
            for prefix in ("scipy_openblas", "openblas"):
                for suffix in ("64_", ""):
                    get = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                    put = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                    if get is not None and put is not None:
                        libs.append((get, put, get()))
                        put(1)
                        break
                else:
                    continue
                break
    except OSError:
        pass
    try:
        yield
    finally:
        for _, put, old in libs:
            put(old)


def spectral_embedding(
    graph: Graph,
    k: int,
    *,
    key,
    regularization: float = 1.0,
    oversample: int = 8,
    max_iterations: int = 120,
    tol: float = 1e-4,
    dtype=np.float64,
) -> tuple[np.ndarray, np.ndarray]:
    r"""The `k` leading eigenpairs of the regularised normalized adjacency
    $S_\tau = D_\tau^{-1/2}(W_s + \tfrac{\tau}{N}\mathbf 1 \mathbf 1^\top)D_\tau^{-1/2}$,
    $W_s = (W + W^\top)/2$, $D_\tau = D + \tau$ (the `k` smallest eigenpairs of the
    regularised normalized Laplacian $I - S_\tau$), by subspace iteration on the
    shifted operator $(S_\tau + I/2)/\tfrac32$ with Rayleigh–Ritz.

    The regularisation $\tau$ (a weak all-to-all link of total weight $\tau$ per
    node) keeps the leading eigenvectors off the small components and dangling trees
    of sparse graphs, which otherwise take them and leave one giant cluster; $\tau = 0$
    gives the plain normalized Laplacian. Every product is one pass of a SciPy CSR
    matrix over the edges, all `k + oversample` columns at once (each edge gathers a
    whole row of the block), plus a rank-one term, never a dense matrix: about 0.3 s
    per product at $10^6$ nodes and $10^7$ edges (float64, one core), 10x the
    column-by-column segment sums of an XLA version. The block is re-orthonormalised
    (Cholesky QR) every 4 steps; the iteration stops when the Ritz values move less
    than `tol` over 20 steps, or after `max_iterations` steps. Unconverged vectors
    still span a smoothed (diffusion) subspace of the leading ones, which is what
    clustering needs.

    **Arguments:**

    - `graph`: a `solvers.graphs.Graph` (weights used symmetrised).
    - `k`: the number of eigenpairs, $1 \le k < N$.
    - `key`: a JAX PRNG key for the random start block.
    - `regularization`: $\tau$ in units of the mean degree, default 1 (Qin & Rohe).
    - `oversample`: extra vectors that speed up convergence, default 8.
    - `max_iterations`, `tol`: the stopping rule.
    - `dtype`: of the iteration, default float64 (the clusters must not hinge on
      round-off: training and evaluation each recompute them); float32 halves the
      memory traffic.

    **Returns:** `(vectors [N, k], eigenvalues [k])` of $S_\tau$, eigenvalues
    decreasing (NumPy, float64).

    **References:** Y. Saad, "Numerical Methods for Large Eigenvalue Problems", SIAM
    (2011), ch. 5 (subspace iteration); T. Qin, K. Rohe, "Regularized spectral
    clustering under the degree-corrected stochastic blockmodel", NIPS 2013.
    """
    n = graph.n_nodes
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k < n:
        raise ValueError(f"`k` must be an int in [1, N) = [1, {n}), got {k!r}.")
    if not (isinstance(regularization, (int, float)) and regularization >= 0):
        raise ValueError(f"`regularization` must be a number >= 0, got {regularization!r}.")
    b = min(n, int(k) + max(int(oversample), 0))
    with _single_blas_thread():
        return _subspace_iteration(graph, k, b, key, regularization, max_iterations, tol,
                                   np.dtype(dtype))


def _subspace_iteration(graph, k, b, key, regularization, max_iterations, tol, dtype):
    n = graph.n_nodes
    doubled, _ = _make_product(graph, regularization, dtype)

    def ritz(q):
        h = 0.5 * (q.T @ doubled(q))
        evals, evecs = np.linalg.eigh(0.5 * (h + h.T))
        return evals[::-1], q @ evecs[:, ::-1]

    rng = numpy_rng(key)
    q = _orthonormalize(rng.standard_normal((n, b)).astype(dtype))
    previous = None
    for _ in range(max(1, -(-int(max_iterations) // 20))):
        for _ in range(5):  # 20 steps
            for _ in range(4):
                # 2 (S + I/2): the top of the spectrum stays on top, and the bottom
                # (near -1 on tree-like parts of sparse graphs) maps to -1/3 of it;
                # the factor 3 of growth per step is undone by the orthonormalisation.
                y = doubled(q)
                y += q
                q = y
            q = _orthonormalize(q)
        evals = ritz(q)[0][:k]
        if previous is not None and np.max(np.abs(evals - previous)) < tol:
            break
        previous = evals
    evals, vecs = ritz(q)
    return np.asarray(vecs[:, :k], np.float64), np.asarray(evals[:k], np.float64)


# ---------------------------------------------------------------------------------------
# k-means.


# Rows of one block of the point-to-centre distances (memory bound at large N).
_ROWS = 2**16


def _assign(x: np.ndarray, sq: np.ndarray, centres: np.ndarray):
    """The nearest centre of every point and the squared distance to it, by blocks
    of rows."""
    n = x.shape[0]
    cc = np.einsum("md,md->m", centres, centres)
    labels = np.empty(n, np.int64)
    d2 = np.empty(n)
    for lo in range(0, n, _ROWS):
        hi = min(n, lo + _ROWS)
        dist = sq[lo:hi, None] - 2 * x[lo:hi] @ centres.T + cc
        labels[lo:hi] = np.argmin(dist, axis=1)
        d2[lo:hi] = dist[np.arange(hi - lo), labels[lo:hi]]
    return labels, d2


def _lloyd(x: np.ndarray, sq: np.ndarray, centres: np.ndarray, iterations: int, *,
           cost: bool = True):
    """Lloyd iterations from `centres` until the labels repeat (at most
    `iterations`); an emptied cluster is re-seeded at the point farthest from its
    centre. **Returns:** `(labels, centres, cost)` (cost `None` unless `cost`)."""
    m = centres.shape[0]
    centres = centres.copy()
    labels = None
    for _ in range(max(1, iterations)):
        new, d2 = _assign(x, sq, centres)
        counts = np.bincount(new, minlength=m)
        for c in np.flatnonzero(counts == 0):
            far = np.argmax(d2)
            new[far] = c
            d2[far] = -np.inf
            counts = np.bincount(new, minlength=m)
        if labels is not None and np.array_equal(new, labels):
            break
        labels = new
        for d in range(x.shape[1]):
            centres[:, d] = np.bincount(labels, weights=x[:, d], minlength=m) / counts
    if not cost:
        return labels, centres, None
    return labels, centres, float(np.sum((x - centres[labels]) ** 2))


def _seed(x: np.ndarray, sq: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding: each next centre drawn with probability proportional to the
    squared distance to the nearest centre so far."""
    n = x.shape[0]
    centres = np.empty((m, x.shape[1]))
    centres[0] = x[rng.integers(n)]
    d2 = np.maximum(sq - 2 * x @ centres[0] + centres[0] @ centres[0], 0.0)
    for c in range(1, m):
        total = d2.sum()
        i = rng.choice(n, p=d2 / total) if total > 0 else rng.integers(n)
        centres[c] = x[i]
        d2 = np.minimum(d2, np.maximum(sq - 2 * x @ centres[c] + centres[c] @ centres[c], 0))
    return centres


def kmeans(
    x: Float[ArrayLike, "N d"],
    n_clusters: int,
    *,
    key,
    n_init: int = 4,
    max_iterations: int = 100,
    sample_size: int = 2**16,
    refine_iterations: int = 10,
) -> np.ndarray:
    r"""Lloyd's k-means with k-means++ seeding, best of `n_init` starts (lowest
    within-cluster sum of squares). Every cluster is non-empty: an emptied cluster is
    re-seeded at the point farthest from its centre.

    Up to `sample_size` points, exactly that. Beyond, the seeding and the `n_init`
    restarts run on a uniform subsample of `sample_size` points (their cost does not
    grow with $N$), and the best centres are then refined by Lloyd iterations over
    all points (at most `refine_iterations`, each one blocked matrix product
    $O(N M d)$): at $10^6$ points, 32 clusters and 32 dimensions a few seconds
    instead of about 10 minutes for 4 x 100 full Lloyd iterations with full
    k-means++ seeding, at the same objective within a fraction of a percent
    (`tests/test_renormalize.py`). The centres of a subsample of $s$ points are off
    by about $\sigma / \sqrt{s/M}$ (the within-cluster spread over the root of the
    points per cluster), which the refinement removes.

    **Arguments:** `x` `[N, d]` points; `n_clusters` $\le N$; `key`; `n_init`;
    `max_iterations` per start; `sample_size` (default $2^{16}$) and
    `refine_iterations` (default 10) for large $N$.

    **Returns:** `Int[ndarray, "N"]` labels in `[0, n_clusters)` (NumPy).

    **References:** D. Arthur, S. Vassilvitskii, "k-means++: the advantages of careful
    seeding", SODA 2007; D. Sculley, "Web-scale k-means clustering", WWW 2010 (centres
    from samples of the data).
    """
    x = np.asarray(x, np.float64)
    if x.ndim != 2:
        raise ValueError(f"`x` must be [N, d], got shape {x.shape}.")
    n = x.shape[0]
    m = _check_clusters(n_clusters, n)
    for name, value in (("n_init", n_init), ("max_iterations", max_iterations),
                        ("sample_size", sample_size), ("refine_iterations", refine_iterations)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"`{name}` must be an int >= 1, got {value!r}.")
    with _single_blas_thread():
        return _kmeans(x, m, numpy_rng(key), n_init, max_iterations, sample_size,
                       refine_iterations)


def _kmeans(x, m, rng, n_init, max_iterations, sample_size, refine_iterations):
    n = x.shape[0]
    sub = x
    if n > sample_size:
        sub = x[np.sort(rng.choice(n, max(int(sample_size), m), replace=False))]
    sq_sub = np.einsum("nd,nd->n", sub, sub)
    best, best_cost = None, np.inf
    for _ in range(n_init):
        labels, centres, cost = _lloyd(sub, sq_sub, _seed(sub, sq_sub, m, rng), max_iterations)
        if cost < best_cost:
            best, best_centres, best_cost = labels, centres, cost
    if sub is not x:
        sq = np.einsum("nd,nd->n", x, x)
        best = _lloyd(x, sq, best_centres, refine_iterations, cost=False)[0]
    return best.astype(np.int64)


def spectral_clusters(
    graph: Graph,
    n_clusters: int,
    *,
    key,
    n_vectors: int | None = None,
    diffusion_time: float | None = None,
    **kwargs,
) -> np.ndarray:
    r"""Spectral clustering of a graph: k-means on its spectral embedding.

    The leading eigenvectors $u_k$ of the regularised $S_\tau = D_\tau^{-1/2} (W_s +
    \tfrac{\tau}{N}\mathbf 1\mathbf 1^\top) D_\tau^{-1/2}$ (`spectral_embedding`) embed
    node $i$ as the row $(u_{1i}, \dots, u_{ki})$, normalised to unit length (Ng,
    Jordan & Weiss 2002); with `diffusion_time` $t$ it is the diffusion map
    $(\lambda_k^t u_{ki} / \sqrt{d_i + \tau})_k$ instead (Coifman & Lafon 2006).

    **Arguments:**

    - `graph`: a `solvers.graphs.Graph`.
    - `n_clusters`: $M \le N$.
    - `key`: a JAX PRNG key (start block and k-means seeding).
    - `n_vectors`: eigenvectors used, default `min(n_clusters, N - 1)`.
    - `diffusion_time`: `None` (spectral, default) or $t \ge 0$ (diffusion map).
    - `**kwargs`: passed to `spectral_embedding`.

    **Returns:** `Int[ndarray, "N"]` labels in `[0, n_clusters)`.

    **References:** A. Ng, M. Jordan, Y. Weiss, "On spectral clustering: analysis and
    an algorithm", NIPS 2002; R. Coifman, S. Lafon, "Diffusion maps", ACHA 21 (2006).
    """
    n = graph.n_nodes
    m = _check_clusters(n_clusters, n)
    if m == 1:
        return np.zeros(n, np.int64)
    k = min(m, n - 1) if n_vectors is None else n_vectors
    k_emb, k_means = jax.random.split(key)
    vecs, evals = spectral_embedding(graph, k, key=k_emb, **kwargs)
    if diffusion_time is None:
        norm = np.linalg.norm(vecs, axis=1, keepdims=True)
        x = np.where(norm > 0, vecs / np.where(norm > 0, norm, 1.0), 0.0)
    else:
        if not diffusion_time >= 0:
            raise ValueError(f"`diffusion_time` must be >= 0, got {diffusion_time!r}.")
        inv_sqrt = _symmetric_operator(graph, kwargs.get("regularization", 1.0))[3]
        x = vecs * inv_sqrt[:, None] * np.abs(evals)[None, :] ** diffusion_time
        x = x / max(np.abs(x).max(), 1e-300)
    return kmeans(x, m, key=k_means)


def angular_clusters(
    coordinates: HyperbolicCoordinates,
    n_clusters: int,
    *,
    radial_bins: int = 1,
) -> np.ndarray:
    r"""Geometric clusters of a `random_hyperbolic` graph: `n_clusters / radial_bins`
    contiguous arcs of the angular coordinate holding equal numbers of nodes, each
    split into `radial_bins` shells of equal counts by radius.

    Nodes close in angle are likely linked (the graph is geometric), so arcs are
    natural communities; shells separate the hubs (small radius) from the periphery.

    **Arguments:** `coordinates` (from `random_hyperbolic(..., return_coordinates=True)`);
    `n_clusters` $M$; `radial_bins` dividing $M$, default 1.

    **Returns:** `Int[ndarray, "N"]` labels, `arc * radial_bins + shell`.
    """
    angle = np.asarray(coordinates.angle, np.float64)
    radius = np.asarray(coordinates.radius, np.float64)
    n = angle.shape[0]
    m = _check_clusters(n_clusters, n)
    if isinstance(radial_bins, bool) or not isinstance(radial_bins, int) or radial_bins < 1:
        raise ValueError(f"`radial_bins` must be an int >= 1, got {radial_bins!r}.")
    if m % radial_bins:
        raise ValueError(f"`radial_bins` ({radial_bins}) must divide `n_clusters` ({m}).")
    arcs = m // radial_bins
    order = np.argsort(angle, kind="stable")
    arc = np.empty(n, np.int64)
    arc[order] = np.arange(n) * arcs // n
    labels = arc * radial_bins
    if radial_bins > 1:
        for a in range(arcs):
            members = np.flatnonzero(arc == a)
            by_radius = members[np.argsort(radius[members], kind="stable")]
            shell = np.arange(members.shape[0]) * radial_bins // members.shape[0]
            labels[by_radius] += shell
    return labels


# ---------------------------------------------------------------------------------------
# Coarser scales.


def _matching_parents(weight: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    r"""Heavy-edge matching: clusters paired greedily by decreasing normalised
    inter-cluster weight $(W_{pq} + W_{qp}) / (|p||q|)$, unlinked pairs last, so that
    $\lceil M/2 \rceil$ groups result (one singleton for odd $M$)."""
    m = weight.shape[0]
    score = (weight + weight.T) / np.outer(sizes, sizes)
    iu, ju = np.triu_indices(m, 1)
    # Ties (e.g. unlinked pairs) broken by index, deterministically.
    order = np.lexsort((ju, iu, -score[iu, ju]))
    parent = np.full(m, -1, np.int64)
    count = 0
    for i, j in zip(iu[order], ju[order], strict=True):
        if parent[i] < 0 and parent[j] < 0:
            parent[i] = parent[j] = count
            count += 1
    for i in np.flatnonzero(parent < 0):
        parent[i] = count
        count += 1
    return parent


def _arc_parents(m: int, radial_bins: int) -> np.ndarray:
    """Adjacent arcs merged pairwise, shell by shell."""
    arc, shell = np.divmod(np.arange(m), radial_bins)
    return (arc // 2) * radial_bins + shell


def _coarser_coupling(a: np.ndarray, sizes: np.ndarray, parent: np.ndarray, m2: int):
    p = np.zeros((m2, a.shape[0]))
    p[parent, np.arange(a.shape[0])] = 1.0
    new_sizes = p @ sizes
    # A_pq = (1/|p|) sum_{m in p, n in q} |m| A_mn
    return (p @ (sizes[:, None] * a) @ p.T) / new_sizes[:, None], new_sizes


def cluster_coupling(graph: Graph, labels: Int[ArrayLike, " N"], n_clusters: int) -> np.ndarray:
    r"""The inter-cluster coupling matrix $A_{mn} = \frac{1}{|m|} \sum_{i \in m,
    j \in n} w_{ij}$ ($w_{ij}$ the weight of the edge $j \to i$), by one segment sum
    over the edges. Its row sums are the mean incoming weight of each cluster's nodes.

    **Returns:** `Float[ndarray, "M M"]` (NumPy float64), row = receiving cluster.
    """
    labels = np.asarray(labels, np.int64)
    m = int(n_clusters)
    sizes = np.bincount(labels, minlength=m).astype(np.float64)
    s = labels[np.asarray(graph.senders)]
    r = labels[np.asarray(graph.receivers)]
    total = np.bincount(r * m + s, weights=np.asarray(graph.weights, np.float64),
                        minlength=m * m).reshape(m, m)
    return total / np.where(sizes > 0, sizes, 1.0)[:, None]


def node_influence(graph: Graph, *, iterations: int = 2000, tol: float = 1e-6) -> np.ndarray:
    r"""How much each node sets the collective pace: the stationary law $\pi$ of the
    random walk $P = D^{-1} W$ along the coupling ($\pi^\top P = \pi^\top$,
    $\sum_i \pi_i = 1$).

    For a phase-locked Kuramoto network $\dot\theta_i = \omega_i + K\sum_j w_{ij}
    \sin(\theta_j - \theta_i)$ with rows $\sum_j w_{ij} = 1$, summing the locked
    equations with weights $\pi_i$ gives the common frequency $\Omega \approx
    \sum_i \pi_i \omega_i$ (exactly for symmetric couplings $\pi_i w_{ij} = \pi_j
    w_{ji}$ and small phase differences). On `random_hyperbolic` graphs $\pi_i
    \propto \sqrt{k_i} \sum_{j \sim i} \sqrt{k_j} \approx k_i^{3/2}$: a few hubs set
    the pace, which a cluster model with plain frequency medians misses. Nodes
    without outgoing coupling get $\pi_i = 0$; disconnected components keep the mass
    of a uniform start.

    How: lazy power iteration, one sparse product per step, until it moves less
    than `tol` (L1) over 50 steps or after `iterations` steps. It starts from the
    uniform law, or, when every edge is stored both ways and the walk is reversible
    ($\pi_i P_{ij} = \pi_j P_{ji}$: any $W$ that is a symmetric matrix with rescaled
    rows, as the generators' receiver-normalised weights are), from $\pi$ itself,
    found in O(E) from the ratios $P_{ij} / P_{ji}$ summed along a breadth-first
    spanning forest, with the mass each component holds under a uniform start: then
    one round of 50 steps confirms it (about 5 s at $10^6$ nodes, where the power
    iteration from the uniform law took 2 minutes).

    **Returns:** `Float[ndarray, "N"]`, NumPy float64, summing to 1.
    """
    n = graph.n_nodes
    s = np.asarray(graph.senders, np.int64)
    r = np.asarray(graph.receivers, np.int64)
    p = receiver_normalized(r, np.asarray(graph.weights, np.float64), n)  # P[r, s]
    # (pi P)_s = sum_r pi_r P[r, s]
    step = sp.csr_matrix((p, (s, r)), shape=(n, n))

    # Exact for reversible walks; within round-off of the weights otherwise close
    # (float32 weights make a reversible walk reversible to ~1e-7 only).
    pi = _reversible_stationary(s, r, p, n)
    if pi is None:
        pi = np.full(n, 1.0 / n)
    for _ in range(max(1, -(-int(iterations) // 50))):
        old = pi
        for _ in range(50):
            pi = 0.5 * (pi + step @ pi)
            pi = pi / pi.sum()
        if np.abs(pi - old).sum() < tol:
            break
    return pi


def _reversible_stationary(s, r, p, n: int) -> np.ndarray | None:
    r"""The stationary law of a reversible walk $P[r, s]$ (edges `r <- s`, sorted by
    receiver then sender) by detailed balance, $\log\pi_j - \log\pi_i = \log P_{ij}
    - \log P_{ji}$ along a breadth-first spanning forest; each component gets the
    mass it holds under a uniform start; `None` if some edge has no reverse."""
    if s.size == 0:
        return None
    key = r * n + s
    reverse = np.searchsorted(key, s * n + r)
    reverse = np.minimum(reverse, key.size - 1)
    if not np.array_equal(key[reverse], s * n + r) or np.any(p <= 0):
        return None
    pattern = sp.csr_matrix((np.ones(s.size, np.int8), (r, s)), shape=(n, n))
    n_comp, comp = csgraph.connected_components(pattern, directed=False)
    # One breadth-first search from a virtual root linked to the first node of every
    # component gives the whole forest at once.
    first = np.unique(comp, return_index=True)[1]
    rows = np.concatenate([r, np.full(first.size, n)])
    cols = np.concatenate([s, first])
    forest = sp.csr_matrix((np.ones(rows.size, np.int8), (rows, cols)), shape=(n + 1, n + 1))
    _, pred = csgraph.breadth_first_order(forest, n, directed=True,
                                          return_predecessors=True)
    pred = pred[:n].astype(np.int64)  # int32 from SciPy: u * n below must not overflow
    # Tree edge pred -> v: log pi_v - log pi_pred = log P[pred, v] - log P[v, pred].
    tree = pred < n
    delta = np.zeros(n)
    u, v = pred[tree], np.flatnonzero(tree)
    forward = np.searchsorted(key, u * n + v)  # P[u, v]: receiver u, sender v
    delta[tree] = np.log(p[forward]) - np.log(p[reverse[forward]])
    # Sum along the paths to the roots by pointer jumping (log2 of the depth rounds):
    # delta[v] sums the edges from v up to its ancestor up[v]; roots hold 0.
    up = np.where(tree, pred, np.arange(n))
    while np.any(up[up] != up):
        delta = delta + delta[up]
        up = up[up]
    top = np.full(n_comp, -np.inf)
    np.maximum.at(top, comp, delta)
    log_pi = delta - top[comp]
    pi = np.exp(log_pi)
    # Isolated nodes (no coupling) end with nothing; every other component with the
    # share of nodes it holds among them.
    size = np.bincount(comp, minlength=n_comp)
    linked = np.bincount(r, minlength=n) > 0
    pi[~linked] = 0.0
    total = np.bincount(comp, weights=pi, minlength=n_comp)
    share = np.where(size > 1, size, 0) / max(int(linked.sum()), 1)
    pi = pi * (share / np.where(total > 0, total, 1.0))[comp]
    return pi


# ---------------------------------------------------------------------------------------
# The result.


class Renormalization(eqx.Module):
    r"""A network grouped into clusters on several scales, and the maps of the cluster
    model.

    **Fields:**

    - `labels`: `Int[Array, "N"]`, the cluster of each node at the finest scale.
    - `sizes`: `Float[Array, "M"]`, nodes per cluster $|m|$.
    - `coupling_matrix`: `Float[Array, "M M"]`, $A_{mn} = \frac{1}{|m|}\sum_{i \in m,
      j \in n} w_{ij}$.
    - `influence`: `Float[Array, "N"]`, each node's share $\pi_i$ in setting the
      collective frequency (`node_influence`).
    - `parents`: per coarser scale $\ell = 1, 2, \dots$, the tuple giving for each
      cluster of scale $\ell - 1$ its cluster at scale $\ell$ (static).

    Build one with `renormalize`.
    """

    labels: Int[Array, " N"]
    sizes: Float[Array, " M"]
    coupling_matrix: Float[Array, "M M"]
    influence: Float[Array, " N"]
    parents: tuple[tuple[int, ...], ...] = eqx.field(static=True)

    @property
    def n_clusters(self) -> int:
        """$M$, the clusters of the finest scale."""
        return int(self.sizes.shape[0])

    @property
    def n_nodes(self) -> int:
        return int(self.labels.shape[0])

    @property
    def scale_sizes(self) -> tuple[int, ...]:
        """Clusters per scale, finest first, e.g. `(32, 16, 8)`."""
        return (self.n_clusters, *(max(p) + 1 for p in self.parents))

    def labels_at(self, scale: int) -> np.ndarray:
        """The cluster of each node at `scale` (0 = finest), NumPy."""
        labels = np.asarray(self.labels)
        for p in self.parents[:scale]:
            labels = np.asarray(p)[labels]
        return labels

    def coarse_grain(self, theta: Float[Array, "... N"]) -> Float[Array, "... M 2"]:
        r"""Phases -> cluster order parameters $z_m = \frac{1}{|m|}\sum_{i \in m}
        e^{i\theta_i}$, as `(Re, Im)` pairs: `[..., N] -> [..., M, 2]`."""
        theta = jnp.asarray(theta)
        if theta.ndim < 1 or theta.shape[-1] != self.n_nodes:
            raise ValueError(
                f"`theta` must end with the {self.n_nodes} nodes, got shape {theta.shape}."
            )
        lead = theta.shape[:-1]
        flat = jnp.moveaxis(theta.reshape(-1, self.n_nodes), -1, 0)  # [N, B]
        both = jnp.stack([jnp.cos(flat), jnp.sin(flat)], axis=-1)  # [N, B, 2]
        sums = jax.ops.segment_sum(both, self.labels, num_segments=self.n_clusters)
        z = sums / self.sizes.astype(theta.dtype)[:, None, None]
        return jnp.moveaxis(z, 0, -2).reshape(*lead, self.n_clusters, 2)

    def frequency_parameters(
        self,
        omega: Float[Array, " N"],
        *,
        law: Literal["lorentzian", "gaussian"] = "lorentzian",
    ) -> tuple[Float[Array, " M"], Float[Array, " M"]]:
        r"""The Lorentzian $(\omega_m, \Delta_m)$ of each cluster's natural frequencies.

        - `law="lorentzian"`: the median and half the interquartile range, robust
          estimators of the centre and half width of a Cauchy law (its quartiles
          are $\omega_0 \pm \Delta$).
        - `law="gaussian"`: frequencies known to be normal: the mean $\mu_m$ and
          $\Delta_m = \sqrt{2/\pi}\, s_m$, the Lorentzian with the same density at
          the centre and hence the same critical coupling $K_c = 2/(\pi g(\mu))$.
          Ott–Antonsen with it is only approximate (it misses the law's shape):
          the error a closure must learn.

        Works under `jit` and `vmap` (over `omega`).

        **Returns:** `(centre [M], width [M])`.
        """
        omega = jnp.asarray(omega)
        if omega.shape != (self.n_nodes,):
            raise ValueError(f"`omega` must have shape ({self.n_nodes},), got {omega.shape}.")
        m = self.n_clusters
        sizes = self.sizes.astype(omega.dtype)
        if law == "gaussian":
            mean = jax.ops.segment_sum(omega, self.labels, num_segments=m) / sizes
            dev = omega - mean[self.labels]
            ss = jax.ops.segment_sum(dev * dev, self.labels, num_segments=m)
            std = jnp.sqrt(ss / jnp.maximum(sizes - 1, 1))
            return mean, GAUSSIAN_TO_LORENTZIAN * std
        if law != "lorentzian":
            raise ValueError(f"`law` must be 'lorentzian' or 'gaussian', got {law!r}.")
        order = jnp.lexsort((omega, self.labels))  # by cluster, then by frequency
        ranked = omega[order]
        starts = jnp.cumsum(sizes) - sizes

        def quantile(q):
            pos = starts + q * (sizes - 1)
            lo = jnp.floor(pos)
            frac = pos - lo
            lo = lo.astype(jnp.int32)
            hi = jnp.minimum(lo + 1, self.n_nodes - 1)
            return (1 - frac) * ranked[lo] + frac * ranked[hi]

        q1, q2, q3 = quantile(0.25), quantile(0.5), quantile(0.75)
        return q2, 0.5 * (q3 - q1)


    def cluster_influence(self) -> Float[Array, " M"]:
        r"""$\Pi_m = \sum_{i \in m} \pi_i$, each cluster's share of the influence."""
        return jax.ops.segment_sum(self.influence, self.labels, num_segments=self.n_clusters)

    def influence_frequency(self, omega: Float[Array, " N"]) -> Float[Array, " M"]:
        r"""The influence-weighted mean frequency of each cluster, $\sum_{i \in m}
        \pi_i \omega_i / \Pi_m$ (the plain mean where $\Pi_m = 0$): what the
        cluster contributes to the collective frequency $\Omega \approx \sum_m \Pi_m
        \omega^\pi_m$. Works under `jit` and `vmap`."""
        omega = jnp.asarray(omega)
        if omega.shape != (self.n_nodes,):
            raise ValueError(f"`omega` must have shape ({self.n_nodes},), got {omega.shape}.")
        m = self.n_clusters
        pi = self.influence.astype(omega.dtype)
        weight = jax.ops.segment_sum(pi, self.labels, num_segments=m)
        weighted = jax.ops.segment_sum(pi * omega, self.labels, num_segments=m)
        plain = jax.ops.segment_sum(omega, self.labels, num_segments=m) / self.sizes.astype(
            omega.dtype)
        return jnp.where(weight > 0, weighted / jnp.where(weight > 0, weight, 1.0), plain)

def renormalize(
    graph: Graph,
    n_clusters: int,
    *,
    method: Literal["spectral", "geometric"] = "spectral",
    scales: int = 3,
    key=None,
    coordinates: HyperbolicCoordinates | None = None,
    radial_bins: int = 1,
    **kwargs,
) -> Renormalization:
    r"""Renormalize `graph` into `n_clusters` clusters and `scales - 1` coarser scales.

    - `method="spectral"`: `spectral_clusters` (k-means on the leading eigenvectors
      of the normalized Laplacian, sparse); coarser scales by heavy-edge matching of
      the clusters (pairs with the largest inter-cluster weight per node pair merge
      first, as in multilevel graph coarsening).
    - `method="geometric"`: `angular_clusters` of the hyperbolic `coordinates`;
      coarser scales merge adjacent arcs.

    Each coarser scale has $\lceil M_\ell / 2 \rceil$ clusters, down to one.

    **Arguments:**

    - `graph`: a `solvers.graphs.Graph`.
    - `n_clusters`: $M \le N$, the clusters of the finest scale.
    - `method`: `"spectral"` (default) or `"geometric"`.
    - `scales`: the number of scales including the finest, default 3 ($M, M/2, M/4$).
    - `key`: a JAX PRNG key (spectral only).
    - `coordinates`: the graph's `HyperbolicCoordinates` (geometric only).
    - `radial_bins`: radial shells of the geometric clusters, default 1.
    - `**kwargs`: passed to `spectral_clusters`.

    **Returns:** a `Renormalization`.
    """
    if not isinstance(graph, Graph):
        raise ValueError(f"`graph` must be a solvers.graphs.Graph, got {type(graph).__name__}.")
    m = _check_clusters(n_clusters, graph.n_nodes)
    if isinstance(scales, bool) or not isinstance(scales, int) or scales < 1:
        raise ValueError(f"`scales` must be an int >= 1, got {scales!r}.")
    if method == "spectral":
        if key is None:
            raise ValueError("`key` is required for method='spectral'.")
        labels = spectral_clusters(graph, m, key=key, **kwargs)
    elif method == "geometric":
        if not isinstance(coordinates, HyperbolicCoordinates):
            raise ValueError(
                "`coordinates` (HyperbolicCoordinates, from random_hyperbolic(..., "
                "return_coordinates=True)) are required for method='geometric'."
            )
        if coordinates.angle.shape[0] != graph.n_nodes:
            raise ValueError(
                f"`coordinates` has {coordinates.angle.shape[0]} nodes, `graph` "
                f"{graph.n_nodes}."
            )
        labels = angular_clusters(coordinates, m, radial_bins=radial_bins)
    else:
        raise ValueError(f"`method` must be 'spectral' or 'geometric', got {method!r}.")
    a = cluster_coupling(graph, labels, m)
    sizes = np.bincount(labels, minlength=m).astype(np.float64)

    parents = []
    a_l, sizes_l, m_l, bins = a, sizes, m, radial_bins
    while len(parents) < scales - 1 and m_l > 1:
        if method == "geometric" and m_l // bins > 1:
            parent = _arc_parents(m_l, bins)
        else:
            parent = _matching_parents(sizes_l[:, None] * a_l, sizes_l)
            bins = 1
        m_l = int(parent.max()) + 1
        a_l, sizes_l = _coarser_coupling(a_l, sizes_l, parent, m_l)
        parents.append(tuple(int(p) for p in parent))
    dtype = jax.dtypes.canonicalize_dtype(np.float64)
    return Renormalization(
        labels=jnp.asarray(labels, jnp.int32),
        sizes=jnp.asarray(sizes, dtype),
        coupling_matrix=jnp.asarray(a, dtype),
        influence=jnp.asarray(node_influence(graph), dtype),
        parents=tuple(parents),
    )
