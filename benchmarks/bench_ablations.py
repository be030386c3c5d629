"""Ablations of a hybrid (Burgers by default): switch one thing off at a time, same
seeds, several seeds per cell, mean and spread over seeds.

Cells (each differs from `base` in one configuration key):

- `base`: the ablation configuration below (the demo's physics and closure, smaller
  data and fewer steps so that 27+ trainings fit in an hour or two on 2 cores);
- `no physics terms`: `physics_weight=0` (the energy-mismatch and conserved-mean terms);
- `no curriculum`: the full `horizon` from the first step;
- `deep` / `mc-dropout` / `randomized-prior`: the other ensemble methods;
- `horizon 1` / `4` / `64`: the unrolled saves per loss (base 16);
- `no stochastic term` / `no calibration` / `neither`: the base runs' members,
  calibrated without the stochastic term, without the inflation, or with neither
  (`hybrid.calibrate(select=False)`, no retraining), scored on the same test set.

Each cell reports the test rmse of the ensemble mean and of one member, corr_time,
CRPS, unbiased spread–skill, 90% coverage, NLL and blow-ups (mean ± std over seeds),
prints a markdown table and writes a figure.

    python benchmarks/bench_ablations.py --out /tmp/ablations [--seeds 0 1 2]
        [--cells base deep ...] [--figure benchmarks/ablations_burgers.png]
        [--task kuramoto|navier-stokes|graph-burgers]

`--task` runs the same cells on another built-in system with its own smaller base
configuration (`BASES`); its run folders go to `--out/TASK`.

Runs are resumed from `--out` (a finished cell is read, not retrained).
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import jax.random as jr
import numpy as np
from _common import header, pyplot

import hybrid
from neuroscale import (
    build_config,
    evaluate_run,
    load_run,
    task_class,
    test_set,
    train_run,
    validation_set,
)

# The ablation configuration: the demo's physics (512 -> 32, nu = 0.01, random
# forcing), closure and ensemble; 16 training trajectories of 10 time units, 400 steps.
BASE = dict(n_train=16, t_train=10.0, n_val=8, n_test=8, train_steps=400, frontier=False,
            baselines=False)
# other systems: each task's defaults made cheaper in data and steps, same closure
BASES = {
    "burgers": BASE,
    "kuramoto": dict(fine_n=2000, coarse_n=16, n_train=8, t_train=10.0, n_val=4, n_test=4,
                     train_steps=300, horizon=5, width=16, heads=2, depth=2, frontier=False,
                     baselines=False),
    "navier-stokes": dict(fine_n=64, n_train=4, n_val=4, n_test=4, train_steps=200,
                          members=2, frontier=False, baselines=False),
    "graph-burgers": dict(fine_n=5000, n_train=8, train_steps=300, frontier=False,
                          baselines=False),
}

CELLS = {
    "base": {},
    "no physics terms": {"physics_weight": 0.0},
    "no curriculum": {"curriculum": False},
    "deep": {"ensemble": "deep"},
    "mc-dropout": {"ensemble": "mc-dropout"},
    "randomized-prior": {"ensemble": "randomized-prior"},
    "horizon 1": {"horizon": 1},
    "horizon 4": {"horizon": 4},
    "horizon 64": {"horizon": 64},
}
# switches that only one task has
TASK_CELLS = {
    "graph-burgers": {"no energy limiter": {"energy_limiter": False}},
}
# recalibrations of the base runs: (stochastic_closure, inflation)
RECALIBRATED = {
    "no stochastic term": ("none", True),
    "no calibration": ("auto", False),
    "neither": ("none", False),
}
KEYS = ("rmse", "member_rmse", "corr_time", "crps", "spread_skill", "coverage90", "nll",
        "blowups", "train_s")


def _scores(metrics: dict) -> dict:
    h, uq = metrics["hybrid"], metrics["uq"]
    return {"rmse": h["rmse"], "member_rmse": h["member_rmse"], "corr_time": h["corr_time"],
            "crps": uq["crps"], "spread_skill": uq["spread_skill"],
            "coverage90": uq["coverage90"], "nll": uq["nll"], "blowups": h["blowups"]}


def folder_of(out: Path, name: str, seed: int) -> Path:
    """The run folder of a cell and seed."""
    slug = "".join(c if c.isalnum() or c in "-." else "_" for c in name)
    return out / slug / f"seed{seed}"


def run_cell(name: str, sets: dict, seed: int, out: Path, system: str = "burgers") -> dict:
    folder = folder_of(out, name, seed)
    result = folder / "ablation.json"
    if result.exists():
        return json.loads(result.read_text())
    cls = task_class(system)
    task = cls(build_config(cls, overrides={**BASES[system], **sets, "seed": seed}))
    t0 = time.perf_counter()
    train_run(task, folder, resume=(folder / "config.json").exists(), progress=False)
    train_s = time.perf_counter() - t0
    metrics = evaluate_run(folder, progress=False, figures=False)
    scores = {**_scores(metrics), "train_s": train_s}
    result.write_text(json.dumps(scores) + "\n")
    return scores


def recalibrated(base_folder: Path, stochastic: str, inflation: bool) -> dict:
    """The base run's members calibrated otherwise, scored on its test set."""
    task, calibrated = load_run(base_folder)
    cfg = task.cfg
    members = hybrid.Ensemble(calibrated.members, calibrated.physics, calibrated.mode,
                              calibrated.method, calibrated.realisations)
    val = validation_set(task, base_folder, progress=False)
    ens = hybrid.calibrate(members, val, dt=cfg.dt, key=jr.PRNGKey(cfg.seed),
                           stochastic=stochastic, inflation=inflation, select=False,
                           features=task.noise_features)
    test, _, _ = test_set(task, base_folder, progress=False)
    return _scores(hybrid.evaluate(ens, test, dt=cfg.dt, key=jr.PRNGKey(cfg.seed)))


