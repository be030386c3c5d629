"""End-to-end training of a closure ensemble through coarse solver rollouts
("a-posteriori", solver-in-the-loop), with exact checkpoint/resume."""

import json
import time
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
import numpy as np
import optax
import orbax.checkpoint as ocp
from tqdm.auto import tqdm

import solvers

from ._config import Config
from ._data import TrajectoryData, training_data
from ._ensemble import Ensemble
from ._hybrid import Hybrid
from ._task import AbstractTask, make_task


def curriculum(cfg: Config, step: int) -> int:
    """Unrolled steps at training `step`: a quarter, then half, then the full
    `horizon`, over the first 25% / next 25% / last 50% of training."""
    if not cfg.curriculum:
        return cfg.horizon
    frac = step / cfg.train_steps
    if frac < 0.25:
        return max(1, cfg.horizon // 4)
    if frac < 0.5:
        return max(1, cfg.horizon // 2)
    return cfg.horizon


def init_members(task: AbstractTask, cfg: Config):
    """The M closures, stacked, from the run's seed (deterministic)."""
    key = jr.fold_in(jr.PRNGKey(cfg.seed), 2)
    return eqx.filter_vmap(task.make_closure)(jr.split(key, cfg.members))


def _optimizer(cfg: Config) -> optax.GradientTransformation:
    warmup = max(1, min(50, cfg.train_steps // 10))
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, cfg.learning_rate, warmup, max(cfg.train_steps, warmup + 1),
        end_value=0.05 * cfg.learning_rate,
    )
    inner = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule))
    # A step whose gradient is not finite (a rollout that blew up) is skipped.
    return optax.apply_if_finite(inner, max_consecutive_errors=50)


def rollout_loss(task, cfg, closure, data_ys, data_ts, physics, key, horizon):
    """Mean over a batch of windows: normalised MSE of an unrolled hybrid rollout
    against the filtered fine trajectory, plus the physics terms."""
    n_traj, n_t = data_ys.shape[:2]
    rel_ts = np.arange(horizon + 1) * cfg.save_dt
    scale = jnp.mean(data_ys**2)
    e_scale = jnp.mean(task.energy(data_ys)) ** 2

    def window(k):
        ki, ks = jr.split(k)
        i = jr.randint(ki, (), 0, n_traj)
        s = jr.randint(ks, (), 0, n_t - horizon)
        y_i = data_ys[i]
        y0 = y_i[s]
        target = jax.lax.dynamic_slice_in_dim(y_i, s + 1, horizon, axis=0)
        phys = jtu.tree_map(lambda x: x[i] if eqx.is_array(x) else x, physics)
        model = Hybrid(phys, closure, mode=cfg.mode)
        sol = solvers.solve(model, y0, rel_ts, dt=cfg.dt, t_offset=data_ts[s], throw=False)
        pred = sol.ys[1:]
        mse = jnp.mean((pred - target) ** 2) / scale
        energy = jnp.mean((task.energy(pred) - task.energy(target)) ** 2) / e_scale
        c_pred, c_tgt = task.conserved(pred), task.conserved(target)
        cons = 0.0 if c_pred is None else jnp.mean((c_pred - c_tgt) ** 2) / scale
        return mse, energy + cons

    mse, phys = jax.vmap(window)(jr.split(key, cfg.batch_size))
    return jnp.mean(mse), jnp.mean(phys)


class Trainer(eqx.Module):
    """Holds what a training step needs; `step` is one jit-compiled program updating
    all M members at once (vmapped)."""

    task: AbstractTask = eqx.field(static=True)
    cfg: Config = eqx.field(static=True)
    static: Any = eqx.field(static=True)
    optimizer: optax.GradientTransformation = eqx.field(static=True)

    def member_step(self, params, opt_state, anchor, key, data, horizon):
        ys, ts, physics = data

        def loss_fn(p):
            closure = eqx.combine(p, self.static)
            mse, phys = rollout_loss(self.task, self.cfg, closure, ys, ts, physics, key, horizon)
            reg = 0.0
            if self.cfg.ensemble == "anchored":
                reg = sum(jnp.sum((a - b) ** 2) for a, b in
                          zip(jtu.tree_leaves(p), jtu.tree_leaves(anchor), strict=True))
            loss = mse + self.cfg.physics_weight * phys + self.cfg.anchor_weight * reg
            return loss, (mse, phys)

        (loss, (mse, phys)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = self.optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, opt_state, {"loss": loss, "mse": mse, "physics": phys}

    @eqx.filter_jit
    def step(self, params, opt_state, anchors, step, data, horizon: int):
        keys = jr.split(jr.fold_in(jr.fold_in(jr.PRNGKey(self.cfg.seed), 3), step),
                        self.cfg.members)
        fn = lambda p, s, a, k: self.member_step(p, s, a, k, data, horizon)  # noqa: E731
        return jax.vmap(fn)(params, opt_state, anchors, keys)


def _checkpoint_manager(out: Path, cfg: Config) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        (out / "checkpoints").absolute(),
        options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True),
    )


def _state_tree(params, opt_state, step):
    return {"params": jtu.tree_leaves(params), "opt_state": jtu.tree_leaves(opt_state),
            "step": jnp.asarray(step, jnp.int32)}


