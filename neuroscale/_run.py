"""A run folder: train a task's ensemble with `hybrid.fit`, calibrate it, evaluate it,
test its stability; everything on disk, resumable.

Layout of `DIR`: `config.json`; `data/{train,validation,test}` (reference data, reused
by any run that agrees on the data keys); `checkpoints/` (orbax steps, `fit.json`,
`train_log.jsonl`); `model/` (`hybrid.save`: members, noise model, inflation);
`uq.json` (what calibration fitted and its validation scores); `metrics.json`,
`report.md` and the figures (`neuroscale evaluate`)."""

import json
import time
import warnings
from pathlib import Path
from typing import Any

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np

import hybrid

from . import _data, _distributed
from ._config import Config, load_config
from ._store import run_store
from ._task import AbstractTask, task_class

# fold_in streams of the run's seed for the stages after training (fit uses the root
# key itself; the data splits 0, 1, 4 and the Kuramoto graph 10; baselines 30, 31, ...)
_CALIBRATE_STREAM, _EVALUATE_STREAM, _BASELINE_STREAM = 20, 21, 30


def root_key(cfg: Config):
    return jr.PRNGKey(cfg.seed)


def _scaled_factory(task: AbstractTask, init_scale: float):
    """`key -> closure` at another output scale, if the task's closures take
    `init_scale` (the built-in ones do); else `None` (use `make_closure` itself)."""
    try:
        task.make_closure(jr.PRNGKey(0), init_scale=init_scale)
    except TypeError:
        return None
    return lambda k: task.make_closure(k, init_scale=init_scale)


def _fit_kwargs(task: AbstractTask) -> dict[str, Any]:
    cfg = task.cfg
    key = root_key(cfg)
    trained = 1 if cfg.ensemble == "mc-dropout" else cfg.members
    prior = None
    if cfg.ensemble == "anchored" and not cfg.start_at_anchors:
        # the prior of a network is its initialisation without the shrunken output
        # layer (`init_scale=1`: the shrinking is an optimisation device)
        full = _scaled_factory(task, 1.0)
        if full is not None:
            prior = hybrid.uq.prior_from_init(full, key=jr.fold_in(key, 6),
                                              min_std=cfg.prior_min_std)
    return dict(
        dt=cfg.dt, key=key, horizon=cfg.horizon, steps=cfg.train_steps, members=cfg.members,
        method=cfg.ensemble, mode=cfg.mode, batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate, curriculum=cfg.curriculum, noise_std=cfg.noise_std,
        prior=prior, prior_scale=cfg.prior_scale, prior_min_std=cfg.prior_min_std,
        start_at_anchors=cfg.start_at_anchors, dropout_rate=cfg.dropout_rate,
        num_data=cfg.num_data or None,
        make_prior_function=_scaled_factory(task, 0.1)
        if cfg.ensemble == "randomized-prior" else None,
        prior_function_scale=cfg.prior_function_scale,
        checkpoint_every=cfg.checkpoint_every,
    ) | {"_trained": trained}


def physics_penalty(task: AbstractTask, train: hybrid.Trajectories):
    """`physics_weight` x the energy mismatch of a window, normalised by the data's
    energy; `None` for `physics_weight=0`.

    (A conserved-quantity term used to sit beside it: every built-in closure conserves
    the mean by construction, so its gradient was ~1e-15 of the data term's,
    `benchmarks/bench_physics_terms.py`; removed.)"""
    weight = task.cfg.physics_weight
    if weight == 0:
        return None
    e_scale = jnp.mean(task.energy(train.ys)) ** 2

    def penalty(pred, target):
        return weight * jnp.mean((task.energy(pred) - task.energy(target)) ** 2) / e_scale

    return penalty


def template(task: AbstractTask, physics) -> hybrid.Ensemble:
    """An untrained ensemble of the run's structure (what `hybrid.load` fills)."""
    cfg = task.cfg
    kw = _fit_kwargs(task)
    make = hybrid.training.member_factory(
        task.make_closure, cfg.ensemble, dropout_rate=cfg.dropout_rate,
        make_prior_function=kw["make_prior_function"],
        prior_function_scale=cfg.prior_function_scale)
    members = eqx.filter_vmap(make)(jr.split(jr.PRNGKey(0), kw["_trained"]))
    return hybrid.Ensemble(members, physics, cfg.mode, cfg.ensemble,
                           cfg.members if cfg.ensemble == "mc-dropout" else None)


