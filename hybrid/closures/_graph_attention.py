"""Attention across the renormalized clusters of an oscillator network and their
coarser scales: a closure for the Ott–Antonsen cluster model."""

import math
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from solvers import coupling_value
from solvers.graphs import Graph

from ._stencil import cast_params, check_positive_int, scale_last

# Token features: |z|, |Z|, Re/Im(conj(z) Z) (state-dependent), then omega - mean,
# Delta, in-strength, self-coupling, log relative size, influence-weighted omega -
# mean, log influence (fixed along a trajectory: `ClusterContext.tokens`).
_N_STATIC = 7
_N_FEATURES = 4 + _N_STATIC
# Which static features scale with the coupling K (in-strength, self-coupling).
_K_COLUMNS = np.array([0, 0, 1, 1, 0, 0, 0], np.float64)
# Pair features biasing the attention scores: Re/Im(z_t conj z_u), coupling, kinship.
_N_PAIR = 4
# Complex output coefficients on the basis z, Z, conj(Z) z^2 (then one per head).
_N_BASIS = 3


def _check_parents(parents: Any, m: int) -> tuple[tuple[int, ...], ...]:
    out = []
    size = m
    try:
        levels = tuple(tuple(int(p) for p in level) for level in parents)
    except TypeError:
        raise ValueError(
            f"`parents` must be a sequence of parent-index sequences, got {parents!r}."
        ) from None
    for i, level in enumerate(levels):
        if len(level) != size:
            raise ValueError(
                f"`parents[{i}]` must map the {size} clusters of scale {i}, got {len(level)}."
            )
        if size and (min(level) < 0 or sorted(set(level)) != list(range(max(level) + 1))):
            raise ValueError(
                f"`parents[{i}]` must use every parent index 0..K-1 at least once, got {level}."
            )
        out.append(level)
        size = max(level) + 1
    return tuple(out)


def _levels(m: int, parents: tuple[tuple[int, ...], ...]) -> list[np.ndarray]:
    """The cluster of each fine cluster at every scale, finest first, ending with the
    whole network as one token (added unless the last scale already is)."""
    member = [np.arange(m)]
    for level in parents:
        member.append(np.asarray(level)[member[-1]])
    if member[-1].max() > 0:
        member.append(np.zeros(m, np.int64))
    return member


def _membership(m: int, parents: tuple[tuple[int, ...], ...]) -> tuple[np.ndarray, np.ndarray]:
    """`B [T, M]`: 1 where fine cluster m lies in token t (the tokens of all scales,
    finest first, then the whole network), and the number of clusters of each token's
    scale `[T]`."""
    member = _levels(m, parents)
    blocks, counts = [], []
    for labels in member:
        k = int(labels.max()) + 1
        b = np.zeros((k, m))
        b[labels, np.arange(m)] = 1.0
        blocks.append(b)
        counts.append(np.full(k, k))
    return np.concatenate(blocks), np.concatenate(counts)


