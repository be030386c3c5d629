"""Observational noise on reference data: what a model trained on measurements, not
on a simulation, sees."""

from typing import Literal

import jax.numpy as jnp
import jax.random as jr
from jaxtyping import PRNGKeyArray

from ._trajectories import Trajectories

KINDS = ("gaussian", "lognormal")


def observe(data: Trajectories, level: float, *, key: PRNGKeyArray,
            kind: Literal["gaussian", "lognormal"] = "gaussian") -> Trajectories:
    r"""`data` seen through observational noise of relative level $\eta$ = `level`:

    - `"gaussian"`: additive, $\tilde y = y + \eta\, \sigma_y \xi$ with $\sigma_y$ the
      rms of `data.ys` and $\xi \sim \mathcal N(0, 1)$ independent per value;
    - `"lognormal"`: multiplicative, as in ROMA's noisy data sets,
      $\tilde y = y\, e^{\eta \xi - \eta^2 / 2}$ (mean-preserving: $E[\tilde y] = y$),
      which leaves zeros and signs alone and scales with each value.

    Everything else (`ts`, `args`, `physics`) is kept; `level=0` returns `data`.

    **Returns:** `Trajectories`.
    """
    if kind not in KINDS:
        raise ValueError(f"`kind` must be one of {KINDS}, got {kind!r}.")
    if not (isinstance(level, (int, float)) and level >= 0):
        raise ValueError(f"`level` must be a number >= 0, got {level!r}.")
    if level == 0:
        return data
    ys = data.ys
    xi = jr.normal(key, ys.shape, ys.dtype)
    if kind == "gaussian":
        noisy = ys + level * jnp.sqrt(jnp.mean(ys**2)) * xi
    else:
        noisy = ys * jnp.exp(level * xi - 0.5 * level**2)
    return Trajectories(noisy, data.ts, args=data.args, physics=data.physics)
