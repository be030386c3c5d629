"""`save` / `load`: a trained ensemble with its noise model and calibration, to a
directory and back."""

import json
from pathlib import Path
from typing import Any

import equinox as eqx
import jax.numpy as jnp

from ._ensemble import Ensemble
from .uq._stochastic import FEATURES, DiagonalNoise, StateDependentNoise, noise_parameters

FORMAT = "neuroscale-ensemble"
VERSION = 1
MEMBERS, NOISE, META = "members.eqx", "noise.eqx", "ensemble.json"


def _noise_meta(noise) -> dict[str, Any] | None:
    if noise is None:
        return None
    features = None
    if isinstance(noise, StateDependentNoise):
        names = [k for k, f in FEATURES.items() if f is noise.features]
        features = names[0] if names else None
    return {"kind": type(noise).__name__, "features": features,
            "parameters": noise_parameters(noise)}


def save(path: str | Path, ensemble: Ensemble) -> Path:
    """Write `ensemble` (members, stochastic term, inflation, mode and method) into the
    directory `path` (created): `members.eqx`, `noise.eqx` when there is a noise
    model, `ensemble.json`. The physics is not stored: it is code and parameters the
    caller has (`load` takes it from `like`). **Returns:** `path`."""
    if not isinstance(ensemble, Ensemble):
        raise ValueError(f"`ensemble` must be a hybrid.Ensemble, got {type(ensemble).__name__}.")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    eqx.tree_serialise_leaves(path / MEMBERS, ensemble.members)
    if ensemble.noise is not None:
        eqx.tree_serialise_leaves(path / NOISE, ensemble.noise)
    elif (path / NOISE).exists():
        (path / NOISE).unlink()
    meta = {
        "format": FORMAT, "version": VERSION, "mode": ensemble.mode,
        "method": ensemble.method, "realisations": ensemble.realisations,
        "size": ensemble.size, "trained": ensemble.trained,
        "inflation": None if ensemble.inflation is None else float(ensemble.inflation),
        "noise": _noise_meta(ensemble.noise),
    }
    (path / META).write_text(json.dumps(meta, indent=1) + "\n")
    return path


def _noise_template(meta: dict[str, Any], like_noise, path: Path):
    if like_noise is not None and type(like_noise).__name__ == meta["kind"]:
        return like_noise
    if meta["kind"] == "DiagonalNoise":
        return DiagonalNoise(jnp.asarray(meta["parameters"]["log_sigma"]))
    if meta["kind"] == "StateDependentNoise":
        features = FEATURES.get(meta.get("features") or "")
        if features is None:
            raise ValueError(
                f"{path / NOISE} holds a StateDependentNoise with features of your own: pass "
                "`like` with a noise model of the same structure (its `noise` field)."
            )
        return StateDependentNoise.init(1.0, num_features=len(meta["parameters"]["coef"]),
                                        features=features)
    raise ValueError(f"{path / META}: unknown noise model {meta['kind']!r}.")


def load(path: str | Path, like: Ensemble) -> Ensemble:
    """The ensemble saved in `path`, with the structure of `like` (an ensemble of the
    same closures, e.g. `hybrid.fit(..., steps=0)`, as `eqx.tree_deserialise_leaves`
    takes one) and `like`'s physics. Mode, method, stochastic term and inflation come
    from the file. A missing or foreign directory, or members of another structure,
    raise `ValueError` naming the path."""
    path = Path(path)
    if not isinstance(like, Ensemble):
        raise ValueError(f"`like` must be a hybrid.Ensemble, got {type(like).__name__}.")
    if not (path / META).is_file() or not (path / MEMBERS).is_file():
        raise ValueError(f"`path` {path} holds no saved ensemble ({META} or {MEMBERS} missing).")
    meta = json.loads((path / META).read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"`path` {path / META} is not a {FORMAT} file.")
    try:
        members = eqx.tree_deserialise_leaves(path / MEMBERS, like.members)
    except Exception as e:  # equinox raises several kinds for a structure mismatch
        raise ValueError(
            f"the members in {path / MEMBERS} do not fit `like` (another architecture or "
            f"member count: saved {meta.get('trained')} networks): {e}"
        ) from None
    noise = None
    if meta.get("noise") is not None:
        template = _noise_template(meta["noise"], like.noise, path)
        noise = eqx.tree_deserialise_leaves(path / NOISE, template)
    inflation = meta.get("inflation")
    return Ensemble(members, like.physics, meta["mode"], meta["method"], meta["realisations"],
                    noise, None if inflation is None else jnp.asarray(inflation))
