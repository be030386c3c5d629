"""`AbstractTask`: what the pipeline needs to know about one physical system, and the
registry that finds a task by name or as `MODULE:CLASS`."""

import abc
import importlib
import importlib.util
import pkgutil
import sys
from pathlib import Path
from typing import Any, ClassVar

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, PRNGKeyArray

import hybrid
import solvers

from ._config import Config


class AbstractTask(eqx.Module):
    r"""One physical system in the `neuroscale` pipeline: how to sample fine reference
    data, the coarse physics, the coarse-graining between them, the closure, and the
    diagnostics. Everything else (data on disk, training, calibration, evaluation,
    stability, report, resume) is the same for every task.

    Subclass it for a system of your own and run it with
    `neuroscale train --task MODULE:CLASS --out DIR` (see `examples/custom_task.py`):

    - class attributes: `name`; `config_class` (a `Config` subclass with your keys,
      fields marked with `data_key(...)` when they shape the data); `defaults`
      (values of config keys); `closures` (the closure names `closure` may take);
    - `ndim` (spatial dimensions of the state, 0 for states without a grid);
    - `sample(key) -> (fine system, fine initial state)`;
    - `coarse_physics(fine, n) -> coarse system` with the fine system's parameters;
    - optionally `make_closure`, `coarse_grain`, `closure_args`, `energy`,
      `diagnostics`, `noise_features`, `finer`, `figures`, `validate`.

    **Arguments:** `cfg`, the run's configuration (`build_config(YourTask, ...)`).
    """

    cfg: Config = eqx.field(static=True)

    name: ClassVar[str] = "task"
    config_class: ClassVar[type[Config]] = Config
    defaults: ClassVar[dict[str, Any]] = {}
    closures: ClassVar[tuple[str, ...]] = ("stencil", "attention")
    # refinement factors of the plain-solver baselines (n = coarse_n * factor <= fine_n)
    finer_factors: ClassVar[tuple[int, ...]] = (2, 4, 8, 16)
    # time the fine model itself (the reference's solver at `fine_dt`) in the frontier,
    # for tasks whose finer solvers do not reach it (Kuramoto: every oscillator)
    reference_in_frontier: ClassVar[bool] = False
    # the period of the domain, given to grid closures (their flux in physical units)
    domain_length: ClassVar[float | None] = None
    # the classical eddy-viscosity closures trained as baselines (`baselines=true`):
    # "smagorinsky", "leith" (`hybrid.closures.EddyViscosity`)
    eddy_viscosity: ClassVar[tuple[str, ...]] = ()
    # what the report calls the coarse physics alone
    baseline_name: ClassVar[str] = "coarse solver, no closure"

    @classmethod
    def validate(cls, cfg: Config) -> None:
        """Task-specific checks of a configuration (raise `ValueError` naming the key).
        The default: a coarse grid below the fine one, and, for tasks that have them, a
        positive `viscosity` and a known coarse-graining `filter`."""
        if cfg.coarse_n >= cfg.fine_n:
            raise ValueError(
                f"config key `coarse_n` ({cfg.coarse_n}) must be below `fine_n` ({cfg.fine_n})."
            )
        viscosity = getattr(cfg, "viscosity", 1.0)
        if not viscosity > 0:
            raise ValueError(f"config key `viscosity` must be > 0, got {viscosity!r}.")
        if cfg.ood_viscosity and not hasattr(cfg, "viscosity"):
            raise ValueError(f"config key `ood_viscosity` needs a task with a viscosity; "
                             f"`{cfg.task}` has none.")
        method = getattr(cfg, "filter", "spectral")
        if method not in hybrid.coarse_graining.METHODS:
            raise ValueError(f"config key `filter` must be one of "
                             f"{hybrid.coarse_graining.METHODS}, got {method!r}.")
        if method == "box" and cfg.fine_n % cfg.coarse_n:
            raise ValueError("config key `coarse_n` must divide `fine_n` with filter='box'.")

    @property
    @abc.abstractmethod
    def ndim(self) -> int:
        """Spatial dimensions of the state (0 for states without a grid)."""

    @abc.abstractmethod
    def sample(self, key: PRNGKeyArray) -> tuple[solvers.AbstractSystem, Array]:
        """A random fine system (forcing, frequencies, ...) and its initial state."""

    @abc.abstractmethod
    def coarse_physics(self, fine: solvers.AbstractSystem, n: int) -> solvers.AbstractSystem:
        """The known physics at resolution `n`, with `fine`'s forcing and parameters."""

    def make_closure(self, key: PRNGKeyArray, **kwargs: Any) -> Any:
        """A freshly initialised closure (`cfg.closure` from `hybrid.closures`, with
        `cfg.width`, `cfg.depth` and the task's `domain_length`); `kwargs` override the
        architecture (e.g. `init_scale`)."""
        kwargs = {"width": self.cfg.width, "depth": self.cfg.depth, **kwargs}
        if self.domain_length is not None:
            kwargs.setdefault("length", self.domain_length)
        return hybrid.closures.make_closure(self.cfg.closure, self.ndim, key=key, **kwargs)

    def coarse_grain(self, y: Array, n: int) -> Array:
        """The filter from fine states to `n` points per dimension
        (`hybrid.coarse_grain`, method `cfg.filter` if the task has that key)."""
        method = getattr(self.cfg, "filter", "spectral")
        return hybrid.coarse_grain(y, n, ndim=self.ndim, method=method)

    def closure_args(self, physics: solvers.AbstractSystem) -> Any:
        """What physics and closure receive as `args` in a rollout of one trajectory's
        coarse `physics`; `None` by default."""
        return None

    def energy(self, y: Array) -> Array:
        r"""$\tfrac12\langle y^2\rangle$ over the state axes (per leading index)."""
        axes = tuple(range(-max(self.ndim, 1), 0))
        return 0.5 * jnp.mean(y**2, axis=axes)

    def diagnostics(self, physics: solvers.AbstractSystem) -> hybrid.AbstractStabilityDiagnostics:
        """The stability diagnostics of the coarse states (default: by physics type,
        else the energy of the state)."""
        shape = tuple(physics.state_shape)
        return hybrid.stability_tests.default_diagnostics(physics, shape)

    @property
    def noise_features(self) -> Any:
        """Features of the state-dependent stochastic term (`None`: the default of
        `hybrid.calibrate`)."""
        return None

    def finer(self, fine: solvers.AbstractSystem, factor: int):
        """The plain solver `factor` times finer than the coarse one, for the
        equivalent-resolution baselines: `(physics, dt, coarse_grain_to_it)`, or
        `None` if there is none (default: the coarse physics on `coarse_n * factor`
        points, `dt / factor`, when that is at most `fine_n`)."""
        n = self.cfg.coarse_n * factor
        if n > self.cfg.fine_n or self.ndim == 0:
            return None
        return (self.coarse_physics(fine, n), self.cfg.dt / factor,
                lambda y, n=n: self.coarse_grain(y, n))

    def finer_to_coarse(self, ys: Any, factor: int) -> Any:
        """A trajectory of the `factor`-times finer solver (`finer`) mapped onto the
        coarse state, to be scored against the coarse reference (default:
        `coarse_grain(ys, coarse_n)`)."""
        return self.coarse_grain(ys, self.cfg.coarse_n)

    def figures(self, out: Path, ts: Any, ref: Any, hybrid_mean: Any, base: Any) -> dict[str, str]:
        """Task-specific figures of one held-out trajectory (`[T, *state]` each),
        written into `out`; returns file name -> caption. None by default."""
        return {}


