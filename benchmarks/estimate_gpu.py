"""An *estimate*, not a measurement: where the accuracy–cost frontier of a trained run
should land on a GPU, from what XLA reports about the compiled rollouts.

No GPU was lent to this project's sessions so far; when one is, `bench_frontier.py`
run there measures the real figure. Until then, for every variant of the frontier
(the plain solver at k x the coarse resolution, one hybrid member) this script takes
the compiled batched rollout of the test set and reads, from XLA's cost analysis on
this CPU, its floating-point operations and bytes accessed, and counts its solver
steps. Two bounds of the GPU time follow:

- **throughput bound** (large batches): time = max(FLOPs / F, bytes / W) with F and W
  the GPU's sustained float32 rate and memory bandwidth (`--tflops`, `--bandwidth`;
  defaults for an H200: 60 TFLOP/s fp32 without tensor cores, 4.0 TB/s). Then the
  speed-up at equal accuracy is the plain solver's (interpolated to the equivalent
  resolution) over the hybrid's, in those units.
- **latency bound** (small batches such as the test set): every solver step is a
  chain of dependent kernels, ~`--launch-us` microseconds each; time = steps x kernels
  per step x launch latency, kernels counted from the optimised HLO's fusions.

XLA counts a loop body once, whatever its trip count, so each variant is analysed as
one solver step of the batch (`ts = [0, dt]`) and multiplied by its number of steps
over the evaluation window.

    python benchmarks/estimate_gpu.py --run DIR [--batch 1024]
"""

import argparse
import re

import equinox as eqx
import jax
import jax.random as jr
import numpy as np
from _common import header, table

import hybrid
import solvers
from neuroscale import load_run, test_set


def _analyse(fn, *args) -> dict:
    compiled = jax.jit(fn).lower(*args).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    hlo = compiled.as_text()
    # kernels a GPU launches: XLA's fusions plus the library calls (FFT, conv, dot)
    kernels = len(re.findall(r"= \S+ fusion\(", hlo)) + len(
        re.findall(r"= \S+ (?:fft|convolution|dot)\(", hlo))
    return {"flops": float(cost.get("flops", 0.0)),
            "bytes": float(cost.get("bytes accessed", 0.0)), "kernels": kernels}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a trained run folder")
    parser.add_argument("--batch", type=int, default=1024,
                        help="trajectories per rollout for the throughput bound")
    parser.add_argument("--tflops", type=float, default=60.0)
    parser.add_argument("--bandwidth", type=float, default=4.0, help="TB/s")
    parser.add_argument("--launch-us", type=float, default=5.0)
    args = parser.parse_args()
    task, ens = load_run(args.run)
    cfg = task.cfg
    test, fine_y0, fine = test_set(task, args.run, progress=False)
    window = float(test.ts[-1] - test.ts[0])
    like = task.sample(jr.PRNGKey(0))[0]

    def plain_step(physics_b, dt):
        params, static = eqx.partition(physics_b, eqx.is_array)
        ts = np.array([0.0, dt])

        def run(params, y0s):
            return eqx.filter_vmap(lambda s, y: solvers.solve(s, y, ts, dt=dt, throw=False).ys)(
                eqx.combine(params, static), y0s)

        return run, params

    variants = [("plain 1x", cfg.coarse_n, test.physics, cfg.dt, test.ys[:, 0])]
    for k in task.finer_factors:
        probe = task.finer(like, k)
        if probe is None:
            continue
        phys = eqx.filter_vmap(lambda f, k=k: task.finer(f, k)[0])(fine)
        variants.append((f"plain {k}x", cfg.coarse_n * k, phys, probe[1],
                         probe[2](fine_y0)))
    rows = []
    for name, n, phys, dt, y0s in variants:
        run, params = plain_step(phys, dt)
        rows.append({"solver": name, "n": n, "steps": int(round(window / dt)),
                     **_analyse(run, params, y0s)})
    one = hybrid.Ensemble(jax.tree.map(lambda x: x[:1] if eqx.is_array(x) else x, ens.members),
                          ens.physics, ens.mode)
    params, static = eqx.partition(one, eqx.is_array)

    def hyb(params, y0s):
        e = eqx.combine(params, static)
        return e.solve_batch(y0s, np.array([0.0, cfg.dt]), dt=cfg.dt, args=test.args,
                             physics=test.physics, t0=test.ts[0], stochastic=False,
                             calibrated=False).ys

    rows.append({"solver": "hybrid, one member", "n": cfg.coarse_n,
                 "steps": int(round(window / cfg.dt)), **_analyse(hyb, params, test.ys[:, 0])})
    batch = len(test)
    for r in rows:
        flops = r.pop("flops") / batch * r["steps"]  # per trajectory, whole window
        nbytes = r.pop("bytes") / batch * r["steps"]
        r["FLOP / trajectory"] = flops
        r["bytes / trajectory"] = nbytes
        r["GPU, throughput bound (us / trajectory)"] = 1e6 * max(
            flops / (args.tflops * 1e12), nbytes / (args.bandwidth * 1e12))
        r["GPU, latency bound (ms / rollout)"] = 1e-3 * args.launch_us * r["kernels"] * r["steps"]
    print("GPU estimate from XLA cost analysis (an estimate, not a measurement)")
    print(header())
    print(table(rows))
    h = rows[-1]
    print(f"\nrun {args.run}: coarse_n {cfg.coarse_n}, dt {cfg.dt}, window {window:g}; GPU "
          f"model: {args.tflops} TFLOP/s, {args.bandwidth} TB/s, {args.launch_us} us/kernel")
    for r in rows[:-1]:
        thr = r["GPU, throughput bound (us / trajectory)"] / h[
            "GPU, throughput bound (us / trajectory)"]
        lat = r["GPU, latency bound (ms / rollout)"] / h["GPU, latency bound (ms / rollout)"]
        print(f"{r['solver']} / hybrid member: {thr:.3g}x (throughput bound), "
              f"{lat:.3g}x (latency bound)")


if __name__ == "__main__":
    main()