class ClusterContext(eqx.Module):
    r"""What `GraphAttentionClosure` needs of one trajectory besides the state, fixed
    along it: computed once per rollout (`ClusterContext.build`) rather than at every
    solver stage. Pass it as `args`.

    **Fields:** `pool` `[T, M]` (token order parameters $z_t = \sum_m Q_{tm} z_m$,
    size-weighted means over the members of each token of every scale); `field`
    `[T, M]` ($Q A$: the token's mean field per unit $K$); `tokens` `[T, 7]` (static
    token features); `coupling` `[T, T]` ($Q A B^\top$, per unit $K$) and `kinship`
    `[T, T]` (pair features); `strength` (the coupling $K$ or a callable $K(t)$).
    """

    pool: Float[Array, "T M"]
    field: Float[Array, "T M"]
    tokens: Float[Array, "T F"]
    coupling: Float[Array, "T T"]
    kinship: Float[Array, "T T"]
    strength: Any

    @classmethod
    def build(cls, physics: Any, sizes: Float[ArrayLike, " M"],
              parents: Sequence[Sequence[int]]) -> "ClusterContext":
        """From the cluster model of a trajectory (`omega`, `width`, `coupling_matrix`,
        `coupling_at` or `coupling`; optionally `influence` and `influence_omega`),
        the cluster `sizes` and the renormalization's `parents`."""
        if not all(hasattr(physics, f) for f in ("omega", "width", "coupling_matrix")):
            raise ValueError(
                "`args` must be the cluster model of the trajectory (e.g. the "
                "solvers.OttAntonsenNetwork the closure corrects, passed as "
                "`solve(..., args=physics)`) or its ClusterContext, got "
                f"{type(physics).__name__}."
            )
        sizes = jax.lax.stop_gradient(jnp.asarray(sizes))
        m = sizes.shape[-1]
        member, counts = _membership(m, _check_parents(parents, m))
        omega = jnp.asarray(physics.omega)
        dtype = jnp.result_type(omega.dtype, sizes.dtype)
        sizes = sizes.astype(dtype)
        if omega.shape != (m,):
            raise ValueError(f"`args.omega` must have shape ({m},), got {omega.shape}.")
        b = jnp.asarray(member, dtype)
        counts = jnp.asarray(counts, dtype)
        a = physics.coupling_matrix
        a = (a.to_dense() if isinstance(a, Graph) else jnp.asarray(a)).astype(dtype)
        width = jnp.asarray(physics.width, dtype)
        total = jnp.sum(sizes)
        influence = jnp.asarray(getattr(physics, "influence", sizes / total), dtype)
        omega_pi = jnp.asarray(getattr(physics, "influence_omega", omega), dtype)
        # Invariant under a common frequency shift (a rotating frame).
        mean = jnp.sum(sizes * omega) / total
        omega, omega_pi = omega - mean, omega_pi - mean

        token_sizes = b @ sizes
        pool = b * sizes[None, :] / token_sizes[:, None]
        field = pool @ a
        coupling = field @ b.T
        token_influence = b @ influence
        safe = jnp.where(token_influence > 0, token_influence, 1.0)
        token_omega_pi = jnp.where(
            token_influence > 0, (b @ (influence * omega_pi)) / safe, pool @ omega
        )
        tokens = jnp.stack(
            [
                pool @ omega, pool @ width, jnp.sum(field, axis=1), jnp.diagonal(coupling),
                jnp.log(token_sizes * counts / total), token_omega_pi,
                jnp.log(jnp.maximum(token_influence * counts, 1e-6)),
            ],
            axis=-1,
        )
        kinship = (b @ b.T > 0).astype(dtype)
        if hasattr(physics, "coupling"):
            strength = physics.coupling
        else:
            strength = getattr(physics, "coupling_at", 1.0)
        return cls(pool, field, tokens, coupling, kinship, strength)

    def coupling_at(self, t: ArrayLike) -> Array:
        return coupling_value(self.strength, t)


def _cmul(a: Array, b: Array) -> Array:
    """Complex product of `(re, im)` pairs on the last axis."""
    ar, ai, br, bi = a[..., 0], a[..., 1], b[..., 0], b[..., 1]
    return jnp.stack([ar * br - ai * bi, ar * bi + ai * br], axis=-1)


def _conj(a: Array) -> Array:
    return a * jnp.asarray([1.0, -1.0], a.dtype)


