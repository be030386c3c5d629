r"""Long-rollout stability of hybrid models: blow-up, drift of the energy and the
enstrophy, departure of the energy spectrum, decorrelation time.

`stability(model, y0s, steps=..., dt=...)` rolls a model (a system, a `Hybrid`, or
an `Ensemble`) out from a batch of initial conditions, far beyond the horizon it was
trained on, and measures every step without keeping the trajectory: the rollout is
a `lax.scan` over intervals of `save_every` steps, each a `solvers.solve` with
`throw=False`; per step only scalars are reduced (finiteness, energy, enstrophy),
per interval one spectrum is kept. Memory is `O(save_every x state)` per rollout
plus `O(steps / save_every)` numbers, whatever `steps` is.
"""

import abc
import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, Int

import solvers
from solvers._solve import _check_dt

from . import _metrics as M
from ._ensemble import Ensemble
from ._hybrid import Hybrid

# ---------------------------------------------------------------------------------------
# Diagnostics of one state


class AbstractStabilityDiagnostics(eqx.Module):
    r"""What `stability` measures on a state. Every method takes states with any
    leading batch axes, `[..., *state]`.

    - `energy(y) -> [...]`: the quantity whose blow-up and drift are watched.
    - `enstrophy(y) -> [...]` or `None` when the state has none.
    - `profile(y) -> [..., K]` or `None`: a non-negative profile whose long-time mean
      is compared with the reference's (an energy spectrum, cluster moduli).
    - `profile_mask(state_shape) -> bool [K]`: the entries of the profile compared.
    - `profile_log`: compare $\log_{10}$ of the profile (spectra, decades) or the
      profile itself (moduli).
    """

    profile_log: ClassVar[bool] = True

    @abc.abstractmethod
    def energy(self, y: Array) -> Array:
        """Energy per state."""

    def enstrophy(self, y: Array) -> Array | None:
        """Enstrophy per state, `None` where it does not apply (the default)."""
        return None

    def profile(self, y: Array) -> Array | None:
        """The profile `[..., K]` compared with the reference, or `None` (default)."""
        return None

    def profile_mask(self, state_shape: tuple[int, ...]) -> np.ndarray | None:
        """Which of the `K` profile entries count (all by default)."""
        return None

    @property
    def profile_name(self) -> str:
        return "spectrum"


def _resolved_shells(n_shells: int, n: int) -> np.ndarray:
    # Shells 1 <= k < n/3: inside the 2/3-rule dealiased band of the coarse solvers and
    # clear of the grid's corner shells; k = 0 (the mean) carries no dynamics.
    k = np.arange(n_shells)
    return (k >= 1) & (3 * k < n)


