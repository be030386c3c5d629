"""The Navier–Stokes task: Kolmogorov flow (Kochkov et al. 2021), vorticity on a
coarse grid plus a 2D closure."""


import solvers

from ._task import AbstractTask


class NavierStokesTask(AbstractTask):
    r"""Forced 2D turbulence: Kolmogorov forcing ($k=4$), linear drag, viscosity
    `cfg.viscosity`; random initial vorticity, spun up for `t_spinup`.

    **Reference:** Kochkov et al., "Machine learning–accelerated computational fluid
    dynamics", PNAS 118 (2021).
    """

    @property
    def ndim(self) -> int:
        return 2

    def sample(self, key):
        cfg = self.cfg
        system = solvers.NavierStokes2D(cfg.fine_n, cfg.viscosity, drag=cfg.drag,
                                        forcing=None if cfg.forcing == "none" else "kolmogorov")
        omega0 = solvers.random_vorticity(key, cfg.fine_n)
        return system, omega0

    def coarse_physics(self, fine, n):
        return solvers.NavierStokes2D(n, fine.viscosity, drag=fine.drag, forcing=fine.forcing,
                                      length=fine.length)

    def make_closure(self, key, **kwargs):
        from .closures import make_closure

        kwargs = {"width": self.cfg.width, "depth": self.cfg.depth, **kwargs}
        return make_closure(self.cfg.closure, 2, key=key, **kwargs)

    def energy(self, y):
        return solvers.energy(y)

    def conserved(self, y):
        # periodic vorticity has zero mean, exactly
        return y.mean(axis=(-2, -1))


