"""Run configuration: per-system defaults, TOML files and `--set KEY=VALUE`, checked
before any work starts."""

import dataclasses
import json
import tomllib
from pathlib import Path
from typing import Any

SYSTEMS = ("burgers", "navier-stokes", "kuramoto")


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything a run depends on. Keys common to every system come first (API.md);
    the defaults are per system (`default_config`)."""

    system: str
    seed: int
    fine_n: int
    coarse_n: int
    viscosity: float | None
    members: int
    train_steps: int
    horizon: int
    eval_horizon: int
    closure: str
    # training
    mode: str = "tendency"
    learning_rate: float = 3e-3
    batch_size: int = 8
    # uncertainty (see hybrid/_bayes.py): the ensemble method, the likelihood noise
    # (relative to the data's rms; sets the anchor weight and the per-member target
    # perturbation), the prior, MC dropout, randomized prior functions, the fitted
    # stochastic closure term, and the spread calibration on validation data
    ensemble: str = "anchored"
    noise_std: float = 0.05
    prior_scale: float = 1.0
    prior_min_std: float = 0.01
    dropout_rate: float = 0.1
    prior_function_scale: float = 1.0
    stochastic_closure: str = "state"
    noise_fit_steps: int = 1
    calibrate: bool = True
    n_val: int = 8
    physics_weight: float = 0.1
    curriculum: bool = True
    checkpoint_every: int = 100
    width: int = 32
    depth: int = 3
    # data
    n_train: int = 32
    n_test: int = 8
    dt: float = 0.05
    save_dt: float = 0.1
    fine_dt: float = 0.005
    t_spinup: float = 2.0
    t_train: float = 20.0
    filter: str = "spectral"
    # evaluation
    stability_factor: int = 100
    # system-specific
    drag: float = 0.0
    forcing: str = "random"
    avg_degree: float = 10.0
    coupling: float = 3.0
    # kuramoto: law of the natural frequencies, renormalization of the graph into
    # `coarse_n` clusters, renormalized scales the closure attends over, its heads
    frequencies: str = "gaussian"
    clustering: str = "spectral"
    scales: int = 3
    heads: int = 4

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    def save_toml(self, path: str | Path) -> None:
        """Write the configuration as a TOML file that `--config` reads back."""
        lines = [f"# neuroscale configuration for `{self.system}`", f'system = "{self.system}"']
        for k, v in self.to_dict().items():
            if k == "system" or v is None:
                continue
            lines.append(f"{k} = {_toml_value(v)}")
        Path(path).write_text("\n".join(lines) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "Config":
        data = json.loads(Path(path).read_text())
        # None marks a key that does not apply to the system (viscosity of kuramoto).
        data = {k: v for k, v in data.items() if v is not None}
        return build_config(data.pop("system"), overrides=data)


_DEFAULTS: dict[str, dict[str, Any]] = {
    "burgers": dict(
        seed=0, fine_n=512, coarse_n=32, viscosity=0.01, members=4, train_steps=900,
        horizon=16, eval_horizon=200, closure="stencil", depth=4, dt=0.05, save_dt=0.1,
        fine_dt=0.005, t_spinup=2.0, t_train=20.0, n_train=32, n_test=8, forcing="random",
    ),
    "navier-stokes": dict(
        seed=0, fine_n=128, coarse_n=16, viscosity=2e-3, members=4, train_steps=400,
        horizon=8, eval_horizon=30, closure="stencil", width=16, dt=0.05, save_dt=0.1,
        fine_dt=0.005, t_spinup=10.0, t_train=10.0, n_train=8, n_test=4, drag=0.1,
        forcing="kolmogorov", batch_size=4,
    ),
    "kuramoto": dict(
        seed=0, fine_n=20000, coarse_n=32, viscosity=None, members=4, train_steps=400,
        horizon=10, eval_horizon=100, closure="graph-attention", dt=0.1, save_dt=0.1,
        fine_dt=0.05, t_spinup=0.0, t_train=20.0, n_train=16, n_test=4, forcing="none",
        avg_degree=10.0, coupling=3.0, frequencies="gaussian", clustering="spectral",
        scales=3, width=32, heads=4, depth=2,
    ),
}

_CHOICES = {
    "mode": ("tendency", "correction"),
    "ensemble": ("anchored", "deep", "mc-dropout", "randomized-prior"),
    "stochastic_closure": ("none", "diagonal", "state"),
    "filter": ("spectral", "box"),
    "frequencies": ("gaussian", "lorentzian"),
    "clustering": ("spectral", "geometric"),
}
_POSITIVE_INT = ("fine_n", "coarse_n", "members", "train_steps", "horizon", "eval_horizon",
                 "batch_size", "checkpoint_every", "width", "depth", "n_train", "n_test",
                 "n_val", "noise_fit_steps",
                 "stability_factor", "scales", "heads")
_POSITIVE = ("learning_rate", "dt", "save_dt", "fine_dt", "t_train", "avg_degree")
_NON_NEGATIVE = ("physics_weight", "t_spinup", "drag", "noise_std", "prior_function_scale")
_POSITIVE = _POSITIVE + ("prior_scale", "prior_min_std")


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    return repr(v)


def _coerce(name: str, value: Any, target: Any) -> Any:
    """Convert a `--set` string or TOML value to the field's type."""
    if isinstance(value, str) and not isinstance(target, str):
        text = value.strip()
        if text.lower() in ("true", "false"):
            value = text.lower() == "true"
        elif text.lower() in ("none", "null"):
            value = None
        else:
            try:
                value = int(text)
            except ValueError:
                try:
                    value = float(text)
                except ValueError:
                    value = text
    if isinstance(target, bool):
        if not isinstance(value, bool):
            raise ValueError(f"config key `{name}` must be true or false, got {value!r}.")
        return value
    if isinstance(target, int) and not isinstance(target, bool):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"config key `{name}` must be an integer, got {value!r}.")
        return value
    if isinstance(target, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"config key `{name}` must be a number, got {value!r}.")
        return float(value)
    if isinstance(target, str):
        if not isinstance(value, str):
            raise ValueError(f"config key `{name}` must be a string, got {value!r}.")
        return value
    return value