class _Block(eqx.Module):
    norm1: eqx.nn.LayerNorm
    qkv: eqx.nn.Linear
    out: eqx.nn.Linear
    norm2: eqx.nn.LayerNorm
    mlp1: eqx.nn.Linear
    mlp2: eqx.nn.Linear
    pair: Float[Array, "heads pair"]

    def __init__(self, width: int, heads: int, *, key: PRNGKeyArray):
        k1, k2, k3, k4 = jr.split(key, 4)
        self.norm1 = eqx.nn.LayerNorm(width)
        self.qkv = eqx.nn.Linear(width, 3 * width, key=k1)
        self.out = eqx.nn.Linear(width, width, key=k2)
        self.norm2 = eqx.nn.LayerNorm(width)
        self.mlp1 = eqx.nn.Linear(width, 2 * width, key=k3)
        self.mlp2 = eqx.nn.Linear(2 * width, width, key=k4)
        self.pair = jnp.zeros((heads, _N_PAIR))

    def __call__(self, h, pair, heads, act):
        t, c = h.shape
        d = c // heads
        qkv = jax.vmap(self.qkv)(jax.vmap(self.norm1)(h)).reshape(t, 3, heads, d)
        q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]
        scores = jnp.einsum("thd,uhd->htu", q, k) / math.sqrt(d)
        scores = scores + jnp.einsum("hp,ptu->htu", self.pair, pair)
        weights = jax.nn.softmax(scores, axis=-1)
        h = h + jax.vmap(self.out)(jnp.einsum("htu,uhd->thd", weights, v).reshape(t, c))
        h = h + jax.vmap(lambda x: self.mlp2(act(self.mlp1(x))))(jax.vmap(self.norm2)(h))
        return h, weights


