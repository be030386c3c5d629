"""Ring lattices: each node coupled to its nearest neighbours on a circle."""

import numpy as np

from .._validation import check_positive_int
from ._graph import Graph, receiver_normalized, symmetric_edges


def ring_lattice(n: int, k: int, *, normalize: bool = True) -> Graph:
    r"""A ring of $n$ nodes, each connected to its $k/2$ nearest neighbours on either
    side: edges $i \leftrightarrow (i \pm d) \bmod n$ for $d = 1, \dots, k/2$ (the
    Watts–Strogatz lattice before rewiring).

    **Arguments:**

    - `n`: number of nodes, >= 3.
    - `k`: degree, even, $2 \le k < n$.
    - `normalize`: weights $1/k$ (incoming weights sum to 1), default; otherwise 1.

    **Returns:** a `Graph` with each edge stored in both directions.

    **Reference:** D. J. Watts, S. H. Strogatz, "Collective dynamics of 'small-world'
    networks", Nature 393, 440 (1998).
    """
    n = check_positive_int(n, "n", minimum=3)
    k = check_positive_int(k, "k", minimum=2)
    if k % 2 or k >= n:
        raise ValueError(f"`k` must be even and below n = {n}, got {k}.")
    nodes = np.arange(n, dtype=np.int64)
    i = np.tile(nodes, k // 2)
    j = (i + np.repeat(np.arange(1, k // 2 + 1), n)) % n
    senders, receivers = symmetric_edges(i, j, n)
    weights = np.ones(senders.shape[0])
    if normalize:
        weights = receiver_normalized(receivers, weights, n)
    return Graph(senders, receivers, weights, n_nodes=n)
