"""Deterministic skill of rollouts: rmse, pattern correlation and the decorrelation
time (Kochkov et al. 2021)."""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Bool, Float

from ._common import _float, _same_shape, _time_axis


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


