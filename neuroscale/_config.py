"""Run configuration: the keys every task shares (`Config`), each task's own keys
(a subclass), per-task defaults, TOML files and `--set KEY=VALUE`, all checked before
any work starts."""

import dataclasses
import json
import tomllib
from pathlib import Path
from typing import Any

ENSEMBLES = ("anchored", "deep", "mc-dropout", "randomized-prior")


def data_key(default: Any) -> Any:
    """A configuration field that shapes the reference data (a data set on disk is
    reused by every run that agrees on these, and refused by one that does not)."""
    return dataclasses.field(default=default, metadata={"data": True})


@dataclasses.dataclass(frozen=True)
class Config:
    """The keys of every task (API.md: `seed`, `fine_n`, `coarse_n`, `members`,
    `train_steps`, `horizon`, `eval_horizon`, `closure`, ...). A task adds its own
    keys in a subclass and its defaults in `AbstractTask.defaults`."""

    task: str = "?"
    seed: int = data_key(0)
    fine_n: int = data_key(64)
    coarse_n: int = data_key(16)
    members: int = 4
    train_steps: int = 500
    horizon: int = 8
    eval_horizon: int = 100
    closure: str = "stencil"
    # training
    mode: str = "tendency"
    learning_rate: float = 3e-3
    batch_size: int = 8
    curriculum: bool = True
    # weight of the energy-mismatch term of the loss: 0 (off) since it bought nothing
    # measurable on Burgers or Kuramoto (benchmarks/README.md, "Physics terms")
    physics_weight: float = 0.0
    checkpoint_every: int = 100
    width: int = 32
    depth: int = 3
    # uncertainty: the ensemble method and its likelihood noise (relative to the data's
    # rms), the prior, MC dropout, randomized prior functions; then what `calibrate`
    # fits on the validation set: the stochastic closure term and the inflation
    ensemble: str = "anchored"
    noise_std: float = 0.05
    prior_scale: float = 1.0
    prior_min_std: float = 0.01
    start_at_anchors: bool = False
    # N of the anchor term's weight sigma^2 / N (0: every scalar residual of the data)
    num_data: float = 0.0
    dropout_rate: float = 0.1
    prior_function_scale: float = 1.0
    stochastic_closure: str = "auto"
    noise_fit_steps: int = 1
    calibrate: bool = True
    # data
    n_train: int = data_key(32)
    n_val: int = data_key(8)
    n_test: int = data_key(8)
    dt: float = 0.05
    save_dt: float = data_key(0.1)
    fine_dt: float = data_key(0.005)
    t_spinup: float = data_key(2.0)
    t_train: float = data_key(20.0)
    # observational noise on the training and validation data (the test truth stays
    # clean): relative level eta, `gaussian` (additive) or `lognormal` (multiplicative)
    obs_noise: float = 0.0
    obs_noise_kind: str = "gaussian"
    # evaluation: long-rollout stability (x the training horizon), the baselines the
    # field compares with (trained with the model: classical eddy viscosity, one-step
    # "a-priori" training, one deterministic network), the timed accuracy-cost frontier
    stability_factor: int = 100
    baselines: bool = False
    frontier: bool = True
    # an out-of-distribution test set at another viscosity (tasks with one; 0: none):
    # does the ensemble's spread grow where its error does?
    ood_viscosity: float = 0.0
    frontier_repeats: int = 5

    # --- persistence -----------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def data_dict(self) -> dict[str, Any]:
        """The keys that shape the reference data."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.metadata.get("data") or f.name == "task"}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    def save_toml(self, path: str | Path) -> None:
        """Write the configuration as a TOML file that `--config` reads back."""
        lines = [f"# neuroscale configuration of task `{self.task}`"]
        for k, v in self.to_dict().items():
            if k != "task" and v is not None:
                lines.append(f"{k} = {_toml_value(v)}")
        Path(path).write_text("\n".join(lines) + "\n")


_POSITIVE_INT = ("fine_n", "coarse_n", "members", "train_steps", "horizon", "eval_horizon",
                 "batch_size", "checkpoint_every", "width", "depth", "n_train", "n_val",
                 "n_test", "noise_fit_steps", "stability_factor", "frontier_repeats")
_POSITIVE = ("learning_rate", "dt", "save_dt", "fine_dt", "t_train", "prior_scale",
             "prior_min_std")
_NON_NEGATIVE = ("physics_weight", "t_spinup", "noise_std", "prior_function_scale",
                 "ood_viscosity", "num_data", "obs_noise")
_CHOICES = {
    "mode": ("tendency", "correction"),
    "ensemble": ENSEMBLES,
    "stochastic_closure": ("auto", "none", "diagonal", "state"),
    "obs_noise_kind": ("gaussian", "lognormal"),
}


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    return repr(v)


def _coerce(name: str, value: Any, target: Any) -> Any:
    """Convert a `--set` string or TOML value to the field's type (that of `target`)."""
    if isinstance(value, str) and not isinstance(target, str):
        text = value.strip()
        if text.lower() in ("true", "false"):
            value = text.lower() == "true"
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
    if isinstance(target, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"config key `{name}` must be an integer, got {value!r}.")
        return value
    if isinstance(target, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"config key `{name}` must be a number, got {value!r}.")
        return float(value)
    if isinstance(target, str) and not isinstance(value, str):
        raise ValueError(f"config key `{name}` must be a string, got {value!r}.")
    return value


