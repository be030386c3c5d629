r"""The uncertainty of a trained ensemble, fitted after training and used in every
rollout of it: the stochastic closure term, the spread calibration, and the ensemble
rollouts themselves.

- **Stochastic closure term** (`cfg.stochastic_closure`): additive noise
  $\sigma_\phi(y) \odot dW$ whose amplitude is fitted by maximum likelihood on the
  members' residuals over `noise_fit_steps` save intervals of the *training* data
  (`_stochastic.fit_noise`); `"state"` makes it grow with the local gradient, so the
  spread grows where the closure is least sure (shocks, fronts).
- **Spread calibration** (`cfg.calibrate`): one inflation factor $\alpha$ of the
  members' deviations from their mean, fitted on rollouts of a separate *validation*
  set (never the test set), as operational weather ensembles are post-processed
  (`_calibration`). Evaluation reports the scores with and without it.
- **Rollouts** (`ensemble_rollouts`): `[M, B, T, *state]`, one vmapped, jitted solve
  over members and trajectories; MC-dropout members draw one mask per (member,
  trajectory), stochastic ones one noise path per (member, trajectory).

Files next to `model.eqx`: `noise.eqx` (the fitted noise model) and `uq.json` (its
kind, the calibration factor and the validation scores it was fitted on).
"""

import json
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

import solvers

from . import _bayes, _calibration, _metrics, _stochastic
from ._config import Config
from ._data import TrajectoryData, test_data
from ._hybrid import Hybrid

# fold_in streams of the run's seed for the rollout keys (masks, noise paths)
_ROLLOUT_STREAM = 7
# residual windows pooled for the noise fit, at most (memory and time bound)
_MAX_RESIDUAL_WINDOWS = 4096
# windows whose residual rollouts run at once (vmapped) in the noise fit
_RESIDUAL_CHUNK = 256


def cluster_features(y):
    r"""Noise features of cluster states `[M, 2]` (Re, Im of each cluster's order
    parameter): the modulus $|z_m|$, broadcast to both components. Shape `[1, M, 2]`."""
    r = jnp.sqrt(jnp.sum(jnp.square(y), axis=-1, keepdims=True))
    return jnp.broadcast_to(r, y.shape)[None]


def noise_template(cfg: Config, ndim: int) -> _stochastic.AbstractNoise | None:
    """An unfitted noise model of the configured kind (the structure `noise.eqx`
    deserialises into), or `None` without a stochastic term."""
    if cfg.stochastic_closure == "none":
        return None
    if cfg.stochastic_closure == "diagonal":
        return _stochastic.DiagonalNoise(jnp.zeros(()))
    features = _stochastic.gradient_magnitude if ndim >= 1 else cluster_features
    return _stochastic.StateDependentNoise.init(1.0, features=features)


def _member_count(members) -> int:
    return int(jax.tree.leaves(eqx.filter(members, eqx.is_array))[0].shape[0])


@eqx.filter_jit
def _rollouts(cfg, task, members, physics_b, y0_b, ts_rel, t0, dt, noise, key):
    params, static = eqx.partition(members, eqx.is_array)
    trained = _member_count(members)
    m_total = cfg.members
    k_mask, k_noise = jr.split(key)

    def one(m, system, y0, b):
        # MC dropout trains one network: every member is a mask of it
        p = jax.tree.map(lambda x: x[m % trained], params)
        closure = eqx.combine(p, static)
        if cfg.ensemble == "mc-dropout":
            closure = _bayes.draw_dropout_masks(
                closure, key=jr.fold_in(jr.fold_in(k_mask, m), b))
        model = Hybrid(system, closure, mode=cfg.mode)
        if noise is not None:
            model = _stochastic.StochasticSystem(
                model, noise, key=jr.fold_in(jr.fold_in(k_noise, m), b))
        sol = solvers.solve(model, y0, np.asarray(ts_rel), dt=dt, t_offset=t0, throw=False,
                            args=task.closure_args(system))
        return sol.ys, sol.blowup_index

    n_b = jax.tree.leaves(y0_b)[0].shape[0]
    # filter_vmap: the stacked physics may hold non-array leaves (Python floats)
    per_traj = eqx.filter_vmap(one, in_axes=(None, eqx.if_array(0), 0, 0))
    return eqx.filter_vmap(per_traj, in_axes=(0, None, None, None))(
        jnp.arange(m_total), physics_b, y0_b, jnp.arange(n_b))


