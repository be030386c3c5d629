r"""`calibrate`: the uncertainty a trained ensemble adds after training, fitted on
validation trajectories the members never saw.

1. **Stochastic closure term**: additive noise $\sigma_\phi(y) \odot dW$ whose amplitude
   is fitted by maximum likelihood on the members' residuals over `noise_fit_steps`
   save intervals of the validation windows (`fit_noise`).
2. **Spread inflation**: one factor $\alpha$ on the members' deviations from their
   mean (`fit_spread_inflation`), fitted on rollouts of the validation trajectories
   over their whole length, so that the unbiased spread–skill ratio is 1 there.
3. **Selection**: each layer is kept only if it lowers the validation CRPS (a proper
   score): the calibrated forecast never scores worse than the raw members on the
   data it was chosen on.
"""

import warnings
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jaxtyping import PRNGKeyArray

import solvers

from .. import _checks
from .. import metrics as M
from .._keys import stream
from ..data import Trajectories
from ._calibration import fit_spread_inflation
from ._stochastic import (
    AbstractNoise,
    DiagonalNoise,
    StateDependentNoise,
    fit_noise,
    gradient_magnitude,
    noise_parameters,
)

# residual windows pooled for the noise fit, at most (memory and time bound), and
# windows rolled out per compiled call
_MAX_WINDOWS = 4096
_WINDOW_CHUNK = 512


def _take(tree: Any, index: Any) -> Any:
    return jtu.tree_map(lambda x: x[index] if eqx.is_array(x) and x.ndim else x, tree)


def _members(ensemble):
    """The members alone: no stochastic term, no inflation."""
    return type(ensemble)(ensemble.members, ensemble.physics, ensemble.mode, ensemble.method,
                          ensemble.realisations)


def _mean_networks(ensemble):
    """The trained networks as deterministic members: for MC dropout the one network
    without masks (the mean network of inverted dropout), whose residuals the
    stochastic term models."""
    if ensemble.method != "mc-dropout":
        return _members(ensemble)
    return type(ensemble)(ensemble.members, ensemble.physics, ensemble.mode, "deep")


@eqx.filter_jit
def _residual_chunk(ens, y0s, t0s, targets, args, physics, interval, dt):
    rel = np.array([0.0, interval])

    def one(system, y0, t0, *a, key):
        sol = solvers.solve(system, y0, rel, dt=dt, t_offset=t0, throw=False,
                            args=a[0] if a else None, key=key)
        return sol.ys[-1]

    xs = (y0s, t0s) if args is None else (y0s, t0s, args)
    pred = ens.map(one, *xs, physics=physics, stochastic=False)
    return targets[None] - pred


def residuals(
    ensemble: Any,
    data: Trajectories,
    *,
    dt: float,
    steps: int = 1,
    max_windows: int = _MAX_WINDOWS,
    key: PRNGKeyArray | None = None,
) -> tuple[jax.Array, jax.Array, float]:
    r"""Residuals of every deterministic member over `steps` save intervals,
    $r = y_{i,s+k} - \Phi_{k\Delta}(y_{i,s})$, from (a random subset of at most
    `max_windows`) windows of `data`. **Returns:** `(states, residuals, interval)`,
    `[M * W, *state]` each (member-major), and $k\Delta$."""
    n_traj, n_t = data.ys.shape[:2]
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps < n_t:
        raise ValueError(f"`noise_fit_steps` must be an int in [1, {n_t}), got {steps!r}.")
    windows = np.stack(np.meshgrid(np.arange(n_traj), np.arange(n_t - steps), indexing="ij"),
                       -1).reshape(-1, 2)
    if len(windows) > max_windows:
        seed = _checks.key_data(key) if key is not None else [0]
        rng = np.random.default_rng(seed)
        windows = windows[np.sort(rng.choice(len(windows), max_windows, replace=False))]
    det = _mean_networks(ensemble)
    interval = steps * data.save_dt
    out = []
    for c in range(0, len(windows), _WINDOW_CHUNK):
        w = windows[c: c + _WINDOW_CHUNK]
        i, s = jnp.asarray(w[:, 0]), jnp.asarray(w[:, 1])
        res = _residual_chunk(det, data.ys[i, s], data.ts[s], data.ys[i, s + steps],
                              _take(data.args, i), _take(data.physics, i), interval,
                              float(dt))
        out.append(res)
    res = jnp.concatenate(out, axis=1)  # [M, W, *state]
    m = res.shape[0]
    states = jnp.broadcast_to(data.ys[windows[:, 0], windows[:, 1]][None], res.shape)
    flat = (m * len(windows),) + tuple(res.shape[2:])
    return states.reshape(flat), res.reshape(flat), interval