class Field1DDiagnostics(AbstractStabilityDiagnostics):
    r"""A periodic velocity field $u(x)$ on `n` points of $[0, L)$ (Burgers).

    - energy $E = \tfrac12\langle u^2\rangle$;
    - enstrophy $Z = \tfrac12\langle u_x^2\rangle = \sum_k (2\pi k/L)^2 E(k)$;
    - spectrum $E(k) = \tfrac12(|\hat u_k|^2 + |\hat u_{-k}|^2)$, $k = 0..n/2$, with
      $\hat u_k$ the DFT over $n$, so that $\sum_k E(k) = E$ (Parseval); compared on
      the shells $1 \le k < n/3$.

    **Arguments:** `length`: the period $L$, default $2\pi$.
    """

    length: float = eqx.field(static=True, default=2 * math.pi)

    def energy(self, y):
        return 0.5 * jnp.mean(y**2, axis=-1)

    def profile(self, y):
        n = y.shape[-1]
        power = jnp.abs(jnp.fft.rfft(y, axis=-1) / n) ** 2
        # one-sided: modes 0 < k < n/2 stand for +k and -k; k = 0 and (even n) the
        # Nyquist mode only for themselves
        weight = np.full(n // 2 + 1, 1.0)
        weight[0] = 0.5
        if n % 2 == 0:
            weight[-1] = 0.5
        return power * weight.astype(power.dtype)

    def enstrophy(self, y):
        n = y.shape[-1]
        k = 2 * math.pi / self.length * np.arange(n // 2 + 1)
        return jnp.sum(self.profile(y) * (k**2).astype(y.dtype), axis=-1)

    def profile_mask(self, state_shape):
        n = state_shape[-1]
        return _resolved_shells(n // 2 + 1, n)


class VorticityDiagnostics(AbstractStabilityDiagnostics):
    r"""A periodic 2D vorticity field $\omega$ on `n x n` points of $[0, L)^2$
    (Navier–Stokes): energy `solvers.energy`, enstrophy `solvers.enstrophy`
    ($\tfrac12\langle\omega^2\rangle$), shell spectrum `solvers.energy_spectrum`,
    compared on the shells $1 \le k < n/3$.

    **Arguments:** `length`: the period $L$, default $2\pi$.
    """

    length: float = eqx.field(static=True, default=2 * math.pi)

    def energy(self, y):
        return solvers.energy(y, length=self.length)

    def enstrophy(self, y):
        return solvers.enstrophy(y)

    def profile(self, y):
        return solvers.energy_spectrum(y, length=self.length)[1]

    def profile_mask(self, state_shape):
        n = state_shape[-1]
        n_shells = int(np.rint(np.sqrt(2.0) * (n // 2))) + 1
        return _resolved_shells(n_shells, n)


class ClusterDiagnostics(AbstractStabilityDiagnostics):
    r"""Cluster order parameters `[M, 2]` = $(\mathrm{Re}\,z_m, \mathrm{Im}\,z_m)$
    (Kuramoto): energy $\tfrac12\langle |z_m|^2\rangle_m$; no enstrophy; instead of a
    spectrum the moduli $r_m = |z_m|$, compared as values (not logarithms: an
    incoherent cluster has $r_m \approx 0$)."""

    profile_log: ClassVar[bool] = False

    def energy(self, y):
        return 0.5 * jnp.mean(jnp.sum(y**2, axis=-1), axis=-1)

    def profile(self, y):
        return jnp.sqrt(jnp.sum(y**2, axis=-1))

    @property
    def profile_name(self) -> str:
        return "order-parameter moduli"


class EnergyDiagnostics(AbstractStabilityDiagnostics):
    r"""Any state: energy $\tfrac12\langle y^2\rangle$ over its `ndim` state axes,
    no enstrophy, no profile.

    **Arguments:** `ndim`: the number of state axes.
    """

    ndim: int = eqx.field(static=True)

    def energy(self, y):
        return 0.5 * jnp.mean(y**2, axis=tuple(range(-self.ndim, 0)))


def _core_physics(model: Any) -> Any:
    if isinstance(model, Hybrid):
        return _core_physics(model.physics)
    if isinstance(model, Ensemble):
        if model.physics is not None:
            return _core_physics(model.physics)
        if isinstance(model.members, solvers.AbstractSystem):
            return _core_physics(model.members)
        return None
    return model


def default_diagnostics(system: Any, state_shape: tuple[int, ...]) -> AbstractStabilityDiagnostics:
    """The diagnostics `stability` uses by default: `Field1DDiagnostics` for
    `solvers.Burgers1D`, `VorticityDiagnostics` for `solvers.NavierStokes2D`,
    `ClusterDiagnostics` for states `[M, 2]` of other systems (cluster order
    parameters), `EnergyDiagnostics` otherwise. `system` is the physics (or a
    `Hybrid`/`Ensemble` holding it)."""
    core = _core_physics(system)
    if isinstance(core, solvers.Burgers1D):
        return Field1DDiagnostics(core.length)
    if isinstance(core, solvers.NavierStokes2D):
        return VorticityDiagnostics(core.length)
    if len(state_shape) == 2 and state_shape[-1] == 2:
        return ClusterDiagnostics()
    return EnergyDiagnostics(len(state_shape))


# ---------------------------------------------------------------------------------------
# The report


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


# ---------------------------------------------------------------------------------------
# Rollouts


@dataclasses.dataclass(frozen=True)
class _Spec:
    # Everything static about a stability run; hashable, so jit caches on it.
    steps: int
    dt: float
    solver_dt: float
    save_every: int
    n_base: int
    energy_factor: float
    corr_threshold: float
    diagnostics: AbstractStabilityDiagnostics
    args_fn: Callable | None
    solver: Any
    physics_batched: bool
    has_reference: bool
    has_energy_reference: bool
    mode: str


def _first(steps: Array, mask: Array, sentinel: int) -> Array:
    return jnp.min(jnp.where(mask, steps, sentinel))


def _crossing_time(corr: Array, ts: Array, threshold: float) -> tuple[Array, Array]:
    # The definition of `_metrics.corr_time_per_trajectory`, from a correlation series.
    below = ~(corr >= threshold)
    dropped = jnp.any(below)
    k = jnp.argmax(below)
    km1 = jnp.maximum(k - 1, 0)
    c_prev, c_k = corr[km1], corr[k]
    gap = c_prev - c_k
    frac = jnp.where(jnp.isfinite(c_k) & (gap > 0),
                     (c_prev - threshold) / jnp.where(gap > 0, gap, 1.0), 0.0)
    frac = jnp.clip(frac, 0.0, 1.0)
    t_cross = ts[km1] + frac * (ts[k] - ts[km1])
    t_cross = jnp.where(k == 0, ts[0], t_cross)
    return jnp.where(dropped, t_cross, ts[-1]) - ts[0], ~dropped


def _trajectory(spec: _Spec, system, y0, t0, args, ref, e_ref_given):
    """Every diagnostic of one rollout; `ref` `[R, *state]` or None."""
    d = spec.diagnostics
    S, steps = spec.save_every, spec.steps
    n_int = steps // S
    sentinel = steps + 1
    state_axes = tuple(range(-y0.ndim, 0)) if y0.ndim else ()
    dtype = y0.dtype
    ts_local = np.arange(S + 1) * spec.dt

    e0 = d.energy(y0)
    z0 = d.enstrophy(y0)
    p0 = d.profile(y0)
    if spec.has_reference:
        e_ref_t = d.energy(ref)
        e_mean_ref = jnp.mean(e_ref_t)
        bound_ref = jnp.max(e_ref_t)
        z_ref = None if z0 is None else jnp.mean(d.enstrophy(ref))
        p_ref = None if p0 is None else jnp.mean(d.profile(ref), axis=0)
    else:
        bound_ref = e0
    if spec.has_energy_reference:
        bound_ref = e_ref_given
    bound = spec.energy_factor * bound_ref

    def interval(y, k, ref_chunk):
        sol = solvers.solve(system, y, ts_local, dt=spec.solver_dt, args=args,
                            solver=spec.solver, throw=False,
                            t_offset=t0 + (k * S) * spec.dt)
        ys = sol.ys[1:]  # steps k*S + 1 .. (k+1)*S
        s = k * S + 1 + jnp.arange(S)
        finite = jnp.all(jnp.isfinite(ys), axis=state_axes)
        e = d.energy(ys)
        late = 2 * s > steps
        base = s <= spec.n_base
        out = {
            "nonfinite": _first(s, ~finite, sentinel),
            "over": _first(s, finite & ~(e <= bound), sentinel),
            "e_max": jnp.max(jnp.where(finite & jnp.isfinite(e), e, -jnp.inf)),
            "e_late": jnp.sum(jnp.where(late, e, 0.0)),
            "e_base": jnp.sum(jnp.where(base, e, 0.0)),
            "e_save": e[-1],
        }
        if z0 is not None:
            z = d.enstrophy(ys)
            out["z_late"] = jnp.sum(jnp.where(late, z, 0.0))
            out["z_base"] = jnp.sum(jnp.where(base, z, 0.0))
            out["z_save"] = z[-1]
        if p0 is not None:
            out["p_save"] = d.profile(ys[-1])
        if ref_chunk is not None:
            out["corr"] = M.pearson_over_time(ys, ref_chunk, time_axis=0)
        return ys[-1], out

    # The first n_a intervals are covered by the reference: the correlation with it is
    # measured there. One scan for all intervals (one trace of the solver): the later
    # ones correlate with the last chunk, at the cost of a few reductions, and are cut.
    r_len = ref.shape[0] if spec.has_reference else 0
    n_a = min(n_int, -(-(r_len - 1) // S)) if r_len >= 2 else 0
    chunks = None
    if n_a:
        need = n_a * S
        body = ref[1 : 1 + need]
        if body.shape[0] < need:  # padding: its correlations are cut off below
            pad = jnp.broadcast_to(body[-1:], (need - body.shape[0],) + body.shape[1:])
            body = jnp.concatenate([body, pad])
        chunks = body.reshape((n_a, S) + body.shape[1:])

    def scan_body(y, k):
        chunk = None if chunks is None else chunks[jnp.minimum(k, n_a - 1)]
        return interval(y, k, chunk)

    _, out = jax.lax.scan(scan_body, y0, jnp.arange(n_int))
    if n_a:
        corr = jnp.concatenate([M.pearson_over_time(y0[None], ref[:1], time_axis=0),
                                out.pop("corr")[:n_a].reshape(-1)])[: min(r_len, steps + 1)]

    finite0 = jnp.all(jnp.isfinite(y0))
    nonfinite = jnp.where(finite0, jnp.min(out["nonfinite"]), 0)
    over0 = finite0 & ~(e0 <= bound)
    over = jnp.where(over0, 0, jnp.min(out["over"]))
    nonfinite = jnp.where(nonfinite == sentinel, -1, nonfinite)
    over = jnp.where(over == sentinel, -1, over)
    blow = jnp.where(nonfinite < 0, over,
                     jnp.where(over < 0, nonfinite, jnp.minimum(nonfinite, over)))

    n_late = steps - steps // 2
    n_base = spec.n_base + 1  # with step 0
    e_late = jnp.sum(out["e_late"]) / n_late
    if spec.has_reference:
        e_base = e_mean_ref
    else:
        e_base = (e0 + jnp.sum(out["e_base"])) / n_base
    result = {
        "blowup_step": blow.astype(jnp.int32),
        "nonfinite_step": nonfinite.astype(jnp.int32),
        "energy_step": over.astype(jnp.int32),
        "energy_bound": jnp.asarray(bound, dtype),
        "max_energy": jnp.maximum(jnp.max(out["e_max"]),
                                  jnp.where(jnp.isfinite(e0), e0, -jnp.inf)),
        "energy_drift": (e_late - e_base) / e_base,
        "reference_energy": jnp.asarray(e_base, dtype),
        "energy": jnp.concatenate([e0[None], out["e_save"]]),
    }
    if z0 is not None:
        z_late = jnp.sum(out["z_late"]) / n_late
        z_base = z_ref if spec.has_reference else (z0 + jnp.sum(out["z_base"])) / n_base
        result["enstrophy_drift"] = (z_late - z_base) / z_base
        result["enstrophy"] = jnp.concatenate([z0[None], out["z_save"]])
    if p0 is not None:
        save_s = (np.arange(n_int) + 1) * S
        late_w = (2 * save_s > steps).astype(np.float64)
        p_late = jnp.tensordot(jnp.asarray(late_w / late_w.sum(), dtype), out["p_save"], 1)
        if spec.has_reference:
            p_base = p_ref
        else:
            base_w = (save_s <= spec.n_base).astype(np.float64)
            p_base = (p0 + jnp.tensordot(jnp.asarray(base_w, dtype), out["p_save"], 1)) / (
                1.0 + base_w.sum())
        mask = d.profile_mask(tuple(y0.shape))
        if mask is None:
            mask = np.ones(p0.shape[-1], bool)
        if not mask.any():
            raise ValueError(
                f"the {d.profile_name} of a state of shape {tuple(y0.shape)} has no "
                "resolved entries to compare; pass `diagnostics` without a profile."
            )
        if type(d).profile_log:
            tiny = jnp.finfo(dtype).tiny
            diff = jnp.log10(jnp.maximum(p_late, tiny)) - jnp.log10(jnp.maximum(p_base, tiny))
        else:
            diff = p_late - p_base
        result["spectrum_departure"] = jnp.mean(jnp.abs(diff)[np.nonzero(mask)[0]])
    if n_a:
        ts = jnp.arange(corr.shape[0], dtype=dtype) * spec.dt
        result["corr_time"], result["corr_censored"] = _crossing_time(
            corr, ts, spec.corr_threshold)
    return result


def _build_system(spec: _Spec, model, member, physics):
    """The system of one rollout: `model` (or ensemble `member`) on `physics`; the
    combinations were checked by `_check_model`."""
    if model is None:
        return physics
    if isinstance(model, Ensemble):
        if isinstance(member, solvers.AbstractSystem):
            if physics is None:
                return member
            return Hybrid(physics, member.closure, mode=member.mode)
        phys = physics if physics is not None else model.physics
        return Hybrid(phys, member, mode=model.mode)
    if isinstance(model, solvers.AbstractSystem):
        if physics is None:
            return model
        return Hybrid(physics, model.closure, mode=model.mode)
    return Hybrid(physics, model, mode=spec.mode)


def _check_model(model, physics) -> None:
    if model is None:
        if physics is None:
            raise ValueError("`model=None` rolls out `physics` alone: pass `physics`.")
        return
    if isinstance(model, Ensemble):
        system_members = isinstance(model.members, solvers.AbstractSystem)
        if system_members and physics is not None and not isinstance(model.members, Hybrid):
            raise ValueError(
                "`physics` replaces the physics of Hybrid members; this ensemble's members "
                f"are {type(model.members).__name__}."
            )
        if not system_members and physics is None and model.physics is None:
            raise ValueError("`physics` is required for an Ensemble of closures without physics.")
        return
    if isinstance(model, solvers.AbstractSystem):
        if physics is not None and not isinstance(model, Hybrid):
            raise ValueError(
                "`physics` is only used with a `hybrid.Hybrid`, an `Ensemble`, a bare "
                f"closure or `model=None` (the physics alone), got a {type(model).__name__}."
            )
        return
    if not callable(model):
        raise ValueError(
            "`model` must be a solvers.AbstractSystem, a hybrid.Ensemble, a closure or None, "
            f"got {type(model).__name__}."
        )
    if physics is None:
        raise ValueError("`physics` is required when `model` is a bare closure.")


@eqx.filter_jit
def _run_chunk(spec: _Spec, model, members, physics, y0s, t0s, refs, e_refs):
    def per_trajectory(phys, y0, t0, ref, e_ref):
        def per_member(member):
            system = _build_system(spec, model, member, phys)
            args = None if spec.args_fn is None else spec.args_fn(
                phys if phys is not None else system)
            return _trajectory(spec, system, y0, t0, args, ref, e_ref)

        if members is None:
            return jtu.tree_map(lambda x: x[None], per_member(None))
        return eqx.filter_vmap(per_member)(members)

    # the stacked physics may hold non-array leaves (Python floats): not mapped
    in_axes = (eqx.if_array(0) if spec.physics_batched else None, 0, 0,
               0 if refs is not None else None, 0 if e_refs is not None else None)
    out = eqx.filter_vmap(per_trajectory, in_axes=in_axes)(physics, y0s, t0s, refs, e_refs)
    return jtu.tree_map(lambda x: jnp.swapaxes(x, 0, 1), out)  # [M, B, ...]


def _default_save_every(steps: int) -> int:
    # About 200 saves: fine enough for a figure of the energy, few enough to keep.
    s = max(1, steps // 200)
    while steps % s:
        s -= 1
    return s


def _batch_size_of(tree) -> int | None:
    leaves = [x for x in jtu.tree_leaves(eqx.filter(tree, eqx.is_array)) if x.ndim]
    return int(leaves[0].shape[0]) if leaves else None


def stability(
    model: Any,
    y0s: Float[ArrayLike, " B *state"],
    *,
    steps: int,
    dt: float,
    save_every: int | None = None,
    physics: solvers.AbstractSystem | None = None,
    physics_batched: bool = False,
    reference: Float[ArrayLike, "B R *state"] | None = None,
    energy_factor: float = 10.0,
    energy_reference: float | Float[ArrayLike, " B"] | None = None,
    baseline_fraction: float = 0.1,
    diagnostics: AbstractStabilityDiagnostics | None = None,
    corr_threshold: float = 0.95,
    solver_dt: float | None = None,
    solver: diffrax.AbstractSolver | None = None,
    t0: float | Float[ArrayLike, " B"] = 0.0,
    args_fn: Callable[[Any], Any] | None = None,
    mode: str = "tendency",
    batch_size: int | None = None,
) -> StabilityReport:
    r"""Long rollouts of `model` from every initial condition in `y0s`, watched at
    every step: blow-up, drift, spectrum, decorrelation.

    Each rollout runs `steps` steps of length `dt` ($t_s = t_0 + s\,\Delta t$,
    $s = 0..N$ with $N$ = `steps`), each integrated by `solvers.solve` with steps of
    `solver_dt` and `throw=False`. Per rollout, with $E_s$, $Z_s$ the energy and
    enstrophy of the state at step $s$ (`diagnostics`):

    - **blow-up**: `nonfinite_step`, the first $s$ whose state holds a NaN/Inf;
      `energy_step`, the first $s$ with a finite state and $E_s >$ `energy_bound`
      $= c\,E_\text{ref}$, $c$ = `energy_factor`, $E_\text{ref}$ =
      `energy_reference` if given, else $\max_r E(\text{reference}_r)$ over the
      rollout's reference trajectory, else $E_0$; `blowup_step`, the earlier of the
      two. A model is `stable` when no rollout blew up.
    - **drift**: $\delta_E = (\bar E_\text{late} - \bar E_\text{base}) / \bar E_\text{base}$
      with $\bar E_\text{late}$ the mean of $E_s$ over the second half, $N/2 < s \le N$,
      and $\bar E_\text{base}$ the time mean of the energy of the reference trajectory,
      or without a reference the mean of $E_s$ over the baseline window
      $0 \le s \le \lfloor f N \rfloor$, $f$ = `baseline_fraction`. The same for the
      enstrophy, $\delta_Z$. Signed; NaN for a rollout that went non-finite.
    - **spectrum departure**: with $P(k)$ the profile (`diagnostics.profile`: the
      energy spectrum, or the cluster moduli), $\bar P_\text{late}$ its mean over the
      saves $s \in \{S, 2S, .., N\}$ of the second half ($S$ = `save_every`) and
      $\bar P_\text{base}$ the time mean over the reference trajectory (else over
      step 0 and the saves of the baseline window),
      $D = \langle |\log_{10} \bar P_\text{late}(k) - \log_{10} \bar P_\text{base}(k)|
      \rangle_k$ over the profile's compared entries (spectra: the resolved shells
      $1 \le k < n/3$; so $D = 0.3$ is a factor 2 on average), or
      $\langle |\bar P_\text{late} - \bar P_\text{base}| \rangle_k$ for profiles
      compared as values (cluster moduli).
    - **corr_time**: with a reference of $R \ge 2$ steps, the time until the pattern
      correlation of the rollout with it first drops below `corr_threshold`, exactly
      as `_metrics.corr_time_per_trajectory` (linear interpolation, censored at
      $(R-1)\Delta t$).

    Nothing of the trajectory is kept beyond one interval of `save_every` steps: the
    energy and enstrophy are recorded at the saves, everything else is reduced on the
    fly. Rollouts are vmapped over the initial conditions (and the members of an
    `Ensemble`), in chunks of `batch_size`.

    **Arguments:**

    - `model`: a `solvers.AbstractSystem` (a `hybrid.Hybrid`, or plain physics for a
      baseline), an `Ensemble` (every member is rolled out), a bare closure
      `(t, y, args) -> dy` together with `physics` (`Hybrid(physics, model, mode)`),
      or `None` for `physics` alone (e.g. the no-closure baseline of batched physics).
    - `y0s`: `[B, *state]` initial conditions.
    - `steps`: the number of steps $N$, a multiple of `save_every`.
    - `dt`: the step length $\Delta t$ (time between two measured states).
    - `save_every`: $S$, steps per interval (default: about `steps / 200`).
    - `physics`: the known physics the closure(s) of `model` run in (replacing a
      `Hybrid`'s own); one system, or with `physics_batched=True` a stack of `B`
      systems (`eqx.filter_vmap` of a constructor), one per initial condition.
    - `reference`: `[B, R, *state]` reference trajectories at steps $0..R-1$ (spacing
      `dt`, e.g. filtered fine data from the same initial conditions), or `None`.
    - `energy_factor`: $c$, default 10.
    - `energy_reference`: $E_\text{ref}$ of the bound, a scalar or `[B]` (default:
      see above).
    - `baseline_fraction`: $f \in (0, 1/2]$, default 0.1 (used without `reference`).
    - `diagnostics`: an `AbstractStabilityDiagnostics`; default `default_diagnostics`
      of the physics (Burgers, Navier–Stokes, cluster states, else energy only).
    - `corr_threshold`: default 0.95 (Kochkov et al. 2021).
    - `solver_dt`: the integrator's step inside each step, default `dt`; a model
      trained in `mode="correction"` needs its training step here.
    - `solver`: a diffrax solver, default the system's own.
    - `t0`: start time(s), a scalar or `[B]` (time-dependent forcing).
    - `args_fn`: `physics -> args` for the vector field (e.g. a closure's
      conditioning), called per rollout with that rollout's physics (or the model).
    - `mode`: the `Hybrid` mode of a bare closure.
    - `batch_size`: initial conditions per compiled call (default all at once).

    **Returns:** a `StabilityReport` (`.stable`, `.to_dict()` for `metrics.json`,
    `.summary()`).
    """
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 2:
        raise ValueError(f"`steps` must be an int >= 2, got {steps!r}.")
    steps = int(steps)
    dt = _check_dt(dt)
    solver_dt = dt if solver_dt is None else _check_dt(solver_dt, "solver_dt")
    if save_every is None:
        save_every = _default_save_every(steps)
    if isinstance(save_every, bool) or not isinstance(save_every, (int, np.integer)) or (
            save_every < 1):
        raise ValueError(f"`save_every` must be a positive int, got {save_every!r}.")
    save_every = int(save_every)
    if steps % save_every:
        raise ValueError(f"`steps` ({steps}) must be a multiple of `save_every` ({save_every}).")
    if not float(energy_factor) > 0:
        raise ValueError(f"`energy_factor` must be > 0, got {energy_factor!r}.")
    if not 0 < float(baseline_fraction) <= 0.5:
        raise ValueError(f"`baseline_fraction` must be in (0, 0.5], got {baseline_fraction!r}.")
    if not 0 < float(corr_threshold) < 1:
        raise ValueError(f"`corr_threshold` must be in (0, 1), got {corr_threshold!r}.")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"`batch_size` must be a positive int or None, got {batch_size!r}.")
    if mode not in ("tendency", "correction"):
        raise ValueError(f"`mode` must be 'tendency' or 'correction', got {mode!r}.")

    y0s = jnp.asarray(y0s)
    if y0s.ndim < 1 or not jnp.issubdtype(y0s.dtype, jnp.floating):
        raise ValueError(
            f"`y0s` must be a floating array [B, *state], got shape {y0s.shape} and dtype "
            f"{y0s.dtype}."
        )
    n_b = y0s.shape[0]
    state_shape = tuple(y0s.shape[1:])
    if physics is not None and not isinstance(physics, solvers.AbstractSystem):
        raise ValueError(
            f"`physics` must be a solvers.AbstractSystem, got {type(physics).__name__}."
        )
    _check_model(model, physics)
    if physics_batched:
        if physics is None:
            raise ValueError("`physics_batched=True` needs `physics`.")
        nb_phys = _batch_size_of(physics)
        if nb_phys != n_b:
            raise ValueError(
                f"`physics` is batched over {nb_phys} systems but `y0s` holds {n_b} "
                "initial conditions."
            )
    if reference is not None:
        reference = jnp.asarray(reference, y0s.dtype)
        if reference.ndim != y0s.ndim + 1 or reference.shape[0] != n_b or (
                tuple(reference.shape[2:]) != state_shape) or reference.shape[1] < 1:
            raise ValueError(
                f"`reference` must have shape [B, R, *state] = [{n_b}, R, "
                f"{', '.join(map(str, state_shape))}], got {tuple(reference.shape)}."
            )
    e_refs = None
    if energy_reference is not None:
        e_refs = jnp.broadcast_to(jnp.asarray(energy_reference, y0s.dtype), (n_b,))
        if not bool(jnp.all(e_refs > 0)):
            raise ValueError(f"`energy_reference` must be > 0, got {energy_reference!r}.")
    t0s = jnp.asarray(t0, y0s.dtype)
    if t0s.ndim > 1 or (t0s.ndim == 1 and t0s.shape[0] != n_b):
        raise ValueError(f"`t0` must be a scalar or [B] = [{n_b}], got shape {t0s.shape}.")
    t0s = jnp.broadcast_to(t0s, (n_b,))

    if diagnostics is None:
        diagnostics = default_diagnostics(physics if physics is not None else model,
                                          state_shape)
    if not isinstance(diagnostics, AbstractStabilityDiagnostics):
        raise ValueError(
            "`diagnostics` must be an AbstractStabilityDiagnostics, got "
            f"{type(diagnostics).__name__}."
        )
    has_profile = jax.eval_shape(diagnostics.profile, y0s[0]) is not None
    members = model.members if isinstance(model, Ensemble) else None
    n_members = model.size if isinstance(model, Ensemble) else None
    spec = _Spec(
        steps=steps, dt=dt, solver_dt=solver_dt, save_every=save_every,
        n_base=int(math.floor(float(baseline_fraction) * steps)),
        energy_factor=float(energy_factor), corr_threshold=float(corr_threshold),
        diagnostics=diagnostics, args_fn=args_fn, solver=solver,
        physics_batched=bool(physics_batched), has_reference=reference is not None,
        has_energy_reference=e_refs is not None, mode=mode,
    )
    model_static = None if isinstance(model, Ensemble) else model
    if isinstance(model, Ensemble):
        # members travel as an argument (vmapped); the rest of the ensemble as a template
        model_static = Ensemble(None, model.physics, model.mode)

    size = n_b if batch_size is None else min(batch_size, n_b)
    chunks = []
    for start in range(0, n_b, size):
        idx = np.minimum(np.arange(start, start + size), n_b - 1)  # pad with the last

        def take(x, idx=idx):
            return x[idx] if eqx.is_array(x) else x

        phys = jtu.tree_map(take, physics) if physics_batched else physics
        out = _run_chunk(spec, model_static, members, phys, y0s[idx], t0s[idx],
                         None if reference is None else reference[idx],
                         None if e_refs is None else e_refs[idx])
        valid = min(size, n_b - start)
        chunks.append(jtu.tree_map(lambda x, v=valid: np.asarray(x)[:, :v], out))
    res = {k: np.concatenate([c[k] for c in chunks], axis=1) for k in chunks[0]}
    if n_members is None:
        res = {k: v[0] for k, v in res.items()}

    def get(name):
        return jnp.asarray(res[name]) if name in res else None

    return StabilityReport(
        blowup_step=get("blowup_step"), nonfinite_step=get("nonfinite_step"),
        energy_step=get("energy_step"), energy_bound=get("energy_bound"),
        max_energy=get("max_energy"), energy_drift=get("energy_drift"),
        enstrophy_drift=get("enstrophy_drift"), spectrum_departure=get("spectrum_departure"),
        corr_time=get("corr_time"), corr_censored=get("corr_censored"),
        energy=get("energy"), enstrophy=get("enstrophy"),
        reference_energy=get("reference_energy"),
        save_steps=jnp.arange(0, steps + 1, save_every), t0=t0s,
        steps=steps, dt=dt, save_every=save_every, energy_factor=float(energy_factor),
        members=n_members, diagnostics=type(diagnostics).__name__,
        profile_name=diagnostics.profile_name if has_profile else None,
    )


# ---------------------------------------------------------------------------------------
# The pipeline: a trained run's stability on its held-out test data


def energy_figure(path: str | Path, report: StabilityReport, *, title: str = "") -> None:
    """Energy against time of every rollout of `report` (log scale), with the bounds
    and blow-ups marked; a PNG at `path` (matplotlib, Agg)."""
    from ._report import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    energy = np.asarray(report.energy).reshape(-1, len(report.save_steps))
    blow = np.asarray(report.blowup_step).reshape(-1)
    t = np.asarray(report.save_steps) * report.dt
    for e, b in zip(energy, blow, strict=True):
        e = np.where(np.isfinite(e) & (e > 0), e, np.nan)
        ax.plot(t, e, lw=0.9, color="C3" if b >= 0 else "C0", alpha=0.7,
                label="blew up" if b >= 0 else "stable")
        if b >= 0:
            ax.axvline(b * report.dt, color="C3", lw=0.5, ls=":")
    ax.axhline(float(np.max(np.asarray(report.energy_bound))), color="k", ls="--", lw=0.8,
               label=f"bound ({report.energy_factor:g} x reference)")
    ax.axhline(float(np.mean(np.asarray(report.reference_energy))), color="k", lw=0.8,
               alpha=0.5, label="reference mean energy")
    ax.set_yscale("log")
    ax.set_xlabel("time since the initial condition")
    ax.set_ylabel("energy")
    ax.set_title(title or f"long rollouts: {report.steps} steps")
    ax.grid(alpha=0.3, which="both")
    handles, labels = ax.get_legend_handles_labels()
    seen = dict(zip(labels, handles, strict=True))
    ax.legend(seen.values(), seen.keys(), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_stability(task, cfg, ens, physics_b, y0_b, t0, ref_energy=None, *, reference=None,
                  factor: int | None = None) -> StabilityReport:
    """The pipeline's stability check of a trained ensemble: `factor` (default
    `cfg.stability_factor`) x `cfg.horizon` steps of `cfg.save_dt` (the unit of the
    training horizon), integrated with `cfg.dt`, from the test initial conditions
    `y0_b` with their own coarse physics `physics_b`, saved every `cfg.horizon` steps;
    energy bound 10 x `ref_energy` (default: each `reference` trajectory's largest
    energy). The members are deterministic (no fitted stochastic term); an MC-dropout
    run is rolled out as `cfg.members` realisations, one mask each."""
    factor = cfg.stability_factor if factor is None else factor
    if cfg.ensemble == "mc-dropout":
        from . import _bayes
        from ._uq import _ROLLOUT_STREAM

        network = jtu.tree_map(lambda x: x[0] if eqx.is_array(x) else x, ens.members)
        k_mask = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(cfg.seed),
                                                     _ROLLOUT_STREAM))[0]
        # member m wears the mask evaluation draws for (m, trajectory 0)
        keys = jax.vmap(lambda m: jax.random.fold_in(jax.random.fold_in(k_mask, m), 0))(
            jnp.arange(cfg.members))
        members = eqx.filter_vmap(lambda k: _bayes.draw_dropout_masks(network, key=k))(keys)
        ens = Ensemble(members, ens.physics, ens.mode)
    return stability(
        ens, y0_b, steps=factor * cfg.horizon, dt=cfg.save_dt, solver_dt=cfg.dt,
        save_every=cfg.horizon, physics=physics_b, physics_batched=True,
        reference=reference, energy_reference=ref_energy, t0=t0,
        args_fn=task.closure_args,
    )


def stability_of_run(out: str | Path, *, factor: int | None = None, figure: bool = True,
                     progress: bool = True) -> StabilityReport:
    """`neuroscale stability DIR`: the long rollouts of the trained run in `out` from
    its held-out test initial conditions (as `evaluate`), written into the
    `stability` block of `out/metrics.json` (created if missing, other blocks kept)
    and, with `figure`, `out/stability_energy.png`."""
    from ._data import test_data
    from ._task import make_task
    from ._train import load_ensemble

    out = Path(out)
    cfg, ens = load_ensemble(out)
    task = make_task(cfg)
    ys_fine, ts_abs, fine = test_data(task, out, cfg.eval_horizon * cfg.save_dt,
                                      progress=progress)
    ys_fine = ys_fine[:, : cfg.eval_horizon + 1]
    ref = task.coarse_grain(ys_fine, cfg.coarse_n)
    coarse = eqx.filter_vmap(lambda f: task.coarse_physics(f, cfg.coarse_n))(fine)
    ref_energy = float(jnp.max(task.energy(ref)))
    report = run_stability(task, cfg, ens, coarse, ref[:, 0], ts_abs[0], ref_energy,
                           reference=ref, factor=factor)
    path = out / "metrics.json"
    metrics = json.loads(path.read_text()) if path.exists() else {"system": cfg.system}
    metrics["stability"] = report.to_dict()
    path.write_text(json.dumps(metrics, indent=2) + "\n")
    if figure:
        energy_figure(out / "stability_energy.png", report,
                      title=f"{cfg.system}: {report.steps} steps "
                      f"({report.steps // cfg.horizon}x the training horizon)")
    return report
