"""Burgers-like dynamics on a graph: conservative upwind transport along a
divergence-free edge flow, plus graph diffusion."""

import math
import warnings
from collections.abc import Callable
from typing import Any, Literal

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from jaxtyping import Array, ArrayLike, Float

from ._kuramoto import _LAYOUT_MIN_EDGES
from ._ssprk3 import SSPRK3
from ._system import AbstractSystem
from ._validation import check_positive
from .graphs import ColumnLayout, Graph, HyperbolicCoordinates
from .graphs._graph import _default_float


# Monotone numerical fluxes $F(a, b)$ of $f(u) = u^2/2$ from a left state a to a right
# state b. All three are even, F(-b, -a) = F(a, b), which is what lets one formula
# upwind along either orientation of an edge.
def _engquist_osher(a: Array, b: Array) -> Array:
    return 0.5 * (jnp.square(jnp.maximum(a, 0)) + jnp.square(jnp.minimum(b, 0)))


def _godunov(a: Array, b: Array) -> Array:
    return 0.5 * jnp.maximum(jnp.square(jnp.maximum(a, 0)), jnp.square(jnp.minimum(b, 0)))


def _rusanov(a: Array, b: Array) -> Array:
    return 0.25 * (a * a + b * b) - 0.5 * jnp.maximum(jnp.abs(a), jnp.abs(b)) * (b - a)


_FLUXES = {"engquist-osher": _engquist_osher, "godunov": _godunov, "rusanov": _rusanov}

# Relative tolerance of the Laplacian solve behind the divergence-free flow, and the
# divergence (relative to the largest node total of |b|) above which we warn: a flow
# with divergence delta makes a constant state drift by about delta * dt u^2 / (2h)
# per step, i.e. it breaks the maximum principle by about delta relative. Both by the
# dtype the flow is stored in: rounding a divergence-free flow to float32 alone leaves
# a divergence of ~1.4e-8, so solving past 1e-9 there is wasted (at 200k nodes with
# the graph-burgers task's weights 1/max(k_i, k_j): 2,850 iterations and 90 s of CPU
# at 1e-14, 1,706 and 53 s at 1e-9, the same divergence after rounding, 1.4e-8 vs
# 1.7e-8; 180 iterations at 1e-14 on a 100k-node graph with unit weights).
_CG_RTOL = {np.dtype(np.float64): 1e-14, np.dtype(np.float32): 1e-9}
_DIVERGENCE_WARN = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-7}


def _concrete_graph(graph) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not isinstance(graph, Graph):
        raise ValueError(f"`graph` must be a solvers.graphs.Graph, got {type(graph).__name__}.")
    leaves = (graph.senders, graph.receivers, graph.weights)
    if any(isinstance(x, jax.core.Tracer) for x in leaves):
        raise ValueError(
            "`graph` must be concrete (indices and weights known before tracing): the "
            "transport flow is computed from them when GraphBurgers is built. Build "
            "the system outside `jax.jit` and close over it."
        )
    n = graph.n_nodes
    s = np.asarray(graph.senders, np.int64)
    r = np.asarray(graph.receivers, np.int64)
    w = np.asarray(graph.weights, np.float64)
    for name, idx in (("senders", s), ("receivers", r)):
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise ValueError(
                f"`graph` has {name} outside [0, n_nodes) = [0, {n}): values in "
                f"[{idx.min()}, {idx.max()}]."
            )
    if r.size > 1 and np.any(r[1:] < r[:-1]):
        raise ValueError("`graph` must have its edges sorted by receiver, as Graph builds it.")
    if not np.all(np.isfinite(w)) or (w.size and w.min() < 0):
        raise ValueError(
            "`graph` must have finite non-negative weights (graph diffusion with a "
            "negative weight has no maximum principle)."
        )
    return s, r, w


