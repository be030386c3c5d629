"""The accuracy–cost frontier of a trained run: the plain solver at 1x, 2x, 4x, ...
the coarse resolution against one hybrid member and the ensemble, error and cost
measured on the same held-out batch in the same process.

- **Error**: rmse against the filtered fine reference over the evaluation window, and
  `corr_time` (time until the pattern correlation drops below 0.95, Kochkov et al.
  2021), which does not saturate for chaotic flows the way rmse does.
- **Cost**: one compiled rollout of the whole test batch (compilation excluded), CPU
  time of the process (median over `repeats` calls) and the fastest wall time, all
  variants called in alternation so that load from other processes hits them alike;
  per trajectory = batch cost / B.
- **Equivalent resolution**: the refinement factor at which the plain solver's error
  equals the hybrid's, with log(error) interpolated linearly in log(n) between the two
  resolutions that bracket it (`">="`: better than the finest plain solver measured);
  the **speed-up** is that plain solver's cost (interpolated the same way) over the
  hybrid's.
"""

import math
import statistics
import time
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

import hybrid
import solvers

# Kochkov et al., PNAS 118 (2021): 8-10x coarser at equal accuracy, 40-80x faster
# (TPU, Navier–Stokes, Re 1000); Bar-Sinai et al., PNAS 116 (2019): 4-8x coarser
# (Burgers).
PEERS = {"kochkov_2021": "8-10x coarser, 40-80x faster (TPU, Navier-Stokes)",
         "bar_sinai_2019": "4-8x coarser (Burgers)"}


def _compile(fn, *args):
    compiled = jax.jit(fn).lower(*args).compile()
    return lambda: compiled(*args)


def _plain(physics_b, y0_b, ts_rel, t0, dt, save_fn=None):
    params, static = eqx.partition(physics_b, eqx.is_array)

    def run(params, y0_b):
        def one(system, y0):
            sol = solvers.solve(system, y0, ts_rel, dt=dt, t_offset=t0, throw=False,
                                save_fn=save_fn)
            return sol.ys, sol.blowup_index

        return eqx.filter_vmap(one)(eqx.combine(params, static), y0_b)

    return _compile(run, params, y0_b)


def _hybrid(ensemble, test, ts_rel, dt):
    params, static = eqx.partition(ensemble, eqx.is_array)

    def run(params, y0s):
        ens = eqx.combine(params, static)
        sol = ens.solve_batch(y0s, ts_rel, dt=dt, args=test.args, physics=test.physics,
                              t0=test.ts[0], stochastic=False, calibrated=False)
        return sol.ys, sol.blowup_index

    return _compile(run, params, test.ys[:, 0])


def time_alternating(fns: dict[str, Any], repeats: int, *,
                     warmup: bool = True) -> dict[str, dict[str, float]]:
    """Median CPU and fastest wall seconds per call of each function, called in an
    order that rotates between repeats (after one untimed call each, unless `warmup`
    is false: the functions were compiled and run already)."""
    names = list(fns)
    for name in names if warmup else ():
        jax.block_until_ready(fns[name]())
    cpu: dict[str, list[float]] = {n: [] for n in names}
    wall: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            c0, w0 = time.process_time(), time.perf_counter()
            jax.block_until_ready(fns[name]())
            cpu[name].append(time.process_time() - c0)
            wall[name].append(time.perf_counter() - w0)
    return {n: {"cpu": statistics.median(cpu[n]), "wall": min(wall[n])} for n in names}


