"""`ColumnLayout`: a graph's incoming edges in degree buckets, column-major, so that
sums over neighbours compile to vectorised loops instead of a scatter."""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from ._graph import Graph

# Bucket widths (incoming edges per row). Up to 16 columns the padding stays below
# about 10% on power-law degrees; wider rows are cut into chunks of _CHUNK.
_WIDTHS = (1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16)
_CHUNK = _WIDTHS[-1]


class _Bucket(eqx.Module):
    rows: Int[Array, " R"]  # the receiver of each row
    senders: Int[Array, "W R"]  # column-major: senders[k, row] is the k-th sender
    values: tuple[Float[Array, "W R"], ...]  # per-edge values (the weights); 0 on padding


class ColumnLayout(eqx.Module):
    r"""The incoming edges of a `Graph`, laid out for fast neighbour sums
    $y_i = \sum_{e:\,r_e = i} w_e\, f(x_{s_e}, x_i)$.

    Receivers are grouped by in-degree into buckets of `W` columns (`W` ≤ 16, the
    smallest width that holds the node's edges; padding has weight 0 and sender 0);
    nodes with more incoming edges are split into rows of 16 whose partial sums are
    added by a short segment sum. Each bucket is stored column-major, `[W, rows]`,
    and summed over its `W` columns one at a time: on CPU that is one vectorised
    loop per bucket with the gather, `f` and the sum fused, where a segment sum over
    edges compiles to a scalar scatter (about 3x slower on a 1M-node random
    hyperbolic graph, `benchmarks/bench_kuramoto.py`).

    The layout copies the graph's senders and weights (about 1.1x the edges); it is
    built once, from concrete indices, when the owning system is constructed. The
    weights may be traced (gradients with respect to them flow through the copy).

    A term that is not a weight times a function of the two endpoint values (e.g.
    one that depends on an orientation of the edge) lays out its own per-edge values
    instead, `ColumnLayout(graph, values=(a, b))`, and sums with `edge_sum`, whose
    `edge_fn` receives them.

    **Arguments:**

    - `graph`: a `Graph` whose `senders` and `receivers` are concrete.
    - `values`: `None` (lay out `graph.weights`) or a tuple of per-edge arrays
      `Float[Array, "E"]`, in the graph's edge order, laid out in their place.
    """

    buckets: tuple[_Bucket, ...]
    chunks: _Bucket  # rows of _CHUNK edges of the high-degree nodes
    chunk_segment: Int[Array, " M"]  # which high-degree node each chunk adds to
    position: Int[Array, " N"]  # where node i's sum is in the concatenated outputs
    n_wide: int = eqx.field(static=True)
    n_values: int = eqx.field(static=True)

    def __init__(self, graph: Graph, values: tuple[Float[Array, " E"], ...] | None = None):
        receivers = np.asarray(graph.receivers, np.int64)  # sorted by Graph
        senders = np.asarray(graph.senders, np.int32)
        n, n_edges = graph.n_nodes, graph.n_edges
        if values is None:
            values = (graph.weights,)
        for v in values:
            if np.shape(v) != (n_edges,):
                raise ValueError(
                    f"`values` must be per-edge arrays of shape ({n_edges},), got "
                    f"{np.shape(v)}."
                )
        degree = np.bincount(receivers, minlength=n)
        start = np.concatenate([[0], np.cumsum(degree)[:-1]]).astype(np.int64)
        # Edge position n_edges is the padding: sender 0, every value 0.
        senders_ext = np.concatenate([senders, np.zeros(1, np.int32)])

        def extend(v):
            # Concrete values are laid out in NumPy (no compilation per bucket shape);
            # traced ones (e.g. weights under `grad`) by a JAX gather.
            if isinstance(v, jax.core.Tracer):
                return jnp.concatenate([v, jnp.zeros((1,), v.dtype)]), True
            v = np.asarray(v)
            return np.concatenate([v, np.zeros(1, v.dtype)]), False

        values_ext = [extend(v) for v in values]

        def rows_of(positions, rows):
            positions = positions.astype(np.int32)
            return _Bucket(
                rows=jnp.asarray(rows, jnp.int32),
                senders=jnp.asarray(senders_ext[positions]),
                values=tuple(
                    v[jnp.asarray(positions)] if traced else jnp.asarray(v[positions])
                    for v, traced in values_ext
                ),
            )

        buckets, order, low = [], [], 0
        for width in _WIDTHS:
            nodes = np.flatnonzero((degree > low) & (degree <= width))
            low = width
            if nodes.size == 0:
                continue
            k = np.arange(width)[:, None]
            positions = np.where(k < degree[nodes], start[nodes] + k, n_edges)
            buckets.append(rows_of(positions, nodes))
            order.append(nodes)
        wide = np.flatnonzero(degree > _CHUNK)
        n_chunks = -(-degree[wide] // _CHUNK)
        segment = np.repeat(np.arange(wide.size), n_chunks)
        first = np.repeat(np.cumsum(n_chunks) - n_chunks, n_chunks)
        offset = (np.arange(segment.size) - first) * _CHUNK + np.arange(_CHUNK)[:, None]
        positions = np.where(
            offset < degree[wide][segment], start[wide][segment] + offset, n_edges
        )
        order.append(wide)
        self.buckets = tuple(buckets)
        self.chunks = rows_of(positions, wide[segment])
        self.chunk_segment = jnp.asarray(segment, jnp.int32)
        self.n_wide = int(wide.size)
        self.n_values = len(values)
        # Nodes without incoming edges point past the outputs, at an appended 0.
        ordered = np.concatenate(order)
        position = np.full(n, ordered.size, np.int32)
        position[ordered] = np.arange(ordered.size, dtype=np.int32)
        self.position = jnp.asarray(position)

    def neighbour_sum(
        self,
        edge_fn: Callable[[Array, Array], Array],
        x: Float[Array, " N"],
    ) -> Float[Array, " N"]:
        r"""$y_i = \sum_{e:\,r_e = i} w_e\,$`edge_fn(x[s_e], x[i])` (`edge_fn`
        elementwise), $w_e$ the laid-out weights (the layout's single value per edge).
        Padding evaluates `edge_fn(x[0], x[i])` times a zero weight, so `edge_fn` must
        be finite there (a sine is)."""
        if self.n_values != 1:
            raise ValueError(
                "`neighbour_sum` needs a layout of the weights alone; this one holds "
                "several values per edge: use `edge_sum`."
            )
        return self.edge_sum(lambda x_s, x_r, w: w * edge_fn(x_s, x_r), x)

    def edge_sum(
        self,
        edge_fn: Callable[..., Array],
        x: Float[Array, " N"],
    ) -> Float[Array, " N"]:
        r"""$y_i = \sum_{e:\,r_e = i}$ `edge_fn(x[s_e], x[i], *v_e)`, with $v_e$ the
        layout's values of edge $e$ (`values`, or the weights), cast to `x.dtype`.
        Padding passes `x[0]` and values 0: `edge_fn` must return 0 there (e.g. be
        proportional to one of the values)."""

        def rows_sum(bucket):
            x_row = x.at[bucket.rows].get(mode="promise_in_bounds", indices_are_sorted=True)
            values = tuple(v.astype(x.dtype) for v in bucket.values)
            total = None
            for k in range(bucket.senders.shape[0]):
                x_s = x.at[bucket.senders[k]].get(mode="promise_in_bounds")
                term = edge_fn(x_s, x_row, *(v[k] for v in values))
                total = term if total is None else total + term
            return total

        outputs = [rows_sum(b) for b in self.buckets]
        if self.n_wide:
            outputs.append(
                jax.ops.segment_sum(
                    rows_sum(self.chunks),
                    self.chunk_segment,
                    num_segments=self.n_wide,
                    indices_are_sorted=True,
                )
            )
        outputs.append(jnp.zeros((1,), x.dtype))
        return jnp.concatenate(outputs).at[self.position].get(mode="promise_in_bounds")
