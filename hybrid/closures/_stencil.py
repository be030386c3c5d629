"""Learned local stencils: a periodic convolutional closure, optionally in flux form."""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

# ----------------------------------------------------------------------------------------
# Helpers shared by the closures of this package.


def check_ndim(ndim: Any) -> int:
    if isinstance(ndim, bool) or ndim not in (1, 2):
        raise ValueError(f"`ndim` must be 1 or 2 (a periodic line or square), got {ndim!r}.")
    return int(ndim)


def check_positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}, got {value!r}.")
    return value


def check_state(y: ArrayLike, ndim: int) -> Array:
    """The state as an array of `ndim` floating dims, else a trace-time `ValueError`."""
    y = jnp.asarray(y)
    if y.ndim != ndim:
        shape = '"n"' if ndim == 1 else '"n n"'
        raise ValueError(
            f"`y` must be one unbatched state of shape {shape} for this {ndim}D closure, got "
            f"shape {y.shape} (use jax.vmap for batches)."
        )
    if not jnp.issubdtype(y.dtype, jnp.floating):
        raise ValueError(f"`y` must be a floating-point array, got dtype {y.dtype}.")
    if ndim == 2 and y.shape[0] != y.shape[1]:
        raise ValueError(f"`y` must be square (n, n) in 2D, got shape {y.shape}.")
    return y


def cast_params(tree: Any, dtype: Any) -> Any:
    """`tree` with every floating array cast to `dtype` (a closure follows its input)."""

    def cast(x):
        if eqx.is_inexact_array(x) and x.dtype != dtype:
            return x.astype(dtype)
        return x

    return jax.tree.map(cast, tree)


def input_features(y: Array, quadratic: bool) -> Array:
    """Channels-first features `(c, *y.shape)`: $y$, and $y^2$ when `quadratic`."""
    if quadratic:
        return jnp.stack([y, y * y])
    return y[None]


def flux_divergence(flux: Array, dx: float) -> Array:
    r"""$-\nabla\cdot F$ on the periodic grid, with `flux[d]` the face value at $+1/2$
    along axis `d`: $-\sum_d (F^d_{j+1/2} - F^d_{j-1/2})/\Delta x$.

    A telescoping sum, so the spatial sum of the result is zero to round-off.
    """
    out = jnp.zeros(flux.shape[1:], flux.dtype)
    for d in range(flux.shape[0]):
        out = out - (flux[d] - jnp.roll(flux[d], 1, axis=d))
    return out / dx


def _spacing(length: float | None, n: int) -> float:
    """Grid spacing $L / n$, or 1 (grid units) without a length."""
    return 1.0 if length is None else length / n


def periodic_conv(
    ndim: int, c_in: int, c_out: int, kernel_size: int, *, key: PRNGKeyArray
) -> eqx.nn.Conv:
    """A centred convolution with circular padding: translation-equivariant."""
    return eqx.nn.Conv(
        ndim, c_in, c_out, kernel_size, padding=kernel_size // 2, padding_mode="CIRCULAR", key=key
    )


def scale_last(layer: eqx.Module, init_scale: float) -> eqx.Module:
    """Shrink the output layer so an untrained closure is nearly zero."""
    layer = eqx.tree_at(lambda m: m.weight, layer, layer.weight * init_scale)
    if getattr(layer, "bias", None) is not None:
        layer = eqx.tree_at(lambda m: m.bias, layer, jnp.zeros_like(layer.bias))
    return layer


# ----------------------------------------------------------------------------------------