def ensemble_rollouts(
    cfg: Config,
    task: Any,
    members: Any,
    physics_b: solvers.AbstractSystem,
    y0_b: jax.Array,
    ts_rel: np.ndarray,
    t0: Any,
    *,
    noise: _stochastic.AbstractNoise | None = None,
    key: jax.Array | None = None,
    dt: float | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Roll out every member from every initial state.

    **Arguments:** `cfg`, `task`; `members` (the stacked trained closures:
    `Ensemble.members`); `physics_b` (coarse physics stacked over `B` trajectories);
    `y0_b` `[B, *state]`; `ts_rel` save times relative to `t0` (absolute start time);
    `noise` (the fitted stochastic term, or `None`); `key` (masks and noise paths;
    default from the run's seed); `dt` (default `cfg.dt`).

    **Returns:** `(ys [M, B, T, *state], blowup_index [M, B])`.
    """
    if key is None:
        key = jr.fold_in(jr.PRNGKey(cfg.seed), _ROLLOUT_STREAM)
    dt = cfg.dt if dt is None else dt
    # a tuple is static under filter_jit: solve derives its step counts from it
    ts_static = tuple(float(t) for t in np.asarray(ts_rel))
    return _rollouts(cfg, task, members, physics_b, y0_b, ts_static, jnp.asarray(t0), dt,
                     noise, key)


@eqx.filter_jit
def _residuals(cfg, task, members, data_ys, data_ts, physics, idx):
    """Residuals of every (deterministic) member over `noise_fit_steps` saves from
    the windows `idx` `[W, 2]` (trajectory, start)."""
    params, static = eqx.partition(members, eqx.is_array)
    k = cfg.noise_fit_steps
    rel = np.array([0.0, k * cfg.save_dt])

    def one(p, i, s):
        closure = eqx.combine(p, static)
        phys = jax.tree.map(lambda x: x[i] if eqx.is_array(x) else x, physics)
        model = Hybrid(phys, closure, mode=cfg.mode)
        sol = solvers.solve(model, data_ys[i, s], rel, dt=cfg.dt, t_offset=data_ts[s],
                            throw=False, args=task.closure_args(phys))
        return data_ys[i, s], data_ys[i, s + k] - sol.ys[-1]

    per_window = jax.vmap(one, in_axes=(None, 0, 0))
    per_member = jax.vmap(per_window, in_axes=(0, None, None))
    # windows in chunks (lax.map): vmapping all of them at once holds every window's
    # rollout in memory at the same time (GBs for thousands of windows)
    w = idx.shape[0]
    chunk = min(w, _RESIDUAL_CHUNK)
    n_chunks = -(-w // chunk)
    padded = jnp.concatenate([idx, jnp.broadcast_to(idx[:1], (n_chunks * chunk - w, 2))])
    states, res = jax.lax.map(lambda c: per_member(params, c[:, 0], c[:, 1]),
                              padded.reshape(n_chunks, chunk, 2))

    def flat(x):  # [chunks, M, chunk, *state] -> [M * W, *state], member-major
        x = jnp.moveaxis(x, 1, 0).reshape((x.shape[1], n_chunks * chunk) + x.shape[3:])
        return x[:, :w].reshape((-1,) + x.shape[2:])

    return flat(states), flat(res)


def fit_noise_on_training_data(cfg: Config, task: Any, members: Any,
                               data: TrajectoryData) -> _stochastic.AbstractNoise | None:
    """The stochastic closure term fitted by maximum likelihood on the members'
    residuals over `noise_fit_steps` saves of (a subsample of) the training windows;
    `None` for `stochastic_closure="none"`. MC dropout: the residuals of the mean
    network."""
    template = noise_template(cfg, task.ndim)
    if template is None:
        return None
    n_traj, n_t = data.ys.shape[:2]
    k = cfg.noise_fit_steps
    windows = np.stack(np.meshgrid(np.arange(n_traj), np.arange(n_t - k), indexing="ij"),
                       -1).reshape(-1, 2)
    rng = np.random.default_rng(cfg.seed)
    if len(windows) > _MAX_RESIDUAL_WINDOWS:
        windows = windows[rng.choice(len(windows), _MAX_RESIDUAL_WINDOWS, replace=False)]
    members = _bayes.clear_dropout_masks(members) if cfg.ensemble == "mc-dropout" else members
    states, res = _residuals(cfg, task, members, data.ys, data.ts, data.physics,
                             jnp.asarray(windows))
    ok = jnp.all(jnp.isfinite(res.reshape(res.shape[0], -1)), axis=1)
    states, res = states[ok], res[ok]
    if states.shape[0] == 0:
        raise RuntimeError("every residual window of the trained model blew up: no noise fit.")
    if isinstance(template, _stochastic.StateDependentNoise):
        # start from the constant amplitude, then let the features in
        sigma0 = float(jnp.sqrt(jnp.mean(res**2) / (k * cfg.save_dt)))
        template = _stochastic.StateDependentNoise.init(sigma0, features=template.features)
    return _stochastic.fit_noise(template, states, res, k * cfg.save_dt)


def _scores(ens_ys, ref) -> dict[str, float]:
    s = _metrics.uq_summary(ens_ys, ref, skip_initial=True)
    return {k: float(v) for k, v in s.items()}


def fit_uncertainty(out: Path, cfg: Config, task: Any, ensemble: Any, data: TrajectoryData,
                    *, progress: bool = True) -> dict[str, Any]:
    """Fit the stochastic term (training residuals) and the spread calibration
    (validation rollouts); write `noise.eqx` and `uq.json` into `out`.

    **Returns:** the content of `uq.json`.
    """
    out = Path(out)
    noise = fit_noise_on_training_data(cfg, task, ensemble.members, data)
    info: dict[str, Any] = {"stochastic_closure": cfg.stochastic_closure, "inflation": 1.0}
    if noise is not None:
        eqx.tree_serialise_leaves(out / "noise.eqx", noise)
        info["noise"] = {k: np.asarray(v).tolist() for k, v in _noise_params(noise).items()}
    if cfg.calibrate:
        ys_fine, ts_abs, fine = test_data(task, out, cfg.eval_horizon * cfg.save_dt,
                                          progress=progress, split="validation")
        ys_fine = ys_fine[:, : cfg.eval_horizon + 1]
        ts_abs = ts_abs[: cfg.eval_horizon + 1]
        ref = task.coarse_grain(ys_fine, cfg.coarse_n)
        coarse = eqx.filter_vmap(lambda f: task.coarse_physics(f, cfg.coarse_n))(fine)
        key = jr.fold_in(jr.PRNGKey(cfg.seed), _ROLLOUT_STREAM + 1)
        ens_ys, _ = ensemble_rollouts(cfg, task, ensemble.members, coarse, ref[:, 0],
                                      np.asarray(ts_abs - ts_abs[0]), ts_abs[0],
                                      noise=noise, key=key)
        alpha = float(_calibration.fit_spread_inflation(ens_ys[:, :, 1:], ref[:, 1:]))
        if not np.isfinite(alpha):
            alpha = 1.0
        info["inflation"] = alpha
        info["validation"] = {
            "raw": _scores(ens_ys, ref),
            "calibrated": _scores(_calibration.inflate_spread(ens_ys, alpha), ref),
        }
    (out / "uq.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def _noise_params(noise) -> dict[str, Any]:
    if isinstance(noise, _stochastic.DiagonalNoise):
        return {"log_sigma": noise.log_sigma}
    return {"bias": noise.bias, "coef": noise.coef}


def load_uncertainty(out: Path, cfg: Config, ndim: int):
    """`(noise model or None, inflation factor)` of the run in `out` (defaults: no
    noise, no inflation, for runs trained before they existed)."""
    out = Path(out)
    template = noise_template(cfg, ndim)
    noise = None
    if template is not None and (out / "noise.eqx").exists():
        noise = eqx.tree_deserialise_leaves(out / "noise.eqx", template)
    alpha = 1.0
    if (out / "uq.json").exists():
        alpha = float(json.loads((out / "uq.json").read_text()).get("inflation", 1.0))
    return noise, alpha
