"""Erdős–Rényi random graphs $G(n, p)$, sampled sparsely."""

import numpy as np

from .._validation import check_positive, check_positive_int
from ._graph import Graph, numpy_rng, receiver_normalized, symmetric_edges


def _pair_from_index(k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pair `(i, j)`, `i > j`, of the `k`-th entry of the strict lower triangle in
    row-major order: `k = i (i - 1) / 2 + j`."""
    i = np.floor((1.0 + np.sqrt(1.0 + 8.0 * k.astype(np.float64))) / 2.0).astype(np.int64)
    # Float rounding can be one row off for huge k.
    i -= i * (i - 1) // 2 > k
    i += (i + 1) * i // 2 <= k
    return i, k - i * (i - 1) // 2


def erdos_renyi(
    n: int,
    p: float | None = None,
    *,
    key,
    avg_degree: float | None = None,
    normalize: bool = True,
) -> Graph:
    r"""An undirected Erdős–Rényi graph $G(n, p)$: every pair of distinct nodes is an
    edge independently with probability $p$ (expected degree $p(n-1)$).

    Sampled in O(E) rather than O(n^2): the number of edges $M \sim
    \mathrm{Binomial}(n(n-1)/2, p)$, then $M$ distinct pairs uniformly — the same
    law as the pairwise coin flips.

    **Arguments:**

    - `n`: number of nodes, >= 2.
    - `p`: edge probability in [0, 1]; or give `avg_degree` instead.
    - `key`: a JAX PRNG key (sampling runs in NumPy, seeded from it).
    - `avg_degree`: expected degree $p(n - 1)$, exclusive with `p`.
    - `normalize`: weights $1/k_i$ on the edges into node $i$ (incoming weights sum
      to 1, as in `random_hyperbolic`), default; otherwise all weights are 1.

    **Returns:** a `Graph` with each edge stored in both directions.

    **Reference:** P. Erdős, A. Rényi, "On random graphs I", Publ. Math. Debrecen 6
    (1959); E. N. Gilbert, "Random graphs", Ann. Math. Stat. 30 (1959).
    """
    n = check_positive_int(n, "n", minimum=2)
    if (p is None) == (avg_degree is None):
        raise ValueError("Give exactly one of `p` and `avg_degree`.")
    if p is None:
        avg_degree = float(check_positive(avg_degree, "avg_degree", allow_zero=True))
        if avg_degree > n - 1:
            raise ValueError(f"`avg_degree` must be at most n - 1 = {n - 1}, got {avg_degree}.")
        p = avg_degree / (n - 1)
    else:
        p = float(check_positive(p, "p", allow_zero=True))
        if p > 1:
            raise ValueError(f"`p` must be in [0, 1], got {p}.")
    rng = numpy_rng(key)
    n_pairs = n * (n - 1) // 2
    if n_pairs <= 2**22 or p > 0.25:
        # Small or dense: the coin flips themselves.
        k = np.flatnonzero(rng.random(n_pairs) < p)
    else:
        m = int(rng.binomial(n_pairs, p))
        k = np.zeros(0, np.int64)
        while k.shape[0] < m:
            extra = m - k.shape[0]
            draw = rng.integers(0, n_pairs, size=extra + extra // 8 + 16, dtype=np.int64)
            # Sort-based dedup (np.unique's hash path is far slower on int64 here).
            k = np.sort(np.concatenate([k, draw]))
            k = k[np.concatenate([[True], k[1:] != k[:-1]])]
        k = np.sort(rng.choice(k, size=m, replace=False))
    i, j = _pair_from_index(k.astype(np.int64))
    senders, receivers = symmetric_edges(i, j, n)
    weights = np.ones(senders.shape[0])
    if normalize:
        weights = receiver_normalized(receivers, weights, n)
    return Graph(senders, receivers, weights, n_nodes=n)