def noise_template(kind: str, physics: Any, state_shape: tuple[int, ...],
                   features=None, sigma0: float = 1.0) -> AbstractNoise | None:
    """An unfitted noise model of `kind`: `"none"`, `"diagonal"` (one amplitude),
    `"state"` ($\\log\\sigma$ linear in `features` of the state, default the gradient
    magnitude of a periodic grid field) or `"auto"` (`"state"` for spectral physics
    or given `features`, `"diagonal"` otherwise)."""
    if kind == "auto":
        grid = isinstance(_core(physics), solvers.AbstractSpectralSystem)
        kind = "state" if features is not None or grid else "diagonal"
    if kind == "none":
        return None
    if kind == "diagonal":
        return DiagonalNoise(jnp.asarray(np.log(sigma0), jnp.result_type(float)))
    features = gradient_magnitude if features is None else features
    return StateDependentNoise.init(sigma0, features=features)


def _core(physics):
    # the known physics under wrappers (Hybrid, task models holding `.physics`)
    while not isinstance(physics, solvers.AbstractSpectralSystem) and isinstance(
            getattr(physics, "physics", None), solvers.AbstractSystem):
        physics = physics.physics
    return physics


def _scores(ys, ref) -> dict[str, float]:
    return M.uq_summary(ys[:, :, 1:], ref[:, 1:])


def _closure_check(ensemble, val: Trajectories, dt: float, members) -> dict[str, Any]:
    """The members' mean against the physics alone on the validation set (rmse over
    the saves after the first), with a warning if the closure does not help."""
    from .._evaluate import closure_helps, physics_rollouts

    ref = val.ys[:, 1:]
    physics, _ = physics_rollouts(ensemble.physics, val, dt=dt)
    hybrid_rmse = float(M.rmse(jnp.mean(members, axis=0)[:, 1:], ref))
    physics_rmse = float(M.rmse(physics[:, 1:], ref))
    helps = closure_helps(hybrid_rmse, physics_rmse)
    if not helps:
        warnings.warn(
            f"hybrid.calibrate: on the validation set the ensemble mean (rmse "
            f"{hybrid_rmse:.4g}) is no better than the physics alone (rmse "
            f"{physics_rmse:.4g}): the closure does harm here. Train on more (or less "
            "noisy) data, or forecast with the physics alone.", stacklevel=3)
    return {"rmse": hybrid_rmse, "physics_rmse": physics_rmse, "closure_helps": helps}


