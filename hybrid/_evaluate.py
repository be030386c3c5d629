"""`evaluate`: a-posteriori scores of an ensemble on held-out trajectories."""

from typing import Any

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import PRNGKeyArray

import solvers

from . import _checks
from . import metrics as M
from ._ensemble import Ensemble, check_batched
from ._keys import stream
from .data import Trajectories


def _summary(pred, ref, ts) -> dict[str, float]:
    return {"rmse": float(M.rmse(pred, ref)), "corr_time": float(M.corr_time(pred, ref, ts))}


def uq_block(ens_ys, ref) -> dict[str, Any]:
    """The probabilistic scores of an ensemble forecast `[M, B, T, *state]` against
    `ref` `[B, T, *state]` over the lead times after the shared initial state:
    `crps`, `spread_skill`, `coverage90` and `coverage50` (the predictive interval,
    `metrics.coverage`), `pit_coverage90` / `pit_coverage50`, `nll`, `spread` (the
    members' standard deviation, rms), the rmse of the ensemble mean and of single
    members, and the spread–skill ratio per lead time."""
    ens, r = ens_ys[:, :, 1:], ref[:, 1:]
    if ens.shape[0] < 2:
        # one member: its CRPS is its mean absolute error; no spread to score
        return {"crps": float(M.crps(ens, r, fair=False)), "spread_skill": None,
                "coverage90": None, "coverage50": None, "pit_coverage90": None, "spread": 0.0,
                "pit_coverage50": None, "nll": None,
                "ensemble_mean_rmse": float(M.rmse(ens[0], r)),
                "member_rmse": float(M.rmse(ens[0], r)), "spread_skill_over_time": None}
    out = dict(M.uq_summary(ens, r))
    out["spread"] = float(M.spread_and_error(ens, r)[0])
    out["ensemble_mean_rmse"] = float(M.rmse(jnp.mean(ens, axis=0), r))
    out["member_rmse"] = float(np.mean([float(M.rmse(e, r)) for e in ens]))
    out["spread_skill_over_time"] = [
        float(x) for x in np.asarray(M.spread_skill(ens_ys, ref, over_time=True))]
    return out


@eqx.filter_jit
def _physics_rollouts(physics, y0s, ts, dt, t0s, args, batched):
    def one(p, y0, t0, a):
        sol = solvers.solve(p, y0, np.asarray(ts), dt=dt, t_offset=t0, throw=False, args=a)
        return sol.ys, sol.blowup_index

    in_axes = (eqx.if_array(0) if batched else None, 0, 0,
               None if args is None else eqx.if_array(0))
    return eqx.filter_vmap(one, in_axes=in_axes)(physics, y0s, t0s, args)


def closure_helps(hybrid_rmse: float, physics_rmse: float) -> bool:
    """Whether the hybrid is more accurate than the physics alone: a finite rmse below
    the physics' (a physics that blows up, rmse NaN or inf, is beaten by any finite
    forecast)."""
    return bool(np.isfinite(hybrid_rmse) and not hybrid_rmse >= physics_rmse)


def physics_rollouts(physics, test: Trajectories, *, dt: float):
    """The physics alone (no closure) from every initial state of `test`, with each
    trajectory's own physics and args when `test` carries them: `(ys [B, T, *state],
    blowup_index [B])`."""
    batched = test.physics is not None
    phys = test.physics if batched else physics
    ts = tuple(float(t) for t in np.asarray(test.ts - test.ts[0]))
    t0s = jnp.broadcast_to(test.ts[0], (len(test),))
    return _physics_rollouts(phys, test.ys[:, 0], ts, float(dt), t0s, test.args, batched)


def evaluate(
    ensemble: Ensemble,
    test: Trajectories,
    *,
    dt: float,
    key: PRNGKeyArray,
    return_rollouts: bool = False,
) -> dict[str, Any] | tuple[dict[str, Any], dict[str, Any]]:
    r"""A-posteriori scores of `ensemble` on held-out trajectories: every member and
    the physics alone rolled out from each `test.ys[:, 0]` over all of `test.ts`.

    **Returns:** a dict with the blocks of `metrics.json`:

    - `hybrid`: `rmse` and `corr_time` (time until the pattern correlation with the
      reference drops below 0.95) of the ensemble mean of the deterministic members;
      `member_rmse`, `member_corr_time` (the average over single members: what one
      network costs and achieves); `blowups`.
    - `baseline`: the same for the physics alone (no closure).
    - `uq`: the probabilistic forecast as `ensemble.rollout` makes it (stochastic term
      with its own noise path per member and trajectory, spread inflation): `crps`,
      `spread_skill`, `coverage90`, ... (`uq_block`).
    - `uq_members_only`: the same scores of the deterministic members alone.
    - `closure_helps`: whether the ensemble mean beats the physics alone by rmse
      (`closure_helps`).

    `return_rollouts=True` also returns the rollouts (`members`, `forecast`
    `[M, B, T, *state]`, `baseline` `[B, T, *state]`, `reference`, `ts`) for figures.
    """
    if not isinstance(ensemble, Ensemble):
        raise ValueError(f"`ensemble` must be a hybrid.Ensemble, got {type(ensemble).__name__}.")
    if not isinstance(test, Trajectories):
        raise ValueError(f"`test` must be hybrid.Trajectories, got {type(test).__name__}.")
    dt = _checks.positive_float(dt, "dt")
    key = _checks.prng_key(key)
    if test.physics is not None:
        check_batched(test.physics, len(test), "test.physics")
    ref = test.ys
    ts_rel = np.asarray(test.ts - test.ts[0], np.float64)
    common = dict(dt=dt, args=test.args, physics=test.physics, t0=test.ts[0])
    members = ensemble.solve_batch(ref[:, 0], ts_rel, key=None, stochastic=False,
                                   calibrated=False, **common)
    forecast = ensemble.solve_batch(ref[:, 0], ts_rel, key=stream(key, "test_rollouts"),
                                    **common).ys
    base_ys, base_blow = physics_rollouts(ensemble.physics, test, dt=dt)
    ens_ys = members.ys
    hybrid = _summary(jnp.mean(ens_ys, axis=0), ref, ts_rel)
    singles = [_summary(e, ref, ts_rel) for e in ens_ys]
    hybrid["member_rmse"] = float(np.mean([s["rmse"] for s in singles]))
    hybrid["member_corr_time"] = float(np.mean([s["corr_time"] for s in singles]))
    hybrid["blowups"] = int(jnp.sum(members.blowup_index >= 0))
    baseline = _summary(base_ys, ref, ts_rel)
    baseline["blowups"] = int(jnp.sum(base_blow >= 0))
    results: dict[str, Any] = {
        "members": ensemble.size,
        "n_test": len(test),
        "eval_time": float(ts_rel[-1]),
        "hybrid": hybrid,
        "baseline": baseline,
        "uq": uq_block(forecast, ref),
        "uq_members_only": uq_block(ens_ys, ref),
        "closure_helps": closure_helps(hybrid["rmse"], baseline["rmse"]),
    }
    results["uq"].update(
        method=ensemble.method,
        stochastic_closure=None if ensemble.noise is None else type(ensemble.noise).__name__,
        inflation=1.0 if ensemble.inflation is None else float(ensemble.inflation),
    )
    if not return_rollouts:
        return results
    rollouts = {"members": ens_ys, "forecast": forecast, "baseline": base_ys,
                "reference": ref, "ts": ts_rel}
    return results, rollouts
