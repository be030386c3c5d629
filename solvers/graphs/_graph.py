"""`Graph`: a sparse weighted directed graph as edge lists sorted by receiver."""

from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from .._validation import check_positive_int


def _default_float() -> np.dtype:
    # float64 when x64 is enabled, float32 otherwise: numpy's float64 results must
    # not warn or promote when they become JAX arrays.
    return jax.dtypes.canonicalize_dtype(np.float64)


def _concrete_indices(x, name: str) -> np.ndarray:
    if isinstance(x, jax.core.Tracer):
        raise ValueError(
            f"`{name}` must be concrete (NumPy or JAX array known before tracing): "
            "graphs are built outside `jax.jit`; close over them instead."
        )
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"`{name}` must be a 1D array of node indices, got shape {arr.shape}.")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"`{name}` must hold integer node indices, got dtype {arr.dtype}.")
    return arr.astype(np.int64, copy=False)


def numpy_rng(key) -> np.random.Generator:
    """A NumPy generator seeded from a JAX PRNG key (raw `uint32[2]` or typed).

    Graph construction is host-side work with data-dependent sizes, so it runs in
    NumPy; the key keeps it reproducible and free of global state."""
    if key is None:
        raise ValueError("`key` is required (a JAX PRNG key, e.g. jax.random.PRNGKey(0)).")
    try:
        if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
            key = jax.random.key_data(key)
        data = np.asarray(key)
    except (AttributeError, TypeError):
        raise ValueError(f"`key` must be a JAX PRNG key, got {key!r}.") from None
    if not np.issubdtype(data.dtype, np.unsignedinteger):
        raise ValueError(f"`key` must be a JAX PRNG key, got dtype {data.dtype}.")
    return np.random.default_rng([int(v) for v in data.ravel()])


