"""`StabilityReport`: per-rollout results of `stability`, their JSON block and text."""

import json
import math
from typing import Any

import equinox as eqx
import numpy as np
from jaxtyping import Array, Bool, Float, Int


def _py(x: Any) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


class StabilityReport(eqx.Module):
    r"""Per-rollout results of `stability`. Arrays are `[B]` for one model and
    `[M, B]` for an `Ensemble` of `M` members (`batch_shape`); steps count from the
    initial condition (step 0) in units of `dt`.

    **Fields:**

    - `blowup_step`: the first step at which the rollout blew up (the earlier of
      `nonfinite_step` and `energy_step`), `-1` if it never did.
    - `nonfinite_step`: the first step whose state holds a NaN or Inf, or `-1`.
    - `energy_step`: the first step whose state is finite but has energy above
      `energy_bound` (or a non-finite energy), or `-1`.
    - `energy_bound`: `energy_factor` x the reference energy, per rollout.
    - `max_energy`: the largest finite energy over every step.
    - `energy_drift`, `enstrophy_drift`: relative drift of the late mean (see
      `stability`); NaN for a rollout that went non-finite; `enstrophy_drift` is
      `None` when the diagnostics have no enstrophy.
    - `spectrum_departure`: departure of the late mean profile (see `stability`), or
      `None` without a profile.
    - `corr_time`, `corr_censored`: decorrelation time against the reference
      (`None` without a reference of at least 2 steps), and whether it is a lower
      bound (the correlation never dropped within the reference).
    - `save_steps`: `[S]` the steps at which `energy`/`enstrophy` were recorded,
      `0, save_every, ..., steps`; `energy`, `enstrophy`: `[*batch, S]` there.
    - `reference_energy`: `[B]` the mean energy of each reference trajectory (or of
      the rollout's own baseline window, see `stability`) that drifts are relative to.
    - `t0`: `[B]` start times; `steps`, `dt`, `save_every`, `energy_factor`,
      `members` (`None` for one model), `diagnostics` (a name), `profile_name`
      (`None` without a profile).
    """

    blowup_step: Int[Array, "*batch"]
    nonfinite_step: Int[Array, "*batch"]
    energy_step: Int[Array, "*batch"]
    energy_bound: Float[Array, "*batch"]
    max_energy: Float[Array, "*batch"]
    energy_drift: Float[Array, "*batch"]
    enstrophy_drift: Float[Array, "*batch"] | None
    spectrum_departure: Float[Array, "*batch"] | None
    corr_time: Float[Array, "*batch"] | None
    corr_censored: Bool[Array, "*batch"] | None
    energy: Float[Array, "*batch S"]
    enstrophy: Float[Array, "*batch S"] | None
    reference_energy: Float[Array, "*batch"]
    save_steps: Int[Array, " S"]
    t0: Float[Array, " B"]
    steps: int = eqx.field(static=True)
    dt: float = eqx.field(static=True)
    save_every: int = eqx.field(static=True)
    energy_factor: float = eqx.field(static=True)
    members: int | None = eqx.field(static=True)
    diagnostics: str = eqx.field(static=True)
    profile_name: str | None = eqx.field(static=True)

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return tuple(self.blowup_step.shape)

    @property
    def stable(self) -> bool:
        """No rollout blew up (no NaN/Inf, no energy above its bound)."""
        return bool(np.all(np.asarray(self.blowup_step) < 0))

    def rollout_name(self, index: tuple[int, ...]) -> str:
        """"trajectory b" or "trajectory b (member m)" for a batch index."""
        if self.members is None:
            return f"trajectory {index[-1]}"
        return f"trajectory {index[-1]} (member {index[0]})"

    def time_of(self, index: tuple[int, ...], step: int) -> float:
        return float(np.asarray(self.t0)[index[-1]]) + step * self.dt

    def first_blowup(self) -> tuple[tuple[int, ...], int, str] | None:
        """`(index, step, reason)` of the earliest blow-up over every rollout (ties:
        the lowest index), `reason` `"non-finite"` or `"energy"`; `None` if stable."""
        blow = np.asarray(self.blowup_step, np.int64)
        if np.all(blow < 0):
            return None
        masked = np.where(blow >= 0, blow, np.iinfo(np.int64).max)
        index = np.unravel_index(int(np.argmin(masked)), blow.shape)
        index = tuple(int(i) for i in index)
        step = int(blow[index])
        reason = "non-finite" if int(np.asarray(self.nonfinite_step)[index]) == step else "energy"
        return index, step, reason

    def blowup_messages(self) -> list[str]:
        """One line per rollout that blew up: which, what, when, value and bound."""
        lines = []
        blow = np.asarray(self.blowup_step)
        nonfinite = np.asarray(self.nonfinite_step)
        over = np.asarray(self.energy_step)
        for index in zip(*np.nonzero(blow >= 0), strict=True):
            index = tuple(int(i) for i in index)
            name = self.rollout_name(index)
            parts = []
            if over[index] >= 0:
                s = int(over[index])
                parts.append(
                    f"energy above the bound {float(np.asarray(self.energy_bound)[index]):.4g} "
                    f"(= {self.energy_factor:g} x reference) at step {s} "
                    f"(t={self.time_of(index, s):.4g})"
                )
            if nonfinite[index] >= 0:
                s = int(nonfinite[index])
                parts.append(f"non-finite state (NaN/Inf) at step {s} "
                             f"(t={self.time_of(index, s):.4g})")
            if over[index] >= 0 and nonfinite[index] >= 0 and nonfinite[index] < over[index]:
                parts.reverse()
            lines.append(f"{name}: blew up: " + "; then ".join(parts))
        return lines

    def to_dict(self) -> dict[str, Any]:
        """The `stability` block of `metrics.json`: JSON-safe, `None` for what did
        not happen or does not apply.

        `stable`, `horizon_steps` (= `steps`), `blowup_step` (earliest over every
        rollout), `blowup_time`, `blowup_trajectory`, `blowup_member`,
        `blowup_reason`, `n_blowups`, `n_rollouts`; `energy_bound` (largest over
        rollouts), `max_energy`; means over the rollouts that did not blow up of
        `energy_drift`, `enstrophy_drift`, `spectrum_departure`, `corr_time`, and the
        worst (largest in absolute value) as `*_worst`; `corr_time_censored` (the
        fraction of censored rollouts); `dt`, `save_every`, `energy_factor`,
        `diagnostics`, `profile`.
        """
        first = self.first_blowup()
        blow = np.asarray(self.blowup_step)
        out: dict[str, Any] = {
            "stable": first is None,
            "horizon_steps": int(self.steps),
            "blowup_step": None if first is None else first[1],
            "blowup_time": None if first is None else self.time_of(first[0], first[1]),
            "blowup_trajectory": None if first is None else first[0][-1],
            "blowup_member": None if first is None or self.members is None else first[0][0],
            "blowup_reason": None if first is None else first[2],
            "n_blowups": int(np.sum(blow >= 0)),
            "n_rollouts": int(blow.size),
            "energy_factor": float(self.energy_factor),
            "energy_bound": _py(np.max(np.asarray(self.energy_bound))),
            "max_energy": _py(np.nanmax(np.asarray(self.max_energy))
                              if np.isfinite(np.asarray(self.max_energy)).any() else np.nan),
        }
        finite = blow < 0
        for name in ("energy_drift", "enstrophy_drift", "spectrum_departure", "corr_time"):
            value = getattr(self, name)
            if value is None:
                out[name] = out[f"{name}_worst"] = None
                continue
            v = np.asarray(value, np.float64)[finite]
            v = v[np.isfinite(v)]
            out[name] = _py(v.mean()) if v.size else None
            out[f"{name}_worst"] = _py(v[np.argmax(np.abs(v))]) if v.size else None
        out["corr_time_censored"] = (None if self.corr_censored is None else
                                     float(np.mean(np.asarray(self.corr_censored))))
        out.update({"dt": float(self.dt), "save_every": int(self.save_every),
                    "members": self.members, "diagnostics": self.diagnostics,
                    "profile": self.profile_name})
        json.dumps(out)  # JSON-safe by construction; fail here rather than on write
        return out

    def summary(self) -> str:
        """A few lines of text: the verdict, the first blow-up, the drifts."""
        d = self.to_dict()
        n = d["n_rollouts"]
        head = (f"stability over {self.steps} steps of dt={self.dt:g} "
                f"(t={self.steps * self.dt:g}), {n} rollouts: ")
        if d["stable"]:
            head += "stable"
        else:
            head += f"{d['n_blowups']} blew up"
        lines = [head]
        lines += ["  " + line for line in self.blowup_messages()[:10]]
        if d["n_blowups"] > 10:
            lines.append(f"  ... and {d['n_blowups'] - 10} more")

        def fmt(x, sign="+"):
            return "n/a" if x is None else f"{x:{sign}.3g}"

        lines.append(f"  energy drift {fmt(d['energy_drift'])} (worst "
                     f"{fmt(d['energy_drift_worst'])}), enstrophy drift "
                     f"{fmt(d['enstrophy_drift'])}, {self.profile_name or 'spectrum'} "
                     f"departure {fmt(d['spectrum_departure'], '')}")
        if d["corr_time"] is not None:
            lines.append(f"  corr_time {d['corr_time']:.4g} "
                         f"(censored in {100 * d['corr_time_censored']:.0f}% of rollouts)")
        lines.append(f"  max energy {fmt(d['max_energy'], '')}, bound "
                     f"{fmt(d['energy_bound'], '')} ({self.energy_factor:g} x reference)")
        return "\n".join(lines)


