"""Learned conservative fluxes between renormalized clusters: a closure for scalar
fields on a cluster graph (e.g. `solvers.GraphBurgers` on the renormalized graph)."""

from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from ._graph_attention import _Block, _check_parents, _levels, _membership
from ._stencil import cast_params, check_positive_int, scale_last

# Token features: u_t - <u>, |u_t - <u>|, the coarse exchange (C-weighted mean of the
# neighbours' u minus u_t), forcing_t, log relative size, in-strength (cut weight per
# node), the flow's throughput.
_N_FEATURES = 7
# Pair features biasing the attention (as many as `_Block` takes): the value
# difference u_u - u_t and its modulus, the cut weight between the tokens, kinship
# (one contains the other).
# Edge inputs besides the two token embeddings: u_m, u_n, u_n - u_m, the cut weight,
# the signed flow.
_N_EDGE = 5


def _pairs(senders: np.ndarray, receivers: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """The unordered pairs `(a, b)`, `a < b`, linked in either direction."""
    a, b = np.minimum(senders, receivers), np.maximum(senders, receivers)
    keep = a != b
    key = np.unique(a[keep] * m + b[keep])
    return key // m, key % m


class FluxContext(eqx.Module):
    r"""What `GraphFluxClosure` needs of one trajectory besides the state: the cluster
    graph (its linked pairs, cut weights and transport flow), the cluster sizes, the
    pooling onto coarser scales, and the cluster-mean forcing. Build it once per
    rollout with `FluxContext.build` and pass it as `args`.

    **Fields:** `first`, `second` `[P]` (the linked pairs, `first < second`);
    `weight` `[P]` (cut weight $C_{ab}$ per unit mean cluster size); `flow` `[P]`
    (the coarse flow from `first` to `second`); `volume` `[M]` (cluster size over the
    mean size); `pool` `[T, M]` (size-weighted means over the members of every token
    of every scale); `cut` `[T, T]` and `kinship` `[T, T]` (pair features);
    `forcing` `[M]`.
    """

    first: Int[Array, " P"]
    second: Int[Array, " P"]
    weight: Float[Array, " P"]
    flow: Float[Array, " P"]
    volume: Float[Array, " M"]
    pool: Float[Array, "T M"]
    cut: Float[Array, "T T"]
    kinship: Float[Array, "T T"]
    forcing: Float[Array, " M"]

    @classmethod
    def build(
        cls,
        sizes: Float[ArrayLike, " M"],
        senders: Int[ArrayLike, " E"],
        receivers: Int[ArrayLike, " E"],
        weights: Float[ArrayLike, " E"],
        flow: Float[ArrayLike, " E"] | None = None,
        *,
        parents: Sequence[Sequence[int]] = (),
        forcing: Float[ArrayLike, " M"] | None = None,
    ) -> "FluxContext":
        r"""From the cluster graph: `sizes` `[M]` (nodes per cluster), its edges
        `senders`, `receivers` (concrete, each link stored both ways or once) with
        `weights` `[E]` (the symmetric cut weights $C_{mn} = \sum_{i \in m, j \in n}
        w_{ij}$) and optionally the transport `flow` `[E]` on each stored edge (from
        its receiver to its sender, as `solvers.GraphBurgers.flow`), the
        renormalization's `parents`, and the cluster-mean `forcing` `[M]` of the
        trajectory (default zero). `weights`, `flow` and `forcing` may be traced."""
        sizes = jax.lax.stop_gradient(jnp.asarray(sizes))
        m = sizes.shape[-1]
        s, r = np.asarray(senders, np.int64), np.asarray(receivers, np.int64)
        if s.shape != r.shape or s.ndim != 1 or (s.size and (min(s.min(), r.min()) < 0
                                                            or max(s.max(), r.max()) >= m)):
            raise ValueError(
                f"`senders` and `receivers` must be equal-length 1D cluster indices in "
                f"[0, {m}), got shapes {s.shape} and {r.shape}.")
        weights = jnp.asarray(weights)
        if weights.shape != s.shape:
            raise ValueError(f"`weights` must have shape {s.shape} (one per edge), got "
                             f"{weights.shape}.")
        dtype = jnp.result_type(sizes.dtype, weights.dtype)
        sizes = sizes.astype(dtype)
        first, second = _pairs(s, r, m)
        # Symmetric cut weight per pair (mean of both stored directions), dense M x M.
        dense_w = jnp.zeros((m, m), dtype).at[r, s].add(weights.astype(dtype))
        counts = np.zeros((m, m))
        np.add.at(counts, (r, s), 1.0)
        dense_w = dense_w / jnp.asarray(np.maximum(counts, 1.0), dtype)
        dense_w = 0.5 * (dense_w + dense_w.T)
        mean_size = jnp.mean(sizes)
        weight = dense_w[first, second] / mean_size
        if flow is None:
            pair_flow = jnp.zeros(first.shape, dtype)
        else:
            flow = jnp.asarray(flow).astype(dtype)
            if flow.shape != s.shape:
                raise ValueError(f"`flow` must have shape {s.shape}, got {flow.shape}.")
            # flow on edge (r <- s) goes from r to s: antisymmetric part, first -> second
            dense_b = jnp.zeros((m, m), dtype).at[r, s].add(flow)
            dense_b = dense_b / jnp.asarray(np.maximum(counts, 1.0), dtype)
            dense_b = 0.5 * (dense_b - dense_b.T)
            pair_flow = dense_b[first, second] / mean_size
        member, _ = _membership(m, _check_parents(parents, m))
        b = jnp.asarray(member, dtype)
        token_sizes = b @ sizes
        pool = b * sizes[None, :] / token_sizes[:, None]
        cut = b @ (dense_w / mean_size) @ b.T / (b @ jnp.ones(m, dtype))[:, None]
        kinship = (b @ b.T > 0).astype(dtype)
        force = (jnp.zeros(m, dtype) if forcing is None
                 else jnp.asarray(forcing).astype(dtype))
        if force.shape != (m,):
            raise ValueError(f"`forcing` must have shape ({m},), got {force.shape}.")
        return cls(jnp.asarray(first, jnp.int32), jnp.asarray(second, jnp.int32), weight,
                   pair_flow, sizes / mean_size, pool, cut, kinship, force)


class GraphFluxClosure(eqx.Module):
    r"""Learned conservative fluxes between the renormalized clusters of a graph, for
    a scalar field averaged over the clusters (e.g. `solvers.GraphBurgers` on the
    renormalized cluster graph: "the same dynamics on the coarse graph").

    The state is the size-weighted mean $\bar u_m$ of each of $M$ clusters; their
    conserved total is $\sum_m |m| \bar u_m$. The closure adds

    $$\frac{|m|}{\bar s}\, \dot{\bar u}_m \mathrel{+}= \sum_{n \sim m}
    \frac{c_{mn}}{\bar c}\, \phi_{mn}, \qquad \phi_{mn} = A_{mn} (\bar u_n - \bar u_m)
    + B_{mn} \tfrac12 (\bar u_n^2 - \bar u_m^2) + C_{mn}$$

    over the linked pairs of the cluster graph: $c_{mn} = C_{mn} / \bar s$ is the cut
    weight per unit mean size $\bar s$ and $\bar c$ the mean over the clusters of
    their total cut weight per unit volume, so that $\phi$ is the rate at which a
    typical cluster's value changes through a link. The coefficients are read from
    an MLP $g$ of the two clusters' embeddings and the edge's inputs ($\bar u_m$,
    $\bar u_n$, their difference, $c_{mn}/\bar c$, the signed coarse flow):
    $(A, B)_{mn} = g_{1,2}(m \to n) + g_{1,2}(n \to m)$, symmetric, on the
    antisymmetric differences (a learned conductance and a learned nonlinear
    transport of each link), and $C_{mn} = g_3(m \to n) - g_3(n \to m)$. So $\phi$ is
    antisymmetric by construction: the total $\sum_m |m| \bar u_m$ is conserved
    exactly, whatever the network learns, and clusters that share no edge exchange
    nothing. The embeddings come from `depth` pre-norm transformer blocks attending
    jointly over the tokens of every renormalized scale (the $M$ clusters, their
    coarser groupings `parents`, the whole graph), as `GraphAttentionClosure` does
    for oscillator clusters, with scores biased by learned multiples of pair
    features (value difference and its modulus, cut weight between the tokens,
    kinship). Token features: the token's mean minus the global mean (and its
    modulus), the cut-weighted difference to its neighbours (the coarse diffusion
    direction), the forcing, the log relative size, the cut weight per unit volume
    and the flow's throughput.

    Symmetries: permutation of the clusters (with their context), and conservation.
    It is not odd in $u$ (Burgers is not).

    **Arguments:**

    - `ndim`: must be 0 (cluster states, no spatial grid); for the closure registry.
    - `key`: a `jax.random` key for the initial weights.
    - `n_clusters`: $M$.
    - `parents`: per coarser scale, the parent index of each cluster of the scale
      below (`Renormalization.parents`); `()` for the fine scale alone.
    - `width`: channels, default 32. `heads` (default 4) must divide it.
    - `depth`: transformer blocks, default 2.
    - `init_scale`: factor on the output layer's initial weights (bias zero), default
      `1e-2`: an untrained hybrid is the coarse physics up to ~1%.
    - `activation`: default `jax.nn.gelu`.

    **Call:** `closure(t, y, args) -> dy` with `y` `Float[Array, "M"]` and `args` the
    trajectory's `FluxContext`.

    **References:** Vaswani et al., "Attention is all you need", 2017; learned
    conservative fluxes as in finite-volume closures (e.g. Kochkov et al., PNAS 118,
    2021; data-driven discretisations, Bar-Sinai et al., PNAS 116, 2019).
    """

    embed: eqx.nn.Linear
    scale_embedding: Float[Array, "scales width"]
    blocks: tuple[_Block, ...]
    norm: eqx.nn.LayerNorm
    edge1: eqx.nn.Linear
    edge2: eqx.nn.Linear
    head: eqx.nn.Linear
    activation: Callable[[Array], Array]
    n_clusters: int = eqx.field(static=True)
    parents: tuple[tuple[int, ...], ...] = eqx.field(static=True)
    heads: int = eqx.field(static=True)

    def __init__(
        self,
        ndim: int = 0,
        *,
        key: PRNGKeyArray,
        n_clusters: int,
        parents: Sequence[Sequence[int]] = (),
        width: int = 32,
        heads: int = 4,
        depth: int = 2,
        init_scale: float = 1e-2,
        activation: Callable[[Array], Array] = jax.nn.gelu,
    ):
        if isinstance(ndim, bool) or ndim != 0:
            raise ValueError(
                f"`ndim` must be 0 for the cluster flux closure (states [M]), got {ndim!r}.")
        self.n_clusters = check_positive_int(n_clusters, "n_clusters")
        width = check_positive_int(width, "width")
        self.heads = check_positive_int(heads, "heads")
        depth = check_positive_int(depth, "depth")
        if width % heads:
            raise ValueError(f"`heads` ({heads}) must divide `width` ({width}).")
        self.parents = _check_parents(parents, self.n_clusters)
        self.activation = activation
        k_emb, k_scale, k_blocks, k_e1, k_e2, k_head = jr.split(key, 6)
        self.embed = eqx.nn.Linear(_N_FEATURES, width, key=k_emb)
        n_levels = len(_levels(self.n_clusters, self.parents))
        self.scale_embedding = 0.1 * jr.normal(k_scale, (n_levels, width))
        self.blocks = tuple(_Block(width, heads, key=k) for k in jr.split(k_blocks, depth))
        self.norm = eqx.nn.LayerNorm(width)
        self.edge1 = eqx.nn.Linear(2 * width + _N_EDGE, width, key=k_e1)
        self.edge2 = eqx.nn.Linear(width, width, key=k_e2)
        self.head = scale_last(eqx.nn.Linear(width, 3, key=k_head), init_scale)

    def __call__(self, t: ArrayLike, y: Float[Array, " M"],
                 args: FluxContext) -> Float[Array, " M"]:
        y = jnp.asarray(y)
        m = self.n_clusters
        if y.shape != (m,) or not jnp.issubdtype(y.dtype, jnp.floating):
            raise ValueError(
                f"`y` must be one floating cluster state of shape ({m},), got shape "
                f"{y.shape} and dtype {y.dtype} (use jax.vmap for batches).")
        if not isinstance(args, FluxContext):
            raise ValueError(
                "`args` must be the trajectory's FluxContext (FluxContext.build(...)), got "
                f"{type(args).__name__}.")
        if args.volume.shape != (m,):
            raise ValueError(
                f"`args` is the context of {args.volume.shape[0]} clusters, the closure has {m}.")
        dtype = y.dtype
        model = cast_params(self, dtype)
        ctx = cast_params(args, dtype)
        act = model.activation

        u = ctx.pool @ y  # [T] the mean of every token
        mean = u[-1]  # the whole graph (the last token)
        dev = u - mean
        # Cut weights and flows relative to the mean cut weight per unit volume of a
        # cluster (c-bar): features of order one, and phi the rate at which a typical
        # cluster's value changes through a link, whatever the graph's absolute weights.
        w_sym = jnp.zeros((m, m), dtype).at[ctx.first, ctx.second].set(ctx.weight)
        w_sym = w_sym + w_sym.T
        unit = jnp.maximum(jnp.mean(jnp.sum(w_sym, axis=1) / ctx.volume),
                           jnp.finfo(dtype).tiny)
        weight, flow, w_sym = ctx.weight / unit, ctx.flow / unit, w_sym / unit
        strength = jnp.sum(w_sym, axis=1)
        # The coarse exchange: cut-weighted neighbours' values minus one's own.
        exchange = (w_sym @ y - strength * y) / ctx.volume
        b_abs = jnp.zeros((m, m), dtype).at[ctx.first, ctx.second].set(jnp.abs(flow))
        throughput = jnp.sum(b_abs + b_abs.T, axis=1) / ctx.volume
        per_cluster = jnp.stack([exchange, ctx.forcing, jnp.log(ctx.volume),
                                 strength / ctx.volume, throughput], axis=-1)
        feats = jnp.concatenate([dev[:, None], jnp.abs(dev)[:, None], ctx.pool @ per_cluster],
                                axis=-1)
        h = jax.vmap(model.embed)(feats) + model.scale_embedding[self._token_scale()]
        diff = u[None, :] - u[:, None]
        pair = jnp.stack([diff, jnp.abs(diff), ctx.cut / unit, ctx.kinship])
        for block in model.blocks:
            h, _ = block(h, pair, model.heads, act)
        h = jax.vmap(model.norm)(h[:m])

        a, b = ctx.first, ctx.second

        def g(h_from, h_to, u_from, u_to, flow):
            e = jnp.concatenate(
                [h_from, h_to, jnp.stack([u_from, u_to, u_to - u_from, weight, flow], -1)],
                axis=-1)
            z = act(jax.vmap(model.edge1)(e))
            z = act(jax.vmap(model.edge2)(z))
            return jax.vmap(model.head)(z)  # [P, 3]

        # phi = A (u_b - u_a) + B (u_b^2 - u_a^2) / 2 + C: a learned conductance A and
        # nonlinear transport B (symmetric in the pair) on antisymmetric differences,
        # plus an antisymmetric rest C. The flux from b into a, -phi from a into b.
        ab, ba = g(h[a], h[b], y[a], y[b], flow), g(h[b], h[a], y[b], y[a], -flow)
        sym, anti = ab + ba, ab - ba
        phi = (sym[:, 0] * (y[b] - y[a]) + 0.5 * sym[:, 1] * (y[b] ** 2 - y[a] ** 2)
               + anti[:, 2])
        flux = weight * phi  # from b into a
        dy = jnp.zeros(m, dtype).at[a].add(flux).at[b].add(-flux)
        return (dy / ctx.volume).astype(dtype)

    def _token_scale(self) -> np.ndarray:
        levels = _levels(self.n_clusters, self.parents)
        return np.concatenate([np.full(int(x.max()) + 1, s) for s, x in enumerate(levels)])
