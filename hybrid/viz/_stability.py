"""Figure of a stability report: energy against time of every long rollout."""

from pathlib import Path

import numpy as np

from ..stability_tests import StabilityReport
from ._common import pyplot


def energy_figure(path: str | Path, report: StabilityReport, *, title: str = "") -> None:
    """Energy against time of every rollout of `report` (log scale), with the bounds
    and blow-ups marked; a PNG at `path` (matplotlib, Agg)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    energy = np.asarray(report.energy).reshape(-1, len(report.save_steps))
    blow = np.asarray(report.blowup_step).reshape(-1)
    t = np.asarray(report.save_steps) * report.dt
    for e, b in zip(energy, blow, strict=True):
        e = np.where(np.isfinite(e) & (e > 0), e, np.nan)
        ax.plot(t, e, lw=0.9, color="C3" if b >= 0 else "C0", alpha=0.7,
                label="blew up" if b >= 0 else "stable")
        if b >= 0:
            ax.axvline(b * report.dt, color="C3", lw=0.5, ls=":")
    ax.axhline(float(np.max(np.asarray(report.energy_bound))), color="k", ls="--", lw=0.8,
               label=f"bound ({report.energy_factor:g} x reference)")
    ax.axhline(float(np.mean(np.asarray(report.reference_energy))), color="k", lw=0.8,
               alpha=0.5, label="reference mean energy")
    ax.set_yscale("log")
    ax.set_xlabel("time since the initial condition")
    ax.set_ylabel("energy")
    ax.set_title(title or f"long rollouts: {report.steps} steps")
    ax.grid(alpha=0.3, which="both")
    handles, labels = ax.get_legend_handles_labels()
    seen = dict(zip(labels, handles, strict=True))
    ax.legend(seen.values(), seen.keys(), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
