"""What the physics terms of the loss do to the gradient, for a trained run.

The pipeline's loss is the rollout mse plus `physics_weight` x the energy mismatch
(`neuroscale._run.physics_penalty`; a conserved-mean term sat beside it until this
script showed its gradient to be ~1e-15 of the data term's). A term can only
change the training if its gradient is not negligible and not parallel to the data
term's. For each term and member, on the same random training windows, at the
trained closure and at a fresh initialisation: the ratio of its gradient norm to the
data term's, and the cosine between them. A ratio below ~1e-3, or a cosine near 1 (the
term pushes where the data already push), says the term cannot buy anything; the
outcome ablation (`bench_ablations.py --cells base "no physics terms"`) says whether
it does.

    python benchmarks/bench_physics_terms.py RUN_DIR [RUN_DIR ...] [--windows 8]
"""

import argparse
import dataclasses
import json
from pathlib import Path

import equinox as eqx
import jax
import jax.flatten_util
import jax.numpy as jnp
import jax.random as jr
from _common import header

import hybrid
from neuroscale import load_run
from neuroscale._data import training_set
from neuroscale._run import physics_penalty


def _flat(grads):
    return jax.flatten_util.ravel_pytree(eqx.filter(grads, eqx.is_inexact_array))[0]


def terms(task, train):
    """The pipeline's energy term (`physics_penalty`, at the run's weight or 0.1 where
    it is off), and the conserved-mean term it used to carry (removed after this
    measurement); the latter not for Kuramoto (no conserved mean)."""
    w = task.cfg.physics_weight or 0.1
    weighted = type(task)(dataclasses.replace(task.cfg, physics_weight=w))
    scale = jnp.mean(train.ys**2)
    axes = tuple(range(-max(task.ndim, 1), 0))

    def conserved(pred, target):
        drift = jnp.mean(pred, axis=axes) - jnp.mean(target, axis=axes)
        return w * jnp.mean(drift**2) / scale

    out = {"energy": physics_penalty(weighted, train)}
    if task.name != "kuramoto":
        out["conserved mean"] = conserved
    return out


def measure(run: Path, windows: int) -> dict:
    task, ens = load_run(run)
    cfg = task.cfg
    train = training_set(task, run, progress=False)
    data = hybrid.training.Windows(train.ys, train.ts, train.args, train.physics,
                                   train.save_dt)
    scale = jnp.mean(train.ys**2)
    physics = train.physics_of(0)
    key = jr.PRNGKey(1)

    def grads(closure, penalty):
        def loss(c, which):
            mse, extra = hybrid.training.rollout_loss(
                c, physics, data, key=key, horizon=cfg.horizon, batch_size=windows,
                dt=cfg.dt, mode=cfg.mode, scale=scale, penalty=penalty)
            return mse if which == "data" else extra
        d = _flat(eqx.filter_grad(lambda c: loss(c, "data"))(closure))
        p = _flat(eqx.filter_grad(lambda c: loss(c, "penalty"))(closure))
        return d, p

    rows = {}
    fresh = task.make_closure(jr.PRNGKey(123))
    members = [jax.tree.map(lambda x, m=m: x[m] if eqx.is_array(x) else x, ens.members)
               for m in range(min(2, ens.size))]
    for name, pen in terms(task, train).items():
        for label, closure in [("init", fresh)] + [(f"member {m}", c)
                                                    for m, c in enumerate(members)]:
            d, p = grads(closure, pen)
            ratio = float(jnp.linalg.norm(p) / jnp.linalg.norm(d))
            cos = float(jnp.dot(p, d) / (jnp.linalg.norm(p) * jnp.linalg.norm(d) + 1e-30))
            rows[f"{name} @ {label}"] = {"ratio": ratio, "cosine": cos}
            print(f"{task.name}: {name} @ {label}: "
                  f"|grad term| / |grad data| = {ratio:.3g}, cosine = {cos:+.3f}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--windows", type=int, default=8,
                        help="random training windows per gradient")
    args = parser.parse_args()
    print("physics terms of the loss: gradient against the data term's")
    print(header())
    results = {str(run): measure(run, args.windows) for run in args.runs}
    print("\n| run | term @ closure | grad ratio | cosine |\n|---|---|---|---|")
    for run, rows in results.items():
        name = json.loads((Path(run) / "config.json").read_text()).get("task", run)
        for k, v in rows.items():
            print(f"| {name} | {k} | {v['ratio']:.3g} | {v['cosine']:+.3f} |")


if __name__ == "__main__":
    main()
