r"""Your own system in the `neuroscale` pipeline: a task file.

    neuroscale train --task examples/custom_task.py:KuramotoSivashinskyTask --out runs/ks
    neuroscale evaluate runs/ks
    neuroscale stability runs/ks

A task says how to sample fine reference data, what the coarse physics is, and which
closure to train; the pipeline does the rest exactly as for the built-in systems: data
on disk (reused, resumable), `hybrid.fit` with checkpoints (`--resume` continues
bit-exactly), `hybrid.calibrate`, evaluation against the physics alone and the plain
solver at 2x/4x the resolution, long-rollout stability, `metrics.json`, `report.md`
and figures. Configuration keys (`--set KEY=VALUE`, `--config FILE.toml`) are the
common ones plus the task's own (`length` here). Physics and closure are those of
`examples/custom_system.py` (the Kuramoto–Sivashinsky equation on 64 -> 16 points).
About 3 minutes to train and 1 to evaluate on 2 CPU cores.
"""

import dataclasses
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from custom_system import FluxClosure, KuramotoSivashinsky  # noqa: E402

import hybrid  # noqa: E402
import solvers  # noqa: E402
from neuroscale import AbstractTask, Config, data_key  # noqa: E402


@dataclasses.dataclass(frozen=True)
class KuramotoSivashinskyConfig(Config):
    """The task's own key: the domain `length` (it shapes the data)."""

    length: float = data_key(22.0)


class KuramotoSivashinskyTask(AbstractTask):
    """Kuramoto–Sivashinsky, 64 -> 16 points, a flux closure of one's own."""

    name = "kuramoto-sivashinsky"
    config_class = KuramotoSivashinskyConfig
    closures = ("flux",)
    finer_factors = (2, 4)
    defaults = dict(
        fine_n=64, coarse_n=16, closure="flux", members=4, train_steps=400, horizon=8,
        batch_size=8, dt=0.25, save_dt=0.5, fine_dt=0.05, t_spinup=50.0, t_train=50.0,
        n_train=16, n_val=4, n_test=8, eval_horizon=40, stability_factor=50,
        physics_weight=0.0,
    )

    @property
    def ndim(self):
        return 1

    def sample(self, key):
        fine = KuramotoSivashinsky(self.cfg.fine_n, self.cfg.length)
        return fine, solvers.random_smooth_field(key, self.cfg.fine_n, amplitude=1.0)

    def coarse_physics(self, fine, n):
        return KuramotoSivashinsky(n, fine.length)

    def make_closure(self, key, **kwargs):
        return FluxClosure(key=key, length=self.cfg.length)

    def figures(self, out, ts, ref, hybrid_mean, base):
        hybrid.viz.space_time_figure(out / "space_time.png", np.asarray(ts), np.asarray(ref),
                                     np.asarray(hybrid_mean), np.asarray(base),
                                     self.cfg.length)
        return {"space_time.png": "u(x, t) of a held-out trajectory"}


if __name__ == "__main__":
    # the same as the command line above, from Python
    from neuroscale import build_config, evaluate_run, train_run

    task = KuramotoSivashinskyTask(build_config(KuramotoSivashinskyTask))
    out = Path("out/examples/custom_task")
    train_run(task, out, resume=(out / "config.json").exists())
    print(evaluate_run(out)["hybrid"])
