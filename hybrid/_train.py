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

from . import _bayes
from ._config import Config
from ._data import TrajectoryData, training_data
from ._ensemble import Ensemble
from ._hybrid import Hybrid
from ._sharding import member_parallel, members_mesh, replicate, shard_members
from ._task import AbstractTask, make_task

# fold_in streams of the run's seed (data splits use 0, 1, 4: see _data.py)
_MEMBERS_STREAM, _STEPS_STREAM, _PRIOR_STREAM, _NOISE_STREAM = 2, 3, 6, 5


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


def member_maker(task: AbstractTask, cfg: Config):
    """`key -> one freshly initialised member` for `cfg.ensemble`: the task's closure;
    for `"randomized-prior"` plus a fixed random prior network (`_bayes.RandomizedPrior`,
    drawn with a sizeable output so that it matters); for `"mc-dropout"` with channel
    dropout on its hidden layers (`_bayes.with_mc_dropout`, masks unset)."""
    if cfg.ensemble == "randomized-prior":

        def make(key):
            k1, k2 = jr.split(key)
            prior = task.make_closure(k2, init_scale=0.1)
            return _bayes.RandomizedPrior(task.make_closure(k1), prior, cfg.prior_function_scale)

        return make
    if cfg.ensemble == "mc-dropout":
        return lambda key: _bayes.with_mc_dropout(task.make_closure(key), cfg.dropout_rate)
    return task.make_closure


def trained_members(cfg: Config) -> int:
    """Networks trained: one for MC dropout (its `members` are masks drawn at
    inference), `members` otherwise."""
    return 1 if cfg.ensemble == "mc-dropout" else cfg.members


def init_members(task: AbstractTask, cfg: Config):
    """The trained networks, stacked on a leading member axis, from the run's seed
    (deterministic)."""
    key = jr.fold_in(jr.PRNGKey(cfg.seed), _MEMBERS_STREAM)
    make = member_maker(task, cfg)
    return eqx.filter_vmap(make)(jr.split(key, trained_members(cfg)))


def _prior(task: AbstractTask, cfg: Config) -> _bayes.GaussianPrior:
    """The Gaussian prior of one network: the moments of its initialisation without
    the shrunken output layer (`init_scale=1`: the shrinking is an optimisation
    device, not a belief), stds floored at `prior_min_std`, times `prior_scale`."""
    key = jr.fold_in(jr.PRNGKey(cfg.seed), _PRIOR_STREAM)
    prior = _bayes.prior_from_init(lambda k: task.make_closure(k, init_scale=1.0), key=key,
                                   min_std=cfg.prior_min_std)
    std = jtu.tree_map(lambda s: s * cfg.prior_scale, prior.std)
    return _bayes.GaussianPrior(prior.mean, std)


def _optimizer(cfg: Config) -> optax.GradientTransformation:
    warmup = max(1, min(50, cfg.train_steps // 10))
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, cfg.learning_rate, warmup, max(cfg.train_steps, warmup + 1),
        end_value=0.05 * cfg.learning_rate,
    )
    inner = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule))
    # A step whose gradient is not finite (a rollout that blew up) is skipped.
    return optax.apply_if_finite(inner, max_consecutive_errors=50)


def target_noise_std(cfg: Config) -> float:
    """The likelihood noise, relative to the data rms, that the members' targets are
    perturbed with (randomize-then-optimize); 0 for plain deep ensembles and MC
    dropout."""
    return cfg.noise_std if cfg.ensemble in ("anchored", "randomized-prior") else 0.0