def _protect(out: Path, cfg: Config, resume: bool) -> None:
    cfg_path = out / "config.json"
    if resume:
        if not cfg_path.exists():
            raise ValueError(f"`--resume`: no run to resume in {out} (no config.json).")
        stored = json.loads(cfg_path.read_text())
        mine = cfg.to_dict()
        diff = {k: (stored.get(k), mine.get(k)) for k in sorted(set(stored) | set(mine))
                if stored.get(k) != mine.get(k)}
        if diff:
            raise ValueError(f"`--resume` with a different configuration: {diff}.")
    elif (out / "checkpoints").exists() and any((out / "checkpoints").iterdir()):
        raise ValueError(
            f"{out} already holds a training run: pass `--resume` to continue it, or "
            "choose another `--out`."
        )


def derived_store(out: str | Path):
    """The context in which a run's derived arrays (`neuroscale.stored`: a graph's
    renormalization, a transport flow) are kept in `out/data/derived`."""
    return run_store(Path(out) / "data" / "derived")


def train_run(task: AbstractTask, out: str | Path, *, resume: bool = False,
              progress: bool = True, stop_after: int | None = None) -> hybrid.Ensemble:
    """`neuroscale train`: reference data, `hybrid.fit` with checkpoints in
    `out/checkpoints` (resumable bit-exactly), then `hybrid.calibrate` on the
    validation split; the ensemble in `out/model`, calibration in `out/uq.json`.
    `stop_after`: stop after that many steps, as if interrupted (for tests)."""
    with derived_store(out):
        return _train_run(task, Path(out), resume, progress, stop_after)


def _train_run(task, out: Path, resume: bool, progress: bool, stop_after) -> hybrid.Ensemble:
    cfg = task.cfg
    out.mkdir(parents=True, exist_ok=True)
    _protect(out, cfg, resume)
    # several processes (jax.distributed): all read the folder before process 0 writes
    _distributed.barrier("neuroscale: run folder checked")
    if _distributed.is_primary():
        cfg.save(out / "config.json")
    train = _data.training_set(task, out, progress=progress)
    kw = _fit_kwargs(task)
    kw.pop("_trained")
    ensemble = hybrid.fit(train.physics_of(0), task.make_closure, train, **kw,
                          penalty=physics_penalty(task, train),
                          checkpoint_dir=out / "checkpoints", progress=progress,
                          stop_after=stop_after)
    if stop_after is not None and stop_after < cfg.train_steps:
        return ensemble
    info: dict[str, Any] = {"calibrated": False}
    if cfg.calibrate:
        val = _data.validation_set(task, out, progress=progress)
        ensemble, info = hybrid.calibrate(
            ensemble, val, dt=cfg.dt, key=jr.fold_in(root_key(cfg), _CALIBRATE_STREAM),
            stochastic=cfg.stochastic_closure, features=task.noise_features,
            noise_fit_steps=cfg.noise_fit_steps, return_info=True)
        info["calibrated"] = True
    if _distributed.is_primary():
        hybrid.save(out / "model", ensemble)
        (out / "uq.json").write_text(json.dumps(info, indent=2) + "\n")
    _distributed.barrier("neuroscale: model written")
    if cfg.baselines:
        _train_baselines(task, out, train, progress)
    return ensemble


def baselines(task: AbstractTask) -> dict[str, dict[str, Any]]:
    """The baselines the field compares with, each `name -> {make, fit keywords}`:

    - `deterministic`: the same closure, one network, no anchors, no target noise;
    - `a_priori`: the same closure, one network trained on one-step windows (one save
      interval, `horizon=1`) instead of unrolled rollouts;
    - the task's `eddy_viscosity` closures (`smagorinsky`, `leith`): one coefficient,
      fitted by the same rollout loss as the hybrid.
    """
    cfg = task.cfg
    one = dict(members=1, method="deep", noise_std=0.0, dt=cfg.dt, batch_size=cfg.batch_size,
               checkpoint_every=cfg.checkpoint_every, mode=cfg.mode)
    specs: dict[str, dict[str, Any]] = {
        "deterministic": dict(make=task.make_closure, **one, horizon=cfg.horizon,
                              steps=cfg.train_steps, learning_rate=cfg.learning_rate,
                              curriculum=cfg.curriculum),
        "a_priori": dict(make=task.make_closure, **one, horizon=1, steps=cfg.train_steps,
                         learning_rate=cfg.learning_rate, curriculum=False),
    }
    for kind in task.eddy_viscosity:
        def make(key, kind=kind):
            return hybrid.closures.EddyViscosity(task.ndim, kind=kind,
                                                 length=task.domain_length)

        # one coefficient: a larger step, fewer steps, the tendency it belongs to
        specs[kind] = dict(make=make, **{**one, "mode": "tendency"}, horizon=cfg.horizon,
                           steps=min(cfg.train_steps, 200), learning_rate=0.05,
                           curriculum=False)
    return specs


