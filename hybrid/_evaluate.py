"""A-posteriori evaluation on held-out trajectories: the hybrid ensemble against the
no-closure coarse solver and the plain solver at 2x, 4x, 8x the resolution."""

import json
import time
from pathlib import Path
from typing import Any

import equinox as eqx
import jax.numpy as jnp
import numpy as np

import solvers

from . import _metrics as M
from ._calibration import inflate_spread
from ._config import Config
from ._data import test_data
from ._ensemble import Ensemble
from ._task import AbstractTask, make_task
from ._train import load_ensemble
from ._uq import ensemble_rollouts, load_uncertainty


def _rollouts(physics_b, y0_b, ts_rel, t0, dt, **kw):
    """Solve a batch of (system, y0) pairs: `[B, T, *state]` and blow-up indices."""

    def one(system, y0):
        sol = solvers.solve(system, y0, ts_rel, dt=dt, t_offset=t0, throw=False, **kw)
        return sol.ys, sol.blowup_index

    return eqx.filter_jit(eqx.filter_vmap(one))(physics_b, y0_b)


def _ensemble_rollouts(ens: Ensemble, physics_b, y0_b, ts_rel, t0, dt, task, *, noise=None,
                       key=None):
    """`[M, B, T, *state]` and blow-up indices `[M, B]`: every member (MC-dropout
    masks and noise paths drawn per member and trajectory) from every initial state;
    deterministic unless the fitted stochastic term `noise` is given."""
    return ensemble_rollouts(task.cfg, task, ens.members, physics_b, y0_b, ts_rel, t0,
                             noise=noise, key=key, dt=dt)


def _uq_block(ens_ys, ref) -> dict[str, Any]:
    """The `uq` scores of an ensemble `[M, B, T, *state]`, lead times after the
    shared initial state. `coverage90`/`coverage50` are the unbiased (PIT) estimates
    of the fraction of reference values inside the ensemble's central 90%/50%
    interval; the plain count between order statistics, biased low by about
    (M-1)/(M+1) for M members (0.56 instead of 0.9 for a calibrated 4-member
    ensemble), is kept as `coverage90_interval`."""
    s = {k: float(v) for k, v in M.uq_summary(ens_ys, ref, skip_initial=True).items()}
    out = {
        "crps": s["crps"],
        "spread_skill": s["spread_skill"],
        "coverage90": s["coverage90_pit"],
        "coverage50": s["coverage50_pit"],
        "coverage90_interval": s["coverage90"],
        "coverage50_interval": s["coverage50"],
        "nll": s["nll"],
        "ensemble_mean_rmse": float(M.rmse(jnp.mean(ens_ys[:, :, 1:], axis=0), ref[:, 1:])),
        "member_rmse": float(np.mean([M.rmse(e[:, 1:], ref[:, 1:]) for e in ens_ys])),
    }
    spread_t = M.spread_skill(ens_ys, ref, over_time=True)
    out["spread_skill_over_time"] = [float(x) for x in np.asarray(spread_t)]
    return out


def held_out(task: Any, cfg: Config, out: Path, *, progress: bool = True):
    """The held-out test set over `eval_horizon` saves, as every score of a run uses it.

    **Returns:** `(ys_fine, ts_rel, t0, fine, ref, coarse)`: the fine trajectories
    `[B, T, *fine_state]`, the save times from 0, the first save time, the stacked fine
    physics, the reference filtered to `coarse_n` `[B, T, *state]` and the stacked
    coarse physics.
    """
    ys_fine, ts_abs, fine = test_data(task, out, cfg.eval_horizon * cfg.save_dt,
                                      progress=progress)
    ys_fine = ys_fine[:, : cfg.eval_horizon + 1]
    ts_abs = ts_abs[: cfg.eval_horizon + 1]
    ts_rel = np.asarray(ts_abs - ts_abs[0], np.float64)
    ref = task.coarse_grain(ys_fine, cfg.coarse_n)
    coarse = eqx.filter_vmap(lambda f: task.coarse_physics(f, cfg.coarse_n))(fine)
    return ys_fine, ts_rel, ts_abs[0], fine, ref, coarse


def _summary(pred, ref, ts) -> dict[str, float]:
    return {
        "rmse": float(M.rmse(pred, ref)),
        "corr_time": float(M.corr_time(pred, ref, ts)),
    }


def _stability(task: AbstractTask, cfg: Config, ens, physics_b, y0_b, t0, ref_energy,
               reference=None):
    """Rollouts `stability_factor` x the training horizon (`hybrid.stability` through
    `_stability.run_stability`): blow-up (NaN/Inf, or energy above 10x `ref_energy`)
    at the exact step, energy and enstrophy drift, spectrum departure and, against the
    `reference` trajectories `[B, T, *state]` when given, corr_time.

    **Returns:** the `stability` block of `metrics.json` (`StabilityReport.to_dict`):
    `stable`, `horizon_steps`, `blowup_step`, `energy_bound`, `max_energy`,
    `energy_drift`, and the richer diagnostics."""
    from ._stability import run_stability

    report = run_stability(task, cfg, ens, physics_b, y0_b, t0, ref_energy,
                           reference=reference)
    return report.to_dict()


