"""What a posterior must do: spread that grows out of distribution and shrinks with
more data. Burgers, the ablation configuration (`bench_ablations.BASE`).

1. **Out of distribution**: ensembles trained at viscosity 0.01 and scored on held-out
   trajectories at `--ood-viscosity` (default 0.005: sharper shocks than any training
   trajectory), in and out of distribution: error of the ensemble mean, spread,
   unbiased spread–skill ratio, CRPS, 90% coverage; for
   - `deep`: a deep ensemble (no prior);
   - `anchored`: anchored ensemble, the pipeline's defaults (members at their own
     initialisation, prior weight sigma^2 / N with N every scalar residual);
   - `anchored, prior`: members start at their anchors and N counts one datum per
     saved state (`num_data = n_train x saves`), so the prior has weight where the
     data do not constrain the closure.
   The calibration (stochastic term and inflation) is fitted in distribution only.
2. **More data, less spread**: the `anchored, prior` ensemble trained on 4, 16 and 64
   trajectories: the members' spread (before calibration) on the test set.

    python benchmarks/bench_bayes.py --out /tmp/bayes [--seeds 0 1]
        [--methods anchored deep] [--n-val 32] [--sizes]

`--n-val`: validation trajectories the calibration is fitted on (the ablation
configuration's 8 by default; the members are the same at any value, only the
calibration changes). `--sizes` with no value skips part 2.
"""

import argparse
import json
import statistics
from pathlib import Path

from _common import header
from bench_ablations import BASE, folder_of, run_cell

SAVES = int(round(BASE["t_train"] / 0.1))
METHODS = {
    "deep": {"ensemble": "deep"},
    "anchored": {},
    "anchored, prior": {"start_at_anchors": True, "num_data": float(BASE["n_train"] * SAVES)},
}


def _ood_scores(folder: Path) -> dict:
    m = json.loads((folder / "metrics.json").read_text())
    out = {}
    for where, block in (("in", m), ("out", m["ood"])):
        uq, raw = block["uq"], block["uq_members_only"]
        out[where] = {"rmse": block["hybrid"]["rmse"], "ssr": uq["spread_skill"],
                      "crps": uq["crps"], "coverage90": uq["coverage90"],
                      "raw_ssr": raw["spread_skill"]}
    return out


def _raw_spread(m: dict) -> float:
    # the members' standard deviation on the test set, before calibration
    return m["uq_members_only"]["spread"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/bayes")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--ood-viscosity", type=float, default=0.005)
    parser.add_argument("--sizes", type=int, nargs="*", default=[4, 16, 64])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--n-val", type=int, default=BASE["n_val"])
    args = parser.parse_args()
    out = Path(args.out)
    print("Bayesian ensembles: out of distribution and data size (Burgers)")
    print(header())
    rows = []
    for name in args.methods:
        sets = METHODS[name]
        per_seed = []
        for seed in args.seeds:
            cell = {**sets, "ood_viscosity": args.ood_viscosity, "n_val": args.n_val}
            run_cell(name, cell, seed, out)
            per_seed.append(_ood_scores(folder_of(out, name, seed)))
        for where in ("in", "out"):
            vals = {k: statistics.mean(s[where][k] for s in per_seed)
                    for k in per_seed[0][where]}
            label = "in distribution" if where == "in" else "out of distribution"
            rows.append({"ensemble": name, "test set": label, **vals,
                         "per_seed": " / ".join(f"{s[where]['ssr']:.2f}" for s in per_seed)})
    print("\n| ensemble | test set | rmse | spread/skill | per seed | CRPS | coverage 90% | "
          "members' spread/skill |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['ensemble']} | {r['test set']} | {r['rmse']:.4g} | {r['ssr']:.3g} | "
              f"{r['per_seed']} | {r['crps']:.4g} | {r['coverage90']:.3g} | "
              f"{r['raw_ssr']:.3g} |")
    print(f"\n(train viscosity 0.01, out of distribution {args.ood_viscosity}; seeds "
          f"{args.seeds}; means over seeds; calibrated on {args.n_val} validation "
          "trajectories)")
    if args.sizes:
        print("\n| training trajectories | members' spread | ensemble-mean rmse |\n"
              "|---|---|---|")
    for size in args.sizes:
        sets = {**METHODS["anchored, prior"], "n_train": size,
                "num_data": float(size * SAVES)}
        run_cell(f"size {size}", sets, args.seeds[0], out)
        m = json.loads((folder_of(out, f"size {size}", args.seeds[0]) / "metrics.json")
                       .read_text())
        print(f"| {size} | {_raw_spread(m):.4g} | {m['hybrid']['rmse']:.4g} |")


if __name__ == "__main__":
    main()
