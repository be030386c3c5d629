"""End-to-end training through coarse rollouts: checkpoints, exact resume, evaluation
files, and the command line. Tiny configurations so that the default suite stays
fast; the real figures come from `neuroscale demo` and benchmarks/."""

import json
import shutil

import equinox as eqx
import jax
import numpy as np
import pytest

from hybrid._cli import main
from hybrid._config import build_config
from hybrid._evaluate import evaluate
from hybrid._train import load_ensemble, train

TINY = [
    "fine_n=64", "coarse_n=16", "viscosity=0.05", "train_steps=6", "horizon=2",
    "n_train=4", "n_test=2", "t_train=2.0", "t_spinup=0.5", "eval_horizon=10",
    "members=2", "width=8", "depth=2", "checkpoint_every=2", "batch_size=2",
    "stability_factor=5",
]


def _leaves(ensemble):
    return [np.asarray(x) for x in jax.tree.leaves(eqx.filter(ensemble.members, eqx.is_array))]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    cfg = build_config("burgers", sets=TINY)
    out = tmp_path_factory.mktemp("run")
    ensemble = train(cfg, out, progress=False)
    return cfg, out, ensemble


def test_resume_continues_bit_exactly(tiny_run, tmp_path):
    cfg, out, full = tiny_run
    # Share the generated data: only the training is interrupted.
    shutil.copytree(out / "data", tmp_path / "data")
    partial = train(cfg, tmp_path, progress=False, stop_after=3)
    assert not (tmp_path / "model.eqx").exists()
    # The crash loses at most the last interval: checkpoint 2 is on disk.
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == ["2"]
    del partial
    resumed = train(cfg, tmp_path, progress=False, resume=True)
    for a, b in zip(_leaves(full), _leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b)
    # The log holds what the uninterrupted run logs: the lost interval is dropped.
    def logged(folder):
        return [json.loads(line)["step"] for line in (folder / "train_log.jsonl").open()]

    assert logged(tmp_path) == logged(out)


def test_run_folder_is_protected(tiny_run, tmp_path):
    cfg, out, _ = tiny_run
    with pytest.raises(ValueError, match="already holds a training run"):
        train(cfg, out, progress=False)
    other = build_config("burgers", sets=TINY + ["width=12"])
    with pytest.raises(ValueError, match="different configuration.*width"):
        train(other, out, progress=False, resume=True)
    with pytest.raises(ValueError, match="no run to resume"):
        train(cfg, tmp_path / "empty", progress=False, resume=True)


def test_data_are_reused_across_training_settings_only(tiny_run, tmp_path):
    cfg, out, _ = tiny_run
    shutil.copytree(out / "data", tmp_path / "data")
    def stored(folder):
        index = json.loads((folder / "data" / "train" / "index.json").read_text())
        files = sorted((folder / "data" / "train").glob("chunk_*.npy"))
        return index["chunks"], [f.stat().st_mtime_ns for f in files]

    before = stored(tmp_path)
    # Another training setting: the stored data serve as they are, not regenerated.
    other = build_config("burgers", sets=TINY + ["train_steps=2", "width=4", "members=3"])
    train(other, tmp_path, progress=False)
    assert stored(tmp_path) == before
    # Another physical setting: refused, never mixed.
    physics = build_config("burgers", sets=TINY + ["viscosity=0.07"])
    with pytest.raises(ValueError, match="Cannot resume the data set"):
        train(physics, _copy_data(out, tmp_path / "other"), progress=False)


def _copy_data(src, dst):
    shutil.copytree(src / "data", dst / "data")
    return dst


def test_trained_model_loads(tiny_run):
    cfg, out, ensemble = tiny_run
    cfg2, loaded = load_ensemble(out)
    assert cfg2 == cfg
    assert loaded.size == cfg.members
    for a, b in zip(_leaves(ensemble), _leaves(loaded), strict=True):
        np.testing.assert_array_equal(a, b)


def test_evaluate_writes_metrics_report_and_figures(tiny_run):
    cfg, out, _ = tiny_run
    metrics = evaluate(out, progress=False)
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["system"] == "burgers"
    assert (on_disk["coarse_n"], on_disk["fine_n"]) == (16, 64)
    for block, keys in {
        "hybrid": ("rmse", "corr_time"),
        "baseline": ("rmse", "corr_time"),
        "uq": ("crps", "spread_skill", "coverage90"),
        "stability": ("stable", "horizon_steps", "blowup_step"),
    }.items():
        for k in keys:
            assert k in on_disk[block], (block, k)
    assert on_disk["stability"]["horizon_steps"] == cfg.stability_factor * cfg.horizon
    assert np.isfinite(metrics["hybrid"]["rmse"]) and metrics["hybrid"]["rmse"] > 0
    assert set(metrics["finer"]) == {"2x", "4x"}  # 8x would exceed fine_n
    report = (out / "report.md").read_text()
    assert "hybrid" in report and "| solver |" in report
    for png in ("error_vs_time.png", "space_time.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_cli_refuses_bad_input_before_work(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "burgers", "--out", str(out), "--set", "nonsense=1"]) == 2
    assert "unknown config key `nonsense`" in capsys.readouterr().err
    assert main(["train", "heat", "--out", str(out)]) == 2
    assert "`system` must be one of" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "nothing")]) == 2
    assert "holds no run" in capsys.readouterr().err
    assert not out.exists()


def test_cli_train_and_evaluate(tiny_run, tmp_path, capsys):
    cfg, out, _ = tiny_run
    toml = tmp_path / "tiny.toml"
    cfg.save_toml(toml)
    run = tmp_path / "run"
    shutil.copytree(out / "data", run / "data")
    assert main(["train", "burgers", "--out", str(run), "--config", str(toml), "--quiet"]) == 0
    assert (run / "model.eqx").exists()
    assert main(["evaluate", str(run), "--quiet", "--no-figures"]) == 0
    text = capsys.readouterr().out
    assert "hybrid" in text and "baseline" in text
    assert json.loads((run / "metrics.json").read_text())["members"] == cfg.members
