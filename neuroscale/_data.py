"""Reference data of a run: fine rollouts generated once into `DIR/data/<split>`,
coarse-grained into `hybrid.Trajectories`."""

import dataclasses
import json
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

import hybrid
from hybrid.data import generate_dataset

from ._task import AbstractTask

# fold_in streams of the run's seed for the data splits (the library's own streams,
# hybrid/_keys.py, use other numbers under the same root key; the Kuramoto graph 10)
SPLITS = {"train": 0, "test": 1, "validation": 4, "ood": 7}
# the observational noise of a split draws from fold_in(seed, 40 + its stream)
_NOISE_STREAM = 40


def _ts(task: AbstractTask, duration: float) -> np.ndarray:
    cfg = task.cfg
    n = int(round((cfg.t_spinup + duration) / cfg.save_dt))
    return np.arange(n + 1) * cfg.save_dt


class _CoarseGrain(eqx.Module):
    # one function object per (task, n), so that generate_dataset compiles once
    task: Any = eqx.field(static=True)
    n: int = eqx.field(static=True)

    def __call__(self, ys):
        return self.task.coarse_grain(ys, self.n)


# Working memory of one generation chunk (its trajectories are solved in one vmapped
# call): the stored trajectories plus the solver's states. At 1M oscillators a chunk
# of 16 stored coarse needs ~16 x 16 fine states = 1 GiB; stored fine it would
# need 16 x 200 saves = 13 GB, so fewer trajectories go in one chunk.
CHUNK_BYTES = 2**30
# Fine states the solve holds per trajectory besides the saves: its stages (7 for
# Tsit5), carry, initial state, system arrays and temporaries.
_WORKING_STATES = 16


def _window_start(task: AbstractTask) -> int:
    return int(round(task.cfg.t_spinup / task.cfg.save_dt))


def _has_finer(task: AbstractTask) -> bool:
    if task.reference_in_frontier:
        return True
    if not task.finer_factors:
        return False
    like = task.sample(jr.PRNGKey(0))[0]
    return any(task.finer(like, f) is not None for f in task.finer_factors)


def stores_fine_test(task: AbstractTask) -> bool:
    """Whether the test split is stored fine: only when the task has solvers finer
    than the coarse one (`finer` not `None`, or `reference_in_frontier`), which start
    from the fine state at the start of the evaluation window, *and* that window
    starts after a spin-up. When it starts at the sampled state (`t_spinup` = 0:
    Kuramoto, graph Burgers) the split is stored coarse like the others (0.4 GB less
    per test trajectory at 1M oscillators and 100 saves) and `test_set` re-samples
    the fine initial states from the trajectories' keys."""
    return _window_start(task) > 0 and _has_finer(task)


