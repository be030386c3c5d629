"""Figures of an ensemble's uncertainty against the reference: fan charts at a few
locations, spread and ensemble-mean error against lead time, the rank histogram.

Inputs everywhere: `ensemble` `[M, B, T, *state]` (members, trajectories, times),
`ref` `[B, T, *state]`, `ts` `[T]`. Each function writes one PNG (matplotlib, Agg
backend) and returns its path; `write_uq_figures` writes all three and returns
file name -> caption, ready for `write_report(..., extra_figures=...)`.
"""

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import metrics as _metrics
from ._common import pyplot as _pyplot


def _check(ensemble, ref, ts=None):
    ens = np.asarray(ensemble, dtype=float)
    ref = np.asarray(ref, dtype=float)
    if ens.ndim < 3 or ens.shape[1:] != ref.shape:
        raise ValueError(
            "`ensemble` must be [M, B, T, *state] and `ref` [B, T, *state], got "
            f"{ens.shape} and {ref.shape}."
        )
    if ens.shape[0] < 2:
        raise ValueError(f"`ensemble` needs at least 2 members, got {ens.shape[0]}.")
    if ts is not None:
        ts = np.asarray(ts, dtype=float)
        if ts.shape != (ref.shape[1],):
            raise ValueError(f"`ts` must have shape [T] = [{ref.shape[1]}], got {ts.shape}.")
    return ens, ref, ts


