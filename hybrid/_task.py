"""A task: what the generic training/evaluation pipeline needs to know about one
physical system (sampling fine data, the coarse physics, the coarse-graining, the
closure, the diagnostics)."""

import abc
from typing import Any

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, PRNGKeyArray

import solvers

from ._coarse_grain import coarse_grain
from ._config import Config


class AbstractTask(eqx.Module):
    """One physical system in the pipeline. Concrete tasks: `BurgersTask`,
    `NavierStokesTask`, `KuramotoTask`."""

    cfg: Config = eqx.field(static=True)

    @property
    @abc.abstractmethod
    def ndim(self) -> int:
        """Spatial dimensions of the state (0 for cluster states)."""

    @abc.abstractmethod
    def sample(self, key: PRNGKeyArray) -> tuple[solvers.AbstractSystem, Array]:
        """A random fine system (forcing, frequencies, ...) and initial state."""

    @abc.abstractmethod
    def coarse_physics(self, fine: solvers.AbstractSystem, n: int) -> solvers.AbstractSystem:
        """The known physics at resolution `n` sharing `fine`'s forcing/parameters."""

    @abc.abstractmethod
    def make_closure(self, key: PRNGKeyArray, **kwargs: Any) -> Any:
        """A freshly initialised closure for the coarse physics; `kwargs` override the
        configured architecture (e.g. `init_scale`)."""

    def closure_args(self, physics: solvers.AbstractSystem) -> Any:
        """What the closure receives as `args` in a rollout of the coarse `physics` of
        one trajectory (e.g. that trajectory's parameters); `None` by default."""
        return None

    def coarse_grain(self, y: Array, n: int) -> Array:
        """The filter from the fine state to `n` points per dimension."""
        return coarse_grain(y, n, ndim=self.ndim, method=self.cfg.filter)

    def energy(self, y: Array) -> Array:
        r"""$\tfrac12\langle y^2\rangle$ over the state dims (per leading index)."""
        axes = tuple(range(-max(self.ndim, 1), 0))
        return 0.5 * jnp.mean(y**2, axis=axes)

    def conserved(self, y: Array) -> Array | None:
        """A quantity the coarse dynamics conserve (mean), or None."""
        return None


class BurgersTask(AbstractTask):
    r"""Forced viscous Burgers, $512 \to 32$ by default (Bar-Sinai et al. 2019)."""

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

    def make_closure(self, key, **kwargs):
        from .closures import make_closure

        kwargs = {"width": self.cfg.width, "depth": self.cfg.depth, **kwargs}
        return make_closure(self.cfg.closure, 1, key=key, **kwargs)

    def conserved(self, y):
        # Zero-mean forcing: the spatial mean is an invariant of Burgers.
        return jnp.mean(y, axis=-1)


def make_task(cfg: Config) -> AbstractTask:
    """The task for `cfg.system`."""
    if cfg.system == "burgers":
        return BurgersTask(cfg)
    if cfg.system == "navier-stokes":
        from ._task_navier_stokes import NavierStokesTask

        return NavierStokesTask(cfg)
    if cfg.system == "kuramoto":
        from ._task_kuramoto import KuramotoTask

        return KuramotoTask(cfg)
    raise ValueError(f"`system` {cfg.system!r} has no task.")