class Graph(eqx.Module):
    r"""A sparse weighted directed graph: edge $e$ goes from `senders[e]` to
    `receivers[e]` with weight `weights[e]`.

    Edges are kept sorted by receiver (then by sender), so that a sum over each
    node's incoming edges is a sorted segment sum,
    $(Ax)_i = \sum_{e:\,r_e = i} w_e\, x_{s_e}$. An undirected graph stores each
    edge in both directions. Duplicate edges and self-loops are allowed.

    **Arguments:**

    - `senders`, `receivers`: `Int[ArrayLike, "E"]` node indices in `[0, n_nodes)`;
      concrete (graphs are built outside `jit`). Stored as int32.
    - `weights`: `Float[ArrayLike, "E"]`, default all ones; may be traced (e.g. a
      gradient with respect to the weights).
    - `n_nodes`: the number of nodes (isolated nodes included).

    Bad input (indices out of range, mismatched lengths, negative `n_nodes`) raises
    `ValueError` naming the argument.
    """

    senders: Int[Array, " E"]
    receivers: Int[Array, " E"]
    weights: Float[Array, " E"]
    n_nodes: int = eqx.field(static=True)

    def __init__(
        self,
        senders: Int[ArrayLike, " E"],
        receivers: Int[ArrayLike, " E"],
        weights: Float[ArrayLike, " E"] | None = None,
        *,
        n_nodes: int,
    ):
        n_nodes = check_positive_int(n_nodes, "n_nodes", minimum=0)
        s = _concrete_indices(senders, "senders")
        r = _concrete_indices(receivers, "receivers")
        if s.shape != r.shape:
            raise ValueError(
                f"`senders` and `receivers` must have the same length, got {s.shape[0]} "
                f"and {r.shape[0]}."
            )
        if n_nodes >= 2**31:
            raise ValueError(f"`n_nodes` must be below 2**31 (int32 indices), got {n_nodes}.")
        for name, idx in (("senders", s), ("receivers", r)):
            if idx.size and (idx.min() < 0 or idx.max() >= n_nodes):
                raise ValueError(
                    f"`{name}` must lie in [0, n_nodes) = [0, {n_nodes}), got values in "
                    f"[{idx.min()}, {idx.max()}]."
                )
        traced = isinstance(weights, jax.core.Tracer)
        if weights is None:
            w = np.ones(s.shape, _default_float())
        elif traced:
            # e.g. a gradient with respect to the weights: no value checks.
            w = weights if jnp.issubdtype(weights.dtype, jnp.floating) else None
        else:
            w = np.asarray(weights)
            if np.issubdtype(w.dtype, np.integer) or w.dtype == bool:
                w = w.astype(_default_float())
            if not np.issubdtype(w.dtype, np.floating):
                w = None
            elif not np.all(np.isfinite(w)):
                raise ValueError("`weights` must be finite.")
        if w is None:
            raise ValueError(f"`weights` must be real floating, got {weights!r}.")
        if w.shape != s.shape:
            raise ValueError(
                f"`weights` must have one entry per edge, shape {s.shape}, got {w.shape}."
            )
        if s.size > 1 and not (
            np.all(r[1:] >= r[:-1]) and np.all((r[1:] > r[:-1]) | (s[1:] >= s[:-1]))
        ):
            # Sort by (receiver, sender): contiguous segments per receiver, and
            # neighbouring senders close in memory for the gathers.
            order = np.argsort(r * max(n_nodes, 1) + s, kind="stable")
            s, r = s[order], r[order]
            w = w[jnp.asarray(order)] if traced else w[order]
        if not traced:
            # numpy float64 becomes the default float (float32 without x64).
            w = jnp.asarray(w, _default_float() if w.dtype == np.float64 else w.dtype)
        # Concrete even when built under jit: layouts are made from the indices.
        with jax.ensure_compile_time_eval():
            self.senders = jnp.asarray(s, jnp.int32)
            self.receivers = jnp.asarray(r, jnp.int32)
        self.weights = w
        self.n_nodes = n_nodes

    @classmethod
    def from_dense(cls, matrix: Float[ArrayLike, "n n"]) -> "Graph":
        """The graph of a dense weight matrix, `matrix[i, j]` = weight of the edge
        `j -> i` (row = receiver); zero entries are no edge."""
        m = np.asarray(matrix)
        if m.ndim != 2 or m.shape[0] != m.shape[1]:
            raise ValueError(f"`matrix` must be square, got shape {m.shape}.")
        r, s = np.nonzero(m)
        return cls(s, r, m[r, s].astype(np.float64), n_nodes=m.shape[0])

    @property
    def n_edges(self) -> int:
        """The number of directed edges."""
        return int(self.senders.shape[0])

    def in_degree(self, weighted: bool = False) -> Array:
        """Incoming edges per node, `[n_nodes]` (sum of incoming weights if
        `weighted`)."""
        data = self.weights if weighted else jnp.ones_like(self.receivers)
        return jax.ops.segment_sum(
            data, self.receivers, num_segments=self.n_nodes, indices_are_sorted=True
        )

    def out_degree(self, weighted: bool = False) -> Array:
        """Outgoing edges per node, `[n_nodes]` (sum of outgoing weights if
        `weighted`)."""
        data = self.weights if weighted else jnp.ones_like(self.senders)
        return jax.ops.segment_sum(data, self.senders, num_segments=self.n_nodes)

    def normalized(self, by: Literal["receiver", "sender"] = "receiver") -> "Graph":
        """The same edges with weights divided by each receiver's total incoming
        weight (`by="receiver"`, rows of the weight matrix sum to 1) or each
        sender's total outgoing weight (`by="sender"`). Nodes whose total is zero
        keep their (zero) weights."""
        if by == "receiver":
            idx, total = self.receivers, self.in_degree(weighted=True)
        elif by == "sender":
            idx, total = self.senders, self.out_degree(weighted=True)
        else:
            raise ValueError(f"`by` must be 'receiver' or 'sender', got {by!r}.")
        total = total[idx]
        weights = self.weights / jnp.where(total == 0, 1, total)
        return eqx.tree_at(lambda g: g.weights, self, weights)

    def to_dense(self) -> Float[Array, "n n"]:
        """The dense weight matrix `W[i, j]` = total weight of the edges `j -> i`
        (row = receiver), for small graphs and tests."""
        w = jnp.zeros((self.n_nodes, self.n_nodes), self.weights.dtype)
        return w.at[self.receivers, self.senders].add(self.weights)


def symmetric_edges(i: np.ndarray, j: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Both directions of the unordered pairs `(i[k], j[k])` as `(senders,
    receivers)`, sorted by (receiver, sender) with one int64 sort."""
    key = np.concatenate([j * np.int64(n) + i, i * np.int64(n) + j])
    key.sort()
    return key % n, key // n


def receiver_normalized(receivers: np.ndarray, raw, n: int) -> np.ndarray:
    """Edge weights `raw` divided by their receiver's total (NumPy, host side)."""
    total = np.bincount(receivers, weights=raw, minlength=n)
    return raw / np.where(total == 0, 1.0, total)[receivers]
