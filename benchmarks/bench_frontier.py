"""Accuracy–cost frontier of a trained run: error against the cost of the rollout for
the plain solver at n, 2n, 4n, 8n, 16n and for the hybrid at n; the equivalent
resolution of the hybrid and its speed-up at equal accuracy.

Everything is recomputed from a run folder (`neuroscale train SYSTEM --out DIR`),
nothing is hard-coded: the run's held-out test trajectories (`neuroscale.test_set`,
the set `neuroscale evaluate` scores), filtered to `coarse_n` by the run's own filter
(`task.coarse_grain`), over the evaluation horizon `eval_horizon`.

- **Plain solver at factor k** (k = 1, 2, 4, 8, 16, up to the fine resolution): the
  known physics at `k * coarse_n`, started from the filtered fine state, step
  `dt / k` (the CFL scaling of `neuroscale evaluate`), its output filtered to
  `coarse_n`. k = 1 is the no-closure baseline.
- **Hybrid** at `coarse_n`, step `dt`: the deterministic ensemble (every member,
  then their mean, as `metrics.json`'s `hybrid` block), and a single member (its
  error: the mean over members of each member's own error).

Error: `rmse` against the filtered fine reference over the horizon and `corr_time`
(time until the pattern correlation drops below 0.95), as `hybrid.metrics` computes
them for `metrics.json`. Cost: the rollout of the whole batch of test trajectories,
compiled beforehand (compilation excluded), `block_until_ready`, all variants timed
in alternation (`_common.time_interleaved`); CPU time of the process per rollout
(median), with the fastest wall-clock time beside it.

Equivalent resolution: the finest plain solver the hybrid is at least as accurate as,
with log(error) interpolated linearly in log(n) between the two resolutions that
bracket the hybrid's error; the speed-up at equal accuracy is the plain solver's CPU
time at that resolution (interpolated the same way, log-log) over the hybrid's. A
hybrid more accurate than the finest plain solver measured gets a lower bound (">=").
Anchor: Kochkov et al. (PNAS 2021), 8-10x coarser at equal accuracy, 40-80x faster
(on a TPU, Navier–Stokes at Re 1000).

Kuramoto has no grid to refine: its analogue is the fine oscillator simulation (the
reference's own solver, `fine_n` oscillators at `fine_dt`) against the cluster model
(Ott–Antonsen network) with and without the closure; error and cost are reported, no
equivalent resolution.

    python benchmarks/bench_frontier.py --run DIR [--run DIR ...] [--figure-dir benchmarks]
    python benchmarks/bench_frontier.py --train-quick burgers --out /tmp/frontier_burgers

`--train-quick SYSTEM` first trains the small CPU configuration of
`examples/SYSTEM.py` (`SMALL`) into `--out` (resumed if already there).
"""

import math
import statistics
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from _common import header, paired_ratio, parse_timing_args, table, time_interleaved, timing_parser

import hybrid
import solvers
from hybrid import metrics as M
from neuroscale import build_config, load_run, task_class, test_set, train_run

FACTORS = (1, 2, 4, 8, 16)
KOCHKOV = "8-10x coarser, 40-80x faster"

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


def _compiled_rollout(physics_b, y0_b, ts_rel, t0, dt):
    """The batched plain rollout `[B, T, *state]`, compiled (AOT) for these inputs."""
    params, static = eqx.partition(physics_b, eqx.is_array)

    def run(params, y0_b):
        def one(system, y0):
            sol = solvers.solve(system, y0, ts_rel, dt=dt, t_offset=t0, throw=False)
            return sol.ys, sol.blowup_index

        return eqx.filter_vmap(one)(eqx.combine(params, static), y0_b)

    compiled = jax.jit(run).lower(params, y0_b).compile()
    return lambda: compiled(params, y0_b)


def _errors(pred, ref, ts_rel) -> dict:
    return {"rmse": float(M.rmse(pred, ref)), "corr_time": float(M.corr_time(pred, ref, ts_rel))}


def equivalent(ns, errs, times, err):
    """`(n_eq, time_eq, bound)`: the finest resolution whose plain error is still
    >= `err`, interpolated log-log with the next finer one; `bound` is "" (bracketed),
    ">=" (better than every resolution measured: n_eq and time_eq are the finest
    measured) or "<" (worse than the coarsest: None)."""
    e = [x if np.isfinite(x) else math.inf for x in errs]
    worse = [i for i, x in enumerate(e) if x >= err]
    if not worse:
        return None, None, "<"
    i = max(worse)
    if i == len(ns) - 1:
        return ns[i], times[i], ">="
    if not np.isfinite(e[i]):
        # blow-up at n_i: no slope to interpolate on, take the next resolution
        return ns[i + 1], times[i + 1], ""
    frac = (math.log(e[i]) - math.log(err)) / (math.log(e[i]) - math.log(e[i + 1]))
    log_n = math.log(ns[i]) + frac * (math.log(ns[i + 1]) - math.log(ns[i]))
    log_t = math.log(times[i]) + frac * (math.log(times[i + 1]) - math.log(times[i]))
    return math.exp(log_n), math.exp(log_t), ""


