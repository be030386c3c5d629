"""A-posteriori metrics of rollouts: pointwise error, pattern correlation and the
decorrelation time, and probabilistic scores of ensembles (CRPS, spread–skill,
coverage, Gaussian NLL, rank histogram).

Shape conventions: a trajectory is `[T, *state]`, a batch of them `[B, T, *state]`,
an ensemble `[M, T, *state]` or `[M, B, T, *state]` (member axis first unless
`member_axis` says otherwise). Functions that need the time axis take `time_axis`:
by default it is 0 for 2-dim inputs (`[T, n]`) and 1 for more dims (`[B, T, *state]`);
axes before it are batch axes, axes after it are state axes. A single trajectory of
a 2D field, `[T, n, n]`, therefore needs `time_axis=0`.

Everything is written with `jax.numpy`: inputs may be NumPy or JAX arrays, results
are JAX arrays (0-d for scalars; `float(...)` them for JSON) unless documented
otherwise. The array functions are wrapped in `eqx.filter_jit` (one compilation per
shape and per value of the Python arguments, instead of one per primitive when run
eagerly) and may be called inside `jax.jit`/`jax.vmap`.
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Bool, Float, PRNGKeyArray

# ---------------------------------------------------------------------------
# helpers


def _time_axis(ndim: int, time_axis: int | None, name: str = "pred") -> int:
    if time_axis is None:
        time_axis = 0 if ndim <= 2 else 1
    if not -ndim <= time_axis < ndim:
        raise ValueError(f"`time_axis` {time_axis} is out of range for `{name}` of ndim {ndim}.")
    return time_axis % ndim


def _same_shape(a: Array, b: Array, na: str, nb: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"`{na}` and `{nb}` must have the same shape, got {a.shape} and {b.shape}."
        )


def _float(x: ArrayLike) -> Array:
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.inexact) else x.astype(jnp.result_type(float))


def _members_last(ensemble: ArrayLike, ref: ArrayLike, member_axis: int, min_members: int = 1):
    """Ensemble with its member axis moved last, and the reference, checked."""
    ens = _float(ensemble)
    ref = _float(ref)
    shape = ens.shape
    if ens.ndim < 1 or not -ens.ndim <= member_axis < ens.ndim:
        raise ValueError(
            f"`member_axis` {member_axis} is out of range for `ensemble` of shape {ens.shape}."
        )
    ens = jnp.moveaxis(ens, member_axis, -1)
    if ens.shape[:-1] != ref.shape:
        raise ValueError(
            "`ref` must have the shape of `ensemble` without its member axis: got "
            f"`ensemble` {shape} (member_axis={member_axis}) and `ref` {ref.shape}."
        )
    if ens.shape[-1] < min_members:
        raise ValueError(
            f"`ensemble` needs at least {min_members} members, got {ens.shape[-1]}."
        )
    return ens, ref


# ---------------------------------------------------------------------------
# deterministic skill


@eqx.filter_jit
def rmse(pred: ArrayLike, ref: ArrayLike, axis: int | tuple[int, ...] | None = None) -> Array:
    r"""Root-mean-square error $\sqrt{\langle (\hat u - u)^2 \rangle}$.

    **Arguments:**

    - `pred`, `ref`: arrays of the same shape.
    - `axis`: the axes averaged over; `None` (default) averages over everything.

    **Returns:** a 0-d array for `axis=None`, else `pred` with `axis` reduced. NaN
    (e.g. a blown-up rollout) propagates.
    """
    pred, ref = _float(pred), _float(ref)
    _same_shape(pred, ref, "pred", "ref")
    return jnp.sqrt(jnp.mean(jnp.square(pred - ref), axis=axis))


@eqx.filter_jit
def rmse_over_time(
    pred: Float[ArrayLike, "..."],
    ref: Float[ArrayLike, "..."],
    *,
    time_axis: int | None = None,
) -> Float[Array, " T"]:
    r"""RMSE per time, $e(t) = \sqrt{\langle (\hat u - u)^2 \rangle_{b, x}}$, averaged
    over the batch and the state.

    **Arguments:**

    - `pred`, `ref`: `[T, n]` or `[B, T, *state]` (any batch axes before the time axis).
    - `time_axis`: see the module docstring; default 0 for 2-dim inputs, else 1.

    **Returns:** `[T]`.
    """
    pred, ref = _float(pred), _float(ref)
    _same_shape(pred, ref, "pred", "ref")
    ax = _time_axis(pred.ndim, time_axis)
    others = tuple(i for i in range(pred.ndim) if i != ax)
    return jnp.sqrt(jnp.mean(jnp.square(pred - ref), axis=others))


@eqx.filter_jit
def pearson_over_time(
    pred: Float[ArrayLike, "..."],
    ref: Float[ArrayLike, "..."],
    *,
    time_axis: int | None = None,
) -> Float[Array, "*batch T"]:
    r"""Spatial Pearson correlation of each snapshot with the reference,

    $\rho(t) = \frac{\langle \hat u' u' \rangle_x}
    {\sqrt{\langle \hat u'^2 \rangle_x \langle u'^2 \rangle_x}}$, $u' = u - \langle u \rangle_x$,

    over the state axes (every axis after the time axis).

    A constant field has no pattern to correlate: the correlation of two constant
    fields is 1, of a constant and a non-constant field 0 (never NaN). "Constant"
    means a standard deviation below $100\,\epsilon \max|u|$ (roundoff of the mean).
    NaN inputs (blown-up rollouts) give NaN.

    **Arguments:**

    - `pred`, `ref`: `[T, n]` or `[B, T, *state]`, same shape.
    - `time_axis`: see the module docstring; default 0 for 2-dim inputs, else 1.

    **Returns:** `[*batch, T]`, e.g. `[B, T]`.

    **Reference:** D. Kochkov et al., PNAS 118, e2101784118 (2021), Fig. 2.
    """
    pred, ref = _float(pred), _float(ref)
    _same_shape(pred, ref, "pred", "ref")
    ax = _time_axis(pred.ndim, time_axis)
    state = tuple(range(ax + 1, pred.ndim))
    if not state:
        raise ValueError(
            f"`pred` of shape {pred.shape} has no state axes after `time_axis`={ax}."
        )
    dp = pred - jnp.mean(pred, axis=state, keepdims=True)
    dr = ref - jnp.mean(ref, axis=state, keepdims=True)
    vp = jnp.mean(dp * dp, axis=state)
    vr = jnp.mean(dr * dr, axis=state)
    cov = jnp.mean(dp * dr, axis=state)
    eps = jnp.finfo(pred.dtype).eps
    flat_p = jnp.sqrt(vp) <= 100 * eps * jnp.max(jnp.abs(pred), axis=state)
    flat_r = jnp.sqrt(vr) <= 100 * eps * jnp.max(jnp.abs(ref), axis=state)
    denom = jnp.sqrt(jnp.where(flat_p | flat_r, 1.0, vp * vr))
    corr = jnp.clip(cov / denom, -1.0, 1.0)
    corr = jnp.where(flat_p | flat_r, jnp.where(flat_p & flat_r, 1.0, 0.0), corr)
    # NaN/Inf fields fail the "flat" test above; make sure they stay NaN.
    bad = ~(jnp.isfinite(vp) & jnp.isfinite(vr))
    return jnp.where(bad, jnp.nan, corr)


@eqx.filter_jit
def corr_time_per_trajectory(
    pred: Float[ArrayLike, "..."],
    ref: Float[ArrayLike, "..."],
    ts: Float[ArrayLike, " T"],
    threshold: float = 0.95,
    *,
    time_axis: int | None = None,
) -> tuple[Float[Array, "*batch"], Bool[Array, "*batch"]]:
    r"""Decorrelation time of each trajectory: the time $t^* - t_0$ at which the
    pattern correlation $\rho(t)$ (`pearson_over_time`) first drops below `threshold`.

    $t^*$ is interpolated linearly between the last saved time with
    $\rho \ge$ `threshold` and the first with $\rho <$ `threshold` (a NaN correlation,
    i.e. a blow-up, counts as a drop, at the last good time). A trajectory that starts
    below the threshold gets 0. A trajectory that never drops is *censored*: it gets
    the whole window `ts[-1] - ts[0]`, a lower bound of its true decorrelation time.

    **Arguments:**

    - `pred`, `ref`: `[T, n]` or `[B, T, *state]`, same shape.
    - `ts`: `[T]` increasing save times.
    - `threshold`: default 0.95 (Kochkov et al. 2021).
    - `time_axis`: see the module docstring.

    **Returns:** `(times, censored)`, both `[*batch]` (0-d for one trajectory).

    **Reference:** D. Kochkov et al., PNAS 118, e2101784118 (2021).
    """
    pred = _float(pred)
    ax = _time_axis(pred.ndim, time_axis)
    ts = _float(ts)
    if ts.ndim != 1 or ts.shape[0] != pred.shape[ax]:
        raise ValueError(
            f"`ts` must have shape [T] = [{pred.shape[ax]}] (axis {ax} of `pred` "
            f"{pred.shape}), got {ts.shape}."
        )
    corr = pearson_over_time(pred, ref, time_axis=ax)  # [*batch, T]
    below = ~(corr >= threshold)
    dropped = jnp.any(below, axis=-1)
    k = jnp.argmax(below, axis=-1)
    km1 = jnp.maximum(k - 1, 0)
    c_prev = jnp.take_along_axis(corr, km1[..., None], axis=-1)[..., 0]
    c_k = jnp.take_along_axis(corr, k[..., None], axis=-1)[..., 0]
    gap = c_prev - c_k
    frac = jnp.where(
        jnp.isfinite(c_k) & (gap > 0), (c_prev - threshold) / jnp.where(gap > 0, gap, 1.0), 0.0
    )
    frac = jnp.clip(frac, 0.0, 1.0)
    t_cross = ts[km1] + frac * (ts[k] - ts[km1])
    t_cross = jnp.where(k == 0, ts[0], t_cross)
    times = jnp.where(dropped, t_cross, ts[-1]) - ts[0]
    return times, ~dropped


@eqx.filter_jit
def corr_time(
    pred: Float[ArrayLike, "..."],
    ref: Float[ArrayLike, "..."],
    ts: Float[ArrayLike, " T"],
    threshold: float = 0.95,
    *,
    time_axis: int | None = None,
) -> Float[Array, ""]:
    r"""Mean decorrelation time: the time until the pattern correlation with the
    reference first drops below `threshold`, per trajectory, averaged over the batch,
    $\bar t^* = \langle t^*_b - t_0 \rangle_b$.

    Trajectories that never drop count with the whole window `ts[-1] - ts[0]` (equal
    to `ts[-1]` for times starting at 0), so the mean is a lower bound when any is
    censored; `corr_time_per_trajectory` says which.

    **Arguments:** as `corr_time_per_trajectory`.

    **Returns:** a 0-d array, in the units of `ts`.

    **Reference:** D. Kochkov et al., PNAS 118, e2101784118 (2021).
    """
    times, _ = corr_time_per_trajectory(pred, ref, ts, threshold, time_axis=time_axis)
    return jnp.mean(times)


# ---------------------------------------------------------------------------
# probabilistic skill of ensembles


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


@eqx.filter_jit
def spread_and_error(
    ensemble: Float[ArrayLike, " M *shape"],
    ref: Float[ArrayLike, "*shape"],
    member_axis: int = 0,
    *,
    over_time: bool = False,
    time_axis: int | None = None,
) -> tuple[Array, Array]:
    r"""Ensemble spread and ensemble-mean error, the two halves of `spread_skill`:

    $s = \sqrt{\frac{M+1}{M} \langle \sigma^2 \rangle}$ with $\sigma^2$ the members'
    variance (ddof=1), and $e = \sqrt{\langle (\bar x - y)^2 \rangle}$.

    **Arguments:** as `spread_skill`.

    **Returns:** `(spread, error)`, 0-d arrays or `[T]` for `over_time=True`.
    """
    ens, ref = _members_last(ensemble, ref, member_axis, min_members=2)
    m = ens.shape[-1]
    var = jnp.var(ens, axis=-1, ddof=1)
    sq_err = jnp.square(jnp.mean(ens, axis=-1) - ref)
    if over_time:
        ax = _time_axis(ref.ndim, time_axis, "ref")
        axes = tuple(i for i in range(ref.ndim) if i != ax)
    else:
        axes = None
    spread = jnp.sqrt((m + 1) / m * jnp.mean(var, axis=axes))
    error = jnp.sqrt(jnp.mean(sq_err, axis=axes))
    return spread, error


@eqx.filter_jit
def spread_skill(
    ensemble: Float[ArrayLike, " M *shape"],
    ref: Float[ArrayLike, "*shape"],
    member_axis: int = 0,
    *,
    over_time: bool = False,
    time_axis: int | None = None,
) -> Float[Array, "..."]:
    r"""Unbiased spread–skill ratio

    $\mathrm{SSR} = \sqrt{\frac{M+1}{M} \langle \sigma^2 \rangle} \big/
    \sqrt{\langle (\bar x - y)^2 \rangle}$,

    with $\sigma^2$ the members' variance (ddof=1) and $\bar x$ their mean; the
    $\frac{M+1}{M}$ factor makes a calibrated ensemble (reference and members
    exchangeable) score 1 in expectation for any $M$. Below 1: over-confident
    (under-dispersed); above 1: under-confident. Where the error is exactly 0 (e.g.
    the shared initial state at $t_0$) the ratio is NaN.

    **Arguments:**

    - `ensemble`: members along `member_axis` (default 0), $M \ge 2$.
    - `ref`: shaped like `ensemble` without the member axis, e.g. `[B, T, *state]`.
    - `over_time`: per lead time, averaging over every axis of `ref` but its time axis.
    - `time_axis`: the time axis of `ref` (module docstring; default 1, or 0 for
      2-dim `ref`).

    **Returns:** a 0-d array, or `[T]` for `over_time=True`.

    **Reference:** V. Fortin et al., J. Hydrometeorol. 15, 1708 (2014); as in
    WeatherBench 2/X (S. Rasp et al., JAMES 16, e2023MS004019, 2024).
    """
    spread, error = spread_and_error(
        ensemble, ref, member_axis, over_time=over_time, time_axis=time_axis
    )
    return jnp.where(error > 0, spread / jnp.where(error > 0, error, 1.0), jnp.nan)


@eqx.filter_jit
def coverage(
    ensemble: Float[ArrayLike, " M *shape"],
    ref: Float[ArrayLike, "*shape"],
    level: float = 0.9,
    member_axis: int = 0,
    *,
    method: str = "interval",
) -> Float[Array, ""]:
    r"""Fraction of reference values inside the ensemble's central `level` interval.

    - `method="interval"` (default; the definition of `metrics.json`'s `coverage90`):
      $\langle \mathbb 1[q_{(1-\ell)/2} \le y \le q_{(1+\ell)/2}] \rangle$ with $q_p$
      the members' empirical quantiles (linear interpolation, NumPy's default). This
      is the coverage of the interval the ensemble draws; for few members it is biased
      low even for a perfectly calibrated ensemble: the interval cannot reach beyond
      the members' range, which holds an exchangeable $y$ with probability
      $\frac{M-1}{M+1}$ (0.6 for $M=4$), and with linear interpolation the expected
      coverage is about $\ell \frac{M-1}{M+1}$.
    - `method="pit"`: the coverage of the central interval of the forecast's
      probability integral transform. With $r$ the rank of $y$ among the members
      (`rank_histogram`), the PIT is taken uniform on $[\frac{r}{M+1}, \frac{r+1}{M+1}]$
      and the score is the probability that it falls in
      $[\frac{1-\ell}{2}, \frac{1+\ell}{2}]$. For a calibrated ensemble (reference
      and members exchangeable) its expectation is exactly $\ell$ for every $M$, so it
      compares ensembles of different sizes; ties are spread over the tied ranks.

    A calibrated ensemble covers about `level` (exactly, in expectation, for `"pit"`);
    less means over-confident. Points where the reference or any member is not
    finite (a blow-up) count as not covered.

    **Arguments:**

    - `ensemble`: members along `member_axis` (default 0).
    - `ref`: shaped like `ensemble` without the member axis.
    - `level`: in (0, 1), default 0.9.
    - `method`: `"interval"` (default) or `"pit"`.

    **Returns:** a 0-d array in [0, 1].

    **Reference:** PIT and rank histograms: T. Gneiting, F. Balabdaoui, A. E. Raftery,
    J. R. Stat. Soc. B 69, 243 (2007); T. M. Hamill, Mon. Weather Rev. 129, 550 (2001).
    """
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"`level` must be in (0, 1), got {level!r}.")
    if method not in ("interval", "pit"):
        raise ValueError(f"`method` must be 'interval' or 'pit', got {method!r}.")
    ens, ref = _members_last(ensemble, ref, member_axis)
    finite = jnp.isfinite(ref) & jnp.all(jnp.isfinite(ens), axis=-1)
    lo_p, hi_p = (1.0 - level) / 2, (1.0 + level) / 2
    if method == "interval":
        qs = jnp.asarray([lo_p, hi_p], ens.dtype)
        lo, hi = jnp.quantile(ens, qs, axis=-1, method="linear")
        inside = (ref >= lo) & (ref <= hi) & finite
        return jnp.mean(inside.astype(ens.dtype))
    m = ens.shape[-1]
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

    **Returns:** a dict of Python floats: `"crps"` (`crps_fair`), `"spread_skill"`,
    `"coverage50"`, `"coverage90"` (`coverage` at 0.5 and 0.9, empirical intervals),
    `"coverage50_pit"`, `"coverage90_pit"` (`coverage(..., method="pit")`, unbiased
    for any $M$) and `"nll"` (`gaussian_nll`).
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
        "coverage50_pit": float(coverage(ens, ref, 0.5, member_axis, method="pit")),
        "coverage90_pit": float(coverage(ens, ref, 0.9, member_axis, method="pit")),
        "nll": float(gaussian_nll(ens, ref, member_axis)),
    }
