"""`report.md` of an evaluated run: the metrics tables, how the hybrid compares with
the plain solvers and its calibration, and the figures."""

import json
from pathlib import Path
from typing import Any

import numpy as np

import hybrid


def _fmt(x: Any) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def _table(results: dict[str, Any], baseline_name: str) -> list[str]:
    rows = ["| solver | n | rmse | corr_time | blow-ups |", "|---|---|---|---|---|"]
    h, b = results["hybrid"], results["baseline"]
    n = results["coarse_n"]
    rows.append(f"| **hybrid** (ensemble mean of {results['members']}) | {n} | "
                f"**{_fmt(h['rmse'])}** | {_fmt(h['corr_time'])} | {h.get('blowups', 0)} |")
    if "member_rmse" in h:
        rows.append(f"| hybrid, single member (mean over members) | {n} | "
                    f"{_fmt(h['member_rmse'])} | {_fmt(h.get('member_corr_time'))} | – |")
    rows.append(f"| {baseline_name} | {n} | {_fmt(b['rmse'])} | {_fmt(b['corr_time'])} | "
                f"{b.get('blowups', 0)} |")
    for k, v in results.get("finer", {}).items():
        rows.append(f"| plain solver, {k} finer | {v['n']} | {_fmt(v['rmse'])} | "
                    f"{_fmt(v['corr_time'])} | {v.get('blowups', 0)} |")
    return rows