def _check_coordinates(coordinates, n: int) -> np.ndarray:
    if coordinates is None:
        return 2 * np.pi * np.arange(n) / n
    if isinstance(coordinates, HyperbolicCoordinates):
        coordinates = coordinates.angle
    if isinstance(coordinates, jax.core.Tracer):
        raise ValueError(
            "`coordinates` must be concrete: the edge orientation is computed from "
            "them when GraphBurgers is built."
        )
    phi = np.asarray(coordinates)
    if phi.shape != (n,) or not np.issubdtype(phi.dtype, np.number):
        raise ValueError(
            f"`coordinates` must be None, HyperbolicCoordinates or a real array of shape "
            f"({n},) (one angle per node), got shape {phi.shape} and dtype {phi.dtype}."
        )
    if np.iscomplexobj(phi) or not np.all(np.isfinite(phi)):
        raise ValueError("`coordinates` must be real and finite.")
    return phi.astype(np.float64)


def _pairs(s: np.ndarray, r: np.ndarray, n: int):
    """The distinct node pairs of the stored edges (sorted by receiver, then sender, as
    `Graph` stores them): the first edge of each pair (`starts`), the pair of every
    edge (`inverse`), the edges per pair (`counts`) and the pair of the reverse
    direction (`reverse`); `ValueError` if a pair has no reverse."""
    key = r * n + s
    first = np.concatenate([[True], key[1:] != key[:-1]]) if key.size else np.zeros(0, bool)
    starts = np.flatnonzero(first)
    inverse = np.cumsum(first) - 1
    counts = np.diff(np.append(starts, key.size))
    s_u, r_u = s[starts], r[starts]
    reverse = np.searchsorted(key[starts], s_u * n + r_u)
    found = reverse < starts.size
    found[found] = key[starts][reverse[found]] == (s_u * n + r_u)[found]
    if not np.all(found):
        k = int(np.flatnonzero(~found)[0])
        raise ValueError(
            f"`graph` must be undirected (each edge stored in both directions, as the "
            f"generators do): edge {s_u[k]} -> {r_u[k]} has no reverse. Transport along "
            "an edge must enter both endpoints' equations to conserve sum(u)."
        )
    return starts, inverse, counts, reverse


def _given_flow(flow, s: np.ndarray, r: np.ndarray, n: int, balanced: bool,
                dtype: np.dtype) -> np.ndarray:
    """Checks a transport flow passed in (`flow=`): one value per stored edge, finite,
    antisymmetric over each pair of directions and, when `balanced`, divergence free
    to what `dtype` holds."""
    if isinstance(flow, jax.core.Tracer):
        raise ValueError("`flow` must be concrete (a NumPy or JAX array), not traced.")
    b = np.asarray(flow)
    if b.shape != s.shape or not np.issubdtype(b.dtype, np.floating):
        raise ValueError(
            f"`flow` must be a real array of shape ({s.size},), one value per stored edge "
            f"in the graph's edge order (e.g. another GraphBurgers' `flow` on the same "
            f"graph), got shape {b.shape} and dtype {b.dtype}."
        )
    eps = np.finfo(b.dtype).eps
    # divergence free to what the flow was computed in or is stored in, the looser
    loosest = max(_DIVERGENCE_WARN.get(np.dtype(b.dtype), _DIVERGENCE_WARN[np.dtype(np.float32)]),
                  _DIVERGENCE_WARN[np.dtype(dtype)])
    b = b.astype(np.float64)
    if not np.all(np.isfinite(b)):
        raise ValueError("`flow` must be finite.")
    starts, inverse, counts, reverse = _pairs(s, r, n)
    pair = np.bincount(inverse, weights=b, minlength=starts.size)
    scale = max(np.abs(pair).max(initial=0.0), 1e-300)
    if np.abs(pair + pair[reverse]).max(initial=0.0) > 8 * eps * scale:
        raise ValueError(
            "`flow` must be antisymmetric (the flow from i to j is minus the flow from "
            "j to i), as GraphBurgers computes it: is it the flow of another graph?"
        )
    if balanced:
        div = np.bincount(r, weights=b, minlength=n)
        node = max(np.bincount(r, weights=np.abs(b), minlength=n).max(initial=0.0), 1e-300)
        if np.abs(div).max(initial=0.0) / node > 10 * loosest:
            raise ValueError(
                f"`flow` has a divergence of {np.abs(div).max() / node:.1e} (relative): "
                "with `balanced=True` it must be divergence free (a flow computed in "
                "float32 is so only to ~1e-8; pass `balanced=False` for a raw orientation)."
            )
    return b