def _layers(file, overrides, sets, task_name: str) -> list[tuple[str, dict[str, Any]]]:
    layers: list[tuple[str, dict[str, Any]]] = []
    if file is not None:
        path = Path(file)
        if not path.is_file():
            raise ValueError(f"`--config` file not found: {path}")
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"`--config` {path} is not valid TOML: {e}") from None
        if task_name in data and isinstance(data[task_name], dict):
            data = {**{k: v for k, v in data.items() if not isinstance(v, dict)},
                    **data[task_name]}
        for name in ("task", "system"):
            if data.get(name, task_name) != task_name:
                raise ValueError(f"`--config` {path} is for task {data[name]!r}, not "
                                 f"{task_name!r}.")
            data.pop(name, None)
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
    return layers


def build_config(
    task_cls: type,
    *,
    file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    sets: list[str] | None = None,
    name: str | None = None,
) -> Config:
    """The configuration of a task: `task_cls.defaults`, then a TOML `file`, then
    `overrides`, then `--set` strings `KEY=VALUE`. Keys the task does not have and bad
    values raise `ValueError` naming the key. `name` is recorded as `task` (default
    `task_cls.name`; a user's task records its `MODULE:CLASS`)."""
    config_cls = task_cls.config_class
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    values: dict[str, Any] = {**task_cls.defaults, "task": name or task_cls.name}
    unknown = set(task_cls.defaults) - set(fields)
    if unknown:
        raise ValueError(f"{task_cls.__name__}.defaults names keys its config class lacks: "
                         f"{sorted(unknown)}.")
    template = config_cls(**values)
    for source, data in _layers(file, overrides, sets, task_cls.name):
        for k, v in data.items():
            if k not in fields or k == "task":
                known = ", ".join(sorted(n for n in fields if n != "task"))
                raise ValueError(
                    f"unknown config key `{k}` for task `{task_cls.name}` (from {source}); "
                    f"known keys: {known}."
                )
            values[k] = _coerce(k, v, getattr(template, k))
    cfg = config_cls(**values)
    validate(cfg, task_cls)
    return cfg


def load_config(path: str | Path, task_cls: type) -> Config:
    """The configuration stored in a run folder's `config.json`."""
    data = json.loads(Path(path).read_text())
    name = data.pop("task", None)
    return build_config(task_cls, overrides=data, name=name)


def validate(cfg: Config, task_cls: type) -> None:
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
    if not 0 <= cfg.dropout_rate < 1:
        raise ValueError(f"config key `dropout_rate` must be in [0, 1), got {cfg.dropout_rate}.")
    for name, big in (("save_dt", "dt"), ("save_dt", "fine_dt")):
        ratio = getattr(cfg, name) / getattr(cfg, big)
        if abs(ratio - round(ratio)) > 1e-6:
            raise ValueError(f"config key `{name}` ({getattr(cfg, name)}) must be a multiple "
                             f"of `{big}` ({getattr(cfg, big)}).")
    n_saves = int(round(cfg.t_train / cfg.save_dt))
    if cfg.horizon >= n_saves:
        raise ValueError(
            f"config key `horizon` ({cfg.horizon}) must be below the saved steps per "
            f"trajectory t_train/save_dt = {n_saves}."
        )
    if cfg.noise_fit_steps >= cfg.eval_horizon:
        raise ValueError(
            f"config key `noise_fit_steps` ({cfg.noise_fit_steps}) must be below "
            f"`eval_horizon` ({cfg.eval_horizon}), the saves of a validation trajectory."
        )
    closures = task_cls.closures
    if cfg.closure not in closures:
        raise ValueError(f"config key `closure` must be one of {closures}, got {cfg.closure!r}.")
    task_cls.validate(cfg)
