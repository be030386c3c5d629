"""Accuracy–cost frontier of trained runs: error against the cost of the batched test
rollout for the plain solver at n, 2n, 4n, 8n, 16n and for the hybrid at n (one member
and the ensemble); the equivalent resolution of the hybrid and its speed-up at equal
accuracy, by rmse and by decorrelation time; the peers' figures beside ours.

The measurement is `neuroscale`'s own (`neuroscale.measure_frontier`, what
`neuroscale evaluate` writes into the `frontier` block of `metrics.json`): the run's
held-out test trajectories (`neuroscale.test_set`) over `eval_horizon` saves; the
plain solver at `k * coarse_n` points and step `dt / k` from the filtered fine state,
its output filtered back to `coarse_n`; the hybrid's members deterministic. Error:
rmse and `corr_time` (time until the pattern correlation drops below 0.95, Kochkov
et al. 2021). Cost: one compiled rollout of the whole test batch (compilation
excluded), all variants called in alternation, median CPU time and fastest wall time;
per trajectory = batch cost / B. Equivalent resolution: log(error) interpolated
linearly in log(n) between the two bracketing plain solvers; speed-up = that plain
solver's cost (interpolated the same way) over the hybrid's. Anchors: Kochkov et al.
(PNAS 2021), 8-10x coarser at equal accuracy, 40-80x faster (TPU, Navier–Stokes);
Bar-Sinai et al. (PNAS 2019), 4-8x coarser (Burgers).

Kuramoto has no grid to refine: its analogue is the fine oscillator simulation against
the cluster model with and without the closure (error and cost, no equivalent
resolution).

    python benchmarks/bench_frontier.py --run DIR [--run DIR ...] [--figure-dir benchmarks]
    python benchmarks/bench_frontier.py --train-quick burgers --out /tmp/frontier_burgers

`--train-quick SYSTEM` first trains the small CPU configuration of
`examples/SYSTEM.py` (`SMALL`) into `--out` (resumed if already there).
"""

from pathlib import Path

from _common import header, parse_timing_args, pyplot, table, timing_parser

from neuroscale import (
    build_config,
    load_run,
    measure_frontier,
    task_class,
    test_set,
    train_run,
)

# The small CPU configurations of examples/{burgers,navier_stokes,kuramoto}.py.
QUICK = {
    "burgers": dict(fine_n=256, coarse_n=32, n_train=8, n_test=4, t_train=10.0,
                    train_steps=150, horizon=8, members=2, width=16, depth=3, batch_size=4,
                    eval_horizon=100, stability_factor=100, n_val=2, checkpoint_every=50),
    "navier-stokes": dict(fine_n=64, coarse_n=16, viscosity=2e-3, t_spinup=5.0, t_train=5.0,
                          n_train=4, n_test=2, n_val=2, train_steps=120, horizon=4, members=2,
                          width=16, depth=3, batch_size=4, eval_horizon=50,
                          stability_factor=100, checkpoint_every=40),
    "kuramoto": dict(fine_n=2000, coarse_n=16, n_train=8, n_test=2, n_val=2, t_train=10.0,
                     train_steps=100, horizon=5, members=2, width=16, depth=2,
                     eval_horizon=100, checkpoint_every=50),
}


def train_quick(system: str, out: Path) -> Path:
    cls = task_class(system)
    task = cls(build_config(cls, overrides=QUICK[system]))
    resume = (out / "config.json").exists()
    if not (out / "model" / "ensemble.json").exists():
        train_run(task, out, resume=resume, progress=False)
    return out