def fan_chart(
    path: str | Path,
    ensemble: Any,
    ref: Any,
    ts: Any,
    *,
    locations: Sequence[int] | None = None,
    trajectory: int = 0,
    num_locations: int = 4,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
    labels: Sequence[str] | None = None,
    title: str | None = None,
) -> Path:
    """Fan chart: at a few locations of one trajectory, the ensemble's 5–95% and
    25–75% bands and median against lead time, with the reference.

    **Arguments:**

    - `path`: the PNG to write; `ensemble`, `ref`, `ts`: see the module docstring.
    - `locations`: flat indices into the state (grid points, oscillators, clusters);
      default `num_locations` (4) evenly spaced ones.
    - `trajectory`: which of the `B` trajectories, default 0.
    - `transform`: applied to the values before the percentiles (e.g. `np.sin` for
      phases); default none.
    - `labels`: a title per location (default "location i"); `title`: of the figure.

    **Returns:** `path`.
    """
    ens, ref, ts = _check(ensemble, ref, ts)
    if not 0 <= trajectory < ref.shape[0]:
        raise ValueError(f"`trajectory` must be in [0, {ref.shape[0]}), got {trajectory}.")
    m, _, t = ens.shape[:3]
    flat_e = ens[:, trajectory].reshape(m, t, -1)
    flat_r = ref[trajectory].reshape(t, -1)
    n = flat_r.shape[1]
    if locations is None:
        k = min(num_locations, n)
        locations = np.unique(np.linspace(0, n, k, endpoint=False).astype(int))
    locations = [int(i) for i in locations]
    if not locations or any(not 0 <= i < n for i in locations):
        raise ValueError(f"`locations` must be flat state indices in [0, {n}), got {locations}.")
    if labels is not None and len(labels) != len(locations):
        raise ValueError("`labels` must give one label per location.")
    if transform is not None:
        flat_e, flat_r = transform(flat_e), transform(flat_r)

    plt = _pyplot()
    cols = min(len(locations), 2)
    rows = -(-len(locations) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False,
                             sharex=True)
    for j, loc in enumerate(locations):
        ax = axes[j // cols][j % cols]
        q05, q25, q50, q75, q95 = np.nanpercentile(flat_e[:, :, loc], [5, 25, 50, 75, 95],
                                                   axis=0)
        ax.fill_between(ts, q05, q95, color="C0", alpha=0.2, lw=0, label="ensemble 5–95%")
        ax.fill_between(ts, q25, q75, color="C0", alpha=0.4, lw=0, label="ensemble 25–75%")
        ax.plot(ts, q50, color="C0", lw=1.2, label="ensemble median")
        ax.plot(ts, flat_r[:, loc], color="k", lw=1.2, ls="--", label="reference")
        ax.set_title(labels[j] if labels is not None else f"location {loc}", fontsize=9)
        ax.grid(alpha=0.3)
    for j in range(len(locations), rows * cols):
        axes[j // cols][j % cols].set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("lead time")
    axes[0][0].legend(fontsize=7, loc="best")
    fig.suptitle(title or f"ensemble fan chart ({m} members), trajectory {trajectory}",
                 fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def spread_error_series(ensemble: Any, ref: Any) -> dict[str, np.ndarray]:
    """What `spread_error_chart` draws, per lead time `[T]`: `spread` (the members'
    standard deviation, rms over trajectories and state), `error` (rmse of the ensemble
    mean), `ratio` (the unbiased spread–skill ratio, `metrics.spread_skill`)."""
    ens, ref, _ = _check(ensemble, ref)
    spread, _ = _metrics.spread_and_error(ens, ref, over_time=True)
    error = _metrics.rmse_over_time(ens.mean(axis=0), ref)
    ratio = _metrics.spread_skill(ens, ref, over_time=True)
    return {"spread": np.asarray(spread), "error": np.asarray(error), "ratio": np.asarray(ratio)}


def spread_error_chart(
    path: str | Path,
    ensemble: Any,
    ref: Any,
    ts: Any,
    *,
    title: str | None = None,
) -> Path:
    """Spread and ensemble-mean error against lead time (top) and the unbiased
    spread–skill ratio, with the calibrated value 1 (bottom): `spread_error_series`.
    Pooled over trajectories and the state.

    **Returns:** `path`.
    """
    ens, ref, ts = _check(ensemble, ref, ts)
    series = spread_error_series(ens, ref)
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.0, 5.0), sharex=True,
                                      gridspec_kw={"height_ratios": [2, 1]})
    top.plot(ts, series["error"], color="k", lw=1.4, label="rmse of the ensemble mean")
    top.plot(ts, series["spread"], color="C0", lw=1.4, label="spread (members' std)")
    top.set_ylabel("field units")
    top.grid(alpha=0.3)
    top.legend(fontsize=8)
    bottom.plot(ts, series["ratio"], color="C1", lw=1.4)
    bottom.axhline(1.0, color="k", lw=0.8, ls=":")
    bottom.set_ylabel("spread / skill (unbiased)")
    bottom.set_xlabel("lead time")
    bottom.grid(alpha=0.3)
    top.set_title(title or f"spread and error against lead time ({ens.shape[0]} members)",
                  fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def rank_frequencies(ensemble: Any, ref: Any, *, skip_initial: bool = True) -> np.ndarray:
    """What `rank_histogram_chart` draws: the frequency of each rank `[M+1]` of the
    reference among the members (`metrics.rank_histogram`, normalised), after the
    shared initial state with `skip_initial`."""
    ens, ref, _ = _check(ensemble, ref)
    if skip_initial:
        if ref.shape[1] < 2:
            raise ValueError("`skip_initial` needs at least 2 times.")
        ens, ref = ens[:, :, 1:], ref[:, 1:]
    counts = np.asarray(_metrics.rank_histogram(ens, ref))
    total = counts.sum()
    return counts / total if total > 0 else counts


def rank_histogram_chart(
    path: str | Path,
    ensemble: Any,
    ref: Any,
    *,
    skip_initial: bool = True,
    title: str | None = None,
) -> Path:
    """Rank histogram of the reference among the members (`_metrics.rank_histogram`),
    as frequencies against the flat line $1/(M+1)$ of a calibrated ensemble.

    `skip_initial` (default) leaves out the first time, where rollouts from a shared
    initial state tie with the reference.

    **Returns:** `path`.
    """
    freq = rank_frequencies(ensemble, ref, skip_initial=skip_initial)
    m = freq.shape[0] - 1
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 3.6))
    ax.bar(np.arange(m + 1), freq, width=0.85, color="C0")
    ax.axhline(1.0 / (m + 1), color="k", lw=1.0, ls="--", label="calibrated, 1/(M+1)")
    ax.set_xlabel("rank of the reference among the members")
    ax.set_ylabel("frequency")
    ax.set_xticks(np.arange(m + 1) if m <= 20 else np.linspace(0, m, 6).astype(int))
    ax.legend(fontsize=8)
    ax.set_title(title or f"rank histogram ({m} members)", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_uq_figures(
    out: str | Path,
    ensemble: Any,
    ref: Any,
    ts: Any,
    *,
    prefix: str = "uq_",
    **fan_kwargs: Any,
) -> dict[str, str]:
    """Write `uq_fan.png`, `uq_spread_error.png` and `uq_rank_histogram.png` into the
    folder `out`; `fan_kwargs` go to `fan_chart`.

    **Returns:** file name -> caption (for `write_report`'s `extra_figures`).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = {
        f"{prefix}fan.png": "ensemble 5–95% / 25–75% bands and reference at a few locations",
        f"{prefix}spread_error.png": "ensemble spread and ensemble-mean error against lead time",
        f"{prefix}rank_histogram.png": "rank histogram of the reference among the members",
    }
    fan, spread, rank = (out / n for n in names)
    fan_chart(fan, ensemble, ref, ts, **fan_kwargs)
    spread_error_chart(spread, ensemble, ref, ts)
    rank_histogram_chart(rank, ensemble, ref)
    return names