class GraphAttentionClosure(eqx.Module):
    r"""Multiscale attention across renormalized clusters, for the Ott–Antonsen
    cluster model of an oscillator network (`solvers.OttAntonsenNetwork`).

    The tokens are the $M$ clusters of the finest scale, the clusters of the coarser
    renormalized scales (`parents`) and the whole network, $T$ in all (so every token
    can read the global order parameter and the influence-weighted collective
    frequency $\Omega_\pi = \sum_i \pi_i\omega_i$ off one token); token $t$'s order parameter
    is the size-weighted mean of its members', $z_t = \sum_{m \in t} |m| z_m / |t|$
    (the exact coarse-graining), its mean field $Z_t = K (QAz)_t$, and its frequency
    parameters are pooled alike (`ClusterContext`). Each token carries features
    invariant under a global phase rotation $z \to e^{ic}z$ and a common frequency
    shift: $|z_t|$, $|Z_t|$, $\mathrm{Re}, \mathrm{Im}(\bar z_t Z_t)$, $\omega_t -
    \bar\omega$, $\Delta_t$, the in-strength and self-coupling (times $K$), the log
    relative size, and, when the cluster model provides them, the influence-weighted
    frequency $\omega^\pi_t - \bar\omega$ and log influence $\Pi_t$ (else the plain
    frequency and the size share); plus a learned embedding of its scale. `depth`
    pre-norm transformer blocks attend jointly over the tokens of all scales
    (ROMA-style multiscale attention), with scores biased per head by learned
    multiples of pair features: $\mathrm{Re}, \mathrm{Im}(z_t \bar z_u)$, the coupling
    of $u$ into $t$ ($K\,QAB^\top$, across scales too) and kinship (one token contains
    the other).

    The output is equivariant by construction. With real $a_m$ and complex $c_{km}$
    read from each fine token,

    $$\dot z_m \mathrel{+}= i a_m z_m + (1 - |z_m|^2)\Big(c_{1m} z_m + c_{2m} Z_m +
    c_{3m} \bar Z_m z_m^2 + \sum_h c_{3+h,m} \sum_u \alpha^h_{mu} z_u\Big),$$

    the last terms the attention of the last block applied to the tokens' order
    parameters. So the closure commutes with global phase rotations and with
    permutations of the clusters (with their coupling matrix, frequencies and
    parents), and is tangent to the unit circle at $|z_m| = 1$: the unit disk stays
    invariant for the hybrid, as for Ott–Antonsen itself (where $\Delta_m \ge 0$), so
    rollouts cannot blow up.

    **Arguments:**

    - `ndim`: must be 0 (cluster states, no spatial grid); for the closure registry.
    - `key`: a `jax.random` key for the initial weights.
    - `sizes`: `Float[ArrayLike, "M"]`, nodes per cluster (fixed, not trained).
    - `parents`: per coarser scale, the parent index of each cluster of the scale
      below (`Renormalization.parents`); `()` for the fine scale alone.
    - `width`: token channels, default 32.
    - `heads`: attention heads, default 4; must divide `width`.
    - `depth`: transformer blocks, default 2.
    - `init_scale`: factor on the output layer's initial weights (bias zero), default
      `1e-2`: an untrained hybrid is Ott–Antonsen up to ~1%.
    - `activation`: default `jax.nn.gelu`.

    Good values: the defaults (about 18k parameters, $T = 32 + 16 + 8 + 1$ tokens for
    $M = 32$ and 3 scales) cost about 0.1 ms per block per call on a CPU core,
    dominated by the token matmuls ($T \cdot$ `width`$^2$ per block); scale up with
    `width`, `heads`, `depth`.

    **Call:** `closure(t, y, args) -> dy` with `y` `Float[Array, "M 2"]` ($\mathrm{Re}\,
    z, \mathrm{Im}\, z$) and `args` the trajectory's cluster model
    (`solvers.OttAntonsenNetwork`, or anything with `omega`, `width`,
    `coupling_matrix` and `coupling`, optionally `influence` and `influence_omega`
    `[M]`, as `hybrid._task_kuramoto.ClusterModel`), or better its `ClusterContext`
    (`closure.context(physics)`, built once per rollout instead of at every call):
    `solvers.solve(Hybrid(physics, closure), y0, ts, dt=..., args=closure.context(physics))`.

    **References:** Vaswani et al., "Attention is all you need", 2017; the multiscale
    attention of ROMA-style scale-adaptive closures; E. Ott, T. M. Antonsen, Chaos 18,
    037113 (2008).
    """

    embed: eqx.nn.Linear
    scale_embedding: Float[Array, "scales width"]
    blocks: tuple[_Block, ...]
    norm: eqx.nn.LayerNorm
    head: eqx.nn.Linear
    sizes: Float[Array, " M"]
    activation: Callable[[Array], Array]
    parents: tuple[tuple[int, ...], ...] = eqx.field(static=True)
    width: int = eqx.field(static=True)
    heads: int = eqx.field(static=True)

    def __init__(
        self,
        ndim: int = 0,
        *,
        key: PRNGKeyArray,
        sizes: Float[ArrayLike, " M"],
        parents: Sequence[Sequence[int]] = (),
        width: int = 32,
        heads: int = 4,
        depth: int = 2,
        init_scale: float = 1e-2,
        activation: Callable[[Array], Array] = jax.nn.gelu,
    ):
        if isinstance(ndim, bool) or ndim != 0:
            raise ValueError(
                f"`ndim` must be 0 for the cluster closure (states [M, 2]), got {ndim!r}."
            )
        sizes_np = np.asarray(sizes) if not isinstance(sizes, jax.core.Tracer) else None
        if sizes_np is not None and (sizes_np.ndim != 1 or sizes_np.size < 1
                                     or not np.all(sizes_np > 0)):
            raise ValueError(
                f"`sizes` must be a non-empty 1D array of positive cluster sizes, got {sizes!r}."
            )
        self.width = check_positive_int(width, "width")
        self.heads = check_positive_int(heads, "heads")
        depth = check_positive_int(depth, "depth")
        if width % heads:
            raise ValueError(f"`heads` ({heads}) must divide `width` ({width}).")
        m = int(jnp.shape(sizes)[0])
        self.parents = _check_parents(parents, m)
        self.sizes = jnp.asarray(sizes, jax.dtypes.canonicalize_dtype(np.float64))
        self.activation = activation
        k_emb, k_scale, k_blocks, k_head = jr.split(key, 4)
        self.embed = eqx.nn.Linear(_N_FEATURES, width, key=k_emb)
        n_levels = len(_levels(m, self.parents))
        self.scale_embedding = 0.1 * jr.normal(k_scale, (n_levels, width))
        self.blocks = tuple(_Block(width, heads, key=k) for k in jr.split(k_blocks, depth))
        self.norm = eqx.nn.LayerNorm(width)
        self.head = scale_last(
            eqx.nn.Linear(width, 1 + 2 * (_N_BASIS + heads), key=k_head), init_scale
        )

    @property
    def n_clusters(self) -> int:
        return int(self.sizes.shape[-1])

    def context(self, physics: Any) -> ClusterContext:
        """The `ClusterContext` of a trajectory's cluster model for this closure's
        clusters: pass it as `args` to skip rebuilding it at every call."""
        return ClusterContext.build(physics, self.sizes, self.parents)

    def __call__(self, t: ArrayLike, y: Float[Array, "M 2"], args: Any) -> Float[Array, "M 2"]:
        y = jnp.asarray(y)
        m = self.n_clusters
        if y.shape != (m, 2) or not jnp.issubdtype(y.dtype, jnp.floating):
            raise ValueError(
                f"`y` must be one floating cluster state of shape ({m}, 2), got shape "
                f"{y.shape} and dtype {y.dtype} (use jax.vmap for batches)."
            )
        ctx = args if isinstance(args, ClusterContext) else self.context(args)
        if ctx.pool.shape[-1] != m:
            raise ValueError(
                f"`args` is the context of {ctx.pool.shape[-1]} clusters, the closure has {m}."
            )
        dtype = y.dtype
        model = cast_params(self, dtype)
        ctx = cast_params(ctx, dtype)
        act = model.activation
        k = jnp.asarray(ctx.coupling_at(t), dtype)

        z = ctx.pool @ y  # [T, 2], the order parameters of every token
        big = k * (ctx.field @ y)  # [T, 2], their mean fields Z_t = K (Q A z)_t
        rel = _cmul(_conj(z), big)
        static = ctx.tokens * (1.0 + (k - 1.0) * jnp.asarray(_K_COLUMNS, dtype))
        feats = jnp.concatenate(
            [jnp.sqrt(jnp.sum(z * z, axis=-1, keepdims=True)),
             jnp.sqrt(jnp.sum(big * big, axis=-1, keepdims=True)), rel, static],
            axis=-1,
        )
        h = jax.vmap(model.embed)(feats) + model.scale_embedding[self._token_scale()]
        # Pair features [P, T, T]: Re/Im(z_t conj z_u), coupling K Q A B^T, kinship.
        re = z @ z.T
        im = jnp.outer(z[:, 1], z[:, 0]) - jnp.outer(z[:, 0], z[:, 1])
        pair = jnp.stack([re, im, k * ctx.coupling, ctx.kinship])

        weights = None
        for block in model.blocks:
            h, weights = block(h, pair, model.heads, act)
        out = jax.vmap(model.head)(jax.vmap(model.norm)(h[:m]))  # [M, 1 + 2(3 + H)]

        zf, bigf = y, big[:m]
        messages = jnp.einsum("hmu,uc->mhc", weights[:, :m], z)  # [M, H, 2]
        basis = jnp.concatenate(
            [zf[:, None], bigf[:, None], _cmul(_conj(bigf), _cmul(zf, zf))[:, None], messages],
            axis=1,
        )  # [M, 3 + H, 2]
        coeff = jnp.stack([out[:, 1::2], out[:, 2::2]], axis=-1)
        u = jnp.sum(_cmul(coeff, basis), axis=1)
        r2 = jnp.sum(zf * zf, axis=-1, keepdims=True)
        rotation = out[:, :1] * jnp.stack([-zf[:, 1], zf[:, 0]], axis=-1)  # i a z
        return (rotation + (1.0 - r2) * u).astype(dtype)

    def _token_scale(self) -> np.ndarray:
        levels = _levels(self.n_clusters, self.parents)
        return np.concatenate([np.full(int(x.max()) + 1, s) for s, x in enumerate(levels)])