def equivalent(ns, errs, costs, err) -> tuple[float | None, float | None, str]:
    """`(n_eq, cost_eq, bound)`: where the plain error crosses `err`, log-log
    interpolated between the two bracketing resolutions; `bound` is `""`, `">="`
    (better than the finest measured: its n and cost) or `"<"` (worse than the
    coarsest: `None`). A plain error equal to `err` (a censored measure: both
    correlated over the whole window) gives the coarsest such resolution and its cost,
    marked `">="`: lower bounds of both the resolution and the speed-up."""
    e = [x if np.isfinite(x) else math.inf for x in errs]
    tied = [i for i, x in enumerate(e) if x == err]
    if tied:
        return float(ns[tied[0]]), float(costs[tied[0]]), ">="
    worse = [i for i, x in enumerate(e) if x > err]
    if not worse:
        return None, None, "<"
    i = max(worse)
    if i == len(ns) - 1:
        return float(ns[i]), float(costs[i]), ">="
    if not np.isfinite(e[i]) or e[i] == e[i + 1]:
        return float(ns[i + 1]), float(costs[i + 1]), ""
    frac = (math.log(e[i]) - math.log(err)) / (math.log(e[i]) - math.log(e[i + 1]))
    log_n = math.log(ns[i]) + frac * (math.log(ns[i + 1]) - math.log(ns[i]))
    log_c = math.log(costs[i]) + frac * (math.log(costs[i + 1]) - math.log(costs[i]))
    return math.exp(log_n), math.exp(log_c), ""


