r"""Post-hoc spread calibration of an ensemble: one inflation factor fitted on
validation rollouts, as operational weather ensembles do.

This is *not* part of the Bayesian approximation: it rescales the members' deviations
from their mean after the fact, $x_m \mapsto \bar x + \alpha (x_m - \bar x)$, so the
ensemble mean (and its error) is unchanged and only the spread moves. Fit $\alpha$ on
validation data, never on the data it is then scored on, and report scores with and
without it.
"""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from ..metrics import _common
from ..metrics._probabilistic import _moments


@eqx.filter_jit
def fit_spread_inflation(
    ensemble: Float[ArrayLike, " M *shape"],
    ref: Float[ArrayLike, "*shape"],
    member_axis: int = 0,
    *,
    over_time: bool = False,
    time_axis: int | None = None,
) -> Float[Array, "..."]:
    r"""The inflation that makes the unbiased spread–skill ratio 1 on `(ensemble, ref)`.

    Inflating the deviations from the mean by $\alpha$ multiplies the members'
    variance $V = \langle\sigma^2\rangle$ by $\alpha^2$ and leaves the mean and its
    squared error $E = \langle(\bar x - y)^2\rangle$ unchanged, so
    `metrics.spread_skill` $= 1$ at $\alpha^2 V = E - \alpha^2 V / M$:
    $\alpha = \sqrt{E / ((1 + 1/M) V)}$.

    **Arguments:** as `metrics.spread_skill`: `ensemble` with members along
    `member_axis` ($M \ge 2$), `ref`; `over_time=True` fits one factor per lead time
    (along `ref`'s `time_axis`).

    **Returns:** a 0-d array, or `[T]` for `over_time=True`; 1 where the spread is 0
    (e.g. the shared initial state), where no factor can help.
    """
    var, sq_err, m = _moments(ensemble, ref, member_axis, over_time, time_axis)
    alpha = jnp.sqrt(sq_err / ((1.0 + 1.0 / m) * jnp.where(var > 0, var, 1.0)))
    return jnp.where(var > 0, alpha, 1.0)


@eqx.filter_jit
def inflate_spread(
    ensemble: Float[ArrayLike, " M *shape"],
    factor: Float[ArrayLike, "..."],
    member_axis: int = 0,
    *,
    time_axis: int | None = None,
) -> Float[Array, " M *shape"]:
    r"""$x_m \mapsto \bar x + \alpha (x_m - \bar x)$: the ensemble with its spread
    scaled by `factor` about the unchanged ensemble mean.

    **Arguments:**

    - `ensemble`: members along `member_axis` (default 0).
    - `factor`: 0-d, or `[T]` per lead time (from `fit_spread_inflation(...,
      over_time=True)`), applied along the time axis of the ensemble *without* its
      member axis (`time_axis`, default as in `_metrics`: 1, or 0 for 2-dim states).

    **Returns:** an array of `ensemble`'s shape.
    """
    ens = jnp.asarray(ensemble)
    ens = ens if jnp.issubdtype(ens.dtype, jnp.inexact) else ens.astype(jnp.result_type(float))
    if not -ens.ndim <= member_axis < ens.ndim:
        raise ValueError(
            f"`member_axis` {member_axis} is out of range for `ensemble` of shape {ens.shape}."
        )
    moved = jnp.moveaxis(ens, member_axis, 0)
    factor = jnp.asarray(factor, moved.dtype)
    if factor.ndim == 1:
        ax = _common._time_axis(moved.ndim - 1, time_axis, "ensemble")
        if factor.shape[0] != moved.shape[1 + ax]:
            raise ValueError(
                f"`factor` has {factor.shape[0]} lead times, the ensemble {moved.shape[1 + ax]} "
                f"(axis {ax} without the member axis)."
            )
        factor = factor.reshape((-1,) + (1,) * (moved.ndim - 2 - ax))
    elif factor.ndim != 0:
        raise ValueError(f"`factor` must be 0-d or [T], got shape {factor.shape}.")
    mean = jnp.mean(moved, axis=0, keepdims=True)
    out = mean + factor * (moved - mean)
    return jnp.moveaxis(out, 0, member_axis)
