"""Probabilistic scores of ensembles: fair CRPS, the unbiased spread–skill ratio,
coverage of the predictive interval, Gaussian NLL, rank histograms."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import scipy.stats
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ._common import _float, _members_last, _time_axis


@eqx.filter_jit
def crps(
    ensemble: Float[ArrayLike, " M *shape"],
    ref: Float[ArrayLike, "*shape"],
    member_axis: int = 0,
    *,
    fair: bool = True,
    reduce: bool = True,
) -> Float[Array, "..."]:
    r"""Ensemble continuous ranked probability score,

    $\mathrm{CRPS} = \frac1M \sum_m |x_m - y| - \frac{1}{2M(M-1)} \sum_{m,m'} |x_m - x_{m'}|$
    (`fair=True`, the unbiased estimator of the CRPS of the distribution the members
    are drawn from), or with $\frac{1}{2M^2}$ (`fair=False`, the CRPS of the empirical
    distribution, biased high by $\frac{1}{2M} \mathbb E|X - X'|$).

    The pair sum is computed in $O(M \log M)$ from the sorted members,
    $\sum_{m,m'} |x_m - x_{m'}| = 2 \sum_i (2i - M - 1)\, x_{(i)}$.

    **Arguments:**

    - `ensemble`: members along `member_axis` (default 0), e.g. `[M, B, T, *state]`.
    - `ref`: the observation, shaped like `ensemble` without the member axis.
    - `fair`: default `True`; needs $M \ge 2$.
    - `reduce`: average over every point (default) or return the CRPS per point.

    **Returns:** a 0-d array, or `ref`-shaped for `reduce=False`; units of the field.

    **Reference:** C. A. T. Ferro, Q. J. R. Meteorol. Soc. 140, 1917 (2014);
    M. Zamo, P. Naveau, Math. Geosci. 50, 209 (2018).
    """
    ens, ref = _members_last(ensemble, ref, member_axis, min_members=2 if fair else 1)
    m = ens.shape[-1]
    skill = jnp.mean(jnp.abs(ens - ref[..., None]), axis=-1)
    xs = jnp.sort(ens, axis=-1)
    weights = 2.0 * jnp.arange(1, m + 1, dtype=xs.dtype) - m - 1
    pair_sum = 2.0 * jnp.sum(weights * xs, axis=-1)  # sum over all ordered pairs
    norm = 2.0 * m * (m - 1) if fair else 2.0 * m * m
    score = skill - pair_sum / norm
    return jnp.mean(score) if reduce else score


@eqx.filter_jit
def crps_fair(
    ensemble: Float[ArrayLike, " M *shape"],
    ref: Float[ArrayLike, "*shape"],
    member_axis: int = 0,
) -> Float[Array, ""]:
    r"""Fair (unbiased) ensemble CRPS averaged over every point,
    $\frac1M \sum_m |x_m - y| - \frac{1}{2M(M-1)} \sum_{m,m'} |x_m - x_{m'}|$; see
    `crps`. Lower is better; 0 only for a sharp, exact forecast.

    **Arguments:** `ensemble` with members along `member_axis` (default 0; $M \ge 2$),
    `ref` shaped like `ensemble` without it.

    **Returns:** a 0-d array in the units of the field.

    **Reference:** C. A. T. Ferro, Q. J. R. Meteorol. Soc. 140, 1917 (2014);
    M. Zamo, P. Naveau, Math. Geosci. 50, 209 (2018).
    """
    return crps(ensemble, ref, member_axis, fair=True)


def _moments(ensemble, ref, member_axis, over_time, time_axis):
    """Mean member variance (ddof=1), mean squared error of the ensemble mean, and M."""
    ens, ref = _members_last(ensemble, ref, member_axis, min_members=2)
    m = ens.shape[-1]
    var = jnp.var(ens, axis=-1, ddof=1)
    sq_err = jnp.square(jnp.mean(ens, axis=-1) - ref)
    if over_time:
        ax = _time_axis(ref.ndim, time_axis, "ref")
        axes = tuple(i for i in range(ref.ndim) if i != ax)
    else:
        axes = None
    return jnp.mean(var, axis=axes), jnp.mean(sq_err, axis=axes), m


@eqx.filter_jit
def spread_and_error(
    ensemble: Float[ArrayLike, " M *shape"],
    ref: Float[ArrayLike, "*shape"],
    member_axis: int = 0,
    *,
    over_time: bool = False,
    time_axis: int | None = None,
) -> tuple[Array, Array]:
    r"""Ensemble spread and the unbiased ensemble-mean error, the two halves of
    `spread_skill`:

    $s = \sqrt{\langle \sigma^2 \rangle}$ with $\sigma^2$ the members' variance
    (ddof=1), and $e = \sqrt{\langle (\bar x - y)^2 \rangle - \langle\sigma^2\rangle / M}$,
    the error the mean of infinitely many members would make (the finite ensemble's
    mean carries $\sigma^2/M$ of sampling noise). $e$ is NaN where the subtraction
    leaves nothing (a far over-dispersed ensemble on few points).

    **Arguments:** as `spread_skill`.

    **Returns:** `(spread, error)`, 0-d arrays or `[T]` for `over_time=True`.
    """
    var, sq_err, m = _moments(ensemble, ref, member_axis, over_time, time_axis)
    skill = sq_err - var / m
    return jnp.sqrt(var), jnp.where(skill >= 0, jnp.sqrt(jnp.maximum(skill, 0.0)), jnp.nan)


@eqx.filter_jit
def spread_skill(
    ensemble: Float[ArrayLike, " M *shape"],
    ref: Float[ArrayLike, "*shape"],
    member_axis: int = 0,
    *,
    over_time: bool = False,
    time_axis: int | None = None,
) -> Float[Array, "..."]:
    r"""Unbiased spread–skill ratio (WeatherBench-X),

    $$\mathrm{SSR} = \sqrt{\frac{\langle \sigma^2 \rangle}
    {\langle (\bar x - y)^2 \rangle - \langle \sigma^2 \rangle / M}},$$

    with $\sigma^2$ the members' variance (ddof=1) and $\bar x$ their mean. Numerator
    and denominator estimate, without bias for any $M$, the spread of the
    distribution the members are drawn from and the error of its mean, so an
    ensemble drawn with $k$ times the right spread scores $k$ in expectation: 2 for
    one twice too wide, 0.5 for one half as wide, 1 for a calibrated one. (The older
    ratio $\sqrt{\frac{M+1}{M}\langle\sigma^2\rangle / \langle(\bar x - y)^2\rangle}$
    is 1 for a calibrated ensemble too, but pulled towards 1 otherwise: 1.58 and
    0.54 at $M = 4$ for those two.) Below 1: over-confident; above: under-confident.
    `inf` where the denominator's estimate is not positive (far over-dispersed, few
    points); NaN where the ensemble has neither spread nor error (a shared initial
    state).

    **Arguments:**

    - `ensemble`: members along `member_axis` (default 0), $M \ge 2$.
    - `ref`: shaped like `ensemble` without the member axis, e.g. `[B, T, *state]`.
    - `over_time`: per lead time, averaging over every axis of `ref` but its time axis.
    - `time_axis`: the time axis of `ref` (module docstring; default 1, or 0 for
      2-dim `ref`).

    **Returns:** a 0-d array, or `[T]` for `over_time=True`.

    **Reference:** WeatherBench-X (`weatherbench_x.metrics.probabilistic`,
    `UnbiasedSpreadSkillRatio`); V. Fortin et al., J. Hydrometeorol. 15, 1708 (2014).
    """
    var, sq_err, m = _moments(ensemble, ref, member_axis, over_time, time_axis)
    skill = sq_err - var / m
    ratio = jnp.sqrt(var / jnp.where(skill > 0, skill, 1.0))
    return jnp.where(skill > 0, ratio, jnp.where(var > 0, jnp.inf, jnp.nan))


def predictive_quantile(members: int, level: float) -> float:
    r"""Half-width of the central `level` predictive interval in units of
    $s\sqrt{1 + 1/M}$: the Student-t quantile $t_{M-1}((1 + \ell)/2)$."""
    return float(scipy.stats.t.ppf(0.5 * (1.0 + level), df=members - 1))


@eqx.filter_jit
def coverage(
    pred: Float[ArrayLike, " M *shape"],
    truth: Float[ArrayLike, "*shape"],
    level: float = 0.9,
    member_axis: int = 0,
    *,
    method: str = "t",
) -> Float[Array, ""]:
    r"""Fraction of `truth` inside the central `level` interval of the ensemble's
    predictive distribution.

    - `method="t"` (default; `metrics.json`'s `coverage90`): the predictive
      distribution of a new draw from the distribution the $M$ members come from,
      $\bar x \pm t_{M-1}\big(\tfrac{1+\ell}{2}\big)\, s \sqrt{1 + 1/M}$ with $s$ the
      members' standard deviation (ddof=1). Exact for Gaussian members exchangeable
      with the truth, for every $M \ge 2$: a calibrated ensemble covers `level` in
      expectation whatever its size, and an under-dispersed one covers less
      (a 10x too narrow ensemble of 4 covers about 0.2 of a 90% interval).
    - `method="pit"`: the coverage of the central interval of the probability integral
      transform, with the PIT of rank $r$ among the members taken uniform on
      $[\frac{r}{M+1}, \frac{r+1}{M+1}]$. Also $\ell$ in expectation for a calibrated
      ensemble, but bounded below for few members: the two outer ranks keep
      $\frac{2}{M+1} \cdot$ their overlap with the interval, so identical members of an
      ensemble of 4 still score 0.75. Reported as `pit_coverage90`, for comparison.
    - `method="interval"`: between the members' empirical quantiles (biased low by
      about $\frac{M-1}{M+1}$ for a calibrated ensemble).

    Points where the truth or any member is not finite count as not covered.

    **Arguments:** `pred` with members along `member_axis` (default 0; $M \ge 2$ for
    `"t"`); `truth` shaped like `pred` without it; `level` in (0, 1); `method`.

    **Returns:** a 0-d array in [0, 1].

    **Reference:** predictive intervals: e.g. G. Casella, R. L. Berger, Statistical
    Inference (2002), §9.2; PIT: T. Gneiting, F. Balabdaoui, A. E. Raftery, J. R.
    Stat. Soc. B 69, 243 (2007).
    """
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"`level` must be in (0, 1), got {level!r}.")
    if method not in ("t", "pit", "interval"):
        raise ValueError(f"`method` must be 't', 'pit' or 'interval', got {method!r}.")
    ens, ref = _members_last(pred, truth, member_axis, min_members=2 if method == "t" else 1)
    finite = jnp.isfinite(ref) & jnp.all(jnp.isfinite(ens), axis=-1)
    m = ens.shape[-1]
    if method == "t":
        mean = jnp.mean(ens, axis=-1)
        half = predictive_quantile(m, level) * jnp.std(ens, axis=-1, ddof=1) * math.sqrt(1 + 1 / m)
        inside = (jnp.abs(ref - mean) <= half) & finite
        return jnp.mean(inside.astype(ens.dtype))
    lo_p, hi_p = (1.0 - level) / 2, (1.0 + level) / 2
    if method == "interval":
        qs = jnp.asarray([lo_p, hi_p], ens.dtype)
        lo, hi = jnp.quantile(ens, qs, axis=-1, method="linear")
        inside = (ref >= lo) & (ref <= hi) & finite
        return jnp.mean(inside.astype(ens.dtype))
    # covered[r] = (M+1) |[r/(M+1), (r+1)/(M+1)] ∩ [lo_p, hi_p]|: the probability that a
    # PIT uniform on rank r's bin lies in the central interval; cum[r] = sum_{s<r}.
    edges = jnp.arange(m + 2, dtype=ens.dtype) / (m + 1)
    covered = jnp.clip(jnp.minimum(edges[1:], hi_p) - jnp.maximum(edges[:-1], lo_p), 0.0)
    cum = jnp.concatenate([jnp.zeros(1, ens.dtype), jnp.cumsum(covered * (m + 1))])
    y = ref[..., None]
    lower = jnp.sum(ens < y, axis=-1)
    ties = jnp.sum(ens == y, axis=-1)
    score = (cum[lower + ties + 1] - cum[lower]) / (ties + 1).astype(ens.dtype)
    return jnp.mean(jnp.where(finite, score, 0.0))


@eqx.filter_jit
def gaussian_nll(
    ensemble: Float[ArrayLike, " M *shape"],
    ref: Float[ArrayLike, "*shape"],
    member_axis: int = 0,
    *,
    var_floor: float = 1e-6,
    ddof: int = 1,
) -> Float[Array, ""]:
    r"""Negative log-likelihood of the reference under the moment-matched Gaussian
    $\mathcal N(\bar x, \sigma^2)$ of the members, averaged over every point:

    $\mathrm{NLL} = \big\langle \tfrac12 \log(2\pi\sigma^2) + \frac{(y - \bar x)^2}{2\sigma^2}
    \big\rangle$, $\sigma^2 = \max(\mathrm{var}(x), \sigma^2_{\min})$.

    **Arguments:**

    - `ensemble`: members along `member_axis` (default 0), $M > $ `ddof`.
    - `ref`: shaped like `ensemble` without the member axis.
    - `var_floor`: $\sigma^2_{\min}$, default 1e-6, in squared field units (keeps a
      collapsed ensemble, e.g. at the shared initial state, finite).
    - `ddof`: of the members' variance, default 1 (unbiased).

    **Returns:** a 0-d array in nats (lower is better; can be negative).
    """
    ens, ref = _members_last(ensemble, ref, member_axis, min_members=ddof + 1)
    mu = jnp.mean(ens, axis=-1)
    var = jnp.maximum(jnp.var(ens, axis=-1, ddof=ddof), var_floor)
    nll = 0.5 * jnp.log(2 * math.pi * var) + 0.5 * jnp.square(ref - mu) / var
    return jnp.mean(nll)


@eqx.filter_jit
def rank_histogram(
    ensemble: Float[ArrayLike, " M *shape"],
    ref: Float[ArrayLike, "*shape"],
    member_axis: int = 0,
    *,
    key: PRNGKeyArray | None = None,
) -> Float[Array, " M+1"]:
    r"""Rank (Talagrand) histogram: counts of the rank of the reference among the
    members, $r = \#\{m : x_m < y\} \in \{0, \dots, M\}$.

    A calibrated ensemble gives a flat histogram, an under-dispersed one a U shape,
    an over-dispersed one a hump, a biased one a slope. Ties ($x_m = y$, e.g. at a
    shared initial state) are broken at random among the tied ranks with `key`, or,
    with `key=None`, spread uniformly over them as fractional counts.

    **Arguments:**

    - `ensemble`: members along `member_axis` (default 0).
    - `ref`: shaped like `ensemble` without the member axis.
    - `key`: keyword-only, optional `jax.random` key for tie breaking.

    **Returns:** `[M+1]` float counts summing to the number of points where the
    reference and every member are finite (points with a blown-up member or NaN
    reference are left out rather than piled into an end rank).

    **Reference:** T. M. Hamill, Mon. Weather Rev. 129, 550 (2001).
    """
    ens, ref = _members_last(ensemble, ref, member_axis)
    m = ens.shape[-1]
    y = ref[..., None]
    lower = jnp.sum(ens < y, axis=-1).ravel()
    ties = jnp.sum(ens == y, axis=-1).ravel()
    finite = (jnp.isfinite(ref) & jnp.all(jnp.isfinite(ens), axis=-1)).ravel()
    if key is not None:
        rank = lower + jax.random.randint(key, lower.shape, 0, ties + 1)
        return jnp.zeros(m + 1, ens.dtype).at[rank].add(finite.astype(ens.dtype))
    # Each point puts 1/(ties+1) on ranks lower .. lower+ties: add at the first, take
    # off after the last, and integrate (O(points + M), no [points, M] array).
    w = jnp.where(finite, 1.0 / (ties + 1).astype(ens.dtype), 0.0)
    d = jnp.zeros(m + 2, ens.dtype).at[lower].add(w).at[lower + ties + 1].add(-w)
    return jnp.cumsum(d)[: m + 1]


def uq_summary(
    ensemble: Float[ArrayLike, " M *shape"],
    ref: Float[ArrayLike, "*shape"],
    member_axis: int = 0,
    *,
    skip_initial: bool = False,
    time_axis: int | None = None,
) -> dict[str, float]:
    r"""The ensemble scores of `metrics.json`'s `uq` block, pooled over every point.

    Rollouts that start from one shared initial state have no spread and no error at
    $t_0$: the members tie with the reference, which scores as a perfect CRPS, counts
    as covered and, through the variance floor, drives the Gaussian NLL towards
    $\tfrac12\log(2\pi\sigma^2_{\min})$. Pass `skip_initial=True` to score lead
    times after the first only (what a-posteriori evaluation wants).

    **Arguments:**

    - `ensemble`: members along `member_axis` (default 0; $M \ge 2$), e.g.
      `[M, B, T, *state]`.
    - `ref`: shaped like `ensemble` without it, e.g. `[B, T, *state]`.
    - `skip_initial`: drop the first time of `ref`'s time axis (default `False`).
    - `time_axis`: the time axis of `ref` (module docstring; default 1, or 0 for
      2-dim `ref`); only used with `skip_initial`.

    **Returns:** a dict of Python floats: `"crps"` (`crps_fair`), `"spread_skill"`
    (unbiased), `"coverage50"`, `"coverage90"` (`coverage` of the Student-t predictive
    interval at 0.5 and 0.9), `"pit_coverage50"`, `"pit_coverage90"`
    (`coverage(..., method="pit")`) and `"nll"` (`gaussian_nll`).
    """
    ens = _float(ensemble)
    ref = _float(ref)
    if skip_initial:
        ax = _time_axis(ref.ndim, time_axis, "ref")
        if ref.shape[ax] < 2:
            raise ValueError(
                f"`skip_initial` needs at least 2 times on axis {ax} of `ref` {ref.shape}."
            )
        if not -ens.ndim <= member_axis < ens.ndim:
            raise ValueError(
                f"`member_axis` {member_axis} is out of range for `ensemble` of shape "
                f"{ens.shape}."
            )
        e_ax = ax + (1 if ax >= member_axis % ens.ndim else 0)
        ref = jax.lax.slice_in_dim(ref, 1, None, axis=ax)
        ens = jax.lax.slice_in_dim(ens, 1, None, axis=e_ax)
    return {
        "crps": float(crps_fair(ens, ref, member_axis)),
        "spread_skill": float(spread_skill(ens, ref, member_axis)),
        "coverage50": float(coverage(ens, ref, 0.5, member_axis)),
        "coverage90": float(coverage(ens, ref, 0.9, member_axis)),
        "pit_coverage50": float(coverage(ens, ref, 0.5, member_axis, method="pit")),
        "pit_coverage90": float(coverage(ens, ref, 0.9, member_axis, method="pit")),
        "nll": float(gaussian_nll(ens, ref, member_axis)),
    }