def frontier(run: Path, args) -> dict:
    task, ens = load_run(run)
    cfg = task.cfg
    test, ys_fine, fine = test_set(task, run, progress=False)
    ts_rel = np.asarray(test.ts - test.ts[0], np.float64)
    t0, ref, coarse = test.ts[0], test.ys, test.physics
    y0 = ref[:, 0]

    variants = {}  # name -> dict(fn, n, dt, post)
    if task.ndim > 0:
        for k in FACTORS:
            n = cfg.coarse_n * k
            if n > cfg.fine_n:
                break
            phys = eqx.filter_vmap(lambda f, n=n: task.coarse_physics(f, n))(fine)
            y0_n = task.coarse_grain(ys_fine[:, 0], n)
            variants[f"plain {k}x"] = dict(
                fn=_compiled_rollout(phys, y0_n, ts_rel, t0, cfg.dt / k), n=n, k=k,
                dt=cfg.dt / k, post=lambda ys, n=n: task.coarse_grain(ys, cfg.coarse_n))
    else:
        variants["cluster model, no closure"] = dict(
            fn=_compiled_rollout(coarse, y0, ts_rel, t0, cfg.dt), n=cfg.coarse_n, k=1,
            dt=cfg.dt, post=lambda ys: ys)
        variants["fine oscillators (reference solver)"] = dict(
            fn=_compiled_rollout(fine, ys_fine[:, 0], ts_rel, t0, cfg.fine_dt), n=cfg.fine_n,
            k=None, dt=cfg.fine_dt, post=lambda ys: task.coarse_grain(ys, cfg.coarse_n))

    one = hybrid.Ensemble(jax.tree.map(lambda x: x[:1] if eqx.is_array(x) else x, ens.members),
                          ens.physics, ens.mode)

    def rollouts(e):
        sol = e.solve_batch(y0, ts_rel, dt=cfg.dt, physics=coarse, args=test.args, t0=t0,
                            stochastic=False, calibrated=False)
        return sol.ys, sol.blowup_index

    def hybrid_all():
        return rollouts(ens)

    def hybrid_one():
        return rollouts(one)

    names = list(variants) + ["hybrid ensemble", "hybrid, one member"]
    fns = [v["fn"] for v in variants.values()] + [hybrid_all, hybrid_one]

    rows, errs = [], {}
    for name, fn in zip(names, fns, strict=True):
        ys, blow = fn()
        if name == "hybrid ensemble":
            member_errs = [_errors(ys[m], ref, ts_rel) for m in range(ys.shape[0])]
            errs["hybrid ensemble"] = _errors(jnp.mean(ys, axis=0), ref, ts_rel)
            errs["hybrid, one member"] = {
                k: float(np.mean([e[k] for e in member_errs])) for k in ("rmse", "corr_time")}
            variants[name] = dict(n=cfg.coarse_n, k=1, dt=cfg.dt, blowups=int(jnp.sum(blow >= 0)),
                                  members=int(ys.shape[0]))
        elif name == "hybrid, one member":
            variants[name] = dict(n=cfg.coarse_n, k=1, dt=cfg.dt, blowups=int(jnp.sum(blow >= 0)),
                                  members=1)
        else:
            errs[name] = _errors(variants[name]["post"](ys), ref, ts_rel)
            variants[name]["blowups"] = int(jnp.sum(blow >= 0))
        print(f"{run}: {name}: {errs.get(name)}", flush=True)

    samples = time_interleaved(fns, (), repeats=args.repeats, min_time=args.min_time,
                               warmup=1)
    cpu = {n: statistics.median(s.cpu) for n, s in zip(names, samples, strict=True)}
    wall = {n: min(s.wall) for n, s in zip(names, samples, strict=True)}
    for name in names:
        v = variants[name]
        rows.append({
            "solver": name, "n": v["n"], "dt": v["dt"],
            "rmse": errs[name]["rmse"], "corr_time": errs[name]["corr_time"],
            "blow-ups": v["blowups"], "CPU time (ms)": cpu[name] * 1e3,
            "wall, fastest (ms)": wall[name] * 1e3,
        })

    summary = []
    plain = [n for n in names if n.startswith("plain")]
    for h in ("hybrid ensemble", "hybrid, one member"):
        hyb_vs_base = paired_ratio(samples[names.index(h)].cpu, samples[0].cpu)
        row = {"hybrid": h, "rmse": errs[h]["rmse"],
               "rmse / no-closure rmse": errs[h]["rmse"] / errs[names[0]]["rmse"],
               "cost / no-closure cost (CPU)": hyb_vs_base}
        if plain:
            ns = [variants[p]["n"] for p in plain]
            n_eq, t_eq, bound = equivalent(ns, [errs[p]["rmse"] for p in plain],
                                           [cpu[p] for p in plain], errs[h]["rmse"])
            ct_ns = [errs[p]["corr_time"] for p in plain]
            # corr_time grows with resolution: the same search on 1 / corr_time
            n_ct, _, bound_ct = equivalent(ns, [1 / max(c, 1e-12) for c in ct_ns],
                                           [cpu[p] for p in plain],
                                           1 / max(errs[h]["corr_time"], 1e-12))
            row.update({
                "equivalent n (rmse)": "< n" if n_eq is None else f"{bound}{n_eq:.0f}",
                "resolution factor": "< 1" if n_eq is None else f"{bound}{n_eq / cfg.coarse_n:.2f}",
                "speed-up at equal rmse (CPU)": "-" if n_eq is None
                else f"{bound}{t_eq / cpu[h]:.2f}",
                "equivalent n (corr_time)": "< n" if n_ct is None else f"{bound_ct}{n_ct:.0f}",
                "Kochkov et al. 2021": KOCHKOV,
            })
        else:
            fine_name = "fine oscillators (reference solver)"
            row["speed-up vs fine simulation (CPU)"] = cpu[fine_name] / cpu[h]
        summary.append(row)

    if args.figure_dir is not None:
        _figure(Path(args.figure_dir) / f"frontier_{cfg.task.replace('-', '_')}.png",
                cfg, rows)
    return {"cfg": cfg, "rows": rows, "summary": summary, "run": run}


def _figure(path: Path, cfg, rows) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    hyb = next(r for r in rows if r["solver"] == "hybrid ensemble")
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
