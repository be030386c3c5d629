"""GraphBurgers on a large random hyperbolic graph: construction time, and the
tendency's throughput in edges per second against the same tendency in NumPy.

- `build graph`: `solvers.graphs.random_hyperbolic(n, avg_degree=10, key=...,
  return_coordinates=True)`, 1M nodes (about 10M directed edges), wall and CPU time.
- `build GraphBurgers`: `GraphBurgers(graph, 0.1, coordinates=coords)`: the
  orientation of every edge by the hyperbolic angles, the divergence-free projection
  of the flow (a Laplacian solve by Jacobi-preconditioned conjugate gradients, SciPy)
  and the column layout of the weights and the flow.
- `tendency`: the jitted `GraphBurgers.vector_field` (Engquist–Osher flux), float32,
  the system passed as a jit argument (no constant folding of the graph); on this
  graph it uses the column layout (`solvers.graphs.ColumnLayout.edge_sum`). Peer: the
  same tendency written in NumPy, vectorised: `u[senders]`, `u[receivers]`, the flux
  and the diffusion per edge, `np.bincount(receivers, terms)` (the sign of the flow
  precomputed once, a head start NumPy gets and we do not take). In edges per
  second.
- `tendency, segment sum`: the same with `layout=False`, against NumPy and against
  the layout.

Each repeat times every side once, in rotating order, so that load from other
processes hits all of them alike. Throughputs come from the median CPU time per call
of each side; the headline ratio ours/peer is the median of the per-repeat CPU-time
ratios, the wall-clock ratio of the fastest samples is given beside it (above 1: we
are faster). XLA:CPU runs on all cores and its idle threads spin, so its CPU time is
about twice its wall time on 2 cores, while NumPy uses one; `--one-core` pins the
process to one core and XLA to one thread (CPU time = wall time, core for core).

    python benchmarks/bench_graph_burgers.py [--nodes 1000000] [--avg-degree 10]
                                             [--quick] [--one-core]
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
    parser.add_argument("--viscosity", type=float, default=0.1)
    args = parser.parse_args()
    if args.quick:
        args.nodes, args.repeats = 100_000, 5
    n, nu = args.nodes, args.viscosity

    start, start_cpu = time.perf_counter(), time.process_time()
    graph, coords = solvers.graphs.random_hyperbolic(
        n, avg_degree=args.avg_degree, key=jax.random.PRNGKey(0), return_coordinates=True
    )
    jax.block_until_ready(graph.weights)
    build_graph = (time.perf_counter() - start, time.process_time() - start_cpu)
    print(f"graph: {build_graph[0]:.2f} s wall, {build_graph[1]:.2f} s CPU, "
          f"{graph.n_edges} edges", flush=True)
    start, start_cpu = time.perf_counter(), time.process_time()
    on_layout = solvers.GraphBurgers(graph, nu, coordinates=coords, layout=True)
    jax.block_until_ready(on_layout.layout)
    build_system = (time.perf_counter() - start, time.process_time() - start_cpu)
    print(f"GraphBurgers: {build_system[0]:.2f} s wall, {build_system[1]:.2f} s CPU",
          flush=True)
    # The same system without its layout (a second construction would redo the solve).
    segment_sum = eqx.tree_at(lambda s: s.layout, on_layout, None)
    n_edges = graph.n_edges

    @eqx.filter_jit
    def tendency(system, u):
        return system.vector_field(0.0, u, None)

    u = jax.random.normal(jax.random.PRNGKey(1), (n,), jnp.float32) + 0.3
    u_np = np.asarray(u)
    senders = np.asarray(graph.senders, np.intp)
    receivers = np.asarray(graph.receivers, np.intp)
    weights = np.asarray(graph.weights, np.float32)
    flow = np.asarray(on_layout.flow, np.float32)
    sign = np.sign(flow)
    h = on_layout.spacing
    transport, diffusion = np.float32(-1.0 / h), np.float32(nu / h**2)

    def numpy_tendency(u):
        u_s, u_r = u[senders], u[receivers]
        a, b = sign * u_r, sign * u_s
        flux = np.float32(0.5) * (np.maximum(a, 0) ** 2 + np.minimum(b, 0) ** 2)
        terms = transport * flow * flux + diffusion * weights * (u_s - u_r)
        return np.bincount(receivers, terms, minlength=n).astype(np.float32)

    ours = np.asarray(tendency(on_layout, u))
    ref = numpy_tendency(u_np)
    scale = float(np.abs(ref).max())
    err = float(np.abs(ours - ref).max()) / scale
    err_seg = float(np.abs(np.asarray(tendency(segment_sum, u)) - ours).max()) / scale
    print(f"max |layout - NumPy| / max |NumPy|: {err:.1e}; |layout - segment sum|: "
          f"{err_seg:.1e}", flush=True)

    samples = time_interleaved(
        [
            lambda: tendency(on_layout, u),
            lambda: numpy_tendency(u_np),
            lambda: tendency(segment_sum, u),
        ],
        (),
        repeats=args.repeats,
        min_time=args.min_time,
    )
    ours_l, peer, ours_s = samples

    def row(case, ours, peer):
        # Throughput from the median CPU time per call; ratio ours/peer of throughputs.
        return {
            "case": case,
            "ours": f"{n_edges / statistics.median(ours.cpu) / 1e6:.0f} M edges/s",
            "peer": f"{n_edges / statistics.median(peer.cpu) / 1e6:.0f} M edges/s",
            "ours/peer (CPU)": paired_ratio(peer.cpu, ours.cpu),
            "ours/peer (wall, fastest)": min(peer.wall) / min(ours.wall),
        }

    def build_row(case, wall_cpu):
        return {"case": case, "ours": f"{wall_cpu[0]:.2f} s wall, {wall_cpu[1]:.2f} s CPU",
                "peer": "-", "ours/peer (CPU)": "-", "ours/peer (wall, fastest)": "-"}

    rows = [
        build_row(f"build random_hyperbolic({n}, avg_degree={args.avg_degree:g})",
                  build_graph),
        build_row("build GraphBurgers (orientation, divergence-free flow, layout)",
                  build_system),
        row(f"tendency ({n_edges} edges) vs the same tendency in NumPy", ours_l, peer),
        row("tendency, segment sum (`layout=False`) vs NumPy", ours_s, peer),
        row("tendency: column layout vs segment sum", ours_l, ours_s),
    ]
    print()
    print(header(("jax", "jaxlib", "equinox", "numpy", "scipy")))
    print(
        f"_{'one core, one XLA thread' if args.one_core else 'all cores'}; float32; "
        f"{n} nodes, {n_edges} directed edges (average degree {n_edges / n:.2f}); "
        f"Engquist–Osher flux, viscosity {nu:g}, spacing 1; {args.repeats} interleaved "
        f"repeats; ratio > 1 means we are faster; max |ours - NumPy| / max |NumPy| of "
        f"the tendency: {err:.1e}_"
    )
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
