"""The pipeline end to end through coarse rollouts: run folders, checkpoints, exact
resume, data reuse, evaluation files, and the command line. Tiny configurations so
that the default suite stays fast; the real figures come from `neuroscale demo` and
benchmarks/."""

import json
import shutil

import equinox as eqx
import jax
import numpy as np
import pytest

import hybrid
from neuroscale import build_config, evaluate_run, load_run, task_class, train_run
from neuroscale._cli import main

TINY = [
    "fine_n=64", "coarse_n=16", "viscosity=0.05", "train_steps=6", "horizon=2",
    "n_train=4", "n_test=2", "n_val=2", "t_train=2.0", "t_spinup=0.5", "eval_horizon=10",
    "members=2", "width=8", "depth=2", "checkpoint_every=2", "batch_size=2",
    "stability_factor=5", "curriculum=false",
]
BURGERS = task_class("burgers")


def _task(extra=()):
    return BURGERS(build_config(BURGERS, sets=TINY + list(extra)))


def _leaves(ensemble):
    return [np.asarray(x) for x in jax.tree.leaves(eqx.filter(ensemble.members, eqx.is_array))]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    task = _task()
    out = tmp_path_factory.mktemp("run")
    ensemble = train_run(task, out, progress=False)
    return task, out, ensemble


def test_resume_continues_bit_exactly(tiny_run, tmp_path):
    task, out, full = tiny_run
    # Share the generated data: only the training is interrupted.
    shutil.copytree(out / "data", tmp_path / "data")
    train_run(task, tmp_path, progress=False, stop_after=3)
    assert not (tmp_path / "model").exists()
    # The crash loses at most the last interval: checkpoint 2 is on disk.
    steps = sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert steps == ["2"]
    resumed = train_run(task, tmp_path, progress=False, resume=True)
    for a, b in zip(_leaves(full), _leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b)
    # The log holds what the uninterrupted run logs: the lost interval is dropped.
    def logged(folder):
        return [r["step"] for r in hybrid.training.read_log(folder / "checkpoints")]

    assert logged(tmp_path) == logged(out)
    # the calibrated model on disk is the same too
    _, a = load_run(out)
    _, b = load_run(tmp_path)
    for x, y in zip(_leaves(a), _leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)
    assert float(a.inflation) == float(b.inflation)


def test_run_folder_is_protected(tiny_run, tmp_path):
    task, out, _ = tiny_run
    with pytest.raises(ValueError, match="already holds a training run"):
        train_run(task, out, progress=False)
    with pytest.raises(ValueError, match="different configuration.*width"):
        train_run(_task(["width=12"]), out, progress=False, resume=True)
    with pytest.raises(ValueError, match="no run to resume"):
        train_run(task, tmp_path / "empty", progress=False, resume=True)


def _chunk_files(folder):
    return sorted(p for p in (folder / "data" / "train").rglob("*") if p.is_file()
                  and "zarr.json" not in p.name)


def test_data_are_reused_across_training_settings_only(tiny_run, tmp_path):
    _, out, _ = tiny_run
    shutil.copytree(out / "data", tmp_path / "data")
    before = [(p.name, p.stat().st_mtime_ns) for p in _chunk_files(tmp_path)]
    assert before
    # Another training setting: the stored data serve as they are, not regenerated.
    train_run(_task(["train_steps=2", "width=4", "members=3"]), tmp_path, progress=False)
    assert [(p.name, p.stat().st_mtime_ns) for p in _chunk_files(tmp_path)] == before
    # Another physical setting: refused, never mixed.
    other = tmp_path / "other"
    shutil.copytree(out / "data", other / "data")
    with pytest.raises(ValueError, match="viscosity"):
        train_run(_task(["viscosity=0.07"]), other, progress=False)


def test_trained_model_loads(tiny_run):
    task, out, ensemble = tiny_run
    task2, loaded = load_run(out)
    assert task2.cfg == task.cfg
    assert loaded.size == task.cfg.members and loaded.method == "anchored"
    for a, b in zip(_leaves(ensemble), _leaves(loaded), strict=True):
        np.testing.assert_array_equal(a, b)
    uq = json.loads((out / "uq.json").read_text())
    assert uq["calibrated"] and uq["selected"] in uq["validation"]
    # the calibration kept only what lowered the validation CRPS
    best = min(v["crps"] for v in uq["validation"].values())
    assert uq["validation"][uq["selected"]]["crps"] == best