def measure_frontier(task, ensemble: hybrid.Ensemble, test: hybrid.Trajectories, fine_y0,
                     fine, *, repeats: int = 5, timing: bool = True) -> dict[str, Any]:
    """The frontier of `ensemble` on the test batch and fine initial states `fine_y0`
    (`neuroscale.test_set`).

    **Returns:** `rows` (every variant: n, dt, rmse, corr_time, blow-ups, and with
    `timing` its cost), `curves` (label -> rmse against time of the plain solvers),
    `finer` (the plain solvers' block of `metrics.json`) and, with `timing`, the
    `frontier` block."""
    cfg = task.cfg
    ts_rel = tuple(float(t) for t in np.asarray(test.ts - test.ts[0]))
    ts_np = np.asarray(ts_rel)
    ref = test.ys
    like = task.sample(jr.PRNGKey(0))[0]
    fns: dict[str, Any] = {}
    info: dict[str, dict[str, Any]] = {}
    for k in (1, *task.finer_factors):
        if k == 1:
            fns["plain 1x"] = _plain(test.physics, ref[:, 0], ts_rel, test.ts[0], cfg.dt)
            info["plain 1x"] = dict(n=cfg.coarse_n, k=1, dt=cfg.dt, post=lambda ys: ys)
            continue
        probe = task.finer(like, k)
        if probe is None:
            continue
        _, dt_k, grain = probe
        phys = eqx.filter_vmap(lambda f, k=k: task.finer(f, k)[0])(fine)
        fns[f"plain {k}x"] = _plain(phys, grain(fine_y0), ts_rel, test.ts[0], dt_k)
        info[f"plain {k}x"] = dict(n=cfg.coarse_n * k, k=k, dt=dt_k,
                                   post=lambda ys, k=k: task.finer_to_coarse(ys, k))
    if task.reference_in_frontier:
        # saved coarse-grained: a million-node state per save would not fit
        fns["fine model"] = _plain(fine, fine_y0, ts_rel, test.ts[0], cfg.fine_dt,
                                   save_fn=lambda y: task.coarse_grain(y, cfg.coarse_n))
        info["fine model"] = dict(n=cfg.fine_n, k=0, dt=cfg.fine_dt, post=lambda ys: ys)
    one = hybrid.Ensemble(jax.tree.map(lambda x: x[:1] if eqx.is_array(x) else x,
                                       ensemble.members), ensemble.physics, ensemble.mode)
    fns["hybrid, one member"] = _hybrid(one, test, ts_rel, cfg.dt)
    fns["hybrid ensemble"] = _hybrid(ensemble, test, ts_rel, cfg.dt)
    errors: dict[str, dict[str, float]] = {}
    curves: dict[str, Any] = {}
    for name, fn in fns.items():
        ys, blow = fn()
        if name.startswith("hybrid"):
            singles = [(float(hybrid.metrics.rmse(y, ref)),
                        float(hybrid.metrics.corr_time(y, ref, ts_np))) for y in ys]
            if name == "hybrid, one member":
                errors[name] = {"rmse": singles[0][0], "corr_time": singles[0][1]}
            else:
                mean = jnp.mean(ys, axis=0)
                errors[name] = {"rmse": float(hybrid.metrics.rmse(mean, ref)),
                                "corr_time": float(hybrid.metrics.corr_time(mean, ref, ts_np))}
            info[name] = dict(n=cfg.coarse_n, k=1, dt=cfg.dt, members=int(ys.shape[0]))
        else:
            pred = info[name]["post"](ys)
            errors[name] = {"rmse": float(hybrid.metrics.rmse(pred, ref)),
                            "corr_time": float(hybrid.metrics.corr_time(pred, ref, ts_np))}
            if info[name]["k"] > 1:
                curves[f"plain solver {info[name]['k']}x (n={info[name]['n']})"] = \
                    hybrid.metrics.rmse_over_time(pred, ref)
        info[name]["blowups"] = int(jnp.sum(blow >= 0))
    plain = [n for n in fns if n.startswith("plain")]
    finer = {f"{info[p]['k']}x": {"n": info[p]["n"], "dt": info[p]["dt"], **errors[p],
                                  "blowups": info[p]["blowups"]}
             for p in plain if info[p]["k"] > 1}
    batch = len(test)
    rows = [{"solver": name, "n": info[name]["n"], "dt": info[name]["dt"],
             **errors[name], "blowups": info[name]["blowups"]} for name in fns]
    if not timing:
        return {"rows": rows, "curves": curves, "finer": finer}
    costs = time_alternating(fns, repeats, warmup=False)  # compiled and run above
    for row in rows:
        c = costs[row["solver"]]
        row.update(cpu_s=c["cpu"], wall_s=c["wall"], cpu_s_per_trajectory=c["cpu"] / batch)
    ns = [info[p]["n"] for p in plain]
    cpu = [costs[p]["cpu"] for p in plain]
    block: dict[str, Any] = {"batch": batch, "repeats": repeats, "peers": PEERS}
    for label, name in (("", "hybrid, one member"), ("ensemble_", "hybrid ensemble")):
        n_eq, c_eq, bound = equivalent(ns, [errors[p]["rmse"] for p in plain], cpu,
                                       errors[name]["rmse"])
        # corr_time grows with resolution: the same search on its inverse
        n_ct, c_ct, bound_ct = equivalent(
            ns, [1 / max(errors[p]["corr_time"], 1e-12) for p in plain], cpu,
            1 / max(errors[name]["corr_time"], 1e-12))
        h_cpu = costs[name]["cpu"]
        block[f"{label}equivalent_resolution"] = None if n_eq is None else n_eq / cfg.coarse_n
        block[f"{label}speedup"] = None if c_eq is None else c_eq / h_cpu
        block[f"{label}bound"] = bound
        block[f"{label}equivalent_resolution_corr_time"] = (
            None if n_ct is None else n_ct / cfg.coarse_n)
        block[f"{label}speedup_corr_time"] = None if c_ct is None else c_ct / h_cpu
        block[f"{label}bound_corr_time"] = bound_ct
    block["cost_vs_plain_coarse"] = costs["hybrid, one member"]["cpu"] / costs["plain 1x"]["cpu"]
    if "fine model" in costs:
        # the reference's own solver (every fine degree of freedom): its cost over the
        # hybrid's, and its error against the stored reference (its own, re-solved)
        block["fine_rmse"] = errors["fine model"]["rmse"]
        for label, name in (("", "hybrid, one member"), ("ensemble_", "hybrid ensemble")):
            block[f"{label}speedup_vs_fine"] = costs["fine model"]["cpu"] / costs[name]["cpu"]
    block["cpu_s_per_trajectory"] = {r["solver"]: r["cpu_s_per_trajectory"] for r in rows}
    return {"frontier": block, "rows": rows, "curves": curves, "finer": finer}
