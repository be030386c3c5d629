"""The a-posteriori training loss: unrolled hybrid rollouts against reference windows."""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
import numpy as np
from jaxtyping import Array, PRNGKeyArray

import solvers

from .._hybrid import Hybrid
from ..uq._bayes import draw_dropout_masks, trajectory_target_noise


def _take(tree: Any, i: Array) -> Any:
    return jtu.tree_map(lambda x: x[i] if eqx.is_array(x) and x.ndim else x, tree)


class Windows(eqx.Module):
    """Training data as the loss reads it: arrays on device, nothing static but the
    save interval."""

    ys: Array  # [B, T, *state]
    ts: Array  # [T] absolute save times
    args: Any  # pytree with leading B, or None
    physics: Any  # stack of B systems, or None
    save_dt: float = eqx.field(static=True)


def rollout_loss(
    closure: Any,
    physics: solvers.AbstractSystem,
    data: Windows,
    *,
    key: PRNGKeyArray,
    horizon: int,
    batch_size: int,
    dt: float,
    mode: str,
    scale: Array,
    noise_key: PRNGKeyArray | None = None,
    noise_std: Array | float = 0.0,
    dropout: bool = False,
    penalty: Callable[[Array, Array], Array] | None = None,
    checkpoint_levels: int | None = None,
) -> tuple[Array, Array]:
    r"""Mean over `batch_size` random windows of the normalised rollout error,

    $$L = \frac{1}{h} \sum_{k=1}^{h} \frac{\langle (\hat y_{s+k} - y_{s+k})^2
    \rangle}{\langle y^2 \rangle},\qquad \hat y = \text{solve}(\text{Hybrid}(
    \text{physics}, c_\theta), y_s),$$

    with $h$ = `horizon` saves unrolled through the coarse solver (gradients through
    the whole rollout), plus the mean of `penalty(pred, target)`.

    **Arguments:**

    - `closure`: one member (unstacked).
    - `physics`: the shared coarse physics (replaced by `data.physics[i]` when the
      data carry per-trajectory physics).
    - `data`: `Windows`.
    - `key`: which windows (trajectory, start) and, for MC dropout, their masks.
    - `horizon`, `batch_size`, `dt` (solver step), `mode` (`Hybrid` mode).
    - `scale`: $\langle y^2\rangle$ of the data.
    - `noise_key`, `noise_std`: the member's fixed target perturbation
      (randomize-then-optimize): $y + \sigma\xi$ with $\xi$ a function of (member,
      trajectory, save index) only.
    - `dropout`: draw a channel-dropout mask per window.
    - `penalty`: `(pred [h, *state], target [h, *state]) -> scalar`, added.
    - `checkpoint_levels`: for `solvers.solve` (default automatic).

    **Returns:** `(mse, penalty)`, both 0-d.
    """
    n_traj, n_t = data.ys.shape[:2]
    rel_ts = np.arange(horizon + 1) * data.save_dt

    def window(k):
        ki, ks, kd = jr.split(k, 3)
        i = jr.randint(ki, (), 0, n_traj)
        s = jr.randint(ks, (), 0, n_t - horizon)
        y_i = data.ys[i]
        target = jax.lax.dynamic_slice_in_dim(y_i, s + 1, horizon, axis=0)
        if noise_key is not None:
            target = target + trajectory_target_noise(
                noise_key, i, s + 1 + jnp.arange(horizon), target.shape[1:], noise_std,
                target.dtype)
        phys = physics if data.physics is None else _take(data.physics, i)
        args = None if data.args is None else _take(data.args, i)
        member = draw_dropout_masks(closure, key=kd) if dropout else closure
        model = Hybrid(phys, member, mode=mode)
        sol = solvers.solve(model, y_i[s], rel_ts, dt=dt, t_offset=data.ts[s], throw=False,
                            args=args, checkpoint_levels=checkpoint_levels)
        pred = sol.ys[1:]
        mse = jnp.mean((pred - target) ** 2) / scale
        extra = jnp.zeros((), mse.dtype) if penalty is None else penalty(pred, target)
        return mse, extra

    mse, extra = jax.vmap(window)(jr.split(key, batch_size))
    return jnp.mean(mse), jnp.mean(extra)
