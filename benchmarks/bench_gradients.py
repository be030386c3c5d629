"""Reverse mode through `solvers.solve`: peak memory against rollout length and the
time of a gradient against the forward rollout, on Burgers1D (ETDRK4).

Memory is XLA's own accounting of the compiled gradient program's temporaries
(`compiled.memory_analysis().temp_size_in_bytes`), deterministic on a machine.
`levels=1` is a plain `lax.scan` (no rematerialisation), the naive reference.

    python benchmarks/bench_gradients.py [--n 1024] [--steps 100 1000 10000]
"""

import argparse

import jax
import jax.numpy as jnp
from _common import header, table, time_call

import solvers


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--steps", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    dt = 1e-3
    system = solvers.Burgers1D(args.n, 0.02)
    u0 = solvers.random_smooth_field(jax.random.PRNGKey(0), args.n, dtype=jnp.float32)
    rows = []
    for levels in (None, 1):
        base = None
        for steps in args.steps:
            ts = jnp.array([0.0, steps * dt])

            def loss(u, ts=ts, levels=levels):
                sol = solvers.solve(system, u, ts, dt=dt, checkpoint_levels=levels)
                return jnp.sum(sol.ys[-1] ** 2)

            grad = jax.jit(jax.grad(loss))
            fwd = jax.jit(loss)
            mem = grad.lower(u0).compile().memory_analysis().temp_size_in_bytes
            base = base or mem
            t_f = time_call(fwd, u0, repeats=args.repeats)
            t_g = time_call(grad, u0, repeats=args.repeats)
            rows.append(
                {
                    "checkpointing": "auto (nested)" if levels is None else "none (plain scan)",
                    "steps": steps,
                    "grad temp memory (MiB)": mem / 2**20,
                    f"memory vs {args.steps[0]} steps": mem / base,
                    "forward (ms)": t_f * 1e3,
                    "grad (ms)": t_g * 1e3,
                    "grad / forward": t_g / t_f,
                }
            )
    print(header())
    print()
    print(f"Burgers1D n={args.n}, float32, ETDRK4, dt={dt}, loss on the final state")
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
