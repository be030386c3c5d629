"""Coupled populations of phase oscillators on the Ott–Antonsen manifold."""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Complex, Float

from ._kuramoto import _check_coupling, coupling_value
from ._system import AbstractSystem
from .graphs import Graph


def _vector(x, name: str) -> Array:
    ndim, dtype = getattr(x, "ndim", None), getattr(x, "dtype", None)
    if ndim is None or dtype is None:
        x = np.asarray(x)
        ndim, dtype = x.ndim, x.dtype
    if ndim != 1 or x.shape[0] < 1 or not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(
            f"`{name}` must be a non-empty 1D array of floating values (one per "
            f"population), got shape {tuple(x.shape)} and dtype {dtype}."
        )
    if not isinstance(x, jax.core.Tracer) and not np.all(np.isfinite(np.asarray(x))):
        raise ValueError(f"`{name}` must be finite.")
    return x if isinstance(x, jax.Array) else jnp.asarray(x)


def _check_width(width, m: int) -> Array:
    width = _vector(width, "width")
    if width.shape[0] != m:
        raise ValueError(
            f"`width` must have one entry per population, shape ({m},), got {width.shape}."
        )
    if not isinstance(width, jax.core.Tracer) and not np.all(np.asarray(width) >= 0):
        raise ValueError("`width` (Lorentzian half widths) must be >= 0.")
    return width


def _check_matrix(matrix, m: int) -> Array | Graph:
    if isinstance(matrix, Graph):
        if matrix.n_nodes != m:
            raise ValueError(
                f"`coupling_matrix` is a graph on {matrix.n_nodes} nodes, but there are {m} "
                "populations."
            )
        return matrix
    shape, dtype = getattr(matrix, "shape", None), getattr(matrix, "dtype", None)
    if shape is None or dtype is None:
        matrix = np.asarray(matrix)
        shape, dtype = matrix.shape, matrix.dtype
    if tuple(shape) != (m, m) or not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(
            f"`coupling_matrix` must be a floating ({m}, {m}) array or a "
            f"solvers.graphs.Graph on {m} nodes, got shape {tuple(shape)} and dtype {dtype}."
        )
    if not isinstance(matrix, jax.core.Tracer) and not np.all(np.isfinite(np.asarray(matrix))):
        raise ValueError("`coupling_matrix` must be finite.")
    return matrix if isinstance(matrix, jax.Array) else jnp.asarray(matrix)


def to_complex(y: Float[Array, "... M 2"]) -> Complex[Array, "... M"]:
    """`(Re z, Im z)` pairs on the last axis -> complex `z`."""
    return jax.lax.complex(y[..., 0], y[..., 1])


def from_complex(z: Complex[ArrayLike, "... M"], dtype=None) -> Float[Array, "... M 2"]:
    """Complex `z` -> `(Re z, Im z)` pairs on a new last axis (real state)."""
    z = jnp.asarray(z)
    y = jnp.stack([jnp.real(z), jnp.imag(z)], axis=-1)
    return y if dtype is None else y.astype(dtype)


