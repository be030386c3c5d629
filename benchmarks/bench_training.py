"""Training through solver rollouts: steps per second and peak memory against the
unrolled horizon, naive (every step taped) vs checkpointed (`solvers.solve`'s nested
`jax.checkpoint`, the default of `neuroscale train`).

One training step is what `neuroscale train` compiles for a member
(`hybrid.training.rollout_loss`: a batch of windows, each a `horizon`-save hybrid
rollout against its target), its gradient and an Adam update, vmapped over the
ensemble's members. The configuration is the task's default (`neuroscale.build_config`
of the task class): closure, width, depth, batch size, members,
`coarse_n`, `dt`, `save_dt`; the data are random smooth coarse states with random
forcings (the cost of a step does not depend on their values).

- **Memory**: XLA's accounting of the compiled step's temporaries
  (`memory_analysis().temp_size_in_bytes`), deterministic, no sampling.
- **Speed**: steps per second of the compiled step (median CPU time per step; the two
  variants of a horizon timed in alternation, `_common.time_interleaved`).

    python benchmarks/bench_training.py [--system burgers] [--horizons 4 16 64 256]
"""

import statistics

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import optax
from _common import header, parse_timing_args, table, time_interleaved, timing_parser

from hybrid.training import Windows, rollout_loss
from neuroscale import build_config, task_class


def _data(task, cfg, n_traj: int, n_t: int):
    fine, u0 = eqx.filter_vmap(task.sample)(jr.split(jr.PRNGKey(0), n_traj))
    physics = eqx.filter_vmap(lambda f: task.coarse_physics(f, cfg.coarse_n))(fine)
    # smooth coarse states: the fine initial fields, filtered, with a slow drift in time
    y0 = task.coarse_grain(u0, cfg.coarse_n)
    phase = jnp.linspace(0.0, 1.0, n_t).reshape((1, n_t) + (1,) * (y0.ndim - 1))
    ys = y0[:, None] * jnp.cos(phase)
    ts = jnp.arange(n_t) * cfg.save_dt
    return Windows(ys.astype(jnp.float32), ts.astype(jnp.float32), None, physics, cfg.save_dt)


def _step_fn(task, cfg, static, optimizer, horizon: int, levels):
    def member(params, opt_state, key, data):
        scale = jnp.mean(data.ys**2)

        def loss_fn(p):
            mse, _ = rollout_loss(eqx.combine(p, static), None, data, key=key,
                                  horizon=horizon, batch_size=cfg.batch_size, dt=cfg.dt,
                                  mode=cfg.mode, scale=scale, checkpoint_levels=levels)
            return mse

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    @eqx.filter_jit  # the physics' non-array leaves (Python floats) stay static
    def step(params, opt_state, keys, data):
        return jax.vmap(lambda p, s, k: member(p, s, k, data))(params, opt_state, keys)

    return step


def bench(system: str, horizons, args) -> list[dict]:
    cls = task_class(system)
    task = cls(build_config(cls))
    cfg = task.cfg
    m = cfg.members
    closures = [task.make_closure(k) for k in jr.split(jr.PRNGKey(1), m)]
    params = jax.tree.map(lambda *x: jnp.stack(x),
                          *[eqx.filter(c, eqx.is_array) for c in closures])
    static = eqx.partition(closures[0], eqx.is_array)[1]
    optimizer = optax.adam(1e-3)
    opt_state = jax.vmap(optimizer.init)(params)
    keys = jr.split(jr.PRNGKey(2), m)
    rows = []
    for horizon in horizons:
        data = _data(task, cfg, 8, horizon + 4)
        steps = {label: _step_fn(task, cfg, static, optimizer, horizon, levels)
                 for label, levels in (("naive", 1), ("checkpointed", None))}
        args_ = (params, opt_state, keys, data)
        mem = {label: fn.lower(*args_).compile().compiled.memory_analysis().temp_size_in_bytes
               for label, fn in steps.items()}
        samples = time_interleaved(list(steps.values()), args_, repeats=args.repeats,
                                   min_time=args.min_time)
        cpu = {label: statistics.median(s.cpu) for label, s in zip(steps, samples,
                                                                   strict=True)}
        n_steps = horizon * round(cfg.save_dt / cfg.dt)
        row = {"horizon (saves)": horizon, "solver steps": n_steps}
        for label in steps:
            row[f"{label} steps/s"] = 1.0 / cpu[label]
            row[f"{label} memory (MiB)"] = mem[label] / 2**20
        row["memory naive / ckpt"] = mem["naive"] / mem["checkpointed"]
        row["time ckpt / naive"] = cpu["checkpointed"] / cpu["naive"]
        rows.append(row)
        print(row, flush=True)
    return rows, cfg


def main():
    parser = timing_parser(__doc__, repeats=5, min_time=0.0, quick_help="2 repeats")
    parser.add_argument("--system", default="burgers",
                        choices=("burgers", "navier-stokes"))
    parser.add_argument("--horizons", type=int, nargs="+", default=[4, 16, 64, 256])
    args = parse_timing_args(parser, quick_repeats=2)
    rows, cfg = bench(args.system, args.horizons, args)
    print()
    print(header(("jax", "jaxlib", "diffrax", "equinox", "optax")))
    print()
    print(f"_{cfg.task}: closure {cfg.closure} (width {cfg.width}, depth {cfg.depth}, "
          f"{cfg.mode}), {cfg.members} members x batch {cfg.batch_size}, coarse_n "
          f"{cfg.coarse_n}, dt {cfg.dt}, save_dt {cfg.save_dt}; float32; steps/s: median "
          f"CPU time of {args.repeats} interleaved repeats_")
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
