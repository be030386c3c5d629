"""Burgers1D step and rollout vs exponax's Burgers stepper, same machine, same process.

Both are ETDRK4 (exponax `order=4`) with 2/3 dealiasing on the same grid; their
results agree to round-off (tests/test_burgers.py). Ratio = ours / exponax time
(below 1 means we are faster).

    python benchmarks/bench_burgers.py [--sizes 128 512 2048] [--batch 64]
"""

import argparse

import equinox as eqx
import exponax
import jax
import jax.numpy as jnp
import numpy as np
from _common import header, table, time_call

import solvers


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 512, 2048])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    rows = []
    for n in args.sizes:
        rows += bench_size(n, args)
    print(header(("jax", "diffrax", "equinox", "exponax")))
    print()
    print(table(rows))


def bench_size(n, args, nu=0.01, dt=1e-3):
    rows = []
    system = solvers.Burgers1D(n, nu)
    solver = solvers.ETDRK4()
    terms = system.terms()
    keys = jax.random.split(jax.random.PRNGKey(0), args.batch)
    u0 = solvers.random_smooth_field(keys[0], n, dtype=jnp.float32)
    ub = jax.vmap(lambda k: solvers.random_smooth_field(k, n, dtype=jnp.float32))(keys)
    theirs = exponax.stepper.Burgers(
        1, 2 * np.pi, n, dt, diffusivity=nu, order=4, single_channel=True,
        conservative=True,
    )
    t0, t1 = jnp.float32(0.0), jnp.float32(dt)
    state = solver.init(terms, t0, t1, system.to_internal(u0), None)

    def ours_step(u):
        # physical -> physical, like exponax's stepper
        z = solver.step(terms, t0, t1, system.to_internal(u), None, state, False)[0]
        return system.from_internal(z)

    ts = jnp.arange(args.steps + 1) * dt

    def ours_rollout(u):
        return solvers.solve(system, u, ts, dt=dt).ys

    ex_rollout = exponax.rollout(theirs, args.steps, include_init=True)

    cases = {
        "step": (jax.jit(ours_step), jax.jit(lambda u: theirs(u[None])[0]), u0),
        f"step, vmap {args.batch}": (
            jax.jit(jax.vmap(ours_step)),
            jax.jit(jax.vmap(lambda u: theirs(u[None])[0])),
            ub,
        ),
        f"rollout {args.steps}": (
            eqx.filter_jit(ours_rollout),
            jax.jit(lambda u: ex_rollout(u[None])),
            u0,
        ),
        f"rollout {args.steps}, vmap {args.batch}": (
            eqx.filter_jit(jax.vmap(ours_rollout)),
            jax.jit(jax.vmap(lambda u: ex_rollout(u[None]))),
            ub,
        ),
    }
    for name, (ours, ref, x) in cases.items():
        a = time_call(ours, x, repeats=args.repeats)
        b = time_call(ref, x, repeats=args.repeats)
        rows.append(
            {"n": n, "case": name, "ours (ms)": a * 1e3, "exponax (ms)": b * 1e3,
             "ratio": a / b}
        )
    return rows


if __name__ == "__main__":
    main()