def calibrate(
    ensemble: Any,
    val: Trajectories,
    *,
    dt: float,
    key: PRNGKeyArray,
    stochastic: str = "auto",
    features: Any = None,
    noise_fit_steps: int = 1,
    inflation: bool = True,
    select: bool = True,
    max_windows: int = _MAX_WINDOWS,
    return_info: bool = False,
) -> Any:
    r"""Fit the stochastic closure term and the spread calibration of a trained
    ensemble on validation trajectories (never the test set).

    **Arguments:**

    - `ensemble`: a trained `hybrid.Ensemble` (`hybrid.fit`).
    - `val`: `hybrid.Trajectories` the members were not trained on, with their
      `args` / `physics` as for training.
    - `dt`: the solver step; `key`: window subsampling and the noise paths.
    - `stochastic`: `"auto"` (default), `"state"`, `"diagonal"` or `"none"`: the
      noise model (`noise_template`); `features`: `y -> [F, *y.shape]` for `"state"`.
    - `noise_fit_steps`: save intervals per residual (1: one-step residuals).
    - `inflation`: fit the spread inflation.
    - `select`: keep a layer only if it lowers the validation CRPS.
    - `max_windows`: residual windows used, at most.
    - `return_info`: also return a dict of what was fitted and the validation scores
      of every candidate (what `uq.json` holds), and `closure_check`: the rmse of
      the members' mean and of the physics alone on the validation set.

    **Returns:** the calibrated ensemble (its `rollout` adds the noise when given a
    `key`, and applies the inflation), or `(ensemble, info)` with `return_info`.

    **Warns** (`UserWarning`) when the members' mean is no better than the physics
    alone on the validation set: the closure does harm there (too little data, or
    observational noise that the training chased), and a forecast from the physics
    alone would be better.
    """
    if not isinstance(val, Trajectories):
        raise ValueError(f"`val` must be hybrid.Trajectories, got {type(val).__name__}.")
    dt = _checks.positive_float(dt, "dt")
    key = _checks.prng_key(key)
    _checks.choice(stochastic, "stochastic", ("auto", "state", "diagonal", "none"))
    if len(val) < 1 or val.ys.shape[1] < 3:
        raise ValueError("`val` needs at least one trajectory of at least 3 saves.")
    physics = ensemble.physics if val.physics is None else val.physics
    template = noise_template(stochastic, physics, val.state_shape, features)
    info: dict[str, Any] = {"stochastic_closure": "none" if template is None else
                            type(template).__name__, "noise_fit_steps": noise_fit_steps}
    base = _members(ensemble)
    noise = None
    if template is not None:
        states, res, interval = residuals(ensemble, val, dt=dt, steps=noise_fit_steps,
                                          max_windows=max_windows,
                                          key=stream(key, "noise_fit"))
        ok = jnp.all(jnp.isfinite(res.reshape(res.shape[0], -1)), axis=1)
        states, res = states[ok], res[ok]
        if states.shape[0] == 0:
            raise ValueError("every residual window of the ensemble blew up: no noise fit.")
        if isinstance(template, StateDependentNoise):
            sigma0 = float(jnp.sqrt(jnp.mean(res**2) / interval))
            template = StateDependentNoise.init(sigma0, features=template.features)
        noise = fit_noise(template, states, res, interval)

    ts_rel = np.asarray(val.ts - val.ts[0], np.float64)
    ref = val.ys
    k_roll = stream(key, "validation_rollouts")

    def rollout(ens):
        return ens.solve_batch(ref[:, 0], ts_rel, dt=dt, key=k_roll, args=val.args,
                               physics=val.physics, t0=val.ts[0], calibrated=False).ys

    candidates = {"members": (base, rollout(base))}
    if noise is not None:
        with_noise = eqx.tree_at(lambda e: e.noise, base, noise, is_leaf=lambda x: x is None)
        candidates["stochastic"] = (with_noise, rollout(with_noise))
    if inflation:
        for name in list(candidates):
            ens, ys = candidates[name]
            alpha = fit_spread_inflation(ys[:, :, 1:], ref[:, 1:])
            alpha = jnp.where(jnp.isfinite(alpha), alpha, 1.0)
            inflated = eqx.tree_at(lambda e: e.inflation, ens, alpha,
                                   is_leaf=lambda x: x is None)
            mean = jnp.mean(ys, axis=0, keepdims=True)
            candidates[name + "+inflation"] = (inflated, mean + alpha * (ys - mean))
    scores = {name: _scores(ys, ref) for name, (_, ys) in candidates.items()}
    info["validation"] = scores
    info["closure_check"] = _closure_check(ensemble, val, dt, candidates["members"][1])
    if select:
        chosen = min(scores, key=lambda n: scores[n]["crps"])
    else:
        chosen = max(candidates, key=len)  # every layer
    result = candidates[chosen][0]
    info["selected"] = chosen
    info["inflation"] = 1.0 if result.inflation is None else float(result.inflation)
    info["noise"] = None if result.noise is None else noise_parameters(result.noise)
    info["noise_fitted"] = noise is not None
    return (result, info) if return_info else result