def train(
    cfg: Config,
    out: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
) -> Ensemble:
    r"""Train `cfg.members` closures end to end through coarse rollouts.

    Data: fine rollouts coarse-grained to `coarse_n` (generated into `out/data` once).
    Loss: `horizon`-step unrolled hybrid rollouts from random windows vs the filtered
    fine trajectory (normalised MSE), plus `physics_weight` x (energy mismatch +
    conserved-quantity drift), plus for `ensemble="anchored"` the anchor term
    $\lambda \|\theta_m - \theta_m^{(0)}\|^2$ towards each member's own prior draw
    (Pearce et al. 2020). Adam with warm-up and cosine decay, gradient clipping,
    non-finite steps skipped. Orbax checkpoints every `checkpoint_every` steps hold
    parameters, optimiser state and step; the data order is a function of
    `(seed, step)`, so `resume=True` continues bit-exactly.

    **Arguments:** `cfg`; `out` folder; `resume`; `progress` bar; `stop_after` (stop
    after that many steps, as if interrupted — for tests).

    **Returns:** the trained `Ensemble` (also saved as `out/model.eqx`).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / "config.json"
    if resume:
        if not cfg_path.exists():
            raise ValueError(f"`--resume`: no run to resume in {out} (no config.json).")
        stored = Config.load(cfg_path)
        if stored != cfg:
            diff = {k: (v, getattr(cfg, k)) for k, v in stored.to_dict().items()
                    if getattr(cfg, k) != v}
            raise ValueError(f"`--resume` with a different configuration: {diff}.")
    elif (out / "checkpoints").exists() and any((out / "checkpoints").iterdir()):
        raise ValueError(
            f"{out} already holds a training run: pass `--resume` to continue it, or "
            "choose another `--out`."
        )
    cfg.save(cfg_path)
    task = make_task(cfg)
    data: TrajectoryData = training_data(task, out, progress=progress)
    members = init_members(task, cfg)
    params, static = eqx.partition(members, eqx.is_array)
    anchors = params
    optimizer = _optimizer(cfg)
    opt_state = jax.vmap(optimizer.init)(params)
    trainer = Trainer(task, cfg, static, optimizer)

    manager = _checkpoint_manager(out, cfg)
    start = 0
    if resume and manager.latest_step() is not None:
        template = _state_tree(params, opt_state, 0)
        restored = manager.restore(manager.latest_step(),
                                   args=ocp.args.StandardRestore(template))
        params = jtu.tree_unflatten(jtu.tree_structure(params), restored["params"])
        opt_state = jtu.tree_unflatten(jtu.tree_structure(opt_state), restored["opt_state"])
        start = int(restored["step"])

    data_tuple = (data.ys, data.ts, data.physics)
    log_path = out / "train_log.jsonl"
    if log_path.exists():
        # Keep what was logged up to the restored checkpoint; what a crash logged
        # after it is redone by this run.
        kept = [line for line in log_path.read_text().splitlines()
                if line.strip() and json.loads(line)["step"] <= start]
        log_path.write_text("".join(line + "\n" for line in kept))
    end = cfg.train_steps if stop_after is None else min(cfg.train_steps, stop_after)
    bar = tqdm(range(start, end), initial=start, total=cfg.train_steps, disable=not progress,
               desc=f"train {cfg.system} x{cfg.members}", unit="step")
    t_last = time.perf_counter()
    with log_path.open("a") as log:
        for step in bar:
            horizon = curriculum(cfg, step)
            # the step index is traced (an array), the horizon static: one compilation
            # per curriculum stage, not per step
            params, opt_state, metrics = trainer.step(
                params, opt_state, anchors, jnp.asarray(step, jnp.int32), data_tuple, horizon
            )
            done = step + 1
            if done % cfg.checkpoint_every == 0 or done == cfg.train_steps:
                manager.save(done, args=ocp.args.StandardSave(_state_tree(params, opt_state, done)))
            if done % 10 == 0 or done == end:
                mse = np.asarray(metrics["mse"])
                now = time.perf_counter()
                log.write(json.dumps({"step": done, "horizon": horizon,
                                      "mse": mse.tolist(),
                                      "loss": np.asarray(metrics["loss"]).tolist(),
                                      "seconds": now - t_last}) + "\n")
                log.flush()
                t_last = now
                bar.set_postfix(mse=f"{mse.mean():.3g}", horizon=horizon)
    manager.wait_until_finished()
    manager.close()
    ensemble = Ensemble(eqx.combine(params, static), None, cfg.mode)
    if end == cfg.train_steps:
        eqx.tree_serialise_leaves(out / "model.eqx", ensemble.members)
    return ensemble


def load_ensemble(out: str | Path) -> tuple[Config, Ensemble]:
    """The trained closures of the run in `out` (closure members, physics unset)."""
    out = Path(out)
    if not (out / "model.eqx").exists():
        raise ValueError(f"no trained model in {out} (model.eqx missing): train first.")
    cfg = Config.load(out / "config.json")
    task = make_task(cfg)
    members = eqx.tree_deserialise_leaves(out / "model.eqx", init_members(task, cfg))
    return cfg, Ensemble(members, None, cfg.mode)