class StencilClosure(eqx.Module):
    r"""A learned local stencil: a stack of periodic convolutions, translation-equivariant.

    Non-conservative: $c_\theta(y)_j = \mathrm{CNN}_\theta(y)_j$. Conservative (default),
    the network gives a flux on the cell faces and the closure is its divergence,

    $$c_\theta(y)_j = -\frac{F_{j+1/2} - F_{j-1/2}}{\Delta x}, \qquad
    F = \mathrm{CNN}_\theta(y, y^2),$$

    in 1D, and $c_\theta(y) = -\nabla\cdot(F^x, F^y)$ with a two-component face flux in
    2D, so $\sum_j c_\theta(y)_j = 0$ exactly: the spatial mean is conserved to round-off.

    The inputs are $y$ and, with `quadratic=True`, $y^2$: the subgrid flux of Burgers and
    of 2D Navier–Stokes is quadratic in the resolved field (Leonard / gradient model,
    $\tau \approx \tfrac{\Delta^2}{12} u_x^2$), which the first linear layer can then
    represent exactly instead of through the curvature of the activation. Derivatives
    are not given as features: the first convolution is itself a learned difference
    stencil. There is no position input, so the closure commutes with periodic shifts.

    **Arguments:**

    - `ndim`: 1 (state `Float[Array, "n"]`) or 2 (state `Float[Array, "n n"]`).
    - `key`: a `jax.random` key for the initial weights.
    - `width`: hidden channels, default 32.
    - `depth`: convolutions in the stack (>= 1), default 3.
    - `kernel_size`: odd stencil width of each convolution, default 5 (the receptive
      field is `depth * (kernel_size - 1) + 1` points).
    - `conservative`: flux form (above), default True.
    - `quadratic`: add $y^2$ as an input channel, default True.
    - `length`: the period $L$ of the domain, for a flux divergence in physical units
      ($\Delta x = L/n$; only the flux form uses it). Default `None`: grid units,
      $\Delta x = 1$ (the network's weights absorb the scale; pass your domain's
      length for the closure to read as a physical flux).
    - `init_scale`: factor on the output layer's initial weights (bias zero), default
      `1e-2`: an untrained hybrid is nearly the plain coarse solver.
    - `activation`: default `jax.nn.gelu` (smooth, so the closure is too).

    Good values: the defaults have about 6k parameters in 1D and 31k in 2D; one call
    at $n=32$ costs tens of microseconds after `jit`.

    **Call:** `closure(t, y, args) -> dy` with `dy` of the shape and dtype of `y`;
    `t` and `args` are ignored. Batch with `jax.vmap`.

    **References:** Bar-Sinai, Hoyer, Hickey & Brenner, "Learning data-driven
    discretizations for partial differential equations", PNAS 2019 (learned stencils,
    flux form); Kochkov et al., "Machine learning-accelerated computational fluid
    dynamics", PNAS 2021.
    """

    layers: tuple[eqx.nn.Conv, ...]
    activation: Callable[[Array], Array]
    ndim: int = eqx.field(static=True)
    conservative: bool = eqx.field(static=True)
    quadratic: bool = eqx.field(static=True)
    length: float | None = eqx.field(static=True)

    def __init__(
        self,
        ndim: int,
        *,
        key: PRNGKeyArray,
        width: int = 32,
        depth: int = 3,
        kernel_size: int | None = None,
        conservative: bool = True,
        quadratic: bool = True,
        length: float | None = None,
        init_scale: float = 1e-2,
        activation: Callable[[Array], Array] = jax.nn.gelu,
    ):
        self.ndim = check_ndim(ndim)
        width = check_positive_int(width, "width")
        depth = check_positive_int(depth, "depth")
        if kernel_size is None:
            kernel_size = 5 if self.ndim == 1 else 3
        kernel_size = check_positive_int(kernel_size, "kernel_size")
        if kernel_size % 2 == 0:
            raise ValueError(f"`kernel_size` must be odd (a centred stencil), got {kernel_size}.")
        if length is not None and not (
                isinstance(length, (int, float)) and not isinstance(length, bool) and length > 0):
            raise ValueError(f"`length` must be a positive number or None, got {length!r}.")
        self.conservative = bool(conservative)
        self.quadratic = bool(quadratic)
        self.length = None if length is None else float(length)
        self.activation = activation

        c_in = 2 if self.quadratic else 1
        c_out = self.ndim if self.conservative else 1
        sizes = [c_in] + [width] * (depth - 1) + [c_out]
        keys = jr.split(key, depth)
        layers = [
            periodic_conv(self.ndim, a, b, kernel_size, key=k)
            for a, b, k in zip(sizes[:-1], sizes[1:], keys, strict=False)
        ]
        layers[-1] = scale_last(layers[-1], init_scale)
        self.layers = tuple(layers)

    def __call__(self, t: ArrayLike, y: Float[Array, "*n"], args: Any = None) -> Array:
        y = check_state(y, self.ndim)
        layers = cast_params(self.layers, y.dtype)
        h = input_features(y, self.quadratic)
        for layer in layers[:-1]:
            h = self.activation(layer(h))
        h = layers[-1](h)
        if self.conservative:
            return flux_divergence(h, _spacing(self.length, y.shape[0]))
        return h[0]
