"""Kuramoto on a large random hyperbolic graph: graph build time, and the tendency's
throughput in edges per second against NumPy doing a random gather of the same size.

- `build`: `solvers.graphs.random_hyperbolic(n, avg_degree=10, key=...)`, 1M nodes
  (about 10M directed edges: each undirected edge is stored both ways), wall time of
  the whole call including the edge weights and the `Graph` arrays. Target < 30 s.
- `tendency, graph`: the jitted `Kuramoto(omega, K, graph=g).vector_field`, float32,
  the system passed as a jit argument (no constant folding of the graph); on this
  graph it uses the column layout (`solvers.graphs.ColumnLayout`). Peer: NumPy
  `theta[idx].sum()` with `idx` uniformly random, as many indices as edges (native
  int64 indices). Both in edges per second; target ours/NumPy >= 0.7.
- `tendency, graph, segment sum`: the same with `layout=False` (a sorted segment sum
  over the edges, a scatter in XLA:CPU), against the column layout.
- `tendency, graph (NumPy)`: for context, the same tendency written in NumPy,
  `bincount(receivers, w * sin(theta[senders] - theta[receivers]))`.
- `tendency, all-to-all`: `graph=None`, the O(N) mean-field path, against the same
  formula in NumPy (`sin`, `cos` and two means); in nodes per second.

Each repeat times every side once, in rotating order, so that load from other
processes hits all of them alike. Throughputs come from the median CPU time per
call of each side; the headline ratio ours/peer is the median of the per-repeat
CPU-time ratios, the wall-clock ratio of the fastest samples is given beside it
(above 1: we are faster).

XLA:CPU runs the jitted tendency on all cores and its idle threads spin, so its CPU
time is about twice its wall time on 2 cores, while NumPy uses one. `--one-core` pins
the process to one core and XLA to one thread: then CPU time and wall time agree and
the comparison is core for core.

    python benchmarks/bench_kuramoto.py [--nodes 1000000] [--avg-degree 10] [--quick]
                                        [--one-core]
"""

import statistics
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from _common import header, paired_ratio, table, time_interleaved, timing_parser

import solvers


