"""Burgers1D step and rollout vs exponax's `Burgers` stepper, same machine, same process.

Both are ETDRK4 (exponax `order=4`) with 2/3 dealiasing and the conservative flux
$-\\tfrac12 (u^2)_x$ on the same grid, float32; the table's last column is the
relative difference of the two results (tests/test_burgers.py checks agreement to
round-off at n = 96, where both keep the same modes; at n = 128 we keep one mode
more, m = 42, so the difference is that mode's tiny share).

- `step`: one jitted step, physical state in and out (exponax's stepper works on the
  physical state; ours is `irfft(ETDRK4.step(rfft(u)))` with the solver `solve`
  uses for equal steps).
- `step, vmap 64`: the same on a batch of 64 states.
- `rollout 100`: 100 steps saving every step, `solvers.solve(..., ts=arange(101)*dt)`
  vs `exponax.rollout(stepper, 100, include_init=True)`; plus batched.

Each repeat times both sides back to back in alternating order, so that load from
other processes hits both alike. Times are the median CPU time per call; the
headline ratio ours / exponax is the median of the per-repeat CPU-time ratios, the
wall-clock ratio of the fastest samples is given beside it (below 1: we are faster).
Target for the steps: <= 1.0.

    python benchmarks/bench_burgers.py [--sizes 128 512 2048] [--batch 64] [--quick]
"""

import argparse

import equinox as eqx
import exponax
import jax
import jax.numpy as jnp
import numpy as np
from _common import compare, header, table, time_interleaved

import solvers


def bench_size(n: int, args, nu: float = 0.01, dt: float = 1e-3) -> list[dict]:
    """The timing rows for one grid size."""
    system = solvers.Burgers1D(n, nu)
    # What `solve` steps with when every step has the same size.
    solver = solvers.ETDRK4(fixed_step=True)
    terms = system.terms()
    keys = jax.random.split(jax.random.PRNGKey(0), args.batch)
    ub = jax.vmap(lambda k: solvers.random_smooth_field(k, n, dtype=jnp.float32))(keys)
    u0 = ub[0]
    theirs = exponax.stepper.Burgers(
        1, 2 * np.pi, n, dt, diffusivity=nu, order=4, single_channel=True,
        conservative=True,
    )
    t0, t1 = jnp.float32(0.0), jnp.float32(dt)
    state = solver.init(terms, t0, t1, system.to_internal(u0), None)

    def ours_step(u):
        z = solver.step(terms, t0, t1, system.to_internal(u), None, state, False)[0]
        return system.from_internal(z)

    def theirs_step(u):
        return theirs(u[None])[0]

    ts = np.arange(args.steps + 1) * dt

    def ours_rollout(u):
        return solvers.solve(system, u, ts, dt=dt).ys

    ex_rollout = exponax.rollout(theirs, args.steps, include_init=True)

    def theirs_rollout(u):
        return ex_rollout(u[None])[:, 0]

    cases = {
        "step": (jax.jit(ours_step), jax.jit(theirs_step), u0),
        f"step, vmap {args.batch}": (
            jax.jit(jax.vmap(ours_step)), jax.jit(jax.vmap(theirs_step)), ub,
        ),
        f"rollout {args.steps}": (
            eqx.filter_jit(ours_rollout), jax.jit(theirs_rollout), u0,
        ),
        f"rollout {args.steps}, vmap {args.batch}": (
            eqx.filter_jit(jax.vmap(ours_rollout)), jax.jit(jax.vmap(theirs_rollout)), ub,
        ),
    }
    rows = []
    for name, (ours, ref, x) in cases.items():
        a_out, b_out = np.asarray(ours(x)), np.asarray(ref(x))
        diff = float(np.linalg.norm(a_out - b_out) / np.linalg.norm(b_out))
        a, b = time_interleaved([ours, ref], (x,), repeats=args.repeats,
                                min_time=args.min_time)
        rows.append({"n": n, "case": name, **compare(a, b, "ours", "exponax"),
                     "rel. diff": diff})
        print(rows[-1], flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 512, 2048])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--min-time", type=float, default=0.02, help="seconds per sample")
    parser.add_argument("--quick", action="store_true", help="sizes 128 512, 7 repeats")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.repeats = [128, 512], 7
    rows = [row for n in args.sizes for row in bench_size(n, args)]
    print()
    print(header(("jax", "jaxlib", "diffrax", "equinox", "exponax")))
    print(
        f"_float32, viscosity 0.01, dt 1e-3, {args.repeats} interleaved repeats_"
    )
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
