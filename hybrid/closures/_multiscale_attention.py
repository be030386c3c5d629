"""Scale-adaptive multiscale attention: convolutional features on a pooling pyramid,
joint self-attention over the tokens of all levels, back to the fine grid."""

import math
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ._stencil import (
    _spacing,
    cast_params,
    check_ndim,
    check_positive_int,
    check_state,
    flux_divergence,
    input_features,
    periodic_conv,
    scale_last,
)


def _avg_pool2(h: Array) -> Array:
    """Average over 2 (or 2x2) cells; channels first."""
    c, *grid = h.shape
    if len(grid) == 1:
        return h.reshape(c, grid[0] // 2, 2).mean(axis=2)
    return h.reshape(c, grid[0] // 2, 2, grid[1] // 2, 2).mean(axis=(2, 4))


def _upsample_linear(h: Array, factor: int, axis: int) -> Array:
    """Periodic linear interpolation from cell centres of `factor`-times coarser cells.

    Coarse cell `j` covers fine points `j*factor ... j*factor + factor - 1`, its centre at
    fine index $(j + 1/2) f - 1/2$. The weights repeat with period `factor`, so the map
    commutes with shifts by multiples of `factor`.
    """
    if factor == 1:
        return h
    m = h.shape[axis]
    p = (np.arange(m * factor) + 0.5) / factor - 0.5
    j0 = np.floor(p).astype(np.int64)
    w = jnp.asarray(p - j0, h.dtype)
    shape = [1] * h.ndim
    shape[axis] = m * factor
    w = w.reshape(shape)
    lo = jnp.take(h, j0 % m, axis=axis)
    hi = jnp.take(h, (j0 + 1) % m, axis=axis)
    return (1 - w) * lo + w * hi


def _rope(x: Array, angles: Array) -> Array:
    """Rotate consecutive pairs of the last axis of `x` (T, H, d) by `angles` (T, d/2)."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    cos = jnp.cos(angles)[:, None, :]
    sin = jnp.sin(angles)[:, None, :]
    out = jnp.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)
    return out.reshape(x.shape)


class MultiscaleAttentionClosure(eqx.Module):
    r"""Scale-adaptive multiscale attention closure on a periodic grid.

    Convolutional features $h^0 = \mathrm{CNN}(y, y^2)$ on the fine grid, a pooling
    pyramid $h^{\ell} = \sigma(\mathrm{Conv}_\ell(\mathrm{AvgPool}_2\, h^{\ell-1}))$,
    $\ell < $ `levels`; every position of every level is a token, and one multi-head
    self-attention layer runs over the tokens of all attended levels jointly,

    $$h \leftarrow h + W_o\,\mathrm{softmax}\!\Big(\frac{R_{x}q\,(R_{x'}k)^\top}
    {\sqrt{d}}\Big) v, \qquad q, k, v = W_{qkv}(\mathrm{LN}(h) + e_\ell),$$

    with a learned embedding $e_\ell$ per level and a periodic rotary encoding $R_x$:
    pairs of query/key channels are rotated by $2\pi k\, x/L$ at the token's physical
    position $x$ (the centre of its pooled cell) for integer $k = 1, 2, 4, \dots$, so
    the scores depend on $x - x'$ modulo $L$ only. Each level is then interpolated
    back to the fine grid (periodic linear), the levels are summed, and a $1\times1$
    convolution gives the output, in flux form by default: $c_\theta = -\nabla\cdot F$
    as in `StencilClosure`, so the spatial mean is conserved to round-off.

    Fine tokens can thus draw on any coarse scale anywhere in the domain, weighted by
    content and distance: the scale-adaptive part. The closure commutes with periodic
    shifts by multiples of $2^{\text{levels}-1}$ cells (the pooling grid), exactly up
    to round-off; other shifts move the pooling cells and hold only approximately. An
    additive absolute encoding would break this, hence the rotary one.

    **Arguments:**

    - `ndim`: 1 (state `Float[Array, "n"]`) or 2 (state `Float[Array, "n n"]`); `n`
      must be divisible by $2^{\text{levels}-1}$.
    - `key`: a `jax.random` key for the initial weights.
    - `width`: channels of every level and the attention, default 32.
    - `levels`: pyramid levels including the fine one, default 3.
    - `heads`: attention heads, default 4; `width / heads` must be divisible by
      `2 * ndim` (rotary pairs per axis).
    - `depth`: convolutions of the fine-level encoder (>= 1), default 2.
    - `kernel_size`: odd width of the fine encoder's convolutions, default 5 (the
      coarse levels use 3).
    - `attend_from`: first level whose tokens join the attention, default `None`: 0
      (all tokens) in 1D, 1 in 2D, where the $n^2$ fine tokens would dominate the cost
      (at 32x32 with 3 levels, 1344 tokens against 320). Levels below it bypass the
      attention and reach the output through the sum.
    - `conservative`: flux form, default True.
    - `quadratic`: add $y^2$ as an input channel, default True (see `StencilClosure`).
    - `length`: the period $L$, default `None` (grid units, $\Delta x = 1$); only the
      flux form's $\Delta x$ uses it (the rotary angles use positions in cells).
    - `init_scale`: factor on the output layer's initial weights, default `1e-2`.
    - `activation`: default `jax.nn.gelu`.

    **Call:** `closure(t, y, args) -> dy` with `dy` of the shape and dtype of `y`;
    `t` and `args` are ignored. Batch with `jax.vmap`.

    **References:** the multiscale attention idea of ROMA-style scale-adaptive
    closures; Vaswani et al., "Attention is all you need", 2017; Su et al.,
    "RoFormer: rotary position embedding", 2021; Kochkov et al., "Machine
    learning-accelerated computational fluid dynamics", PNAS 2021.
    """

    encoder: tuple[eqx.nn.Conv, ...]
    level_convs: tuple[eqx.nn.Conv, ...]
    level_embedding: Float[Array, "levels width"]
    norm: eqx.nn.LayerNorm
    qkv: eqx.nn.Linear
    out_proj: eqx.nn.Linear
    head: eqx.nn.Conv
    activation: Callable[[Array], Array]
    ndim: int = eqx.field(static=True)
    width: int = eqx.field(static=True)
    levels: int = eqx.field(static=True)
    heads: int = eqx.field(static=True)
    attend_from: int = eqx.field(static=True)
    conservative: bool = eqx.field(static=True)
    quadratic: bool = eqx.field(static=True)
    length: float | None = eqx.field(static=True)

    def __init__(
        self,
        ndim: int,
        *,
        key: PRNGKeyArray,
        width: int = 32,
        levels: int = 3,
        heads: int = 4,
        depth: int = 2,
        kernel_size: int | None = None,
        attend_from: int | None = None,
        conservative: bool = True,
        quadratic: bool = True,
        length: float | None = None,
        init_scale: float = 1e-2,
        activation: Callable[[Array], Array] = jax.nn.gelu,
    ):
        self.ndim = check_ndim(ndim)
        self.width = check_positive_int(width, "width")
        self.levels = check_positive_int(levels, "levels")
        self.heads = check_positive_int(heads, "heads")
        depth = check_positive_int(depth, "depth")
        if kernel_size is None:
            kernel_size = 5 if self.ndim == 1 else 3
        kernel_size = check_positive_int(kernel_size, "kernel_size")
        if kernel_size % 2 == 0:
            raise ValueError(f"`kernel_size` must be odd (a centred stencil), got {kernel_size}.")
        if width % heads or (width // heads) % (2 * self.ndim):
            raise ValueError(
                f"`width` / `heads` must be an integer divisible by 2 * ndim = {2 * self.ndim} "
                f"(rotary pairs per axis), got width={width}, heads={heads}."
            )
        if attend_from is None:
            attend_from = 0 if self.ndim == 1 else min(1, self.levels - 1)
        if isinstance(attend_from, bool) or not isinstance(attend_from, int) or not (
            0 <= attend_from < self.levels
        ):
            raise ValueError(
                f"`attend_from` must be an int in [0, levels) = [0, {self.levels}), "
                f"got {attend_from!r}."
            )
        if length is not None and not (
                isinstance(length, (int, float)) and not isinstance(length, bool) and length > 0):
            raise ValueError(f"`length` must be a positive number or None, got {length!r}.")
        self.attend_from = attend_from
        self.conservative = bool(conservative)
        self.quadratic = bool(quadratic)
        self.length = None if length is None else float(length)
        self.activation = activation

        k_enc, k_lvl, k_emb, k_qkv, k_out, k_head = jr.split(key, 6)
        c_in = 2 if self.quadratic else 1
        sizes = [c_in] + [width] * depth
        self.encoder = tuple(
            periodic_conv(self.ndim, a, b, kernel_size, key=k)
            for a, b, k in zip(sizes[:-1], sizes[1:], jr.split(k_enc, depth), strict=False)
        )
        self.level_convs = tuple(
            periodic_conv(self.ndim, width, width, 3, key=k)
            for k in jr.split(k_lvl, max(self.levels - 1, 1))[: self.levels - 1]
        )
        self.level_embedding = 0.1 * jr.normal(k_emb, (self.levels, width))
        self.norm = eqx.nn.LayerNorm(width)
        self.qkv = eqx.nn.Linear(width, 3 * width, key=k_qkv)
        self.out_proj = eqx.nn.Linear(width, width, key=k_out)
        c_out = self.ndim if self.conservative else 1
        self.head = scale_last(eqx.nn.Conv(self.ndim, width, c_out, 1, key=k_head), init_scale)

    def _angles(self, level: int, m: int, n: int, dtype) -> Array:
        # Rotary angles (tokens, d/2) of the level's cell centres: per axis, pairs of
        # frequencies 1, 2, 4, ... (integers, so the encoding is L-periodic).
        d = self.width // self.heads
        pairs = d // (2 * self.ndim)
        freqs = 2.0 ** np.arange(pairs)
        x = ((np.arange(m) + 0.5) * 2**level - 0.5) / n  # position / L, in [0, 1)
        ang = 2 * np.pi * x[:, None] * freqs[None, :]  # (m, pairs)
        if self.ndim == 1:
            out = ang
        else:
            ax = np.repeat(ang, m, axis=0)  # first index slow (x_i), row-major tokens
            ay = np.tile(ang, (m, 1))
            out = np.concatenate([ax, ay], axis=1)
        return jnp.asarray(out, dtype)

    def _attention(self, tokens: Array, embedding: Array, angles: Array) -> Array:
        t, c = tokens.shape
        d = c // self.heads
        # The level embedding enters the attention's input, not the residual stream.
        x = jax.vmap(self.norm)(tokens) + embedding
        qkv = jax.vmap(self.qkv)(x).reshape(t, 3, self.heads, d)
        q = _rope(qkv[:, 0], angles)
        k = _rope(qkv[:, 1], angles)
        v = qkv[:, 2]
        scores = jnp.einsum("thd,shd->hts", q, k) / math.sqrt(d)
        weights = jax.nn.softmax(scores, axis=-1)
        out = jnp.einsum("hts,shd->thd", weights, v).reshape(t, c)
        return tokens + jax.vmap(self.out_proj)(out)

    def __call__(self, t: ArrayLike, y: Float[Array, "*n"], args: Any = None) -> Array:
        y = check_state(y, self.ndim)
        n = y.shape[0]
        coarsest = 2 ** (self.levels - 1)
        if n % coarsest:
            raise ValueError(
                f"`y` has {n} points per axis, not divisible by 2**(levels-1) = {coarsest} "
                f"for `levels`={self.levels}."
            )
        model = cast_params(self, y.dtype)
        act = model.activation

        h = input_features(y, model.quadratic)
        for conv in model.encoder:
            h = act(conv(h))
        feats = [h]
        for conv in model.level_convs:
            feats.append(act(conv(_avg_pool2(feats[-1]))))

        attended = range(model.attend_from, model.levels)
        tokens, angles, sizes = [], [], []
        for lvl in attended:
            f = feats[lvl]
            tok = f.reshape(model.width, -1).T
            tokens.append(tok)
            angles.append(model._angles(lvl, f.shape[1], n, y.dtype))
            sizes.append(tok.shape[0])
        tokens = jnp.concatenate(tokens)
        emb = jnp.concatenate(
            [jnp.broadcast_to(model.level_embedding[lvl], (s, model.width))
             for lvl, s in zip(attended, sizes, strict=False)]
        )
        tokens = model._attention(tokens, emb, jnp.concatenate(angles))
        splits = np.cumsum(sizes)[:-1]
        for lvl, tok in zip(attended, jnp.split(tokens, splits), strict=False):
            feats[lvl] = tok.T.reshape(feats[lvl].shape)

        fused = jnp.zeros_like(feats[0])
        for lvl, f in enumerate(feats):
            for axis in range(1, model.ndim + 1):
                f = _upsample_linear(f, 2**lvl, axis)
            fused = fused + f
        out = model.head(act(fused))
        if model.conservative:
            return flux_divergence(out, _spacing(model.length, n))
        return out[0]
