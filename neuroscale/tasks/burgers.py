"""The Burgers task: forced viscous Burgers, fine pseudo-spectral reference filtered
to a coarse grid (Bar-Sinai et al. 2019)."""

import dataclasses
import math
from pathlib import Path

import jax.random as jr
import numpy as np

import hybrid
import solvers

from .._config import Config, data_key
from .._task import AbstractTask


@dataclasses.dataclass(frozen=True)
class BurgersConfig(Config):
    """Burgers keys: `viscosity` $\\nu$ and the coarse-graining `filter`."""

    viscosity: float = data_key(0.01)
    # "dealiased": the reference keeps the band |k| < n/3 that the coarse 2/3-rule
    # solver evolves, so data and solver agree on which modes exist (issue 11)
    filter: str = data_key("dealiased")


class BurgersTask(AbstractTask):
    r"""Forced viscous Burgers $u_t + u u_x = \nu u_{xx} + f(t, x)$ on $[0, 2\pi)$,
    $512 \to 32$ points by default: a random large-scale forcing and a random smooth
    initial state per trajectory (`solvers.BurgersForcing.random`).

    **Reference:** Bar-Sinai, Hoyer, Hickey & Brenner, PNAS 116 (2019).
    """

    name = "burgers"
    domain_length = 2 * math.pi
    eddy_viscosity = ("smagorinsky",)
    config_class = BurgersConfig
    defaults = dict(
        seed=0, fine_n=512, coarse_n=32, viscosity=0.01, members=4, train_steps=900,
        horizon=16, eval_horizon=200, closure="stencil", width=16, depth=4, dt=0.1,
        save_dt=0.1, fine_dt=0.005, t_spinup=2.0, t_train=20.0, n_train=32, n_val=16,
        n_test=8,
    )

    @property
    def ndim(self) -> int:
        return 1

    def sample(self, key):
        kf, ku = jr.split(key)
        forcing = solvers.BurgersForcing.random(kf)
        u0 = solvers.random_smooth_field(ku, self.cfg.fine_n, amplitude=1.0)
        return solvers.Burgers1D(self.cfg.fine_n, self.cfg.viscosity, forcing=forcing), u0

    def coarse_physics(self, fine, n):
        return solvers.Burgers1D(n, fine.viscosity, forcing=fine.forcing, length=fine.length)

    def figures(self, out: Path, ts, ref, hybrid_mean, base):
        hybrid.viz.space_time_figure(out / "space_time.png", np.asarray(ts), np.asarray(ref),
                                     np.asarray(hybrid_mean), np.asarray(base), 2 * np.pi)
        return {"space_time.png": "u(x, t) of a held-out trajectory"}
