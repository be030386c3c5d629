"""Random hyperbolic graphs (Krioukov et al. 2010), built in about O(N log N)."""

import functools
import math

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._validation import check_positive, check_positive_int
from ._graph import Graph, _default_float, numpy_rng, receiver_normalized, symmetric_edges


class HyperbolicCoordinates(eqx.Module):
    """Where the nodes of a `random_hyperbolic` graph sit in the hyperbolic disk.

    **Fields:**

    - `radius`: `Float[Array, "N"]`, radial coordinate $r_i \\in [0, R]$ (small radius =
      popular node, large degree).
    - `angle`: `Float[Array, "N"]`, angular coordinate $\\theta_i \\in [0, 2\\pi)$,
      increasing with the node index (nodes are labelled by angle).
    - `disk_radius`: $R$.
    - `alpha`: radial exponent $\\alpha = (\\gamma - 1)/2$.
    - `temperature`: $T$.
    """

    radius: Float[Array, " N"]
    angle: Float[Array, " N"]
    disk_radius: float = eqx.field(static=True)
    alpha: float = eqx.field(static=True)
    temperature: float = eqx.field(static=True)


def _max_angle(r, r_min, d_max):
    """Largest angular separation at which a node at radius `r` can be within
    hyperbolic distance `d_max` of a node at radius >= `r_min` (attained at
    `r_min`: the angle decreases with the second radius when `d_max >= r`).

    Uses the cancellation-free form of the hyperbolic law of cosines,
    $\\cosh d = \\cosh(r - r') + 2 \\sinh r \\sinh r' \\sin^2(\\Delta\\theta/2)$."""
    num = np.cosh(d_max) - np.cosh(r - r_min)
    den = 2.0 * np.sinh(r) * np.sinh(r_min)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.inf)
    return np.where(s >= 1.0, np.pi, 2.0 * np.arcsin(np.sqrt(np.clip(s, 0.0, 1.0))))


def _sample_radii(rng, n, alpha, R):
    # Inverse CDF of rho(r) = alpha sinh(alpha r) / (cosh(alpha R) - 1) on [0, R];
    # arccosh(1 + x) = log1p(x + sqrt(x (x + 2))) keeps small radii accurate.
    x = (np.cosh(alpha * R) - 1.0) * rng.random(n)
    return np.log1p(x + np.sqrt(x * (x + 2.0))) / alpha


def _connection_probability(d, R, T):
    if T == 0:
        return (d < R).astype(np.float64)
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp((d - R) / (2.0 * T)))


@functools.cache
def _legendre(m: int):
    return np.polynomial.legendre.leggauss(m)


def _expected_degree(n, alpha, R, T, d_cut, m_r=None, m_theta=120):
    """Expected average degree $(N-1) P(\\text{edge})$ of the model at disk radius R
    (finite N, no asymptotics), by quadrature over both radii (Gauss-Legendre,
    weighted by the radial density) and, for T > 0, over the log of the angle."""
    # Relative accuracy about 1e-4 (T = 0) and 1e-3 (T > 0, a 3D quadrature).
    x, wx = _legendre(m_r or (240 if T == 0 else 160))
    r = 0.5 * R * (x + 1.0)
    rho = alpha * np.sinh(alpha * r) / (np.cosh(alpha * R) - 1.0) * 0.5 * R * wx
    r1, r2 = r[:, None], r[None, :]
    theta_cut = _max_angle(r1, r2, d_cut)
    if T == 0:
        p = theta_cut / np.pi
    else:
        # theta = theta_cut * exp(-s): the transition of p(d(theta)) is smooth in s.
        s = np.linspace(0.0, 40.0, m_theta)
        theta = theta_cut[..., None] * np.exp(-s)
        cosh_d = np.cosh(r1 - r2)[..., None] + 2.0 * (
            np.sinh(r1) * np.sinh(r2)
        )[..., None] * np.sin(theta / 2) ** 2
        d = np.arccosh(np.maximum(cosh_d, 1.0))
        p = np.trapezoid(_connection_probability(d, R, T) * theta, s, axis=-1) / np.pi
    return (n - 1) * float(rho @ p @ rho)


