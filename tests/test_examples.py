"""Every script in examples/ runs end to end with its smallest settings (`--quick`),
as a user would run it, in a subprocess. Slow (minutes): `pytest -m slow`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(name: str, *args: str, timeout: float = 900) -> str:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("JAX_ENABLE_X64", None)  # the examples run in the default precision
    proc = subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True,
                          text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("name", ["burgers.py", "navier_stokes.py", "kuramoto.py"])
def test_pipeline_example_runs(name, tmp_path):
    out = _run(name, "--quick", "--out", str(tmp_path / "run"))
    for line in ("hybrid     rmse", "no closure rmse", "ensemble: crps", "long rollouts"):
        assert line in out, out
    assert (tmp_path / "run" / "metrics.json").exists()
    assert (tmp_path / "run" / "report.md").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["custom_system.py", "multi_field_system.py"])
def test_user_system_examples_learn_and_are_stable(name, tmp_path):
    out = _run(name, "--quick", "--out", str(tmp_path / "run"))
    assert ": stable" in out and "ensemble: crps" in out, out
    # the printed comparison: the hybrid beats the physics alone on held-out data
    line = next(x for x in out.splitlines() if x.startswith("held-out rmse"))
    factor = float(line.split("(")[-1].split("x smaller")[0])
    assert factor > 2, line
    assert (tmp_path / "run" / "model" / "ensemble.json").exists()


@pytest.mark.slow
def test_custom_task_example_runs_through_the_command_line(tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("JAX_ENABLE_X64", None)
    spec = f"{EXAMPLES / 'custom_task.py'}:KuramotoSivashinskyTask"
    run = tmp_path / "run"
    for args in (["train", "--task", spec, "--out", str(run), "--quiet", "--set",
                  "train_steps=40", "--set", "n_train=4"],
                 ["evaluate", str(run), "--quiet"]):
        proc = subprocess.run([sys.executable, "-m", "neuroscale", *args], capture_output=True,
                              text=True, timeout=900, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["hybrid"]["rmse"] < metrics["baseline"]["rmse"]
    assert (run / "report.md").exists() and (run / "space_time.png").exists()