def main():
    parser = timing_parser(__doc__, repeats=15, min_time=0.2,
                           quick_help="100k nodes, 5 repeats")
    parser.add_argument("--nodes", type=int, default=1_000_000)
    parser.add_argument("--avg-degree", type=float, default=10.0)
    parser.add_argument("--builds", type=int, default=2, help="graph builds timed (min)")
    args = parser.parse_args()
    if args.quick:
        args.nodes, args.repeats, args.builds = 100_000, 5, 1
    n = args.nodes

    builds, build_cpu = [], []
    for b in range(args.builds):
        start, start_cpu = time.perf_counter(), time.process_time()
        graph = solvers.graphs.random_hyperbolic(
            n, avg_degree=args.avg_degree, key=jax.random.PRNGKey(b)
        )
        jax.block_until_ready(graph.weights)
        builds.append(time.perf_counter() - start)
        build_cpu.append(time.process_time() - start_cpu)
        print(f"build {b}: {builds[-1]:.2f} s wall, {build_cpu[-1]:.2f} s CPU, "
              f"{graph.n_edges} edges", flush=True)
    n_edges = graph.n_edges

    key_omega, key_theta = jax.random.split(jax.random.PRNGKey(42))
    omega = solvers.lorentzian_frequencies(key_omega, n, dtype=jnp.float32)
    theta = jax.random.uniform(key_theta, (n,), jnp.float32, 0.0, 2 * np.pi)
    on_graph = solvers.Kuramoto(omega, 2.0, graph=graph, layout=True)
    segment_sum = solvers.Kuramoto(omega, 2.0, graph=graph, layout=False)
    all_to_all = solvers.Kuramoto(omega, 2.0)

    @eqx.filter_jit
    def tendency(system, theta):
        return system.vector_field(0.0, theta, None)

    rng = np.random.default_rng(0)
    theta_np = np.asarray(theta)
    omega_np = np.asarray(omega)
    idx = rng.integers(0, n, n_edges)  # intp: NumPy's native index type
    senders = np.asarray(graph.senders, np.intp)
    receivers = np.asarray(graph.receivers, np.intp)
    weights = np.asarray(graph.weights)

    def numpy_gather(th):
        return th[idx].sum()

    def numpy_coupling(th):
        return np.bincount(
            receivers, weights=weights * np.sin(th[senders] - th[receivers]), minlength=n
        ).astype(np.float32)

    def numpy_graph(th):
        return omega_np + 2.0 * numpy_coupling(th)

    def numpy_mean_field(th):
        s, c = np.sin(th), np.cos(th)
        return omega_np + 2.0 * (s.mean() * c - c.mean() * s)

    # Same numbers before timing: the coupling term, float32 against NumPy's float64
    # sines and sums.
    err_graph = float(np.max(np.abs(np.asarray(on_graph.interaction(theta)) -
                                    numpy_coupling(theta_np))))
    s, c = np.sin(theta_np.astype(np.float64)), np.cos(theta_np.astype(np.float64))
    err_all = float(np.max(np.abs(np.asarray(all_to_all.interaction(theta)) -
                                  (s.mean() * c - c.mean() * s))))
    err_seg = float(np.max(np.abs(np.asarray(segment_sum.interaction(theta)) -
                                  np.asarray(on_graph.interaction(theta)))))
    print(f"max |layout - segment sum| of the coupling: {err_seg:.1e}", flush=True)
    print(f"max |ours - NumPy| of the coupling: graph {err_graph:.1e}, "
          f"all-to-all {err_all:.1e}", flush=True)

    samples = time_interleaved(
        [
            lambda: tendency(on_graph, theta),
            lambda: numpy_gather(theta_np),
            lambda: numpy_graph(theta_np),
            lambda: tendency(all_to_all, theta),
            lambda: numpy_mean_field(theta_np),
            lambda: tendency(segment_sum, theta),
        ],
        (),
        repeats=args.repeats,
        min_time=args.min_time,
    )
    ours_g, np_gather, np_graph, ours_a, np_mf, ours_seg = samples

    def row(case, ours, peer, count, unit, target="-"):
        # Throughput from the median CPU time per call; ratio ours/peer of throughputs.
        return {
            "case": case,
            "ours": f"{count / statistics.median(ours.cpu) / 1e6:.0f} M {unit}/s",
            "peer": f"{count / statistics.median(peer.cpu) / 1e6:.0f} M {unit}/s",
            "ours/peer (CPU)": paired_ratio(peer.cpu, ours.cpu),
            "ours/peer (wall, fastest)": min(peer.wall) / min(ours.wall),
            "target": target,
        }

    rows = [
        {"case": f"build random_hyperbolic({n}, avg_degree={args.avg_degree:g})",
         "ours": f"{min(builds):.2f} s wall, {min(build_cpu):.2f} s CPU", "peer": "-",
         "ours/peer (CPU)": "-", "ours/peer (wall, fastest)": "-", "target": "< 30 s"},
        row(f"tendency, graph ({n_edges} edges) vs NumPy random gather+sum",
            ours_g, np_gather, n_edges, "edges", ">= 0.7"),
        row("tendency, graph vs the same tendency in NumPy", ours_g, np_graph, n_edges,
            "edges"),
        row("tendency, graph, segment sum (`layout=False`) vs NumPy random gather+sum",
            ours_seg, np_gather, n_edges, "edges"),
        row("tendency, graph: column layout vs segment sum", ours_g, ours_seg, n_edges,
            "edges"),
        row(f"tendency, all-to-all ({n} nodes) vs NumPy mean field", ours_a, np_mf, n,
            "nodes"),
    ]
    print()
    print(header(("jax", "jaxlib", "equinox", "numpy")))
    print(
        f"_{'one core, one XLA thread' if args.one_core else 'all cores'}; "
        f"float32; {n} nodes, {n_edges} directed edges (average degree "
        f"{n_edges / n:.2f}); builds (wall): {', '.join(f'{b:.2f} s' for b in builds)}; "
        f"{args.repeats} interleaved repeats; ratio > 1 means we are faster; max "
        f"|ours - NumPy| of the coupling term: {err_graph:.1e} (graph), {err_all:.1e} "
        "(all-to-all)_"
    )
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