def _mean_std(values):
    values = [v for v in values if v is not None and np.isfinite(v)]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.4g}"
    return f"{statistics.mean(values):.4g} ± {statistics.stdev(values):.2g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/ablations", help="run folders")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cells", nargs="+", default=list(CELLS) + list(RECALIBRATED))
    parser.add_argument("--figure", default=None, help="write a PNG of the table here")
    parser.add_argument("--task", default="burgers", choices=list(BASES))
    args = parser.parse_args()
    out = Path(args.out) if args.task == "burgers" else Path(args.out) / args.task
    print(f"ablations ({args.task})")
    print(header())
    results: dict[str, list[dict]] = {}
    cells = {**CELLS, **TASK_CELLS.get(args.task, {})}
    unknown = [c for c in args.cells if c not in cells and c not in RECALIBRATED]
    if unknown:
        parser.error(f"--cells: no cell {unknown} for {args.task}: choose from "
                     f"{sorted(cells) + sorted(RECALIBRATED)}")
    for name in args.cells:
        for seed in args.seeds:
            if name in cells:
                scores = run_cell(name, cells[name], seed, out, args.task)
            else:
                run_cell("base", {}, seed, out, args.task)
                path = folder_of(out, name, seed).with_suffix(".json")
                if path.exists():
                    scores = json.loads(path.read_text())
                else:
                    scores = recalibrated(folder_of(out, "base", seed), *RECALIBRATED[name])
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(json.dumps(scores) + "\n")
            results.setdefault(name, []).append(scores)
            print(f"{name} seed {seed}: {json.dumps(scores)}", flush=True)
    cols = ["cell"] + list(KEYS)
    print("\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for name, rows in results.items():
        cells = [_mean_std([r.get(k) for r in rows]) for k in KEYS]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"\n{len(args.seeds)} seeds per cell ({', '.join(map(str, args.seeds))}); base "
          f"configuration: the {args.task} defaults with {BASES[args.task]}.")
    if args.figure:
        _figure(Path(args.figure), results, args.task)


def _figure(path: Path, results: dict, system: str) -> None:
    plt = pyplot()

    names = list(results)
    fig, axes = plt.subplots(1, 3, figsize=(13, 0.45 * len(names) + 1.5), sharey=True)
    for ax, key, label in zip(axes, ("rmse", "crps", "spread_skill"),
                              ("test rmse (ensemble mean)", "CRPS", "spread / skill"),
                              strict=True):
        for i, name in enumerate(names):
            v = [r[key] for r in results[name] if r.get(key) is not None]
            ax.scatter(v, [i] * len(v), color="C0", s=14)
            if v:
                ax.plot([np.mean(v)] * 2, [i - 0.3, i + 0.3], color="k", lw=1.5)
        if key == "spread_skill":
            ax.axvline(1.0, color="C3", ls=":", lw=1)
        ax.set_xlabel(label)
        ax.set_xscale("log" if key != "spread_skill" else "linear")
        ax.grid(alpha=0.3)
    axes[0].set_yticks(range(len(names)), names)
    axes[0].invert_yaxis()
    title = system.replace("-", " ").capitalize()
    fig.suptitle(f"{title} ablations: one switch at a time (dots: seeds; bars: mean)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