def build_config(
    system: str,
    *,
    file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    sets: list[str] | None = None,
) -> Config:
    """Defaults for `system`, then a TOML `file`, then `overrides`, then `--set`
    strings `KEY=VALUE`. Unknown keys and bad values raise `ValueError`."""
    if system not in SYSTEMS:
        raise ValueError(f"`system` must be one of {', '.join(SYSTEMS)}; got {system!r}.")
    values: dict[str, Any] = {"system": system, **_DEFAULTS[system]}
    fields = {f.name: f for f in dataclasses.fields(Config)}
    template = Config(**values)
    layers: list[tuple[str, dict[str, Any]]] = []
    if file is not None:
        path = Path(file)
        if not path.is_file():
            raise ValueError(f"`--config` file not found: {path}")
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"`--config` {path} is not valid TOML: {e}") from None
        if system in data and isinstance(data[system], dict):
            data = {**{k: v for k, v in data.items() if not isinstance(v, dict)}, **data[system]}
        if data.get("system", system) != system:
            raise ValueError(f"`--config` {path} is for system {data['system']!r}, not {system!r}.")
        data.pop("system", None)
        layers.append((str(path), data))
    if overrides:
        layers.append(("overrides", dict(overrides)))
    if sets:
        parsed = {}
        for item in sets:
            if "=" not in item:
                raise ValueError(f"`--set` expects KEY=VALUE, got {item!r}.")
            k, v = item.split("=", 1)
            parsed[k.strip()] = v
        layers.append(("--set", parsed))
    for source, data in layers:
        for k, v in data.items():
            if k == "system" and v == system:
                continue
            if k not in fields or k == "system":
                known = ", ".join(sorted(n for n in fields if n != "system"))
                raise ValueError(f"unknown config key `{k}` (from {source}); known keys: {known}.")
            if k == "viscosity":
                if system == "kuramoto":
                    raise ValueError("config key `viscosity` does not apply to kuramoto.")
                v = _coerce(k, v, 1.0)
            else:
                v = _coerce(k, v, getattr(template, k))
            values[k] = v
    cfg = Config(**values)
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Raise `ValueError` naming the key for any value out of range."""
    for k in _POSITIVE_INT:
        if getattr(cfg, k) < 1:
            raise ValueError(f"config key `{k}` must be >= 1, got {getattr(cfg, k)}.")
    for k in _POSITIVE:
        if not getattr(cfg, k) > 0:
            raise ValueError(f"config key `{k}` must be > 0, got {getattr(cfg, k)}.")
    for k in _NON_NEGATIVE:
        if getattr(cfg, k) < 0:
            raise ValueError(f"config key `{k}` must be >= 0, got {getattr(cfg, k)}.")
    for k, choices in _CHOICES.items():
        if getattr(cfg, k) not in choices:
            raise ValueError(f"config key `{k}` must be one of {choices}, got {getattr(cfg, k)!r}.")
    if cfg.system != "kuramoto":
        if cfg.viscosity is None or not cfg.viscosity > 0:
            raise ValueError(f"config key `viscosity` must be > 0, got {cfg.viscosity!r}.")
        if cfg.coarse_n >= cfg.fine_n:
            raise ValueError(
                f"config key `coarse_n` ({cfg.coarse_n}) must be below `fine_n` ({cfg.fine_n})."
            )
        if cfg.filter == "box" and cfg.fine_n % cfg.coarse_n:
            raise ValueError("config key `coarse_n` must divide `fine_n` with filter='box'.")
    else:
        if cfg.coarse_n > cfg.fine_n:
            raise ValueError(
                "config key `coarse_n` (clusters) must not exceed `fine_n` (oscillators)."
            )
        if not cfg.avg_degree < cfg.fine_n - 1:
            raise ValueError(
                f"config key `avg_degree` ({cfg.avg_degree}) must be below `fine_n` - 1."
            )
        if cfg.width % cfg.heads:
            raise ValueError(
                f"config key `heads` ({cfg.heads}) must divide `width` ({cfg.width})."
            )
    ratio = cfg.save_dt / cfg.dt
    if abs(ratio - round(ratio)) > 1e-6:
        raise ValueError(
            f"config key `save_dt` ({cfg.save_dt}) must be a multiple of `dt` ({cfg.dt})."
        )
    ratio = cfg.save_dt / cfg.fine_dt
    if abs(ratio - round(ratio)) > 1e-6:
        raise ValueError(
            f"config key `save_dt` ({cfg.save_dt}) must be a multiple of `fine_dt` ({cfg.fine_dt})."
        )
    n_saves = int(round(cfg.t_train / cfg.save_dt))
    if cfg.horizon >= n_saves:
        raise ValueError(
            f"config key `horizon` ({cfg.horizon}) must be below the saved steps per "
            f"trajectory t_train/save_dt = {n_saves}."
        )
    if cfg.members < 2:
        raise ValueError("config key `members` must be >= 2 for an ensemble with uncertainty.")
    if not 0 <= cfg.dropout_rate < 1:
        raise ValueError(f"config key `dropout_rate` must be in [0, 1), got {cfg.dropout_rate}.")
    if cfg.noise_fit_steps >= n_saves:
        raise ValueError(
            f"config key `noise_fit_steps` ({cfg.noise_fit_steps}) must be below the saved "
            f"steps per trajectory {n_saves}."
        )
    if cfg.closure not in _closure_names(cfg.system):
        raise ValueError(
            f"config key `closure` must be one of {_closure_names(cfg.system)}, "
            f"got {cfg.closure!r}."
        )


def _closure_names(system: str) -> tuple[str, ...]:
    if system == "kuramoto":
        return ("graph-attention",)
    return ("stencil", "attention")