def write_report(
    out: Path,
    task: Any,
    results: dict[str, Any],
    ts: np.ndarray,
    curves: dict[str, Any],
    extra_figures: dict[str, str] | None = None,
) -> Path:
    """Write the error figure and `out/report.md` of an evaluated run.

    **Arguments:** `out` (the run folder), `task`, `results` (what `metrics.json`
    holds), `ts` `[T]` (evaluation times from 0), `curves` (label -> rmse against
    time, for the error figure), `extra_figures` (file name -> caption of figures
    already in `out`).

    **Returns:** the path of `report.md`.
    """
    out = Path(out)
    cfg = task.cfg
    ts = np.asarray(ts)
    figures: dict[str, str] = {}
    baseline_name = task.baseline_name
    hybrid.viz.error_figure(out / "error_vs_time.png", ts, curves,
                            f"{cfg.task}: a-posteriori error")
    figures["error_vs_time.png"] = "rmse against time, all solvers (log scale)"
    figures.update(extra_figures or {})

    h, b = results["hybrid"], results["baseline"]
    ratio = h["rmse"] / b["rmse"] if b["rmse"] > 0 else float("nan")
    lines = [
        f"# NeuroScale report: {cfg.task}",
        "",
        f"Coarse resolution {results['coarse_n']} (fine reference {results['fine_n']}), "
        f"{results['n_test']} held-out trajectories, evaluation horizon "
        f"{results['eval_horizon']} steps (t = {_fmt(results['eval_time'])}), training "
        f"horizon {cfg.horizon} steps, {cfg.members} ensemble members "
        f"(`{cfg.ensemble}`), closure `{cfg.closure}` in `{cfg.mode}` mode.",
        "",
        *_headline(results),
        *_harm(results, baseline_name),
        "## Accuracy (a posteriori)",
        "",
        *_table(results, baseline_name),
        "",
        f"- Hybrid rmse / no-closure rmse: **{ratio:.3g}**.",
    ]
    finer = results.get("finer", {})
    if finer:
        beaten = [k for k, v in finer.items() if h["rmse"] <= v["rmse"]]
        if beaten:
            best = max(beaten, key=lambda k: int(k[:-1]))
            lines.append(f"- The hybrid at n = {results['coarse_n']} is at least as accurate "
                         f"as the plain solver at **{best}** the resolution "
                         f"(n = {finer[best]['n']}).")
        else:
            lines.append("- The hybrid is less accurate than every finer plain solver "
                         "evaluated.")
    lines += _baselines_table(results)
    lines += _frontier_table(results)
    uq = results.get("uq")
    if uq:
        cal = results.get("calibration") or {}
        lines += [
            "",
            "## Uncertainty",
            "",
            f"Ensemble `{uq.get('method', cfg.ensemble)}` of {results['members']} members; "
            "scores over every lead time after the shared initial state. Coverage is the "
            "fraction of reference values inside the central interval of the predictive "
            "distribution (Student-t from the members' mean and spread); spread/skill is "
            "the unbiased ratio (1 = calibrated). The stochastic term and the inflation "
            "were fitted on a separate validation set, never on these test trajectories, "
            "and each was kept only where it lowered the validation CRPS"
            + (f" (kept: `{cal.get('selected')}`)." if cal.get("selected") else "."),
            "",
            "| forecast | CRPS | spread/skill | coverage 50% | coverage 90% | NLL | "
            "ens.-mean rmse | member rmse |",
            "|---|---|---|---|---|---|---|---|",
        ]
        stages = [("members only", results.get("uq_members_only")),
                  ("final forecast (after calibration)", uq)]
        for name, block in stages:
            if not block:
                continue
            lines.append(
                f"| {name} | {_fmt(block.get('crps'))} | {_fmt(block.get('spread_skill'))} | "
                f"{_fmt(block.get('coverage50'))} | {_fmt(block.get('coverage90'))} | "
                f"{_fmt(block.get('nll'))} | {_fmt(block.get('ensemble_mean_rmse'))} | "
                f"{_fmt(block.get('member_rmse'))} |")
        val = cal.get("validation") or {}
        if val:
            lines += ["", "Validation scores of the candidates `calibrate` chose from:", "",
                      "| candidate | CRPS | spread/skill | coverage 90% | NLL |",
                      "|---|---|---|---|---|"]
            for name, block in val.items():
                lines.append(f"| {name} | {_fmt(block.get('crps'))} | "
                             f"{_fmt(block.get('spread_skill'))} | "
                             f"{_fmt(block.get('coverage90'))} | {_fmt(block.get('nll'))} |")
    st = results.get("stability")
    if st:
        lines += [
            "",
            "## Stability",
            "",
            f"Rollouts of {st['horizon_steps']} steps "
            f"({st['horizon_steps'] // max(cfg.horizon, 1)}x the training horizon): "
            + ("**stable**" if st["stable"] else
               f"**blew up** at step {st.get('blowup_step')}")
            + (f", energy drift {_fmt(st.get('energy_drift'))} (relative)."
               if st.get("energy_drift") is not None else "."),
        ]
    lines += ["", "## Figures", ""]
    for name, caption in figures.items():
        lines += [f"![{caption}]({name})", "", f"*{caption}*", ""]
    lines += [
        "## Reproduce",
        "",
        "```",
        f"neuroscale train {_train_args(cfg.task)} --out DIR --config config.toml",
        "neuroscale evaluate DIR",
        "```",
        "",
        "Full configuration (`config.json`):",
        "",
        "```json",
        json.dumps(cfg.to_dict(), indent=1),
        "```",
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def _harm(results: dict[str, Any], baseline_name: str) -> list[str]:
    """A warning first when the closure does harm: the hybrid less accurate than the
    physics alone on the test set or, at calibration, on the validation set."""
    out = []
    h, b = results["hybrid"]["rmse"], results["baseline"]["rmse"]
    if not results["closure_helps"]:
        out.append(f"- **Warning: the hybrid (rmse {_fmt(h)}) is less accurate than the "
                   f"{baseline_name} (rmse {_fmt(b)}) on the test set.** The closure does "
                   "harm: more (or less noisy) training data, or forecast without it.")
    check = (results.get("calibration") or {}).get("closure_check")
    if check and not check["closure_helps"]:
        out.append(f"- **Warning: already on the validation set** the ensemble mean (rmse "
                   f"{_fmt(check['rmse'])}) was no better than the physics alone (rmse "
                   f"{_fmt(check['physics_rmse'])}).")
    return out + [""] if out else []


def _headline(results: dict[str, Any]) -> list[str]:
    """The first lines: the equal-accuracy speed-up and resolution, when measured."""
    f = results.get("frontier")
    if not f:
        return []
    out = []
    for label, who in (("", "one hybrid member"), ("ensemble_", "the ensemble")):
        eq, sp = f.get(f"{label}equivalent_resolution"), f.get(f"{label}speedup")
        bound = f.get(f"{label}bound", "")
        if eq is None:
            out.append(f"- **{who}** is less accurate than the plain coarse solver.")
            continue
        speed = f"**{sp:.2f}x faster**" if sp >= 1 else f"**{1 / sp:.2f}x slower**"
        ct_bound = f.get(f"{label}bound_corr_time", "")
        ct_bound = "at least " if ct_bound == ">=" else ct_bound
        out.append(f"- **{who}**: as accurate (rmse) as the plain solver on {bound}"
                   f"**{eq:.2f}x** the resolution, and {speed} than it at "
                   f"equal accuracy (CPU time, batch of {f['batch']} trajectories; by "
                   f"decorrelation time: {ct_bound}"
                   f"{_fmt(f.get(f'{label}equivalent_resolution_corr_time'))}x the "
                   f"resolution, {ct_bound}{_fmt(f.get(f'{label}speedup_corr_time'))}x "
                   "the speed).")
    if "speedup_vs_fine" in f:
        sp, sp_e = f["speedup_vs_fine"], f["ensemble_speedup_vs_fine"]
        out.append(f"- against the fine model itself (all {results.get('fine_n')} degrees of "
                   f"freedom, rmse {_fmt(f['fine_rmse'])} against the reference): one member "
                   f"**{sp:.3g}x**, the ensemble **{sp_e:.3g}x** its speed (CPU time).")
    return out + ["", "Peers: Kochkov et al. 2021, " + f["peers"]["kochkov_2021"]
                  + "; Bar-Sinai et al. 2019, " + f["peers"]["bar_sinai_2019"] + ".", ""]


def _baselines_table(results: dict[str, Any]) -> list[str]:
    base = results.get("baselines")
    if not base:
        return []
    h = results["hybrid"]
    names = {"deterministic": "one deterministic network (no ensemble machinery)",
             "a_priori": "same closure, one-step (a-priori) training",
             "smagorinsky": "Smagorinsky eddy viscosity (C fitted by the rollout loss)",
             "leith": "Leith eddy viscosity (C fitted by the rollout loss)"}
    lines = ["", "## Baselines", "",
             "| model | rmse | corr_time | blow-ups | vs hybrid member rmse |",
             "|---|---|---|---|---|"]
    for k, v in base.items():
        extra = f" (C = {v['coefficient']:.3g})" if "coefficient" in v else ""
        lines.append(f"| {names.get(k, k)}{extra} | {_fmt(v['rmse'])} | {_fmt(v['corr_time'])}"
                     f" | {v['blowups']} | {v['rmse'] / h['member_rmse']:.3g}x |")
    return lines


def _frontier_table(results: dict[str, Any]) -> list[str]:
    rows = [r for r in results.get("frontier_rows", []) if "cpu_s" in r]
    if not rows:
        return []
    lines = ["", "## Accuracy against cost", "",
             "| solver | n | dt | rmse | corr_time | CPU s / trajectory |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['solver']} | {r['n']} | {_fmt(r['dt'])} | {_fmt(r['rmse'])} | "
                     f"{_fmt(r['corr_time'])} | {r['cpu_s_per_trajectory']:.3g} |")
    return lines


def _train_args(name: str) -> str:
    return f"--task {name}" if ":" in name else name