def test_evaluate_writes_metrics_report_and_figures(tiny_run):
    task, out, _ = tiny_run
    metrics = evaluate_run(out, progress=False)
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["system"] == "burgers"
    assert (on_disk["coarse_n"], on_disk["fine_n"]) == (16, 64)
    for block, keys in {
        "hybrid": ("rmse", "corr_time", "member_rmse", "member_corr_time"),
        "baseline": ("rmse", "corr_time"),
        "uq": ("crps", "spread_skill", "coverage90", "pit_coverage90"),
        "stability": ("stable", "horizon_steps", "blowup_step"),
    }.items():
        for k in keys:
            assert k in on_disk[block], (block, k)
    assert on_disk["stability"]["horizon_steps"] == task.cfg.stability_factor * task.cfg.horizon
    assert np.isfinite(metrics["hybrid"]["rmse"]) and metrics["hybrid"]["rmse"] > 0
    assert set(metrics["finer"]) == {"2x", "4x"}  # 8x would exceed fine_n
    # the plain solver at the fine resolution reproduces the filtered reference
    assert metrics["finer"]["4x"]["rmse"] < 1e-3 * metrics["baseline"]["rmse"]
    report = (out / "report.md").read_text()
    assert "hybrid" in report and "| solver |" in report and "## Uncertainty" in report
    for png in ("error_vs_time.png", "space_time.png", "uq_fan.png", "uq_spread_error.png",
                "uq_rank_histogram.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_cli_refuses_bad_input_before_work(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "burgers", "--out", str(out), "--set", "nonsense=1"]) == 2
    assert "unknown config key `nonsense`" in capsys.readouterr().err
    assert main(["train", "heat", "--out", str(out)]) == 2
    assert "`system` must be one of" in capsys.readouterr().err
    assert main(["train", "--out", str(out)]) == 2
    assert "one of the two" in capsys.readouterr().err
    assert main(["train", "--task", "nowhere_xyz:Task", "--out", str(out)]) == 2
    assert "cannot import" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "nothing")]) == 2
    assert "holds no run" in capsys.readouterr().err
    assert not out.exists()


def test_cli_train_and_evaluate(tiny_run, tmp_path, capsys):
    task, out, _ = tiny_run
    toml = tmp_path / "tiny.toml"
    task.cfg.save_toml(toml)
    run = tmp_path / "run"
    shutil.copytree(out / "data", run / "data")
    assert main(["train", "burgers", "--out", str(run), "--config", str(toml), "--quiet"]) == 0
    assert (run / "model" / "ensemble.json").exists()
    assert main(["evaluate", str(run), "--quiet", "--no-figures"]) == 0
    text = capsys.readouterr().out
    assert "hybrid" in text and "baseline" in text
    assert json.loads((run / "metrics.json").read_text())["members"] == task.cfg.members


def test_splits_are_disjoint_and_training_never_reads_the_test_set(tiny_run, tmp_path):
    from hybrid.data import load_dataset

    task, out, _ = tiny_run
    # train_run generated train and validation only: the test split appears with
    # `neuroscale evaluate`, after the model and its calibration were written
    fresh = tmp_path / "fresh"
    train_run(task, fresh, progress=False)
    assert sorted(p.name for p in (fresh / "data").iterdir()) == ["train", "validation"]
    evaluate_run(out, progress=False, figures=False)
    # the three splits hold different trajectories (their initial states all differ)
    y0 = {s: np.asarray(load_dataset(out / "data" / s).params(slice(None))["y0"])
          for s in ("train", "validation", "test")}
    for a in y0:
        for b in y0:
            if a < b:
                dist = np.abs(y0[a][:, None] - y0[b][None]).max(axis=-1)
                assert dist.min() > 1e-3, (a, b)


def test_observational_noise_reaches_validation_but_not_the_test_truth(tiny_run):
    from neuroscale import test_set, validation_set

    _, out, _ = tiny_run
    clean, noisy = _task(), _task(["obs_noise=0.05"])
    v_clean = validation_set(clean, out, progress=False)
    v_noisy = validation_set(noisy, out, progress=False)
    rel = float(np.std(v_noisy.ys - v_clean.ys) / np.sqrt(np.mean(v_clean.ys**2)))
    assert rel == pytest.approx(0.05, rel=0.1)
    np.testing.assert_array_equal(test_set(noisy, out, progress=False)[0].ys,
                                  test_set(clean, out, progress=False)[0].ys)


def test_physics_penalty_is_off_by_default_and_can_fail():
    """The energy term: None at the default weight 0; zero for equal energies, positive
    with a gradient that moves the prediction's energy toward the target's otherwise."""
    import jax.numpy as jnp

    from neuroscale._run import physics_penalty

    cls = task_class("burgers")
    train = hybrid.Trajectories(np.ones((2, 3, 8)), np.arange(3.0))
    assert physics_penalty(cls(build_config(cls)), train) is None
    penalty = physics_penalty(cls(build_config(cls, overrides={"physics_weight": 0.5})), train)
    target = jnp.ones((4, 8))
    assert float(penalty(target, target)) == 0.0
    pred = 2.0 * target  # four times the energy
    assert float(penalty(pred, target)) > 0.0
    grad = jax.grad(lambda p: penalty(p, target))(pred)
    assert float(jnp.sum(grad * pred)) > 0.0  # descent shrinks the over-energetic field