def chunk_size(task: AbstractTask, size: int, n_saves: int, *, fine: bool) -> int:
    """Trajectories per generation chunk: at most 16 (and `size`), fewer when their
    working memory (`_WORKING_STATES` fine states each, plus the `n_saves` saves if
    stored `fine`) would exceed `CHUNK_BYTES`."""
    _, y0 = jax.eval_shape(task.sample, jr.PRNGKey(0))
    state = y0.size * np.dtype(y0.dtype).itemsize
    per = state * (_WORKING_STATES + (n_saves if fine else 0))
    return int(max(1, min(size, 16, CHUNK_BYTES // max(per, 1))))


def _stored_fine(path: Path) -> bool | None:
    """`True`/`False` if a data set at `path` (complete or not) holds fine/coarse
    states, `None` if there is none (run folders of earlier versions stored the
    Kuramoto test split fine: they keep it)."""
    meta = path / "zarr.json"
    if not meta.is_file():
        return None
    try:
        config = json.loads(meta.read_text())["attributes"]["config"]
        return config["filter_n"] is None
    except (ValueError, KeyError, TypeError):
        return None


def dataset(task: AbstractTask, out: Path, split: str, *, progress: bool = True):
    """The data set of `split` in the run folder `out` (generated on first use, then
    read; refused if it was made with other data keys): stored coarse-grained, the
    coarse-graining applied to each state as the fine solve produces it (a fine
    trajectory is never held whole), except `"test"` for tasks with finer
    plain-solver baselines (`stores_fine_test`), whose fine states they start from;
    `"ood"` is a test set out of the training distribution (a task whose configuration
    differs in a physical key, see `ood_task`), stored coarse."""
    cfg = task.cfg
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {tuple(SPLITS)}, got {split!r}.")
    size = {"train": cfg.n_train, "test": cfg.n_test, "validation": cfg.n_val,
            "ood": cfg.n_test}[split]
    duration = cfg.t_train if split == "train" else cfg.eval_horizon * cfg.save_dt
    path = Path(out) / "data" / split
    coarse = True
    if split == "test":
        stored = _stored_fine(path)
        coarse = not (stores_fine_test(task) if stored is None else stored)
    ts = _ts(task, duration)
    return generate_dataset(
        path,
        task.sample,
        ts,
        dt=cfg.fine_dt,
        n_trajectories=size,
        key=jr.fold_in(jr.PRNGKey(cfg.seed), SPLITS[split]),
        chunk_size=chunk_size(task, size, len(ts), fine=not coarse),
        config={"task": cfg.data_dict(), "filter_n": cfg.coarse_n if coarse else None},
        filter_fn=_CoarseGrain(task, cfg.coarse_n) if coarse else None,
        resume=True,
        progress=progress,
    )


def ood_task(task: AbstractTask) -> AbstractTask | None:
    """The task of the out-of-distribution test set: `ood_viscosity` in place of
    `viscosity` (`None` when the run has none)."""
    value = getattr(task.cfg, "ood_viscosity", 0.0)
    if not value:
        return None
    return type(task)(dataclasses.replace(task.cfg, viscosity=value))


def fine_systems(task: AbstractTask, ds) -> Any:
    """The fine systems of every trajectory of `ds`, stacked."""
    like = task.sample(jr.PRNGKey(0))[0]
    return ds.system(slice(0, len(ds)), like)


def trajectories(task: AbstractTask, ds, *, saves: int | None = None,
                 fine=None) -> hybrid.Trajectories:
    """`ds` after the spin-up (at most `saves` + 1 saves) as coarse `hybrid.Trajectories`
    with each trajectory's coarse physics and closure `args`. `fine`: the stored states
    are fine (coarse-grain them)."""
    cfg = task.cfg
    s0 = int(round(cfg.t_spinup / cfg.save_dt))
    end = None if saves is None else s0 + saves + 1
    if fine:  # one fine trajectory in memory at a time
        ys = jnp.stack([task.coarse_grain(jnp.asarray(ds[i][s0:end]), cfg.coarse_n)
                        for i in range(len(ds))])
    else:
        ys = jnp.asarray(np.asarray(ds[:])[:, s0:end])
    ts = np.asarray(ds.ts[s0:end])
    coarse = eqx.filter_vmap(lambda f: task.coarse_physics(f, cfg.coarse_n))(
        fine_systems(task, ds))
    args = eqx.filter_vmap(task.closure_args)(coarse)
    return hybrid.Trajectories(ys, ts, args=args, physics=coarse)


def observed(task: AbstractTask, data: hybrid.Trajectories, split: str) -> hybrid.Trajectories:
    """`data` of a training or validation `split` through the run's observational noise
    (`obs_noise`, `obs_noise_kind`); unchanged without noise."""
    cfg = task.cfg
    key = jr.fold_in(jr.PRNGKey(cfg.seed), _NOISE_STREAM + SPLITS[split])
    return hybrid.data.observe(data, cfg.obs_noise, key=key, kind=cfg.obs_noise_kind)


def training_set(task: AbstractTask, out: Path, *, progress: bool = True):
    """The training trajectories (observed through `obs_noise`), `hybrid.Trajectories`."""
    ds = dataset(task, out, "train", progress=progress)
    return observed(task, trajectories(task, ds), "train")


def validation_set(task: AbstractTask, out: Path, *, progress: bool = True):
    """The validation trajectories over `eval_horizon` saves (what `calibrate` fits on,
    observed through `obs_noise`), as `hybrid.Trajectories`."""
    ds = dataset(task, out, "validation", progress=progress)
    return observed(task, trajectories(task, ds, saves=task.cfg.eval_horizon), "validation")


def test_set(task: AbstractTask, out: Path, *, progress: bool = True):
    """The held-out test set over `eval_horizon` saves: `(trajectories, fine states at
    the start of the window [B, *fine_state] (where the finer solvers start) or None
    where the split is stored coarse, fine systems)`."""
    cfg = task.cfg
    ds = dataset(task, out, "test", progress=progress)
    s0 = _window_start(task)
    if ds.config.get("filter_n") is not None:
        fine_y0 = None
        if s0 == 0 and _has_finer(task):  # the sampled states, as the data began
            fine_y0 = jnp.stack([task.sample(ds.trajectory_key(i))[1] for i in range(len(ds))])
        return trajectories(task, ds, saves=cfg.eval_horizon), fine_y0, fine_systems(task, ds)
    fine_y0 = jnp.stack([jnp.asarray(ds[i][s0]) for i in range(len(ds))])
    test = trajectories(task, ds, saves=cfg.eval_horizon, fine=True)
    return test, fine_y0, fine_systems(task, ds)
