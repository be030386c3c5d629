"""Reverse mode through `solvers.solve`: peak memory against rollout length, and the
time of a gradient against the forward rollout alone.

Two systems, float32, loss = sum of squares of the final state, gradient with respect
to the initial state:

- Burgers1D, n = 1024, ETDRK4, dt = 1e-3;
- NavierStokes2D, 64^2, Kolmogorov forcing, Crank–Nicolson RK4, dt = 5e-3.

Memory is XLA's own accounting of the compiled gradient program's temporaries
(`compiled.memory_analysis().temp_size_in_bytes`): deterministic on a machine, no
sampling. `checkpointing: auto` is `solve`'s default (nested `jax.checkpoint`, 2
levels up to 400 steps, beyond that a memory-modelled mix of 2 and 3 levels,
`solvers._solve._auto_schedule`); `none` is `checkpoint_levels=1`, a plain
`lax.scan` that stores every step, the naive reference.

Time: the jitted forward rollout and the jitted gradient are timed in alternation;
times are the median CPU time per call; the headline ratio grad / forward is
the median of the per-repeat CPU-time ratios, the wall-clock ratio of the fastest
samples is given beside it. Targets: memory at 1,000 steps < 2x memory at 100
steps; grad / forward <= 4. On several cores XLA's idle threads spin and inflate the
CPU time unevenly between the two programs; `--one-core` (one core, one XLA thread)
gives the core-for-core ratio, where CPU and wall time agree.

    python benchmarks/bench_gradients.py [--steps 100 1000] [--memory-steps 100 1000 10000]
                                         [--one-core]
"""


import jax
import jax.numpy as jnp
import numpy as np
from _common import compare, header, parse_timing_args, table, time_interleaved, timing_parser

import solvers


def _systems():
    burgers = solvers.Burgers1D(1024, 0.02)
    u0 = solvers.random_smooth_field(jax.random.PRNGKey(0), 1024, dtype=jnp.float32)
    ns = solvers.NavierStokes2D(64, 1e-2, drag=0.1, forcing="kolmogorov")
    w0 = solvers.random_vorticity(jax.random.PRNGKey(0), 64, max_velocity=5.0,
                                  dtype=jnp.float32)
    return {
        "Burgers1D 1024 (ETDRK4)": (burgers, u0, 1e-3),
        "NavierStokes2D 64^2 (CN-RK4)": (ns, w0, 5e-3),
    }


def _loss(system, steps, dt, levels):
    ts = np.array([0.0, steps * dt])

    def loss(y0):
        sol = solvers.solve(system, y0, ts, dt=dt, checkpoint_levels=levels)
        return jnp.sum(sol.ys[-1] ** 2)

    return loss


def main():
    parser = timing_parser(__doc__, repeats=9, min_time=0.05)
    parser.add_argument("--steps", type=int, nargs="+", default=[100, 1000],
                        help="rollout lengths that are timed")
    parser.add_argument("--memory-steps", type=int, nargs="+", default=[100, 1000, 10000],
                        help="rollout lengths whose gradient memory is measured")
    args = parse_timing_args(parser)

    mem_rows, time_rows = [], []
    for name, (system, y0, dt) in _systems().items():
        base = {}
        for steps in args.memory_steps:
            for levels, label in ((None, "auto (nested)"), (1, "none (plain scan)")):
                if levels == 1 and steps > 1000:
                    continue  # would only confirm the linear growth, at gigabytes
                grad = jax.jit(jax.grad(_loss(system, steps, dt, levels)))
                mem = grad.lower(y0).compile().memory_analysis().temp_size_in_bytes
                base.setdefault(label, mem)
                mem_rows.append(
                    {"system": name, "checkpointing": label, "steps": steps,
                     "grad temp memory (MiB)": mem / 2**20,
                     f"vs {args.memory_steps[0]} steps": mem / base[label]}
                )
                print(mem_rows[-1], flush=True)
        for steps in args.steps:
            loss = _loss(system, steps, dt, None)
            fwd, grad = jax.jit(loss), jax.jit(jax.grad(loss))
            t_f, t_g = time_interleaved([fwd, grad], (y0,), repeats=args.repeats,
                                        min_time=args.min_time)
            time_rows.append({"system": name, "steps": steps,
                              **compare(t_g, t_f, "grad", "forward")})
            print(time_rows[-1], flush=True)
    print()
    print(header())
    print(
        f"_float32; {args.repeats} interleaved repeats_"
    )
    print()
    print("Gradient memory:")
    print()
    print(table(mem_rows))
    print()
    print("Gradient time (auto checkpointing):")
    print()
    print(table(time_rows))


if __name__ == "__main__":
    main()