def frontier(run: Path, args) -> dict:
    task, ens = load_run(run)
    test, fine_y0, fine = test_set(task, run, progress=False)
    measured = measure_frontier(task, ens, test, fine_y0, fine, repeats=args.repeats)
    rows = measured["rows"]
    f = measured["frontier"]
    summary = []
    for label, name in (("", "hybrid, one member"), ("ensemble_", "hybrid ensemble")):
        def fmt(key, label=label):
            v, bound = f[f"{label}{key}"], f[f"{label}bound" + (
                "_corr_time" if key.endswith("corr_time") else "")]
            return "< 1" if v is None else f"{bound}{v:.2f}"

        summary.append({"hybrid": name,
                        "equivalent resolution (rmse)": fmt("equivalent_resolution"),
                        "speed-up at equal rmse (CPU)": fmt("speedup"),
                        "equivalent resolution (corr_time)":
                            fmt("equivalent_resolution_corr_time"),
                        "speed-up at equal corr_time": fmt("speedup_corr_time"),
                        "batch": f["batch"]})
    summary.append({"hybrid": "Kochkov et al. 2021", "equivalent resolution (rmse)": "8-10",
                    "speed-up at equal rmse (CPU)": "40-80 (TPU)"})
    summary.append({"hybrid": "Bar-Sinai et al. 2019", "equivalent resolution (rmse)": "4-8"})
    table_rows = [{"solver": r["solver"], "n": r["n"], "dt": r["dt"], "rmse": r["rmse"],
                   "corr_time": r["corr_time"], "blow-ups": r["blowups"],
                   "CPU time (ms)": r["cpu_s"] * 1e3,
                   "CPU ms / trajectory": r["cpu_s_per_trajectory"] * 1e3,
                   "wall, fastest (ms)": r["wall_s"] * 1e3} for r in rows]
    if args.figure_dir is not None:
        _figure(Path(args.figure_dir) / f"frontier_{task.cfg.task.replace('-', '_')}.png",
                task.cfg, table_rows)
    return {"cfg": task.cfg, "rows": table_rows, "summary": summary, "run": run}


def _figure(path: Path, cfg, rows) -> None:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=120)
    plain = [r for r in rows if r["solver"].startswith("plain")]
    if plain:
        ax.plot([r["CPU time (ms)"] / 1e3 for r in plain], [r["rmse"] for r in plain], "o-",
                color="0.3", label="plain solver")
        for r in plain:
            ax.annotate(f"n={r['n']}", (r["CPU time (ms)"] / 1e3, r["rmse"]),
                        textcoords="offset points", xytext=(5, 4), fontsize=8)
    marks = {"hybrid ensemble": ("*", "C3"), "hybrid, one member": ("D", "C1"),
             "cluster model, no closure": ("s", "0.3"),
             "fine oscillators (reference solver)": ("o", "0.3")}
    for r in rows:
        if r["solver"] in marks:
            m, c = marks[r["solver"]]
            label = r["solver"] + ("" if "hybrid" not in r["solver"] else f" (n={r['n']})")
            ax.plot(r["CPU time (ms)"] / 1e3, max(r["rmse"], 1e-8), m, color=c, ms=10,
                    label=label)
    hyb = next(r for r in rows if r["solver"].startswith("hybrid"))
    ax.axhline(hyb["rmse"], color="C3", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("CPU time of the batched test rollout (s)")
    ax.set_ylabel(f"rmse vs filtered reference (n={cfg.coarse_n})")
    ax.set_title(f"{cfg.task}: accuracy vs cost ({cfg.eval_horizon} saves)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    print(f"wrote {path}", flush=True)


def main():
    parser = timing_parser(__doc__, repeats=5, min_time=0.0, quick_help="2 repeats")
    parser.add_argument("--run", type=Path, action="append", default=[],
                        help="a trained run folder (repeatable)")
    parser.add_argument("--train-quick", choices=tuple(QUICK), action="append", default=[],
                        help="train the small configuration of SYSTEM first (into --out)")
    parser.add_argument("--out", type=Path, default=None,
                        help="run folder for --train-quick (default /tmp/frontier_SYSTEM)")
    parser.add_argument("--figure-dir", default=str(Path(__file__).parent),
                        help="where frontier_<system>.png goes ('' for none)")
    args = parse_timing_args(parser, quick_repeats=2)
    if args.figure_dir == "":
        args.figure_dir = None
    runs = list(args.run)
    for system in args.train_quick:
        out = args.out if args.out is not None and len(args.train_quick) == 1 else Path(
            f"/tmp/frontier_{system.replace('-', '_')}")
        runs.append(train_quick(system, out))
    if not runs:
        parser.error("give --run DIR or --train-quick SYSTEM")
    results = [frontier(r, args) for r in runs]
    print()
    print(header())
    for res in results:
        cfg = res["cfg"]
        print()
        print(f"**{cfg.task}** (run `{res['run']}`): fine_n {cfg.fine_n}, coarse_n "
              f"{cfg.coarse_n}, dt {cfg.dt}, closure {cfg.closure} ({cfg.mode}), "
              f"{cfg.members} members, {cfg.train_steps} training steps; "
              f"{int(cfg.n_test)} test trajectories x {cfg.eval_horizon} saves "
              f"(t = {cfg.eval_horizon * cfg.save_dt:g}); {args.repeats} interleaved repeats")
        print()
        print(table(res["rows"]))
        print()
        print(table(res["summary"]))


if __name__ == "__main__":
    main()
