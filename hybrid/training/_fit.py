"""`fit`: end-to-end rollout training of a closure ensemble on any coarse physics."""

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
import numpy as np
import optax
from jaxtyping import Array, PRNGKeyArray
from tqdm.auto import tqdm

import solvers

from .. import _checks, _distributed
from .._ensemble import METHODS, Ensemble
from .._keys import stream
from ..data import Trajectories
from ..uq._bayes import (
    GaussianPrior,
    RandomizedPrior,
    anchor_penalty,
    draw_anchors,
    freeze_non_trainable,
    prior_from_init,
    with_mc_dropout,
)
from ._checkpoint import Checkpoints, data_digest
from ._loss import Windows, rollout_loss
from ._sharding import member_parallel, members_mesh, replicate, shard_members


def curriculum_horizon(step: int, steps: int, horizon: int, curriculum: bool) -> int:
    """Unrolled saves at training `step`: a quarter, then half, then the whole
    `horizon`, over the first 25% / next 25% / last 50% of the steps."""
    if not curriculum:
        return horizon
    frac = step / max(steps, 1)
    if frac < 0.25:
        return max(1, horizon // 4)
    if frac < 0.5:
        return max(1, horizon // 2)
    return horizon


def default_optimizer(learning_rate: float, steps: int) -> optax.GradientTransformation:
    """Adam with a linear warm-up (10% of the steps, at most 50) and cosine decay to
    5% of `learning_rate`, after clipping the gradient to global norm 1."""
    warmup = max(1, min(50, steps // 10))
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, learning_rate, warmup, max(steps, warmup + 1), end_value=0.05 * learning_rate)
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule))


def member_factory(make_closure: Callable, method: str, *, dropout_rate: float,
                   make_prior_function: Callable | None, prior_function_scale: float):
    """`key -> one freshly initialised network` for `method`: the closure; for
    `"randomized-prior"` plus a fixed random prior function; for `"mc-dropout"` with
    channel dropout on its hidden layers (masks unset)."""
    if method == "randomized-prior":
        make_prior = make_closure if make_prior_function is None else make_prior_function

        def make(key):
            k1, k2 = jr.split(key)
            return RandomizedPrior(make_closure(k1), make_prior(k2), prior_function_scale)

        return make
    if method == "mc-dropout":
        return lambda key: with_mc_dropout(make_closure(key), dropout_rate)
    return make_closure


class _Step(eqx.Module):
    """One jit-compiled update of every member: vmapped over the member axis and run
    block by block on the devices of `mesh` (members never communicate)."""

    physics: Any
    static: Any = eqx.field(static=True)
    optimizer: Any = eqx.field(static=True)
    prior_std: Any
    mesh: Any = eqx.field(static=True)
    dt: float = eqx.field(static=True)
    mode: str = eqx.field(static=True)
    batch_size: int = eqx.field(static=True)
    dropout: bool = eqx.field(static=True)
    perturb: bool = eqx.field(static=True)
    noise_var: float = eqx.field(static=True)
    num_data: float = eqx.field(static=True)
    penalty: Any = eqx.field(static=True)
    steps_key: Any
    noise_std: Array
    scale: Array

    def member(self, params, opt_state, anchor, noise_key, key, data, horizon):
        def loss_fn(p):
            closure = eqx.combine(p, self.static)
            mse, extra = rollout_loss(
                closure, self.physics, data, key=key, horizon=horizon,
                batch_size=self.batch_size, dt=self.dt, mode=self.mode, scale=self.scale,
                noise_key=noise_key if self.perturb else None, noise_std=self.noise_std,
                dropout=self.dropout, penalty=self.penalty)
            reg = jnp.zeros((), mse.dtype)
            if self.noise_var > 0:
                # sigma^2 / N sum ((theta - a) / s)^2: the Gaussian prior centred on the
                # member's anchor, in the units of the normalised MSE
                reg = anchor_penalty(p, anchor, self.prior_std, noise_var=self.noise_var,
                                     num_data=self.num_data)
            return mse + extra + reg, (mse, extra, reg)

        (loss, (mse, extra, reg)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = self.optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, opt_state, {"loss": loss, "mse": mse, "penalty": extra, "prior": reg}

    @eqx.filter_jit
    def __call__(self, params, opt_state, anchors, noise_keys, step, data, horizon: int):
        n = jtu.tree_leaves(noise_keys)[0].shape[0]
        keys = jr.split(jr.fold_in(self.steps_key, step), n)

        def fn(p, s, a, nk, k, data):
            return self.member(p, s, a, nk, k, data, horizon)

        parallel = member_parallel(jax.vmap(fn, in_axes=(0, 0, 0, 0, 0, None)), self.mesh,
                                   member_args=(0, 1, 2, 3, 4))
        return parallel(params, opt_state, anchors, noise_keys, keys, data)


def fit(
    physics: solvers.AbstractSystem,
    make_closure: Callable[[PRNGKeyArray], Any],
    train: Trajectories,
    *,
    dt: float,
    key: PRNGKeyArray,
    horizon: int = 16,
    steps: int = 1000,
    members: int = 4,
    method: str = "anchored",
    mode: str = "tendency",
    optimizer: optax.GradientTransformation | None = None,
    batch_size: int = 8,
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
    learning_rate: float = 3e-3,
    curriculum: bool = True,
    noise_std: float = 0.05,
    prior: GaussianPrior | None = None,
    prior_scale: float = 1.0,
    prior_min_std: float = 0.01,
    start_at_anchors: bool = False,
    num_data: float | None = None,
    dropout_rate: float = 0.1,
    make_prior_function: Callable[[PRNGKeyArray], Any] | None = None,
    prior_function_scale: float = 1.0,
    penalty: Callable[[Array, Array], Array] | None = None,
    checkpoint_every: int = 100,
    callback: Callable[[int, dict[str, Any]], None] | None = None,
    stop_after: int | None = None,
    devices: Any = None,
) -> Ensemble:
    r"""Train an ensemble of closures end to end through rollouts of `physics`.

    Each step draws `batch_size` windows (trajectory $i$, start $s$) of `train` per
    member, rolls `Hybrid(physics, closure, mode=mode)` out for `horizon` saves from
    $y_{i,s}$ with `solvers.solve` (gradients through every solver step, checkpointed)
    and descends the normalised squared error against $y_{i,s+1..s+h}$
    (`hybrid.training.rollout_loss`) plus `penalty`. All members train at once, in one
    vmapped, jit-compiled step split over the available devices; a step whose
    gradient is not finite (a rollout that blew up) is skipped.

    The ensemble (`method`):

    - `"anchored"` (default): member $m$ also pays the Gaussian prior centred on its
      own draw $a_m$ from the prior (Pearce et al. 2020),
      $\frac{\sigma^2}{N}\sum_i (\theta_i - a_{m,i})^2 / s_i^2$, and fits its own fixed
      perturbation of the targets, $y + \sigma\xi_m$ with $\sigma$ = `noise_std` x the
      data's rms (randomize-then-optimize: exact posterior samples for a
      linear-Gaussian model).
    - `"deep"`: independent initialisations only.
    - `"randomized-prior"`: a fixed random prior function added to each member
      (Osband et al. 2018), with the target perturbation.
    - `"mc-dropout"`: one network with channel dropout, a new mask per window;
      its `members` are masks drawn at rollout time.

    **Arguments:**

    - `physics`: the known coarse physics, any `solvers.AbstractSystem`.
    - `make_closure`: `key -> closure`, an `eqx.Module` `(t, y, args) -> dy`.
    - `train`: `hybrid.Trajectories` on `physics`' grid (with per-trajectory `args`
      and `physics` when they differ between trajectories).
    - `dt`: the coarse solver step; `key`: every random choice of the run.
    - `horizon`: saves unrolled per loss (< the saves per trajectory); `steps`:
      optimiser steps (0 returns the initial ensemble: a template for `hybrid.load`);
      `members`: ensemble size; `mode`: `"tendency"` or `"correction"`.
    - `optimizer`: an optax optimiser, default Adam with warm-up and cosine decay at
      `learning_rate`, gradients clipped to norm 1; every optimiser is wrapped to skip
      non-finite steps.
    - `batch_size`: windows per member and step; `curriculum`: unroll a quarter, half,
      then all of `horizon` over the first 25% / 25% / 50% of the steps.
    - `checkpoint_dir`: orbax checkpoints every `checkpoint_every` steps (parameters,
      optimiser state, step), `fit.json` (the run's signature) and `train_log.jsonl`;
      when it holds checkpoints of the same run, training resumes from the latest
      and continues bit-exactly (every key is a function of `key` and the step); of
      another run, `ValueError`.
    - `progress`: a tqdm bar; `callback(step, metrics)` after each step.
    - `noise_std`: $\sigma$, relative to the data's rms (anchored, randomized prior).
    - `prior`: the `uq.GaussianPrior` of one network (anchored); default the moments of
      `make_closure`'s initialisation (`uq.prior_from_init`, stds floored at
      `prior_min_std`), times `prior_scale`; `start_at_anchors`: initialise member $m$
      at $a_m$ instead of at its own initialisation; `num_data`: $N$ of the prior
      weight (default every scalar residual of `train`).
    - `dropout_rate`: MC dropout; `make_prior_function`, `prior_function_scale`: the
      prior network of `"randomized-prior"` (default `make_closure`).
    - `penalty`: `(pred [h, *state], target [h, *state]) -> scalar`, added to each
      window's loss (e.g. weighted physics terms).
    - `stop_after`: stop after that many steps, as if interrupted (for tests).
    - `devices`: the devices to split members over (default all, of every process).

    Several processes (`jax.distributed`, DISTRIBUTED.md): every process makes the
    same call; the members are split over the devices of all processes (`members` a
    multiple of the process count), orbax writes each process's share of the
    checkpoints, and every process returns the whole ensemble.

    **Returns:** a `hybrid.Ensemble` (closures stacked, `physics`, `mode`, `method`).

    **References:** Pearce et al., AISTATS 2020; Bardsley et al., SIAM J. Sci. Comput.
    36 (2014); Osband et al., NeurIPS 2018; Gal & Ghahramani, ICML 2016; Um et al.,
    NeurIPS 2020 (solver in the loop); Kochkov et al., PNAS 2021.
    """
    if not isinstance(physics, solvers.AbstractSystem):
        raise ValueError(
            f"`physics` must be a solvers.AbstractSystem, got {type(physics).__name__}.")
    if not callable(make_closure):
        raise ValueError(
            f"`make_closure` must be a function key -> closure, got {make_closure!r}.")
    if not isinstance(train, Trajectories):
        raise ValueError(f"`train` must be hybrid.Trajectories, got {type(train).__name__}.")
    dt = _checks.positive_float(dt, "dt")
    key = _checks.prng_key(key)
    horizon = _checks.positive_int(horizon, "horizon")
    steps = _checks.positive_int(steps, "steps", 0)
    members = _checks.positive_int(members, "members")
    method = _checks.choice(method, "method", METHODS)
    mode = _checks.choice(mode, "mode", ("tendency", "correction"))
    batch_size = _checks.positive_int(batch_size, "batch_size")
    checkpoint_every = _checks.positive_int(checkpoint_every, "checkpoint_every")
    learning_rate = _checks.positive_float(learning_rate, "learning_rate")
    noise_std = _checks.positive_float(noise_std, "noise_std", allow_zero=True)
    prior_scale = _checks.positive_float(prior_scale, "prior_scale")
    prior_min_std = _checks.positive_float(prior_min_std, "prior_min_std")
    if not 0.0 <= float(dropout_rate) < 1.0:
        raise ValueError(f"`dropout_rate` must be in [0, 1), got {dropout_rate!r}.")
    if optimizer is not None and not hasattr(optimizer, "update"):
        raise ValueError(f"`optimizer` must be an optax GradientTransformation, got {optimizer!r}.")
    if tuple(train.state_shape) != tuple(physics.state_shape):
        raise ValueError(
            f"`train` holds states of shape {train.state_shape}, `physics` works on "
            f"{tuple(physics.state_shape)}: coarse-grain the data to the physics' grid."
        )
    n_traj, n_t = train.ys.shape[:2]
    if horizon >= n_t:
        raise ValueError(
            f"`horizon` ({horizon}) must be below the saves per trajectory of `train` ({n_t})."
        )

    trained = 1 if method == "mc-dropout" else members
    make = member_factory(make_closure, method, dropout_rate=float(dropout_rate),
                          make_prior_function=make_prior_function,
                          prior_function_scale=float(prior_function_scale))
    network = eqx.filter_vmap(make)(jr.split(stream(key, "members"), trained))
    params, static = eqx.partition(network, eqx.is_array)
    if num_data is None:
        num_data = float(n_traj * (n_t - 1) * np.prod(train.state_shape))
    anchors = jtu.tree_map(jnp.zeros_like, params)
    prior_std = None
    if method == "anchored":
        if prior is None:
            prior = prior_from_init(make_closure, key=stream(key, "prior"),
                                    min_std=prior_min_std)
        if not isinstance(prior, GaussianPrior):
            raise ValueError(f"`prior` must be a uq.GaussianPrior, got {type(prior).__name__}.")
        prior = GaussianPrior(prior.mean, jtu.tree_map(lambda s: s * prior_scale, prior.std))
        prior_std = prior.std
        anchors = draw_anchors(prior, trained, key=stream(key, "anchors"))
        if start_at_anchors:
            params = jtu.tree_map(lambda a, p: a.astype(p.dtype) if eqx.is_inexact_array(p)
                                  else p, anchors, params)
    custom_optimizer = optimizer is not None
    optimizer = default_optimizer(learning_rate, steps) if optimizer is None else optimizer
    if method == "randomized-prior":
        optimizer = freeze_non_trainable(optimizer)
    optimizer = optax.apply_if_finite(optimizer, max_consecutive_errors=50)
    opt_state = jax.vmap(optimizer.init)(params)
    noise_keys = jr.split(stream(key, "target_noise"), trained)

    scale = jnp.mean(jnp.square(train.ys))
    data = Windows(train.ys, train.ts, train.args, train.physics, train.save_dt)
    mesh = members_mesh(trained, devices)
    step_fn = _Step(
        physics=physics, static=static, optimizer=optimizer, prior_std=prior_std, mesh=mesh,
        dt=dt, mode=mode, batch_size=batch_size, dropout=method == "mc-dropout",
        perturb=method in ("anchored", "randomized-prior") and noise_std > 0,
        noise_var=noise_std**2 if method == "anchored" else 0.0, num_data=float(num_data),
        penalty=penalty, steps_key=stream(key, "steps"),
        noise_std=jnp.asarray(noise_std, scale.dtype) * jnp.sqrt(scale), scale=scale,
    )

    ckpt = None
    start = 0
    if checkpoint_dir is not None:
        signature = {
            "steps": steps, "horizon": horizon, "members": members, "method": method,
            "mode": mode, "batch_size": batch_size, "dt": dt, "learning_rate": learning_rate,
            "curriculum": bool(curriculum), "noise_std": noise_std,
            "prior_scale": prior_scale, "prior_min_std": prior_min_std,
            "start_at_anchors": bool(start_at_anchors), "num_data": float(num_data),
            "dropout_rate": float(dropout_rate),
            "prior_function_scale": float(prior_function_scale),
            "checkpoint_every": checkpoint_every, "key": _checks.key_data(key),
            "data": data_digest(train.ys, train.ts),
            "network": data_digest(*jtu.tree_leaves(params)),
            "optimizer": "custom" if custom_optimizer else "default",
        }
        ckpt = Checkpoints(checkpoint_dir, signature)
        params, opt_state, start = ckpt.restore(params, opt_state)

    params, opt_state, anchors, noise_keys = shard_members(
        (params, opt_state, anchors, noise_keys), mesh)
    data = replicate(data, mesh)
    end = steps if stop_after is None else min(steps, int(stop_after))
    bar = tqdm(range(start, end), initial=start, total=steps,
               disable=not progress or start >= end or not _distributed.is_primary(),
               desc=f"fit x{members} ({method})", unit="step")
    t_last = time.perf_counter()
    for step in bar:
        h = curriculum_horizon(step, steps, horizon, curriculum)
        # the step index is traced, the horizon static: one compilation per stage
        params, opt_state, metrics = step_fn(params, opt_state, anchors, noise_keys,
                                             jnp.asarray(step, jnp.int32), data, h)
        done = step + 1
        if ckpt is not None and (done % checkpoint_every == 0 or done == steps):
            ckpt.save(done, params, opt_state)
        if callback is not None or done % 10 == 0 or done == end:
            # several processes: every process gets every member's numbers (a collective)
            metrics = _distributed.to_host(metrics)
        if callback is not None:
            callback(done, {k: np.asarray(v) for k, v in metrics.items()})
        if done % 10 == 0 or done == end:
            mse = np.asarray(metrics["mse"])
            now = time.perf_counter()
            if ckpt is not None:
                ckpt.log({"step": done, "horizon": h, "mse": mse.tolist(),
                          "loss": np.asarray(metrics["loss"]).tolist(),
                          "seconds": now - t_last})
            t_last = now
            bar.set_postfix(mse=f"{mse.mean():.3g}", horizon=h)
    if ckpt is not None:
        ckpt.close()
    if jax.process_count() > 1:
        # every process returns the whole trained ensemble, as in a single-process run
        params = jtu.tree_map(jnp.asarray, _distributed.to_host(params))
    return Ensemble(eqx.combine(params, static), physics, mode, method,
                    members if method == "mc-dropout" else None)