def _builtin() -> dict[str, type]:
    """The tasks of `neuroscale/tasks/`, by name: every `AbstractTask` subclass defined
    in one of its modules (adding a system is adding one file there)."""
    import neuroscale.tasks as package

    found: dict[str, type] = {}
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("_"):  # helpers shared by tasks (`_network`)
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for obj in vars(module).values():
            if (isinstance(obj, type) and issubclass(obj, AbstractTask)
                    and obj.__module__ == module.__name__):
                found[obj.name] = obj
    return found


def builtin_tasks() -> tuple[str, ...]:
    return tuple(sorted(_builtin()))


def _import_class(spec: str) -> type:
    module_name, _, class_name = spec.rpartition(":")
    if not module_name or not class_name:
        raise ValueError(f"`--task` must be MODULE:CLASS (or path/to/file.py:CLASS), got {spec!r}.")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name).resolve()
            if not path.is_file():
                raise ValueError(f"`--task` file not found: {path}")
            name = f"neuroscale_user_task_{abs(hash(str(path)))}"
            module = sys.modules.get(name)
            if module is None:
                loader = importlib.util.spec_from_file_location(name, path)
                module = importlib.util.module_from_spec(loader)
                sys.modules[name] = module
                loader.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"`--task` {spec!r}: cannot import {module_name!r}: {e}") from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ValueError(f"`--task` {spec!r}: {module_name!r} has no {class_name!r}.")
    return cls


def task_class(spec: str) -> type[AbstractTask]:
    """The task class of a built-in name (`burgers`, `navier-stokes`, `kuramoto`) or of
    a user's `MODULE:CLASS` / `path/to/file.py:CLASS`."""
    builtin = _builtin()
    if spec in builtin:
        return builtin[spec]
    if ":" not in spec:
        raise ValueError(
            f"`system` must be one of {', '.join(sorted(builtin))} (or `--task "
            f"MODULE:CLASS`); got {spec!r}."
        )
    cls = _import_class(spec)
    if not (isinstance(cls, type) and issubclass(cls, AbstractTask)):
        raise ValueError(f"`--task` {spec!r} is not a subclass of neuroscale.AbstractTask.")
    return cls


def task_name(cls: type[AbstractTask], spec: str) -> str:
    """What a run folder records to find the task again: the built-in name, or the
    `MODULE:CLASS` it was given as."""
    return cls.name if spec in _builtin() else spec