def _train_baselines(task, out: Path, train, progress: bool) -> None:
    penalty = physics_penalty(task, train)
    for i, (name, spec) in enumerate(baselines(task).items()):
        folder = out / "baselines" / name
        if (folder / "model" / "ensemble.json").exists():
            continue
        spec = dict(spec)
        make = spec.pop("make")
        ens = hybrid.fit(train.physics_of(0), make, train, **spec,
                         key=jr.fold_in(root_key(task.cfg), _BASELINE_STREAM + i),
                         penalty=penalty, checkpoint_dir=folder / "checkpoints",
                         progress=progress)
        if _distributed.is_primary():
            hybrid.save(folder / "model", ens)
        _distributed.barrier(f"neuroscale: baseline {name} written")


def _evaluate_baselines(task, out: Path, test, physics) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name, spec in baselines(task).items():
        folder = out / "baselines" / name / "model"
        if not (folder / "ensemble.json").exists():
            continue
        like = hybrid.Ensemble.init(spec["make"], size=1, key=jr.PRNGKey(0), physics=physics,
                                    mode=spec["mode"])
        ens = hybrid.load(folder, like)
        block = hybrid.evaluate(ens, test, dt=task.cfg.dt, key=jr.PRNGKey(0))["hybrid"]
        results[name] = {k: block[k] for k in ("rmse", "corr_time", "blowups")}
        if isinstance(ens.members, hybrid.closures.EddyViscosity):
            results[name]["coefficient"] = float(ens.members.coefficient[0])
    return results


def load_run(out: str | Path) -> tuple[AbstractTask, hybrid.Ensemble]:
    """The task and the trained (calibrated) ensemble of the run in `out`."""
    out = Path(out)
    if not (out / "config.json").exists():
        raise ValueError(f"`DIR` {out} holds no run (config.json missing).")
    name = json.loads((out / "config.json").read_text()).get("task")
    cls = task_class(name)
    task = cls(load_config(out / "config.json", cls))
    if not (out / "model" / "ensemble.json").exists():
        raise ValueError(f"`DIR` {out} holds no trained model (model/ missing): train first.")
    physics = task.coarse_physics(task.sample(jr.PRNGKey(0))[0], task.cfg.coarse_n)
    return task, hybrid.load(out / "model", template(task, physics))


def run_stability(task: AbstractTask, ensemble: hybrid.Ensemble, test: hybrid.Trajectories,
                  *, factor: int | None = None) -> hybrid.StabilityReport:
    """Long rollouts of the run's members from the held-out initial states:
    `factor` (default `stability_factor`) x `horizon` steps of `save_dt`, integrated
    with `dt`, energy bound 10 x the largest energy of the reference."""
    cfg = task.cfg
    factor = cfg.stability_factor if factor is None else factor
    ref_energy = float(jnp.max(task.energy(test.ys)))
    return hybrid.stability(
        ensemble, test.ys[:, 0], steps=factor * cfg.horizon, dt=cfg.save_dt,
        solver_dt=cfg.dt, save_every=cfg.horizon, physics=test.physics,
        physics_batched=True, reference=test.ys, energy_reference=ref_energy,
        t0=test.ts[0], args=test.args, diagnostics=task.diagnostics(test.physics_of(0)),
    )


def evaluate_run(out: str | Path, *, progress: bool = True, figures: bool = True) -> dict:
    """`neuroscale evaluate`: `hybrid.evaluate` on the held-out test set, the plain
    solvers at 2x/4x/8x the resolution, long-rollout stability; writes
    `out/metrics.json`, the figures and `out/report.md`. **Returns:** the metrics."""
    with derived_store(out):
        return _evaluate_run(Path(out), progress, figures)