def _disk_radius(n, avg_degree, alpha, T, cut):
    """R such that the expected average degree is `avg_degree`; starts from the
    asymptotic $\\bar k \\approx \\frac{2}{\\pi} \\xi^2 N e^{-R/2}$, $\\xi = \\alpha /
    (\\alpha - 1/2)$ (Krioukov et al. 2010, T = 0) and corrects with the exact finite-N
    quadrature, using that $\\log \\bar k$ falls with slope about 1/2 in R."""
    xi = alpha / (alpha - 0.5)
    R = max(2.0 * math.log(2.0 * n * xi**2 / (math.pi * avg_degree)), 1e-3)
    f = math.log(_expected_degree(n, alpha, R, T, R + cut) / avg_degree)
    slope = -0.5
    for _ in range(50):
        R_new = max(R - f / slope, 0.5 * R)
        f_new = math.log(_expected_degree(n, alpha, R_new, T, R_new + cut) / avg_degree)
        if abs(f_new) < 1e-9 or R_new == R:
            return R_new
        secant = (f_new - f) / (R_new - R)
        # Secant steps; the asymptotic slope -1/2 if the secant is unusable.
        slope = secant if math.isfinite(secant) and secant < 0 else -0.5
        R, f = R_new, f_new
    return R


def _band_edges(r, theta, d_cut, R, T, rng, chunk):
    """All unordered pairs (u < v by band, then index) at hyperbolic distance below
    `d_cut` (kept with probability p(d) when T > 0), with nodes sorted by angle.

    Radii are binned in bands of width 1/2; a node queries each band at or above its
    own for the angular window `_max_angle(r, band_min, d_cut)` by `searchsorted`
    on the band's angles (von Looz et al. 2015), and the candidates are filtered
    exactly. Each pair is visited once: from the lower band, or from the smaller
    index within a band."""
    bounds = np.arange(0.0, R + 0.5, 0.5)
    band = np.clip(np.searchsorted(bounds, r, side="right") - 1, 0, len(bounds) - 1)
    sinh_r = np.sinh(r)
    cosh_cut = np.cosh(d_cut)
    out_u, out_v = [], []
    for j in np.unique(band):
        members = np.flatnonzero(band == j)  # angle-sorted: nodes are
        n_j = members.shape[0]
        ang = theta[members]
        ang_ext = np.concatenate([ang - 2 * np.pi, ang, ang + 2 * np.pi])
        queries = np.flatnonzero(band <= j)
        # A relative margin: rounding in the window must not drop a true pair.
        width = _max_angle(r[queries], bounds[j], d_cut) * (1 + 1e-9) + 1e-15
        lo = np.searchsorted(ang_ext, theta[queries] - width, side="left")
        hi = np.searchsorted(ang_ext, theta[queries] + width, side="right")
        count = np.minimum(hi - lo, n_j)
        keep = count > 0
        queries, lo, count = queries[keep], lo[keep], count[keep]
        # Chunks of about `chunk` candidates bound the memory.
        cum = np.cumsum(count)
        cuts = np.searchsorted(cum, np.arange(chunk, cum[-1] if len(cum) else 0, chunk))
        for qa, qb in zip(
            np.concatenate([[0], cuts]), np.concatenate([cuts, [len(queries)]]), strict=True
        ):
            c = count[qa:qb]
            total = int(c.sum())
            if total == 0:
                continue
            starts = np.cumsum(c) - c
            u = np.repeat(queries[qa:qb], c)
            pos = np.repeat(lo[qa:qb] - starts, c) + np.arange(total)
            v = members[pos % n_j]
            dr = r[u] - r[v]
            sin2 = np.sin(0.5 * (theta[u] - theta[v])) ** 2
            cosh_d = np.cosh(dr) + 2.0 * sinh_r[u] * sinh_r[v] * sin2
            ok = (cosh_d < cosh_cut) & ((band[u] < j) | (u < v))
            if T > 0:
                d = np.arccosh(np.maximum(cosh_d[ok], 1.0))
                accept = rng.random(d.shape[0]) < _connection_probability(d, R, T)
                ok[ok] = accept
            out_u.append(u[ok])
            out_v.append(v[ok])
    if not out_u:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(out_u), np.concatenate(out_v)