def rollout_loss(task, cfg, closure, data_ys, data_ts, physics, key, horizon,
                 noise_key=None, checkpoint_levels=None):
    """Mean over a batch of windows: normalised MSE of an unrolled hybrid rollout
    against the filtered fine trajectory (perturbed by the member's own fixed noise,
    `noise_key`, for randomize-then-optimize), plus the physics terms. An MC-dropout
    closure gets a new mask per window. `checkpoint_levels` goes to `solvers.solve`
    (default: its automatic nested checkpointing; 1 tapes every step)."""
    n_traj, n_t = data_ys.shape[:2]
    rel_ts = np.arange(horizon + 1) * cfg.save_dt
    scale = jnp.mean(data_ys**2)
    e_scale = jnp.mean(task.energy(data_ys)) ** 2
    noise_std = target_noise_std(cfg) * jnp.sqrt(scale)

    def window(k):
        ki, ks, kd = jr.split(k, 3)
        i = jr.randint(ki, (), 0, n_traj)
        s = jr.randint(ks, (), 0, n_t - horizon)
        y_i = data_ys[i]
        y0 = y_i[s]
        target = jax.lax.dynamic_slice_in_dim(y_i, s + 1, horizon, axis=0)
        if noise_key is not None and target_noise_std(cfg) > 0:
            # a function of (member, trajectory, save index) only: the same
            # perturbation of the same datum at every step
            target = target + _bayes.trajectory_target_noise(
                noise_key, i, s + 1 + jnp.arange(horizon), target.shape[1:], noise_std,
                target.dtype)
        phys = jtu.tree_map(lambda x: x[i] if eqx.is_array(x) else x, physics)
        member = closure
        if cfg.ensemble == "mc-dropout":
            member = _bayes.draw_dropout_masks(closure, key=kd)
        model = Hybrid(phys, member, mode=cfg.mode)
        sol = solvers.solve(model, y0, rel_ts, dt=cfg.dt, t_offset=data_ts[s], throw=False,
                            args=task.closure_args(phys), checkpoint_levels=checkpoint_levels)
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
    all members at once: vmapped over the member axis, and run block by block on the
    devices of `mesh` (`_sharding.member_parallel`: members never communicate)."""

    task: AbstractTask = eqx.field(static=True)
    cfg: Config = eqx.field(static=True)
    static: Any = eqx.field(static=True)
    optimizer: optax.GradientTransformation = eqx.field(static=True)
    prior_std: Any
    num_data: int = eqx.field(static=True)
    mesh: Any = eqx.field(static=True)

    def member_step(self, params, opt_state, anchor, noise_key, key, data, horizon):
        ys, ts, physics = data
        noise_var = self.cfg.noise_std**2 if self.cfg.ensemble == "anchored" else 0.0

        def loss_fn(p):
            closure = eqx.combine(p, self.static)
            mse, phys = rollout_loss(self.task, self.cfg, closure, ys, ts, physics, key,
                                     horizon, noise_key)
            reg = jnp.zeros(())
            if noise_var > 0:
                # sigma^2 / N * sum ((theta - a) / s)^2: the Gaussian prior centred on
                # the member's own anchor, in the units of the normalised MSE
                reg = _bayes.anchor_penalty(p, anchor, self.prior_std, noise_var=noise_var,
                                            num_data=self.num_data)
            loss = mse + self.cfg.physics_weight * phys + reg
            return loss, (mse, phys, reg)

        (loss, (mse, phys, reg)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = self.optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, opt_state, {"loss": loss, "mse": mse, "physics": phys, "prior": reg}

    @eqx.filter_jit
    def step(self, params, opt_state, anchors, noise_keys, step, data, horizon: int):
        keys = jr.split(jr.fold_in(jr.fold_in(jr.PRNGKey(self.cfg.seed), _STEPS_STREAM), step),
                        trained_members(self.cfg))

        def fn(p, s, a, nk, k, data):
            return self.member_step(p, s, a, nk, k, data, horizon)

        parallel = member_parallel(jax.vmap(fn, in_axes=(0, 0, 0, 0, 0, None)), self.mesh,
                                   member_args=(0, 1, 2, 3, 4))
        return parallel(params, opt_state, anchors, noise_keys, keys, data)


def _checkpoint_manager(out: Path, cfg: Config) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        (out / "checkpoints").absolute(),
        options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True),
    )


def _num_data(data: TrajectoryData) -> int:
    """Scalar residuals in the full-data MSE: trajectories x predicted saves x state."""
    n_traj, n_t = data.ys.shape[:2]
    return int(n_traj * (n_t - 1) * np.prod(data.ys.shape[2:]))


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
    conserved-quantity drift). The ensemble (`cfg.ensemble`, see `hybrid/_bayes.py`):
    `"anchored"` (default) adds the Bayesian anchor term
    $\frac{\sigma^2}{N}\sum_i ((\theta_{m,i} - a_{m,i}) / s_i)^2$ towards each member's
    own draw $a_m$ from the prior (Pearce et al. 2020) and perturbs each member's
    targets by its own fixed noise of std $\sigma$ = `noise_std` x the data rms
    (randomize-then-optimize: exact posterior samples for linear-Gaussian models);
    `"randomized-prior"` adds a fixed random prior network to each member (Osband et
    al. 2018), with the same target perturbation; `"deep"` is neither; `"mc-dropout"`
    trains one network with a new channel-dropout mask per window. Adam with warm-up
    and cosine decay, gradient clipping, non-finite steps skipped. The members are
    trained in one vmapped program, split over the available devices. Orbax
    checkpoints every `checkpoint_every` steps hold parameters, optimiser state and
    step; the data order and every key are functions of `(seed, step)`, so
    `resume=True` continues bit-exactly (on the same device count).

    After the last step, the stochastic closure term and the spread calibration are
    fitted (`hybrid._uq.fit_uncertainty`, on training residuals and on a separate
    validation set) and saved next to the model.

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
    optimizer = _optimizer(cfg)
    if cfg.ensemble == "randomized-prior":
        optimizer = _bayes.freeze_non_trainable(optimizer)
    opt_state = jax.vmap(optimizer.init)(params)
    n_members = trained_members(cfg)
    if cfg.ensemble == "anchored":
        prior = _prior(task, cfg)
        prior_std = prior.std
        anchors = _bayes.draw_anchors(prior, n_members,
                                      key=jr.fold_in(jr.PRNGKey(cfg.seed), _PRIOR_STREAM + 1))
    else:
        prior_std, anchors = None, jtu.tree_map(jnp.zeros_like, params)
    noise_keys = jr.split(jr.fold_in(jr.PRNGKey(cfg.seed), _NOISE_STREAM), n_members)
    mesh = members_mesh(n_members)
    trainer = Trainer(task, cfg, static, optimizer, prior_std, _num_data(data), mesh)

    manager = _checkpoint_manager(out, cfg)
    start = 0
    if resume and manager.latest_step() is not None:
        template = _state_tree(params, opt_state, 0)
        restored = manager.restore(manager.latest_step(),
                                   args=ocp.args.StandardRestore(template))
        params = jtu.tree_unflatten(jtu.tree_structure(params), restored["params"])
        opt_state = jtu.tree_unflatten(jtu.tree_structure(opt_state), restored["opt_state"])
        start = int(restored["step"])

    params, opt_state, anchors, noise_keys = shard_members(
        (params, opt_state, anchors, noise_keys), mesh)
    data_tuple = replicate((data.ys, data.ts, data.physics), mesh)
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
                params, opt_state, anchors, noise_keys, jnp.asarray(step, jnp.int32),
                data_tuple, horizon
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
        from ._uq import fit_uncertainty

        fit_uncertainty(out, cfg, task, ensemble, data, progress=progress)
    return ensemble


def load_ensemble(out: str | Path) -> tuple[Config, Ensemble]:
    """The trained closures of the run in `out` (closure members, physics unset; for
    MC dropout the one trained network, its masks drawn at rollout time)."""
    out = Path(out)
    if not (out / "model.eqx").exists():
        raise ValueError(f"no trained model in {out} (model.eqx missing): train first.")
    cfg = Config.load(out / "config.json")
    task = make_task(cfg)
    members = eqx.tree_deserialise_leaves(out / "model.eqx", init_members(task, cfg))
    return cfg, Ensemble(members, None, cfg.mode)