class OttAntonsenNetwork(AbstractSystem):
    r"""$M$ coupled populations of Kuramoto oscillators on the Ott–Antonsen manifold.

    Population $m$ has Lorentzian natural frequencies of centre $\omega_m$ and half
    width $\Delta_m$, and its oscillators feel the others through the coupling matrix
    $A$; its complex order parameter $z_m = \langle e^{i\theta} \rangle_m$ obeys

    $$\dot z_m = (i\omega_m - \Delta_m)\, z_m + \frac{K}{2}\big(Z_m - \bar Z_m z_m^2\big),
    \qquad Z_m = \sum_n A_{mn} z_n,$$

    exactly as the populations grow large (Ott & Antonsen 2008), for the Kuramoto
    model $\dot\theta_i = \omega_i + K \sum_j w_{ij} \sin(\theta_j - \theta_i)$ whose
    weights depend on the populations only, $w_{ij} = A_{mn} / |n|$ for $i \in m$,
    $j \in n$. For other graphs (sparse links, finite or non-Lorentzian populations)
    it is the mean-field reduction with $A_{mn} = \frac{1}{|m|}\sum_{i \in m, j \in n}
    w_{ij}$. The closed unit disk is invariant for each $z_m$ when $\Delta_m \ge 0$.

    With $M = 1$ and $A = 1$ this is the classical reduction, solved in closed form by
    `solvers.ott_antonsen_order_parameter`.

    **Arguments:**

    - `omega`: `Float[Array, "M"]`, the centres $\omega_m$ of the frequency laws.
    - `width`: `Float[Array, "M"]`, the half widths $\Delta_m \ge 0$.
    - `coupling`: $K$, a real scalar or a callable `t -> K(t)`.
    - `coupling_matrix`: $A$, `Float[Array, "M M"]` (row $m$ = receiving population),
      or a `solvers.graphs.Graph` on $M$ nodes (edge $n \to m$ of weight $A_{mn}$,
      sparse, evaluated by a segment sum); default `None` is $A_{mn} = 1/M$ (equal
      populations coupled all-to-all).

    **State:** `Float[Array, "M 2"]`, $(\mathrm{Re}\, z_m, \mathrm{Im}\, z_m)$ per
    population (a real array, as `solvers.solve` requires); `to_complex` and
    `from_complex` convert.

    **Reference:** E. Ott, T. M. Antonsen, "Low dimensional behavior of large systems
    of globally coupled oscillators", Chaos 18, 037113 (2008); E. A. Martens et al.,
    "Exact results for the Kuramoto model with a bimodal frequency distribution",
    Phys. Rev. E 79, 026204 (2009) (several populations).
    """

    omega: Float[Array, " M"]
    width: Float[Array, " M"]
    coupling: Float[ArrayLike, ""] | Callable[[ArrayLike], ArrayLike]
    coupling_matrix: Float[Array, "M M"] | Graph

    def __init__(
        self,
        omega: Float[ArrayLike, " M"],
        width: Float[ArrayLike, " M"],
        coupling: float | Callable[[ArrayLike], ArrayLike],
        *,
        coupling_matrix: Float[ArrayLike, "M M"] | Graph | None = None,
    ):
        self.omega = _vector(omega, "omega")
        m = self.omega.shape[0]
        self.width = _check_width(width, m)
        self.coupling = _check_coupling(coupling)
        if coupling_matrix is None:
            coupling_matrix = jnp.full((m, m), 1.0 / m, jnp.result_type(self.omega))
        self.coupling_matrix = _check_matrix(coupling_matrix, m)

    @property
    def n(self) -> int:
        """The number of populations $M$."""
        return self.omega.shape[0]

    @property
    def state_shape(self) -> tuple[int, ...]:
        return (self.n, 2)

    def coupling_at(self, t: ArrayLike) -> Array:
        """$K(t)$."""
        return coupling_value(self.coupling, t)

    def mean_field(self, y: Float[Array, "M 2"]) -> Float[Array, "M 2"]:
        """$Z_m = \\sum_n A_{mn} z_n$, as `(Re, Im)` pairs."""
        a = self.coupling_matrix
        if isinstance(a, Graph):
            w = a.weights.astype(y.dtype)[:, None]
            return jax.ops.segment_sum(
                w * y[a.senders], a.receivers, num_segments=self.n, indices_are_sorted=True
            )
        return a.astype(y.dtype) @ y

    def vector_field(self, t: ArrayLike, y: Float[Array, "M 2"], args: Any) -> Array:
        dtype = y.dtype
        x, v = y[:, 0], y[:, 1]
        big = self.mean_field(y)
        bx, bv = big[:, 0], big[:, 1]
        omega, width = self.omega.astype(dtype), self.width.astype(dtype)
        half_k = 0.5 * jnp.asarray(self.coupling_at(t), dtype)
        # Z - conj(Z) z^2 in real arithmetic, z^2 = (x^2 - v^2) + 2i x v.
        re2, im2 = x * x - v * v, 2.0 * x * v
        dx = -width * x - omega * v + half_k * (bx - bx * re2 - bv * im2)
        dv = omega * x - width * v + half_k * (bv - bx * im2 + bv * re2)
        return jnp.stack([dx, dv], axis=-1)

    @staticmethod
    def initial_state(
        r0: Float[ArrayLike, " M"], phase: Float[ArrayLike, " M"] | float = 0.0, dtype=None
    ) -> Float[Array, "M 2"]:
        """The state $z_m = r_m e^{i\\psi_m}$ from moduli and phases."""
        r0 = jnp.asarray(r0, dtype)
        phase = jnp.broadcast_to(jnp.asarray(phase, r0.dtype), r0.shape)
        return jnp.stack([r0 * jnp.cos(phase), r0 * jnp.sin(phase)], axis=-1)

    to_complex = staticmethod(to_complex)
    from_complex = staticmethod(from_complex)
