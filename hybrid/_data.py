"""Reference data for a task: fine rollouts on disk (`solvers.generate_dataset`),
coarse-grained for training, kept fine for evaluation."""

import dataclasses
from pathlib import Path

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array

import solvers

from ._config import Config


@dataclasses.dataclass
class TrajectoryData:
    """Trajectories after spin-up, their absolute save times, and the stacked coarse
    physics of each trajectory (forcing, frequencies, ...)."""

    ys: Array  # [N, T, *state]
    ts: Array  # [T]
    physics: solvers.AbstractSystem  # stacked over N


def _sample_fn(task):
    # One function object per task, so generate_dataset compiles once.
    return task.sample


# The configuration keys that shape the reference data (the rest -- closure, training,
# ensemble, evaluation -- does not): a data set is reused by any run that agrees on
# these, and refused (not silently mixed) by one that does not.
DATA_KEYS = ("system", "seed", "fine_n", "coarse_n", "viscosity", "filter", "fine_dt",
             "save_dt", "t_spinup", "t_train", "n_train", "drag", "forcing", "avg_degree",
             "coupling", "frequencies", "clustering", "scales")


def data_config(cfg: Config) -> dict:
    """The part of `cfg` recorded with (and checked against) the stored data sets."""
    full = cfg.to_dict()
    return {k: full[k] for k in DATA_KEYS if k in full}


def _ts(cfg: Config, duration: float) -> np.ndarray:
    n = int(round((cfg.t_spinup + duration) / cfg.save_dt))
    return np.arange(n + 1) * cfg.save_dt


def _dataset(task, path: Path, duration: float, n: int, key, filter_n: int | None,
             progress: bool) -> solvers.Dataset:
    cfg = task.cfg
    filter_fn = None
    if filter_n is not None:
        filter_fn = _CoarseGrain(task, filter_n)
    return solvers.generate_dataset(
        path,
        _sample_fn(task),
        _ts(cfg, duration),
        dt=cfg.fine_dt,
        n_trajectories=n,
        key=key,
        chunk_size=min(n, 16),
        config={"task": data_config(cfg), "filter_n": filter_n},
        filter_fn=filter_fn,
        resume=True,
        progress=progress,
    )


class _CoarseGrain(eqx.Module):
    task: object = eqx.field(static=True)
    n: int = eqx.field(static=True)

    def __call__(self, ys):
        return self.task.coarse_grain(ys, self.n)


def _physics(task, ds: solvers.Dataset, n: int) -> solvers.AbstractSystem:
    like = task.sample(jr.PRNGKey(0))[0]
    fine = ds.system(slice(0, len(ds)), like)
    return eqx.filter_vmap(lambda f: task.coarse_physics(f, n))(fine)


def training_data(task, out: Path, *, progress: bool = True) -> TrajectoryData:
    """Coarse-grained training trajectories (generated once, then read from disk)."""
    cfg = task.cfg
    key = jr.fold_in(jr.PRNGKey(cfg.seed), 0)
    ds = _dataset(task, out / "data" / "train", cfg.t_train, cfg.n_train, key,
                  cfg.coarse_n, progress)
    s0 = int(round(cfg.t_spinup / cfg.save_dt))
    ys = jnp.asarray(np.asarray(ds[:])[:, s0:])
    ts = jnp.asarray(ds.ts[s0:], ys.dtype)
    return TrajectoryData(ys, ts, _physics(task, ds, cfg.coarse_n))


# Key streams of the data splits (fold_in of the run's seed): training 0, test 1,
# validation 4 (2, 3, 5 seed the members, the training steps and the target noise).
_SPLITS = {"test": 1, "validation": 4}


def test_data(task, out: Path, duration: float, *, progress: bool = True,
              split: str = "test"):
    """Held-out fine trajectories (other keys than training) and their fine systems:
    `(ys_fine [B, T, *fine_state], ts [T], fine systems stacked [B])`.

    `split="test"` is what evaluation scores; `split="validation"` is a separate
    held-out set for fitting what training cannot (the spread calibration), never
    the test set."""
    cfg = task.cfg
    if split not in _SPLITS:
        raise ValueError(f"`split` must be one of {tuple(_SPLITS)}, got {split!r}.")
    key = jr.fold_in(jr.PRNGKey(cfg.seed), _SPLITS[split])
    size = cfg.n_test if split == "test" else cfg.n_val
    ds = _dataset(task, out / "data" / split, duration, size, key, None, progress)
    s0 = int(round(cfg.t_spinup / cfg.save_dt))
    like = task.sample(jr.PRNGKey(0))[0]
    fine = ds.system(slice(0, len(ds)), like)
    ys = jnp.asarray(np.asarray(ds[:])[:, s0:])
    return ys, jnp.asarray(ds.ts[s0:], ys.dtype), fine
