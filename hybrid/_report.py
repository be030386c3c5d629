"""Figures and `report.md` of an evaluated run: what a person would rather look at
than read (space-time plots, vorticity snapshots, cluster order parameters, error
against time), plus the metrics table and how the hybrid compares with the targets."""

import json
from pathlib import Path
from typing import Any

import numpy as np

from ._config import Config


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _error_figure(path: Path, ts: np.ndarray, curves: dict[str, Any], title: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for label, curve in curves.items():
        ax.plot(ts, np.asarray(curve), label=label, lw=1.6 if "hybrid" in label else 1.1)
    ax.set_xlabel("time")
    ax.set_ylabel("rmse vs filtered fine reference")
    ax.set_yscale("log")
    # t = 0 holds only the round-off of the filter: scale the axis to t > 0.
    later = [np.asarray(c)[1:] for c in curves.values()]
    positive = np.concatenate([c[np.isfinite(c) & (c > 0)] for c in later])
    if positive.size:
        ax.set_ylim(bottom=0.5 * float(positive.min()))
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _space_time_figure(path: Path, ts, ref, hybrid, base, length: float) -> None:
    """Burgers: u(x, t) of one held-out trajectory, reference / hybrid / no closure,
    and the hybrid's error, on one colour scale."""
    plt = _pyplot()
    n = ref.shape[-1]
    extent = (0.0, length, float(ts[-1]), float(ts[0]))
    vmax = float(np.max(np.abs(ref)))
    panels = [
        ("filtered fine reference", ref),
        ("hybrid (ensemble mean)", hybrid),
        ("coarse, no closure", base),
        ("hybrid - reference", hybrid - ref),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(13, 4.2), sharey=True)
    for ax, (title, field) in zip(axes, panels, strict=True):
        im = ax.imshow(np.clip(field, -vmax, vmax), aspect="auto", cmap="RdBu_r",
                       vmin=-vmax, vmax=vmax, extent=extent, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("x")
    axes[0].set_ylabel("time")
    fig.colorbar(im, ax=axes, shrink=0.8, label="u")
    fig.suptitle(f"Burgers, n = {n}: space-time plot of a held-out trajectory", fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _vorticity_figure(path: Path, ts, ref, hybrid, base) -> None:
    """Navier–Stokes: vorticity snapshots at four times, reference / hybrid / no
    closure."""
    plt = _pyplot()
    idx = np.unique(np.linspace(0, len(ts) - 1, 4).astype(int))
    rows = [("reference", ref), ("hybrid", hybrid), ("no closure", base)]
    vmax = float(np.max(np.abs(ref)))
    fig, axes = plt.subplots(len(rows), len(idx), figsize=(2.6 * len(idx), 2.6 * len(rows)))
    for r, (name, field) in enumerate(rows):
        for c, i in enumerate(idx):
            ax = axes[r, c]
            ax.imshow(np.clip(field[i].T, -vmax, vmax), origin="lower", cmap="RdBu_r",
                      vmin=-vmax, vmax=vmax)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"t = {ts[i]:.1f}", fontsize=9)
            if c == 0:
                ax.set_ylabel(name, fontsize=9)
    fig.suptitle("Navier–Stokes vorticity, held-out trajectory", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _clusters_figure(path: Path, ts, ref, hybrid, base, n_show: int = 6) -> None:
    """Kuramoto: |z_m|(t) of a few clusters, reference / hybrid / Ott–Antonsen only.
    States are `[T, M, 2]` (Re, Im)."""
    plt = _pyplot()
    r_ref = np.hypot(ref[..., 0], ref[..., 1])
    r_hyb = np.hypot(hybrid[..., 0], hybrid[..., 1])
    r_base = np.hypot(base[..., 0], base[..., 1])
    m = r_ref.shape[-1]
    show = np.unique(np.linspace(0, m - 1, min(n_show, m)).astype(int))
    cols = 3
    rows = int(np.ceil(len(show) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.6 * rows), squeeze=False)
    for k, c in enumerate(show):
        ax = axes[k // cols, k % cols]
        ax.plot(ts, r_ref[:, c], "k", lw=1.6, label="fine, coarse-grained")
        ax.plot(ts, r_hyb[:, c], "C0", lw=1.2, label="hybrid")
        ax.plot(ts, r_base[:, c], "C3--", lw=1.0, label="Ott–Antonsen only")
        ax.set_title(f"cluster {c}", fontsize=9)
        ax.set_ylim(0, 1.05)
        ax.grid(alpha=0.3)
    for k in range(len(show), rows * cols):
        axes[k // cols, k % cols].axis("off")
    axes[0, 0].legend(fontsize=7)
    fig.supxlabel("time")
    fig.supylabel("cluster order parameter |z_m|")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
        rows.append(f"| hybrid, mean single member | {n} | {_fmt(h['member_rmse'])} | – | – |")
    rows.append(f"| {baseline_name} | {n} | {_fmt(b['rmse'])} | {_fmt(b['corr_time'])} | "
                f"{b.get('blowups', 0)} |")
    for k, v in results.get("finer", {}).items():
        rows.append(f"| plain solver, {k} finer | {v['n']} | {_fmt(v['rmse'])} | "
                    f"{_fmt(v['corr_time'])} | {v.get('blowups', 0)} |")
    return rows


def write_report(
    out: Path,
    cfg: Config,
    task: Any,
    results: dict[str, Any],
    ts: np.ndarray,
    ref: Any,
    ens_ys: Any,
    base_ys: Any,
    curves: dict[str, Any],
    extra_figures: dict[str, str] | None = None,
) -> Path:
    """Write the figures and `out/report.md` of an evaluated run.

    **Arguments:**

    - `out`: the run folder.
    - `cfg`, `task`: the run's configuration and task.
    - `results`: the metrics dict (what `metrics.json` holds).
    - `ts`: `[T]` evaluation times relative to the start of the rollouts.
    - `ref`: `[B, T, *state]` filtered fine reference; `ens_ys`: `[M, B, T, *state]`
      hybrid ensemble; `base_ys`: `[B, T, *state]` coarse solver without closure.
    - `curves`: label -> rmse against time `[T]`, for the error figure.
    - `extra_figures`: file name -> caption of figures already written to `out`
      (e.g. the uncertainty figures), listed in the report.

    **Returns:** the path of `report.md`.
    """
    out = Path(out)
    ts = np.asarray(ts)
    ref = np.asarray(ref)
    ens = np.asarray(ens_ys)
    base = np.asarray(base_ys)
    hyb = ens.mean(axis=0)
    figures: dict[str, str] = {}

    baseline_name = "Ott–Antonsen clusters, no closure" if cfg.system == "kuramoto" \
        else "coarse solver, no closure"
    _error_figure(out / "error_vs_time.png", ts, curves, f"{cfg.system}: a-posteriori error")
    figures["error_vs_time.png"] = "rmse against time, all solvers (log scale)"
    if cfg.system == "burgers":
        _space_time_figure(out / "space_time.png", ts, ref[0], hyb[0], base[0],
                           float(getattr(task, "length", 2 * np.pi)))
        figures["space_time.png"] = "u(x, t) of a held-out trajectory"
    elif cfg.system == "navier-stokes":
        _vorticity_figure(out / "vorticity.png", ts, ref[0], hyb[0], base[0])
        figures["vorticity.png"] = "vorticity snapshots of a held-out trajectory"
    elif cfg.system == "kuramoto":
        _clusters_figure(out / "clusters.png", ts, ref[0], hyb[0], base[0])
        figures["clusters.png"] = "cluster order parameters of a held-out trajectory"
    figures.update(extra_figures or {})

    h, b = results["hybrid"], results["baseline"]
    ratio = h["rmse"] / b["rmse"] if b["rmse"] > 0 else float("nan")
    lines = [
        f"# NeuroScale report: {cfg.system}",
        "",
        f"Coarse resolution {results['coarse_n']} (fine reference {results['fine_n']}), "
        f"{results['n_test']} held-out trajectories, evaluation horizon "
        f"{results['eval_horizon']} steps (t = {_fmt(results['eval_time'])}), training "
        f"horizon {cfg.horizon} steps, {cfg.members} ensemble members "
        f"(`{cfg.ensemble}`), closure `{cfg.closure}` in `{cfg.mode}` mode.",
        "",
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
    uq = results.get("uq")
    if uq:
        stages = [
            ("members only (no stochastic term)", results.get("uq_members_only")),
            (f"+ stochastic closure (`{uq.get('stochastic_closure')}`)",
             results.get("uq_uncalibrated")),
            (f"+ spread calibration x{_fmt(uq.get('inflation'))} (final)", uq),
        ]
        lines += [
            "",
            "## Uncertainty",
            "",
            f"Ensemble `{uq.get('ensemble', cfg.ensemble)}` of {results['members']} members; "
            "scores over every lead time after the shared initial state. Coverage is the "
            "unbiased (PIT) estimate of the fraction of reference values inside the "
            "ensemble's central interval; the calibration factor was fitted on a separate "
            "validation set, never on these test trajectories.",
            "",
            "| forecast | CRPS | spread/skill | coverage 50% | coverage 90% | NLL | "
            "ens.-mean rmse | member rmse |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, block in stages:
            if not block:
                continue
            lines.append(
                f"| {name} | {_fmt(block.get('crps'))} | {_fmt(block.get('spread_skill'))} | "
                f"{_fmt(block.get('coverage50'))} | {_fmt(block.get('coverage90'))} | "
                f"{_fmt(block.get('nll'))} | {_fmt(block.get('ensemble_mean_rmse'))} | "
                f"{_fmt(block.get('member_rmse'))} |")
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
        f"neuroscale train {cfg.system} --out DIR --config config.toml",
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