def evaluate(out: str | Path, *, progress: bool = True, figures: bool = True) -> dict[str, Any]:
    """Evaluate the run in `out` a posteriori and write `out/metrics.json` (API.md),
    figures, and `out/report.md`. **Returns:** the metrics dict."""
    out = Path(out)
    cfg, ens = load_ensemble(out)
    task = make_task(cfg)
    t_start = time.perf_counter()
    ys_fine, ts_rel, t0, fine, ref, coarse = held_out(task, cfg, out, progress=progress)
    y0 = ref[:, 0]

    ens_ys, ens_blow = _ensemble_rollouts(ens, coarse, y0, ts_rel, t0, cfg.dt, task)
    hyb_mean = jnp.mean(ens_ys, axis=0)
    base_ys, base_blow = _rollouts(coarse, y0, ts_rel, t0, cfg.dt)
    results: dict[str, Any] = {
        "system": cfg.system,
        "coarse_n": cfg.coarse_n,
        "fine_n": cfg.fine_n,
        "members": cfg.members,
        "eval_horizon": cfg.eval_horizon,
        "eval_time": float(ts_rel[-1]),
        "n_test": int(ref.shape[0]),
        "hybrid": _summary(hyb_mean, ref, ts_rel),
        "baseline": _summary(base_ys, ref, ts_rel),
    }
    results["hybrid"]["member_rmse"] = float(
        np.mean([M.rmse(ens_ys[m], ref) for m in range(ens_ys.shape[0])])
    )
    results["hybrid"]["blowups"] = int(jnp.sum(ens_blow >= 0))
    results["baseline"]["blowups"] = int(jnp.sum(base_blow >= 0))

    curves = {"hybrid (ensemble mean)": M.rmse_over_time(hyb_mean, ref),
              "coarse, no closure": M.rmse_over_time(base_ys, ref)}
    finer: dict[str, Any] = {}
    for factor in (2, 4, 8):
        n = cfg.coarse_n * factor
        if n > cfg.fine_n or task.ndim == 0:
            continue
        phys_n = eqx.filter_vmap(lambda f, n=n: task.coarse_physics(f, n))(fine)
        y0_n = task.coarse_grain(ys_fine[:, 0], n)
        dt_n = cfg.dt / factor
        ys_n, blow_n = _rollouts(phys_n, y0_n, ts_rel, t0, dt_n)
        ys_n = task.coarse_grain(ys_n, cfg.coarse_n)
        finer[f"{factor}x"] = {"n": n, **_summary(ys_n, ref, ts_rel),
                               "blowups": int(jnp.sum(blow_n >= 0))}
        curves[f"plain solver {factor}x (n={n})"] = M.rmse_over_time(ys_n, ref)
    results["finer"] = finer
    matched = [int(k[:-1]) for k, v in finer.items() if v["rmse"] >= results["hybrid"]["rmse"]]
    results["equivalent_resolution_factor"] = max(matched) if matched else 1
    results["rmse_ratio_vs_baseline"] = results["hybrid"]["rmse"] / results["baseline"]["rmse"]

    # The probabilistic forecast: the members with the fitted stochastic term, their
    # spread scaled by the inflation fitted on the validation set (uq.json).
    noise, alpha = load_uncertainty(out, cfg, task.ndim)
    prob_ys = ens_ys
    if noise is not None:
        prob_ys, _ = _ensemble_rollouts(ens, coarse, y0, ts_rel, t0, cfg.dt, task, noise=noise)
    calibrated = inflate_spread(prob_ys, alpha) if alpha != 1.0 else prob_ys
    results["uq"] = _uq_block(calibrated, ref)
    results["uq"].update(stochastic_closure=cfg.stochastic_closure, inflation=alpha,
                         ensemble=cfg.ensemble)
    results["uq_uncalibrated"] = _uq_block(prob_ys, ref)
    results["uq_members_only"] = _uq_block(ens_ys, ref)

    train_energy = float(jnp.max(task.energy(ref)))
    results["stability"] = _stability(task, cfg, ens, coarse, y0, t0, train_energy,
                                        reference=ref)
    results["eval_seconds"] = time.perf_counter() - t_start
    (out / "metrics.json").write_text(json.dumps(results, indent=2) + "\n")
    if figures:
        from ._report import write_report
        from ._uq_figures import write_uq_figures

        extra = write_uq_figures(out, np.asarray(calibrated), np.asarray(ref), ts_rel)
        write_report(out, cfg, task, results, ts_rel, ref, ens_ys, base_ys, curves,
                     extra_figures=extra)
    return results
