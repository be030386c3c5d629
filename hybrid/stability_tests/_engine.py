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

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jaxtyping import Array, ArrayLike, Float

import solvers

from .. import _checks
from .. import metrics as M
from .._ensemble import Ensemble
from .._hybrid import Hybrid
from ._diagnostics import AbstractStabilityDiagnostics, default_diagnostics
from ._report import StabilityReport


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
    solver: Any
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


def _single_system(model, physics, mode: str):
    """The system of one rollout of a single model (not an `Ensemble`) on `physics`;
    the combinations were checked by `_check_model`."""
    if model is None:
        return physics
    if isinstance(model, solvers.AbstractSystem):
        if physics is None:
            return model
        return Hybrid(physics, model.closure, mode=model.mode)
    return Hybrid(physics, model, mode=mode)


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
def _run_chunk(spec: _Spec, model, physics, y0s, t0s, args, refs, e_refs, key, first):
    # Per-trajectory inputs; `None`s are dropped and put back, vmap needs arrays.
    present = [x is not None for x in (args, refs, e_refs)]
    xs = [x for x in (args, refs, e_refs) if x is not None]

    def unpack(rest):
        it = iter(rest)
        return [next(it) if p else None for p in present]

    def fn(system, y0, t0, *rest, key=None):
        a, ref, e_ref = unpack(rest)
        return _trajectory(spec, system, y0, t0, a, ref, e_ref)

    if isinstance(model, Ensemble):
        # the one member-rollout path: `Ensemble.map` builds every (member, trajectory)
        return model.map(fn, y0s, t0s, *xs, physics=physics, key=key,
                         first_trajectory=first)

    def one(phys, y0, t0, *rest):
        return fn(_single_system(model, phys, spec.mode), y0, t0, *rest)

    # the stacked physics may hold non-array leaves (Python floats): not mapped
    in_axes = (eqx.if_array(0) if physics is not None else None, 0, 0) + (
        eqx.if_array(0),) * len(xs)
    out = eqx.filter_vmap(one, in_axes=in_axes)(physics, y0s, t0s, *xs)
    return jtu.tree_map(lambda x: x[None], out)  # [1, B, ...]


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
    args: Any = None,
    args_fn: Callable[[Any], Any] | None = None,
    mode: str = "tendency",
    batch_size: int | None = None,
    key: Any = None,
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
    - `args`: per-rollout `args` for physics and closure, a pytree with leading axis
      `B` (e.g. `Trajectories.args`); or `args_fn`: `physics -> args`, called per
      rollout with that rollout's physics (or, without `physics`, the model's).
    - `mode`: the `Hybrid` mode of a bare closure.
    - `batch_size`: initial conditions per compiled call (default all at once).
    - `key`: for an `Ensemble`, its dropout masks (and nothing else: the long
      rollouts are deterministic); default a fixed set of masks.

    **Returns:** a `StabilityReport` (`.stable`, `.to_dict()` for `metrics.json`,
    `.summary()`).
    """
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 2:
        raise ValueError(f"`steps` must be an int >= 2, got {steps!r}.")
    steps = int(steps)
    dt = _checks.positive_float(dt, "dt")
    solver_dt = dt if solver_dt is None else _checks.positive_float(solver_dt, "solver_dt")
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
        # a system without arrays is the same for every initial condition: nothing to
        # batch (issue 10: such a user system used to be refused here)
        if nb_phys is not None and nb_phys != n_b:
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
    n_members = model.size if isinstance(model, Ensemble) else None
    spec = _Spec(
        steps=steps, dt=dt, solver_dt=solver_dt, save_every=save_every,
        n_base=int(math.floor(float(baseline_fraction) * steps)),
        energy_factor=float(energy_factor), corr_threshold=float(corr_threshold),
        diagnostics=diagnostics, solver=solver, has_reference=reference is not None,
        has_energy_reference=e_refs is not None, mode=mode,
    )
    if physics is not None and not physics_batched:
        # one system for every rollout: a stack of B copies (cheap), one path below
        physics = jtu.tree_map(
            lambda x: jnp.broadcast_to(x, (n_b,) + jnp.shape(x)) if eqx.is_array(x) else x,
            physics)
    if args is None and args_fn is not None:
        if physics is not None:
            args = eqx.filter_vmap(args_fn)(physics)
        else:
            shared = args_fn(model.physics if isinstance(model, Ensemble) else model)
            args = jtu.tree_map(
                lambda x: jnp.broadcast_to(x, (n_b,) + jnp.shape(x)) if eqx.is_array(x)
                else x, shared)
    if args is not None:
        sizes = {x.shape[0] for x in jtu.tree_leaves(eqx.filter(args, eqx.is_array))}
        if sizes and sizes != {n_b}:
            raise ValueError(f"`args` must have leading axis B = {n_b}, got {sorted(sizes)}.")

    size = n_b if batch_size is None else min(batch_size, n_b)
    chunks = []
    for start in range(0, n_b, size):
        idx = np.minimum(np.arange(start, start + size), n_b - 1)  # pad with the last

        def take(x, idx=idx):
            return x[idx] if eqx.is_array(x) and jnp.ndim(x) else x

        out = _run_chunk(spec, model, jtu.tree_map(take, physics), y0s[idx], t0s[idx],
                         jtu.tree_map(take, args),
                         None if reference is None else reference[idx],
                         None if e_refs is None else e_refs[idx], key, jnp.asarray(start))
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


