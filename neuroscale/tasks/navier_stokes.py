"""The Navier–Stokes task: Kolmogorov flow (Kochkov et al. 2021), vorticity on a
coarse grid plus a 2D closure."""

import dataclasses
import math
from pathlib import Path

import numpy as np

import hybrid
import solvers

from .._config import Config, data_key
from .._task import AbstractTask


@dataclasses.dataclass(frozen=True)
class NavierStokesConfig(Config):
    """Navier–Stokes keys: `viscosity`, linear `drag`, `forcing` (`"kolmogorov"` or
    `"none"`) and the coarse-graining `filter`."""

    viscosity: float = data_key(2e-3)
    drag: float = data_key(0.1)
    forcing: str = data_key("kolmogorov")
    # "dealiased": the reference keeps the band |k| < n/3 that the coarse 2/3-rule
    # solver evolves, so data and solver agree on which modes exist (issue 11)
    filter: str = data_key("dealiased")


class NavierStokesTask(AbstractTask):
    r"""Forced 2D turbulence: Kolmogorov forcing ($k=4$), linear drag, viscosity
    `viscosity`; random initial vorticity, spun up for `t_spinup`.

    **Reference:** Kochkov et al., "Machine learning–accelerated computational fluid
    dynamics", PNAS 118 (2021).
    """

    name = "navier-stokes"
    domain_length = 2 * math.pi
    eddy_viscosity = ("smagorinsky", "leith")
    config_class = NavierStokesConfig
    defaults = dict(
        seed=0, fine_n=128, coarse_n=16, viscosity=2e-3, members=4, train_steps=400,
        horizon=8, eval_horizon=30, closure="stencil", width=16, dt=0.05, save_dt=0.1,
        fine_dt=0.005, t_spinup=10.0, t_train=10.0, n_train=8, n_test=4, drag=0.1,
        forcing="kolmogorov", batch_size=4,
    )

    @classmethod
    def validate(cls, cfg):
        super().validate(cfg)
        if cfg.drag < 0:
            raise ValueError(f"config key `drag` must be >= 0, got {cfg.drag!r}.")
        if cfg.forcing not in ("kolmogorov", "none"):
            raise ValueError(
                f"config key `forcing` must be 'kolmogorov' or 'none', got {cfg.forcing!r}.")

    @property
    def ndim(self) -> int:
        return 2

    def sample(self, key):
        cfg = self.cfg
        forcing = None if cfg.forcing == "none" else "kolmogorov"
        system = solvers.NavierStokes2D(cfg.fine_n, cfg.viscosity, drag=cfg.drag, forcing=forcing)
        return system, solvers.random_vorticity(key, cfg.fine_n)

    def coarse_physics(self, fine, n):
        return solvers.NavierStokes2D(n, fine.viscosity, drag=fine.drag, forcing=fine.forcing,
                                      length=fine.length)

    def energy(self, y):
        return solvers.energy(y)

    def figures(self, out: Path, ts, ref, hybrid_mean, base):
        hybrid.viz.vorticity_figure(out / "vorticity.png", np.asarray(ts), np.asarray(ref),
                                    np.asarray(hybrid_mean), np.asarray(base))
        return {"vorticity.png": "vorticity snapshots of a held-out trajectory"}
