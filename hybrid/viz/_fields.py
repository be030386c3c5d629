"""Figures of rollouts against their reference: error against time, space-time plots
(1D fields), vorticity snapshots (2D fields), cluster order parameters (networks)."""

from pathlib import Path
from typing import Any

import numpy as np

from ._common import pyplot


def error_figure(path: Path, ts: np.ndarray, curves: dict[str, Any], title: str) -> None:
    """Rmse against time of several solvers (label -> `[T]`), log scale."""
    plt = pyplot()
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


def space_time_figure(path: Path, ts, ref, hybrid, base, length: float) -> None:
    """Burgers: u(x, t) of one held-out trajectory, reference / hybrid / no closure,
    and the hybrid's error, on one colour scale."""
    plt = pyplot()
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


def vorticity_figure(path: Path, ts, ref, hybrid, base) -> None:
    """Navier–Stokes: vorticity snapshots at four times, reference / hybrid / no
    closure."""
    plt = pyplot()
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


def clusters_figure(path: Path, ts, ref, hybrid, base, n_show: int = 6) -> None:
    """Kuramoto: |z_m|(t) of a few clusters, reference / hybrid / Ott–Antonsen only.
    States are `[T, M, 2]` (Re, Im)."""
    plt = pyplot()
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