def random_hyperbolic(
    n: int,
    *,
    avg_degree: float,
    key,
    gamma: float = 2.5,
    temperature: float = 0.0,
    cutoff: float = 1e-4,
    return_coordinates: bool = False,
    chunk_size: int = 2**21,
) -> Graph | tuple[Graph, HyperbolicCoordinates]:
    r"""A random hyperbolic graph (Krioukov et al. 2010), as in ROMA's data.

    $N$ nodes are placed in the hyperbolic disk of radius $R$ with uniform angles
    and radial density $\rho(r) = \alpha \sinh(\alpha r) / (\cosh \alpha R - 1)$,
    $\alpha = (\gamma - 1)/2$, which gives a power-law degree distribution
    $P(k) \sim k^{-\gamma}$. Two nodes are connected when their hyperbolic distance

    $\cosh d = \cosh r \cosh r' - \sinh r \sinh r' \cos \Delta\theta$

    is below $R$ (`temperature=0`), or with probability
    $p(d) = 1 / (1 + e^{(d - R)/2T})$ for $0 < T < 1$. $R$ is chosen so that the
    *expected* average degree is `avg_degree` exactly at this $N$ (the asymptotic
    $\bar k \approx \frac{2}{\pi}\xi^2 N e^{-R/2}$, $\xi = \alpha/(\alpha - 1/2)$,
    refined by quadrature); the realised average degree fluctuates around it, more
    so for small $\gamma$ (hubs).

    The construction is O(N log N) plus the number of candidate pairs (about twice
    the edges at T = 0): radial bands, angular windows by `searchsorted`, an exact
    filter, all vectorised NumPy in chunks of `chunk_size` candidates. One million
    nodes of average degree 10 take a few seconds on 2 CPU cores.

    The undirected edges are stored in both directions; the weight of `j -> i` is
    $w_{ij} = \sqrt{k_j} / \sum_{l \in N(i)} \sqrt{k_l}$ (proportional to the square
    root of the sender's degree, incoming weights of every node sum to 1). Nodes are
    labelled by increasing angle, so graph neighbours are mostly close in memory.

    **Arguments:**

    - `n`: number of nodes $N \ge 2$.
    - `avg_degree`: target average degree $\bar k$, in $(0, N - 1)$. Good values: 5–20.
    - `key`: a JAX PRNG key (the sampling itself runs in NumPy, seeded from it).
    - `gamma`: power-law exponent $\gamma > 2$, default 2.5.
    - `temperature`: $T \in [0, 1)$, default 0 (the threshold model). $T > 0$ adds
      longer-range edges (less clustering); pairs with $p(d) <$ `cutoff` are never
      considered, which costs about `cutoff`$^{-T}$ times more candidates.
    - `cutoff`: see `temperature` (ignored at `T = 0`).
    - `return_coordinates`: also return the `HyperbolicCoordinates` of the nodes.
    - `chunk_size`: candidate pairs processed at once (memory bound).

    **Returns:** the `Graph`, or `(graph, coordinates)` if `return_coordinates`.

    **References:** D. Krioukov, F. Papadopoulos, M. Kitsak, A. Vahdat, M. Boguñá,
    "Hyperbolic geometry of complex networks", Phys. Rev. E 82, 036106 (2010);
    M. von Looz, H. Meyerhenke, R. Prutkin, "Generating random hyperbolic graphs in
    subquadratic time", ISAAC 2015.
    """
    n = check_positive_int(n, "n", minimum=2)
    avg_degree = float(check_positive(avg_degree, "avg_degree"))
    if not avg_degree < n - 1:
        raise ValueError(f"`avg_degree` must be below n - 1 = {n - 1}, got {avg_degree}.")
    gamma = float(check_positive(gamma, "gamma"))
    if not gamma > 2:
        raise ValueError(f"`gamma` must be > 2 (finite average degree), got {gamma}.")
    temperature = float(check_positive(temperature, "temperature", allow_zero=True))
    if not temperature < 1:
        raise ValueError(f"`temperature` must be in [0, 1), got {temperature}.")
    if temperature > 0 and not 0 < cutoff < 0.5:
        raise ValueError(f"`cutoff` must be in (0, 0.5), got {cutoff!r}.")
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    rng = numpy_rng(key)

    alpha = (gamma - 1.0) / 2.0
    # Extra distance beyond R where p(d) falls to `cutoff`.
    cut = 2.0 * temperature * math.log(1.0 / cutoff - 1.0) if temperature > 0 else 0.0
    R = _disk_radius(n, avg_degree, alpha, temperature, cut)
    theta = np.sort(rng.random(n) * (2.0 * np.pi))
    r = _sample_radii(rng, n, alpha, R)
    u, v = _band_edges(r, theta, R + cut, R, temperature, rng, chunk_size)
    senders, receivers = symmetric_edges(u, v, n)
    degree = np.bincount(receivers, minlength=n)
    weights = receiver_normalized(receivers, np.sqrt(degree[senders]), n)
    graph = Graph(senders, receivers, weights, n_nodes=n)
    if not return_coordinates:
        return graph
    coords = HyperbolicCoordinates(
        radius=jnp.asarray(r, _default_float()),
        angle=jnp.asarray(theta, _default_float()),
        disk_radius=R,
        alpha=alpha,
        temperature=temperature,
    )
    return graph, coords