def _transport_flow(
    s: np.ndarray, r: np.ndarray, w: np.ndarray, phi: np.ndarray, n: int, balanced: bool,
    dtype: np.dtype,
) -> np.ndarray:
    r"""The edge flow $b_{ij}$ (from receiver $i$ to sender $j$ of each stored edge):
    $\bar w_{ij} (\sigma_{ij} - p_j + p_i)$, $\sigma_{ij} = \operatorname{sign}
    \sin(\phi_j - \phi_i)$, $\bar w = (W + W^T)/2$, with $p$ from
    $L_{\bar w}\, p = -\operatorname{div}(\bar w \sigma)$ when `balanced` (else $p = 0$),
    solved as far as `dtype` (where the flow will be stored) can hold it.
    Exactly antisymmetric: every quantity is computed once per unordered pair."""
    starts, inverse, counts, reverse = _pairs(s, r, n)
    s_u, r_u = s[starts], r[starts]
    w_u = np.add.reduceat(w, starts) if s.size else np.zeros(0)
    w_bar = 0.5 * (w_u + w_u[reverse])
    lo, hi = np.minimum(s_u, r_u), np.maximum(s_u, r_u)
    sigma = np.sign(np.sin(phi[hi] - phi[lo]))  # orientation lo -> hi
    sigma = np.where(r_u == lo, sigma, -sigma)  # of receiver -> sender
    sigma[s_u == r_u] = 0.0
    if balanced and s_u.size:
        off = s_u != r_u
        lap_w = sp.csr_matrix((w_bar[off], (r_u[off], s_u[off])), shape=(n, n))
        degree = np.asarray(lap_w.sum(axis=1)).ravel()
        laplacian = sp.diags(degree) - lap_w
        precond = sp.diags(1.0 / np.where(degree > 0, degree, 1.0))

        # Preconditioned CG on the singular but consistent system (the divergence of
        # an antisymmetric flow sums to zero on every component).
        flow0 = w_bar * sigma
        div0 = np.bincount(r_u, weights=flow0, minlength=n)
        p, _ = spla.cg(laplacian, -div0, rtol=_CG_RTOL[np.dtype(dtype)],
                       maxiter=10 * math.isqrt(n) + 1000, M=precond)
        flow = w_bar * (sigma - (p[s_u] - p[r_u]))
        div = np.bincount(r_u, weights=flow, minlength=n)
        scale = np.bincount(r_u, weights=np.abs(flow), minlength=n).max()
        worst = np.abs(div).max() / max(scale, 1e-300)
        if worst > _DIVERGENCE_WARN[np.dtype(dtype)]:
            warnings.warn(
                f"GraphBurgers: the transport flow kept a divergence of {worst:.1e} "
                "(relative): constant states drift by about that much per step.",
                stacklevel=3,
            )
    else:
        flow = w_bar * sigma
    return flow[inverse] / counts[inverse]