def _evaluate_run(out: Path, progress: bool, figures: bool) -> dict:
    task, ensemble = load_run(out)
    cfg = task.cfg
    t_start = time.perf_counter()
    test, fine_y0, fine = _data.test_set(task, out, progress=progress)
    metrics, roll = hybrid.evaluate(ensemble, test, dt=cfg.dt,
                                    key=jr.fold_in(root_key(cfg), _EVALUATE_STREAM),
                                    return_rollouts=True)
    ts_rel = roll["ts"]
    results: dict[str, Any] = {"system": cfg.task, "coarse_n": cfg.coarse_n,
                               "fine_n": cfg.fine_n, "eval_horizon": cfg.eval_horizon,
                               **metrics}
    finer, finer_curves = {}, {}
    if task.finer_factors:
        from ._frontier import measure_frontier

        measured = measure_frontier(task, ensemble, test, fine_y0, fine,
                                    repeats=cfg.frontier_repeats,
                           timing=cfg.frontier)
        finer, finer_curves = measured["finer"], measured["curves"]
        if cfg.frontier:
            results["frontier"] = measured["frontier"]
        results["frontier_rows"] = measured["rows"]
    results["finer"] = finer
    h = results["hybrid"]
    matched = [int(k[:-1]) for k, v in finer.items() if v["rmse"] >= h["rmse"]]
    results["equivalent_resolution_factor"] = max(matched) if matched else 1
    results["rmse_ratio_vs_baseline"] = h["rmse"] / results["baseline"]["rmse"]
    if not results["closure_helps"]:  # hybrid.evaluate's verdict
        warnings.warn(f"neuroscale evaluate: the hybrid (rmse {h['rmse']:.4g}) is not more "
                      f"accurate than the {task.baseline_name} (rmse "
                      f"{results['baseline']['rmse']:.4g}) on the test set.", stacklevel=3)
    uq_json = out / "uq.json"
    if uq_json.exists():
        results["calibration"] = json.loads(uq_json.read_text())
    if cfg.baselines:
        results["baselines"] = _evaluate_baselines(task, out, test, ensemble.physics)
    shifted = _data.ood_task(task)
    if shifted is not None:
        ood_ds = _data.dataset(shifted, out, "ood", progress=progress)
        ood = _data.trajectories(shifted, ood_ds, saves=cfg.eval_horizon)
        block = hybrid.evaluate(ensemble, ood, dt=cfg.dt,
                                key=jr.fold_in(root_key(cfg), _EVALUATE_STREAM + 1))
        results["ood"] = {"viscosity": shifted.cfg.viscosity, "hybrid": block["hybrid"],
                          "baseline": block["baseline"], "uq": block["uq"],
                          "uq_members_only": block["uq_members_only"]}
    report = run_stability(task, ensemble, test)
    results["stability"] = report.to_dict()
    results["eval_seconds"] = time.perf_counter() - t_start
    (out / "metrics.json").write_text(json.dumps(results, indent=2) + "\n")
    if figures:
        from ._report import write_report

        mean = jnp.mean(roll["members"], axis=0)
        curves = {"hybrid (ensemble mean)": hybrid.metrics.rmse_over_time(mean, test.ys),
                  "coarse, no closure": hybrid.metrics.rmse_over_time(roll["baseline"], test.ys),
                  **finer_curves}
        extra = hybrid.viz.write_uq_figures(out, np.asarray(roll["forecast"]),
                                            np.asarray(test.ys), ts_rel)
        extra.update(task.figures(out, ts_rel, test.ys[0], mean[0], roll["baseline"][0]))
        write_report(out, task, results, ts_rel, curves, extra_figures=extra)
    return results


def stability_run(out: str | Path, *, factor: int | None = None, figure: bool = True,
                  progress: bool = True) -> hybrid.StabilityReport:
    """`neuroscale stability DIR`: the long rollouts of the trained run from its
    held-out test initial conditions, written into the `stability` block of
    `out/metrics.json` (created if missing, other blocks kept) and, with `figure`,
    `out/stability_energy.png`."""
    with derived_store(out):
        return _stability_run(Path(out), factor, figure, progress)


def _stability_run(out: Path, factor, figure: bool, progress: bool) -> hybrid.StabilityReport:
    task, ensemble = load_run(out)
    test, _, _ = _data.test_set(task, out, progress=progress)
    report = run_stability(task, ensemble, test, factor=factor)
    path = out / "metrics.json"
    metrics = json.loads(path.read_text()) if path.exists() else {"system": task.cfg.task}
    metrics["stability"] = report.to_dict()
    path.write_text(json.dumps(metrics, indent=2) + "\n")
    if figure:
        hybrid.viz.energy_figure(out / "stability_energy.png", report,
                                 title=f"{task.cfg.task}: {report.steps} steps "
                                 f"({report.steps // task.cfg.horizon}x the training horizon)")
    return report
