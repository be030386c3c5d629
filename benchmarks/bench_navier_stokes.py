"""NavierStokes2D step and rollout vs jax-cfd's own spectral stepping, same process.

Both sides are Kochkov et al.'s Kolmogorov flow (forcing k = 4, drag 0.1,
viscosity 1e-3) on the same `rfftn` state: jax-cfd's
`crank_nicolson_rk4(ForcedNavierStokes2D(...))` against `solvers.NavierStokes2D` with
`solvers.CrankNicolsonRK4` (they agree to round-off: tests/test_navier_stokes.py).

- `step`: one jitted step on the Fourier state (jax-cfd's step function vs
  `solver.step(system.terms(), ...)`), the system closed over (constants folded).
- `step, system traced`: ours with the system passed as a jit argument, as in a
  training loop where the physics is part of the model (not available for jax-cfd).
- `rollout N`: physical vorticity in, physical vorticity out after N steps:
  `irfftn(fori_loop(step, rfftn(w)))` vs `solvers.solve(system, w, [0, N dt])`
  (which adds the finiteness check and the checkpointing structure).

Each repeat times the two sides back to back in alternating order, so that load from
other processes hits both alike. Times are the median CPU time per call; the
headline ratio ours / jax-cfd is the median of the per-repeat CPU-time ratios, the
wall-clock ratio of the fastest samples is given beside it (below 1: we are faster).
Target: <= 1.05.

    python benchmarks/bench_navier_stokes.py [--sizes 64 256] [--repeats 21] [--x64] [--quick]
"""

import argparse
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from _common import compare, header, table, time_interleaved

import solvers


def bench_size(n: int, args, dtype) -> list[dict]:
    """The timing rows for one grid size."""
    from jax_cfd.base import grids as cfd_grids
    from jax_cfd.spectral import equations as cfd_equations
    from jax_cfd.spectral import time_stepping as cfd_time_stepping

    length = 2 * math.pi
    # CFL 0.5 at the max velocity 7 of Kochkov et al.'s initial fields.
    dt = 0.5 * (length / n) / 7.0
    grid = cfd_grids.Grid((n, n), domain=((0.0, length), (0.0, length)))
    equation = cfd_equations.ForcedNavierStokes2D(args.viscosity, grid, smooth=True)
    cfd_step = cfd_time_stepping.crank_nicolson_rk4(equation, dt)
    system = solvers.NavierStokes2D(n, args.viscosity, drag=0.1, forcing="kolmogorov")
    solver = solvers.CrankNicolsonRK4()
    terms = system.terms()

    omega0 = solvers.random_vorticity(jax.random.PRNGKey(0), n, max_velocity=7.0, dtype=dtype)
    z0 = jnp.fft.rfftn(omega0)
    t0, t1 = jnp.asarray(0.0, dtype), jnp.asarray(dt, dtype)
    state = solver.init(terms, t0, t1, z0, None)

    ours_step = jax.jit(lambda z: solver.step(terms, t0, t1, z, None, state, False)[0])
    theirs_step = jax.jit(cfd_step)

    @eqx.filter_jit
    def ours_step_traced(system, z):
        return solver.step(system.terms(), t0, t1, z, None, state, False)[0]

    ts = np.array([0.0, args.steps * dt])

    @jax.jit
    def ours_rollout(w):
        return solvers.solve(system, w, ts, dt=dt).ys[-1]

    @jax.jit
    def theirs_rollout(w):
        z = jax.lax.fori_loop(0, args.steps, lambda i, z: cfd_step(z), jnp.fft.rfftn(w))
        return jnp.fft.irfftn(z, s=(n, n))

    # The two sides compute the same thing (to round-off) before being timed.
    reference = theirs_rollout(omega0)
    err = float(jnp.linalg.norm(ours_rollout(omega0) - reference) / jnp.linalg.norm(reference))

    cases = {
        "step": (ours_step, theirs_step, z0),
        "step, system traced": (lambda z: ours_step_traced(system, z), theirs_step, z0),
        f"rollout {args.steps}": (ours_rollout, theirs_rollout, omega0),
    }
    rows = []
    for name, (ours, theirs, x) in cases.items():
        a, b = time_interleaved([ours, theirs], (x,), repeats=args.repeats,
                                min_time=args.min_time)
        rows.append({"n": n, "case": name, **compare(a, b, "ours", "jax-cfd"),
                     "rollout rel. diff": err})
        print(rows[-1], flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--viscosity", type=float, default=1e-3)
    parser.add_argument("--min-time", type=float, default=0.02, help="seconds per sample")
    parser.add_argument("--x64", action="store_true", help="float64 instead of float32")
    parser.add_argument("--quick", action="store_true", help="7 repeats, 20-step rollouts")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.steps = 7, 20
    if args.x64:
        jax.config.update("jax_enable_x64", True)
    dtype = jnp.float64 if args.x64 else jnp.float32
    rows = [row for n in args.sizes for row in bench_size(n, args, dtype)]
    print()
    print(header(("jax", "jaxlib", "jax-cfd", "diffrax", "equinox")))
    print(
        f"_{jnp.dtype(dtype).name}, viscosity {args.viscosity}, drag 0.1, Kolmogorov k=4, "
        f"dt = 0.5 dx / 7, {args.repeats} interleaved repeats_"
    )
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