class GraphBurgers(AbstractSystem):
    r"""Burgers-like dynamics on a graph: nonlinear conservative transport along the
    edges plus graph diffusion.

    $\dot u_i = -\frac1h \sum_j b_{ij}\, F(\sigma_{ij} u_i, \sigma_{ij} u_j)
    + \frac{\nu}{h^2} \sum_j w_{ij} (u_j - u_i) + f(t, \phi_i),
    \qquad \sigma_{ij} = \operatorname{sign} b_{ij}$

    - $F(a, b)$ is a monotone numerical flux of $u^2/2$ from a left state $a$ to a
      right state $b$; it is even, $F(-b, -a) = F(a, b)$, so the term is
      $|b_{ij}| F(u_i, u_j)$ when the flow goes from $i$ to $j$ and
      $-|b_{ij}| F(u_j, u_i)$ when it comes from $j$: upwinding along the edge.
      `flux="engquist-osher"` (default), $F = \tfrac12(\max(a,0)^2 + \min(b,0)^2)$;
      `"godunov"`, $F = \tfrac12\max(\max(a,0)^2, \min(b,0)^2)$; `"rusanov"`,
      $F = \tfrac14(a^2 + b^2) - \tfrac12\max(|a|,|b|)(b - a)$.
    - $b_{ij} = -b_{ji}$ is the transport flow on the edge: the orientation
      $\operatorname{sign}\sin(\phi_j - \phi_i)$ of the edge by the node angles
      $\phi$, times the symmetric weight $\bar w_{ij} = (w_{ij} + w_{ji})/2$, made
      divergence free, $\sum_j b_{ij} = 0$ at every node, by subtracting a graph
      gradient (the Helmholtz–Hodge projection: $b_{ij} = \bar w_{ij}(\sigma^0_{ij}
      - p_j + p_i)$, $L_{\bar w}\,p = -\operatorname{div}(\bar w \sigma^0)$, solved
      once at construction by preconditioned conjugate gradients).
    - $w_{ij} \ge 0$ is the weight of the edge $j \to i$ (the graph's weights as
      given), $h$ the `spacing`, $\nu$ the `viscosity`.

    Why the projection. Antisymmetry of $b$ makes the transport conservative:
    $\sum_i \dot u_i = 0$ whenever $w$ is symmetric. A constant state is steady,
    which a maximum principle needs, only if $\sum_j b_{ij} F(c, c) = \tfrac{c^2}2
    \sum_j b_{ij}$ vanishes at every node: with the raw orientation
    (`balanced=False`) a node with more neighbours on one side is a source or sink
    of $u^2/2$ and new extrema appear; with the divergence-free flow the scheme is
    $\dot u_i = \sum_j c_{ij}(u_j - u_i)$ with $c_{ij} \ge 0$, and forward Euler (so
    `SSPRK3`, the default solver) creates no new extrema for
    $\Delta t \le$ `stable_dt(u)`. On an unweighted ring the raw orientation is
    already divergence free and nothing changes: on `ring_lattice(n, 2,
    normalize=False)` with $h = L/n$ this is the standard first-order finite-volume
    scheme for $u_t + (u^2/2)_x = \nu u_{xx}$ on $[0, L)$. A divergence-free flow
    lives on the cycles of the graph: on a tree it vanishes and only the diffusion
    remains. On random hyperbolic graphs with unit weights it keeps 70% (400
    nodes) to 80% (2,000 to 1M nodes) of the norm of the raw orientation.

    The flux is the modelling choice with the most effect on accuracy: all three are
    first order and monotone. Good values: `"engquist-osher"`: as sharp as Godunov's
    except at transonic shocks, and continuously differentiable, so gradients
    through a rollout have no kinks; `"godunov"`, the least diffusive; `"rusanov"`,
    the most diffusive and the simplest.

    **Arguments:**

    - `graph`: a `solvers.graphs.Graph`, undirected (each edge in both directions,
      as `random_hyperbolic`, `erdos_renyi` and `ring_lattice` build them), with
      non-negative concrete weights. `sum(u)` is conserved when the weights are
      symmetric, e.g. unit weights (`normalize=False`, or
      `Graph(g.senders, g.receivers, n_nodes=g.n_nodes)`); the generators' default
      receiver-normalised weights keep the transport conservative but not the
      diffusion.
    - `viscosity`: $\nu > 0$.
    - `coordinates`: the node angles $\phi$: `None` (default, $\phi_i = 2\pi i/N$),
      a `solvers.graphs.HyperbolicCoordinates` (its `angle`), or an array `[N]`.
    - `spacing`: $h > 0$, default 1: transport scales as $1/h$, diffusion as $1/h^2$.
    - `flux`: `"engquist-osher"` (default), `"godunov"` or `"rusanov"`.
    - `forcing`: `None` or a callable `(t, phi) -> f` of the node angles `[N]`.
      (Forcing is a source: it is not covered by the maximum principle, and
      conserves `sum(u)` only if it sums to zero.)
    - `balanced`: make the flow divergence free (default `True`); `False` keeps the
      raw orientation $\bar w_{ij} \operatorname{sign}\sin(\phi_j - \phi_i)$, still
      conservative but without the maximum principle.
    - `layout`: sum over edges through a `solvers.graphs.ColumnLayout` (`True`) or a
      segment sum (`False`); default `None`: the layout from 2**16 edges up.
    - `flow`: the transport flow, if it was computed before (`other.flow` of a
      `GraphBurgers` on the same graph and coordinates, e.g. stored with a run):
      skips the Laplacian solve, the construction's main cost on large graphs.
      Checked for shape, antisymmetry and (when `balanced`) divergence; the
      orientation by `coordinates` is not re-checked. Default `None`: computed.

    **State:** `u: Float[Array, "N"]`, float32 or float64.

    **Fields** (besides the arguments): `flow`, `Float[Array, "E"]`, $b_{ij}$ on each
    stored edge $j \to i$ (the flow from its receiver $i$ to its sender $j$), in the
    graph's edge order; `flow_degree` and `weight_degree`, `Float[Array, "N"]`,
    $\sum_j |b_{ij}|$ and $\sum_j w_{ij}$ (for `stable_dt`).

    **Cost.** Construction runs on the host: the orientation, one Laplacian solve
    (Jacobi-preconditioned CG to a relative residual of 1e-14 in float64, 1e-9 in
    float32: 180 iterations on a 100k-node random hyperbolic graph with unit weights,
    1,706 at 200k nodes with the graph-burgers task's weights in float32, minutes of
    CPU at 1M nodes; pass `flow=` to reuse a flow computed before) and the column
    layout. The tendency is one pass over the edges.

    **Reference:** B. Engquist, S. Osher, "One-sided difference approximations for
    nonlinear conservation laws", Math. Comp. 36, 321 (1981); R. J. LeVeque,
    "Finite Volume Methods for Hyperbolic Problems" (2002), ch. 12; L.-H. Lim,
    "Hodge Laplacians on graphs", SIAM Review 62, 685 (2020).
    """

    graph: Graph
    viscosity: Float[ArrayLike, ""]
    coordinates: Float[Array, " N"]
    flow: Float[Array, " E"]
    forcing: Callable[[ArrayLike, Array], Array] | None
    layout: ColumnLayout | None
    flow_degree: Float[Array, " N"]
    weight_degree: Float[Array, " N"]
    spacing: float = eqx.field(static=True)
    flux: str = eqx.field(static=True)

    def __init__(
        self,
        graph: Graph,
        viscosity: float,
        *,
        coordinates: Float[ArrayLike, " N"] | HyperbolicCoordinates | None = None,
        spacing: float = 1.0,
        flux: Literal["engquist-osher", "godunov", "rusanov"] = "engquist-osher",
        forcing: Callable[[ArrayLike, Array], Array] | None = None,
        balanced: bool = True,
        layout: bool | None = None,
        flow: Float[ArrayLike, " E"] | None = None,
    ):
        s, r, w = _concrete_graph(graph)
        n = graph.n_nodes
        self.viscosity = check_positive(viscosity, "viscosity")
        if isinstance(spacing, jax.core.Tracer):
            raise ValueError("`spacing` must be a concrete positive number.")
        self.spacing = float(check_positive(spacing, "spacing"))
        if flux not in _FLUXES:
            raise ValueError(f"`flux` must be one of {sorted(_FLUXES)}, got {flux!r}.")
        self.flux = flux
        if forcing is not None and not callable(forcing):
            raise ValueError(
                f"`forcing` must be None or a callable (t, phi) -> f, got {forcing!r}."
            )
        self.forcing = forcing
        if balanced not in (True, False):
            raise ValueError(f"`balanced` must be True or False, got {balanced!r}.")
        if layout not in (None, True, False):
            raise ValueError(f"`layout` must be None, True or False, got {layout!r}.")
        phi = _check_coordinates(coordinates, n)
        dtype = _default_float()
        if flow is None:
            flow = _transport_flow(s, r, w, phi, n, bool(balanced), dtype)
        else:
            flow = _given_flow(flow, s, r, n, bool(balanced), dtype)
        self.graph = graph
        self.coordinates = jnp.asarray(phi, dtype)
        self.flow = jnp.asarray(flow, dtype)
        self.flow_degree = jnp.asarray(np.bincount(r, np.abs(flow), minlength=n), dtype)
        self.weight_degree = jnp.asarray(np.bincount(r, w, minlength=n), dtype)
        use = layout if layout is not None else graph.n_edges >= _LAYOUT_MIN_EDGES
        self.layout = ColumnLayout(graph, values=(graph.weights, self.flow)) if use else None

    @property
    def n(self) -> int:
        """The number of nodes $N$."""
        return self.graph.n_nodes

    @property
    def state_shape(self) -> tuple[int, ...]:
        return (self.n,)

    def default_solver(self) -> diffrax.AbstractSolver:
        """`SSPRK3`: with `stable_dt` it keeps the maximum principle."""
        return SSPRK3()

    def stable_dt(self, u: Float[ArrayLike, " N"]) -> Array:
        r"""The largest step for which forward Euler, hence `SSPRK3`, creates no new
        extrema from the state `u` (without forcing):

        $\Delta t = 1 \big/ \max_i \Big(\frac{\max_j |u_j|}{h} \sum_j |b_{ij}| +
        \frac{\nu}{h^2} \sum_j w_{ij}\Big)$.

        The scheme is $\dot u_i = \sum_j c_{ij}(u_j - u_i)$ with $0 \le c_{ij} \le
        |b_{ij}| \max(|u_i|, |u_j|)/h + \nu w_{ij}/h^2$ (the three fluxes are
        Lipschitz with that constant), and a forward Euler step is a convex
        combination when $\Delta t \sum_j c_{ij} \le 1$. Under the maximum principle
        $\max|u|$ does not grow, so the step stays stable for the whole rollout.
        Pass it to `solvers.solve` as a number: `dt=float(system.stable_dt(u0))`
        (times a safety factor, e.g. 0.9, for round-off)."""
        u = jnp.asarray(u)
        h = self.spacing
        speed = jnp.max(jnp.abs(u))
        rate = speed / h * self.flow_degree.astype(u.dtype) + (
            jnp.asarray(self.viscosity, u.dtype) / h**2 * self.weight_degree.astype(u.dtype)
        )
        return 1 / jnp.max(rate)

    def vector_field(self, t: ArrayLike, u: Float[Array, " N"], args: Any) -> Array:
        dtype = u.dtype
        transport = jnp.asarray(-1.0 / self.spacing, dtype)
        diffusion = jnp.asarray(self.viscosity, dtype) / jnp.asarray(self.spacing**2, dtype)
        flux = _FLUXES[self.flux]

        def edge(u_j, u_i, w, b):
            # Edge j -> i: weight w (diffusion), flow b from i to j (transport).
            sign = jnp.sign(b)
            return transport * b * flux(sign * u_i, sign * u_j) + diffusion * w * (u_j - u_i)

        if self.layout is not None:
            du = self.layout.edge_sum(edge, u)
        else:
            g = self.graph
            # Indices were validated when the system was built.
            u_s = u.at[g.senders].get(mode="promise_in_bounds", wrap_negative_indices=False)
            u_r = u.at[g.receivers].get(
                mode="promise_in_bounds", indices_are_sorted=True, wrap_negative_indices=False
            )
            terms = edge(u_s, u_r, g.weights.astype(dtype), self.flow.astype(dtype))
            du = jax.ops.segment_sum(terms, g.receivers, num_segments=self.n,
                                     indices_are_sorted=True)
        if self.forcing is not None:
            du = du + jnp.asarray(self.forcing(t, self.coordinates.astype(dtype)), dtype)
        return du
