"""Closure overhead: one step of the hybrid against one step of the plain coarse solver
at the same resolution.

For each system and resolution, the known physics is the coarse system the training
pipeline builds (`task.coarse_physics` of a sampled fine system: Burgers with its
random forcing, Navier–Stokes with Kolmogorov forcing and drag), and each closure is
`task.make_closure` of the run configuration's defaults (`build_config(TASK)`, with
`closure` set to `stencil` or `attention`), freshly initialised: the cost of a closure
does not depend on its trained weights. The hybrid is `hybrid.Hybrid(physics,
closure, mode=...)`, in `tendency` mode (the closure inside every stage of the
integrator: 4 evaluations per ETDRK4 / Crank–Nicolson RK4 step) and `correction` mode
(once after each step).

A step is what `solvers.solve` runs: the system's solver (`wrap_solver`, fixed
steps) on the internal (Fourier) state. To leave out the per-call dispatch, which at
these sizes is as long as a step, each call runs several steps (`STEPS`) in one
compiled `lax.scan` and the time is divided by their number. `single`: one state;
`batch B`: `jax.vmap` over B states (as in training and evaluation). All variants of
a row are timed in alternation; the table gives the median CPU time per step and the ratio hybrid /
plain (median of the per-repeat CPU-time ratios).

    python benchmarks/bench_closure_overhead.py [--quick] [--batch 8]
"""

import statistics

import jax
import jax.numpy as jnp
import numpy as np
from _common import header, paired_ratio, parse_timing_args, table, time_interleaved, timing_parser

import solvers
from hybrid import Hybrid
from neuroscale import build_config, task_class
from solvers import with_fixed_step

# Steps per timed call: enough that dispatch (tens of microseconds) is a small part
# of the plain solver's call, few enough that the batched attention hybrid at 64^2
# stays within seconds per call on 2 CPU cores.
STEPS = {"burgers": 50, "navier-stokes": 5}
CLOSURES = ("stencil", "attention")
MODES = ("tendency", "correction")


def _stepper(system, dt: float, batch: int | None, steps: int):
    """`f(y) -> y` after `steps` solver steps (physical state in and out), jitted."""
    solver = with_fixed_step(system.wrap_solver(system.default_solver()))
    terms = system.terms()
    t0, t1 = jnp.float32(0.0), jnp.float32(dt)

    def run(y):
        z = system.to_internal(y)
        state = solver.init(terms, t0, t1, z, None)

        def body(c, _):
            z1 = solver.step(terms, t0, t1, c, None, state, False)[0]
            return z1.astype(c.dtype), None

        z, _ = jax.lax.scan(body, z, None, length=steps)
        return system.from_internal(z)

    return jax.jit(run if batch is None else jax.vmap(run))


def bench(system_name: str, n: int, batch: int | None, args) -> list[dict]:
    cls = task_class(system_name)
    cfg = build_config(cls, overrides=dict(coarse_n=n))
    key = jax.random.PRNGKey(0)
    fine, _ = cls(cfg).sample(key)
    physics = cls(cfg).coarse_physics(fine, n)
    keys = jax.random.split(jax.random.PRNGKey(1), batch or 1)
    if system_name == "burgers":
        ys = jax.vmap(lambda k: solvers.random_smooth_field(k, n, dtype=jnp.float32))(keys)
    else:
        ys = jax.vmap(lambda k: solvers.random_vorticity(k, n, dtype=jnp.float32))(keys)
    y = ys if batch else ys[0]

    steps = STEPS[system_name]
    names, fns = ["plain"], [_stepper(physics, cfg.dt, batch, steps)]
    for closure_name in CLOSURES:
        task = cls(build_config(cls, overrides=dict(coarse_n=n, closure=closure_name)))
        # small output weights: an untrained closure must not blow the rollout up
        # (its cost does not depend on the values of its weights)
        closure = task.make_closure(jax.random.PRNGKey(2), init_scale=1e-4)
        for mode in MODES:
            names.append(f"{closure_name}, {mode}")
            fns.append(_stepper(Hybrid(physics, closure, mode=mode), cfg.dt, batch, steps))
    for name, f in zip(names, fns, strict=True):
        if not np.all(np.isfinite(np.asarray(f(y)))):
            print(f"warning: {system_name} n={n} {name}: non-finite state after {steps} steps")
    samples = time_interleaved(fns, (y,), repeats=args.repeats, min_time=args.min_time)
    shape = f"{n}" if system_name == "burgers" else f"{n}^2"
    row = {"system": system_name, "n": shape, "states": f"batch {batch}" if batch else "single",
           "plain step (us)": statistics.median(samples[0].cpu) / steps * 1e6}
    for name, s in zip(names[1:], samples[1:], strict=True):
        row[f"{name} (x plain)"] = paired_ratio(s.cpu, samples[0].cpu)
    print(row, flush=True)
    return [row]


def main():
    parser = timing_parser(__doc__, repeats=9, min_time=0.05)
    parser.add_argument("--batch", type=int, default=8)
    args = parse_timing_args(parser)
    rows = []
    for system_name, sizes in (("burgers", (32, 64)), ("navier-stokes", (32, 64))):
        for n in sizes:
            for batch in (None, args.batch):
                rows += bench(system_name, n, batch, args)
    cfg_b = build_config(task_class("burgers"))
    cfg_ns = build_config(task_class("navier-stokes"))
    print()
    print(header())
    print(f"_float32; closures as configured by default (width {cfg_b.width}, depth "
          f"{cfg_b.depth} for Burgers; width {cfg_ns.width}, depth {cfg_ns.depth} for "
          f"Navier–Stokes), untrained; dt = the configs' dt ({cfg_b.dt}, {cfg_ns.dt}); "
          f"{STEPS['burgers']} (Burgers) / {STEPS['navier-stokes']} (Navier–Stokes) steps "
          f"per call; {args.repeats} interleaved repeats_")
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
