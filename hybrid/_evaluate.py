"""A-posteriori evaluation on held-out trajectories: the hybrid ensemble against the
no-closure coarse solver and the plain solver at 2x, 4x, 8x the resolution."""

import json
import time
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import solvers

from . import _metrics as M
from ._config import Config
from ._data import test_data
from ._ensemble import Ensemble
from ._task import AbstractTask, make_task
from ._train import load_ensemble


def _rollouts(physics_b, y0_b, ts_rel, t0, dt, **kw):
    """Solve a batch of (system, y0) pairs: `[B, T, *state]` and blow-up indices."""

    def one(system, y0):
        sol = solvers.solve(system, y0, ts_rel, dt=dt, t_offset=t0, throw=False, **kw)
        return sol.ys, sol.blowup_index

    return eqx.filter_jit(eqx.filter_vmap(one))(physics_b, y0_b)


def _ensemble_rollouts(ens: Ensemble, physics_b, y0_b, ts_rel, t0, dt):
    """`[M, B, T, *state]` and blow-up indices `[M, B]`."""

    def one(system, y0):
        sol = ens.solve(y0, ts_rel, dt=dt, physics=system, t_offset=t0, throw=False)
        return sol.ys, sol.blowup_index

    ys, blow = eqx.filter_jit(eqx.filter_vmap(one))(physics_b, y0_b)
    return jnp.swapaxes(ys, 0, 1), jnp.swapaxes(blow, 0, 1)


def _summary(pred, ref, ts) -> dict[str, float]:
    return {
        "rmse": float(M.rmse(pred, ref)),
        "corr_time": float(M.corr_time(pred, ref, ts)),
    }


def _stability(task: AbstractTask, cfg: Config, ens, physics_b, y0_b, t0, ref_energy):
    """Rollouts `stability_factor` x the training horizon: blow-up (NaN/Inf, or energy
    above 10x the largest reference energy) and energy drift."""
    steps = cfg.stability_factor * cfg.horizon
    ts_rel = np.arange(steps + 1) * cfg.save_dt
    # save sparsely: every `horizon` steps
    ts_rel = ts_rel[:: cfg.horizon]
    ys, blow = _ensemble_rollouts(ens, physics_b, y0_b, ts_rel, t0, cfg.dt)
    energy = task.energy(ys)  # [M, B, T]
    bound = 10.0 * ref_energy
    over = ~(energy <= bound)  # NaN counts as over
    bad_any = np.asarray(jnp.any(over, axis=(0, 1)))
    first_bad = int(np.argmax(bad_any)) if bad_any.any() else None
    stable = first_bad is None and bool(jnp.all(blow < 0))
    e_mean = np.asarray(jnp.nanmean(energy, axis=(0, 1)))
    half = len(e_mean) // 2
    drift = float((e_mean[half:].mean() - e_mean[1:half + 1].mean()) / ref_energy)
    return {
        "stable": stable,
        "horizon_steps": int(steps),
        "blowup_step": None if first_bad is None else int(first_bad * cfg.horizon),
        "energy_bound": float(bound),
        "max_energy": float(np.nanmax(np.asarray(energy))) if np.isfinite(energy).any() else None,
        "energy_drift": drift,
    }


def evaluate(out: str | Path, *, progress: bool = True, figures: bool = True) -> dict[str, Any]:
    """Evaluate the run in `out` a posteriori and write `out/metrics.json` (API.md),
    figures, and `out/report.md`. **Returns:** the metrics dict."""
    out = Path(out)
    cfg, ens = load_ensemble(out)
    task = make_task(cfg)
    t_start = time.perf_counter()
    ys_fine, ts_abs, fine = test_data(task, out, cfg.eval_horizon * cfg.save_dt,
                                      progress=progress)
    ys_fine = ys_fine[:, : cfg.eval_horizon + 1]
    ts_abs = ts_abs[: cfg.eval_horizon + 1]
    ts_rel = np.asarray(ts_abs - ts_abs[0], np.float64)
    t0 = ts_abs[0]
    ref = task.coarse_grain(ys_fine, cfg.coarse_n)  # [B, T, *state]
    y0 = ref[:, 0]
    coarse = eqx.filter_vmap(lambda f: task.coarse_physics(f, cfg.coarse_n))(fine)

    ens_ys, ens_blow = _ensemble_rollouts(ens, coarse, y0, ts_rel, t0, cfg.dt)
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

    results["uq"] = {k: float(v) for k, v in M.uq_summary(ens_ys, ref).items()}
    spread_t = M.spread_skill(ens_ys, ref, over_time=True)
    results["uq"]["spread_skill_over_time"] = [float(x) for x in np.asarray(spread_t)]

    train_energy = float(jnp.max(task.energy(ref)))
    results["stability"] = _stability(task, cfg, ens, coarse, y0, t0, train_energy)
    results["eval_seconds"] = time.perf_counter() - t_start
    (out / "metrics.json").write_text(json.dumps(results, indent=2) + "\n")
    if figures:
        from ._report import write_report

        write_report(out, cfg, task, results, ts_rel, ref, ens_ys, base_ys, curves)
    return results
