"""Kuramoto phase oscillators, all-to-all (mean field) or on a sparse graph."""

import math
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ._system import AbstractSystem
from .graphs import ColumnLayout, Graph

# pi split so that k * _PI_A and k * _PI_B are exact (Cody–Waite): 26-bit parts for
# float64 (|k| < 2**27), 12-bit parts for float32 (|k| < 2**12, beyond which the
# float32 phase difference itself has lost more than this).
_PI_SPLIT = {
    np.dtype(np.float64): (3.1415926218032837, 3.1786509424591713e-08, 1.2246467991473532e-16),
    np.dtype(np.float32): (3.140625, 0.0009675025939941406, 1.5099579909783765e-07),
}
# Taylor terms of sin on [-pi/2, pi/2]: truncation below 2e-18 (float64, up to
# x**21) and 7e-10 (float32, up to x**13).
_SIN_ORDER = {np.dtype(np.float64): 21, np.dtype(np.float32): 13}


def _sin(x: Array, cos: bool = False) -> Array:
    r"""$\sin x$ (or $\cos x = \sin(x + \pi/2)$) by Cody–Waite reduction to
    $[-\pi/2, \pi/2]$ and a Taylor polynomial: within a few ulp of `jnp.sin`, and
    about 4x faster on CPU, where XLA's `sin` is not vectorised and dominated the
    Kuramoto tendency."""
    dtype = np.dtype(x.dtype)
    if dtype not in _PI_SPLIT:
        return jnp.cos(x) if cos else jnp.sin(x)
    a, b, c = (jnp.asarray(v, dtype) for v in _PI_SPLIT[dtype])
    shift = 0.5 if cos else 0.0
    k = jnp.round(x * jnp.asarray(1 / math.pi, dtype) + shift)
    # r = x + shift*pi - k*pi with m = k - shift; m * a stays exact (one more bit).
    m = k - shift
    r = ((x - m * a) - m * b) - m * c
    r2 = r * r
    p = jnp.zeros_like(r)
    for n in range(_SIN_ORDER[dtype], 1, -2):
        p = (p + (-1) ** ((n - 1) // 2) / math.factorial(n)) * r2
    p = r + r * p
    odd = (k - 2 * jnp.floor(0.5 * k)) != 0
    return jnp.where(odd, -p, p)


# From this many edges the column layout's faster tendency outweighs its compile time.
_LAYOUT_MIN_EDGES = 2**16


def _check_omega(omega) -> Array:
    ndim = getattr(omega, "ndim", None)
    dtype = getattr(omega, "dtype", None)
    if ndim is None or dtype is None:
        omega = np.asarray(omega)
        ndim, dtype = omega.ndim, omega.dtype
    if ndim != 1 or omega.shape[0] < 1 or not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(
            "`omega` must be a non-empty 1D array of floating natural frequencies, got "
            f"shape {tuple(omega.shape)} and dtype {dtype}."
        )
    if isinstance(omega, jax.Array):
        return omega
    return jnp.asarray(omega)


def _check_coupling(coupling):
    if callable(coupling) and not isinstance(coupling, (jax.Array, np.ndarray)):
        return coupling
    if isinstance(coupling, bool) or not isinstance(
        coupling, (int, float, np.number, np.ndarray, jax.Array)
    ):
        raise ValueError(
            f"`coupling` must be a number or a callable t -> K(t), got {coupling!r}."
        )
    if np.ndim(coupling) != 0 or not jnp.issubdtype(jnp.result_type(coupling), jnp.number):
        raise ValueError(f"`coupling` must be a real scalar, got {coupling!r}.")
    if jnp.issubdtype(jnp.result_type(coupling), jnp.complexfloating):
        raise ValueError(f"`coupling` must be real, got {coupling!r}.")
    if not isinstance(coupling, jax.core.Tracer) and not math.isfinite(float(coupling)):
        raise ValueError(f"`coupling` must be finite, got {coupling!r}.")
    return coupling


def coupling_value(coupling, t: ArrayLike) -> Array:
    """$K(t)$ of a coupling given as a scalar or a callable `t -> K(t)`."""
    return coupling(t) if callable(coupling) else jnp.asarray(coupling)


def _check_noise(noise, n: int) -> tuple[Any, bool]:
    if isinstance(noise, jax.core.Tracer):
        if noise.ndim not in (0, 1) or (noise.ndim == 1 and noise.shape[0] != n):
            raise ValueError(f"`noise` must be a scalar or of shape ({n},), got {noise.shape}.")
        return noise, True
    arr = np.asarray(noise)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"`noise` must be a number sigma >= 0, got {noise!r}.")
    if arr.ndim not in (0, 1) or (arr.ndim == 1 and arr.shape[0] != n):
        raise ValueError(f"`noise` must be a scalar or of shape ({n},), got {arr.shape}.")
    if not (np.all(np.isfinite(arr)) and np.all(arr >= 0)):
        raise ValueError(f"`noise` must be >= 0 and finite, got {noise!r}.")
    return noise, bool(np.any(arr > 0))


class Kuramoto(AbstractSystem):
    r"""Kuramoto phase oscillators, all-to-all or on a sparse weighted graph.

    $d\theta_i = \Big(\omega_i + K(t) \sum_j w_{ij} \sin(\theta_j - \theta_i)\Big)dt
    + \sigma\, dW_i$

    With `graph=None` the coupling is all-to-all, $w_{ij} = 1/N$, evaluated in O(N)
    through the complex mean field $r e^{i\psi} = \frac1N \sum_j e^{i\theta_j}$:
    $\sum_j w_{ij} \sin(\theta_j - \theta_i) = r \sin(\psi - \theta_i)$. On a graph,
    $w_{ij}$ is the weight of the edge $j \to i$ and the sum runs over the incoming
    edges in O(E), through a `solvers.graphs.ColumnLayout` of the graph built at
    construction (vectorised loops over degree buckets instead of a scatter).

    For Lorentzian frequencies of width $\Delta$ the all-to-all system synchronises
    above $K_c = 2\Delta$, and on the Ott–Antonsen manifold the order parameter
    obeys $\dot r = -\Delta r + \frac K2 r(1 - r^2)$ exactly as $N \to \infty$ (see
    `solvers.ott_antonsen_order_parameter`).

    **Arguments:**

    - `omega`: `Float[Array, "N"]`, the natural frequencies $\omega_i$, e.g.
      `solvers.lorentzian_frequencies(key, N)`.
    - `coupling`: $K$, a real scalar, or a callable `t -> K(t)` for time-dependent
      coupling. Negative values are repulsive.
    - `graph`: `None` (all-to-all, $w_{ij} = 1/N$) or a `solvers.graphs.Graph` with
      `n_nodes == N`; its weights are used as given (the generators normalise the
      incoming weights of each node to sum to 1, so $K$ is on the same scale). The
      graph is laid out once, here: to change it, build a new `Kuramoto` (editing
      `graph` with `eqx.tree_at` would not reach the layout).
    - `layout`: lay the graph out for vectorised neighbour sums (`True`), or keep
      a segment sum over edges (`False`). Default `None`: the layout from
      2**16 edges up, where its run time gain (about 3x on CPU) outweighs its
      longer compilation.
    - `noise`: $\sigma \ge 0$, a scalar or `Float[Array, "N"]`, additive phase noise;
      default 0. With $\sigma > 0$, `solvers.solve` needs a `key` and integrates the
      SDE (Heun by default).

    **State:** `theta: Float[Array, "N"]`, unwrapped phases.

    **Reference:** Y. Kuramoto, "Chemical Oscillations, Waves, and Turbulence"
    (1984); E. Ott, T. M. Antonsen, "Low dimensional behavior of large systems of
    globally coupled oscillators", Chaos 18, 037113 (2008).
    """

    omega: Float[Array, " N"]
    coupling: Float[ArrayLike, ""] | Callable[[ArrayLike], ArrayLike]
    graph: Graph | None
    layout: ColumnLayout | None
    noise: Float[ArrayLike, ""] | Float[Array, " N"]
    noisy: bool = eqx.field(static=True)

    def __init__(
        self,
        omega: Float[ArrayLike, " N"],
        coupling: float | Callable[[ArrayLike], ArrayLike],
        *,
        graph: Graph | None = None,
        noise: float | Float[ArrayLike, " N"] = 0.0,
        layout: bool | None = None,
    ):
        self.omega = _check_omega(omega)
        n = self.omega.shape[0]
        self.coupling = _check_coupling(coupling)
        if graph is not None:
            if not isinstance(graph, Graph):
                raise ValueError(
                    f"`graph` must be None or a solvers.graphs.Graph, got {type(graph).__name__}."
                )
            if graph.n_nodes != n:
                raise ValueError(
                    f"`graph` has n_nodes={graph.n_nodes} but `omega` has {n} oscillators."
                )
        self.graph = graph
        if layout not in (None, True, False):
            raise ValueError(f"`layout` must be None, True or False, got {layout!r}.")
        if graph is None or layout is False:
            self.layout = None
        elif isinstance(graph.senders, jax.core.Tracer):
            # A graph that arrives traced (e.g. as a jit argument): no host-side layout.
            if layout:
                raise ValueError("`layout=True` needs a graph with concrete indices.")
            self.layout = None
        else:
            use = layout if layout is not None else graph.n_edges >= _LAYOUT_MIN_EDGES
            self.layout = ColumnLayout(graph) if use else None
        self.noise, self.noisy = _check_noise(noise, n)

    @property
    def n(self) -> int:
        """The number of oscillators $N$."""
        return self.omega.shape[0]

    @property
    def state_shape(self) -> tuple[int, ...]:
        return (self.n,)

    def coupling_at(self, t: ArrayLike) -> Array:
        """$K(t)$."""
        return coupling_value(self.coupling, t)

    def interaction(self, theta: Float[Array, " N"]) -> Float[Array, " N"]:
        """$\\sum_j w_{ij} \\sin(\\theta_j - \\theta_i)$, the coupling per unit $K$."""
        if self.graph is None:
            # r sin(psi - theta_i) = Im(z e^{-i theta_i}), z = mean(e^{i theta}).
            sin, cos = _sin(theta), _sin(theta, cos=True)
            return jnp.mean(sin) * cos - jnp.mean(cos) * sin
        if self.layout is not None:
            return self.layout.neighbour_sum(lambda x_s, x_r: _sin(x_s - x_r), theta)
        g = self.graph
        # Indices were validated when the graph was built: skip the bounds handling.
        theta_s = theta.at[g.senders].get(mode="promise_in_bounds", wrap_negative_indices=False)
        theta_r = theta.at[g.receivers].get(
            mode="promise_in_bounds", indices_are_sorted=True, wrap_negative_indices=False
        )
        weights = g.weights if g.weights.dtype == theta.dtype else g.weights.astype(theta.dtype)
        return jax.ops.segment_sum(
            weights * _sin(theta_s - theta_r),
            g.receivers,
            num_segments=self.n,
            indices_are_sorted=True,
        )

    def vector_field(self, t: ArrayLike, theta: Float[Array, " N"], args: Any) -> Array:
        K = jnp.asarray(self.coupling_at(t), theta.dtype)
        return self.omega.astype(theta.dtype) + K * self.interaction(theta)

    def diffusion(self, t: ArrayLike, theta: Float[Array, " N"], args: Any) -> Array | None:
        """$\\sigma$ (broadcast to the state), or `None` without noise."""
        if not self.noisy:
            return None
        return jnp.broadcast_to(jnp.asarray(self.noise, theta.dtype), theta.shape)
