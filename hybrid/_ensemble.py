"""`Ensemble`: M closures (or hybrid models) on one leading axis, with the one place
that turns a member into a system and rolls every member out."""

import warnings
from collections.abc import Callable, Sequence
from typing import Any, Literal

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray, PyTree

import solvers

from ._hybrid import Hybrid
from .uq._bayes import draw_dropout_masks
from .uq._stochastic import AbstractNoise, StochasticSystem

METHODS = ("anchored", "deep", "mc-dropout", "randomized-prior")

# Default realisations of an MC-dropout ensemble without a key: a fixed set of masks.
_DEFAULT_MASK_KEY = 0


class RolloutBlowupWarning(UserWarning):
    """Some rollouts of an ensemble produced a non-finite state (NaN or Inf)."""


def _leading_sizes(tree: PyTree) -> set[int]:
    return {x.shape[0] for x in jtu.tree_leaves(eqx.filter(tree, eqx.is_array)) if x.ndim}


def check_batched(tree: PyTree, size: int, name: str) -> None:
    """Raise `ValueError` naming `name` unless every array of `tree` has the leading
    axis `size` (a tree without arrays is the same for every item: fine)."""
    sizes = _leading_sizes(tree)
    if sizes and sizes != {size}:
        raise ValueError(
            f"`{name}` must hold one entry per trajectory: every array with a leading axis "
            f"of {size}, got leading sizes {sorted(sizes)}."
        )


class Ensemble(eqx.Module):
    r"""A stack of closures or hybrid models with one leading member axis, and what a
    probabilistic forecast adds to them.

    Every array leaf of `members` carries the member axis first, so the ensemble is
    one pytree: trained by one vmapped, jit-compiled program (`hybrid.fit`) and rolled
    out by one vmapped solve (`rollout`), with trajectories `[M, B, T, *state]`.

    **Arguments:**

    - `members`: the stacked members (see `Ensemble.init`, `Ensemble.stack`): bare
      closures together with `physics`, or whole systems (e.g. `hybrid.Hybrid`s).
    - `physics`: the (unstacked) known physics shared by every closure member;
      `None` when the members are systems.
    - `mode`: `Hybrid` mode of closure members, `"tendency"` or `"correction"`.
    - `method`: how the members were obtained (`"anchored"`, `"deep"`,
      `"mc-dropout"`, `"randomized-prior"`; `hybrid.fit` sets it). For
      `"mc-dropout"` `members` holds one network, and each of the `realisations`
      members is one dropout mask of it, drawn per trajectory.
    - `realisations`: the member count of an MC-dropout ensemble.
    - `noise`: a fitted stochastic closure term (`hybrid.calibrate`), added to every
      member's rollout when a `key` is given; `None` for none.
    - `inflation`: the spread calibration $\alpha$ (`hybrid.calibrate`): rollouts
      return $\bar x + \alpha (x_m - \bar x)$; `None` for none.
    """

    members: PyTree
    physics: solvers.AbstractSystem | None = None
    mode: Literal["tendency", "correction"] = eqx.field(static=True, default="tendency")
    method: str = eqx.field(static=True, default="deep")
    realisations: int | None = eqx.field(static=True, default=None)
    noise: AbstractNoise | None = None
    inflation: Float[Array, ""] | None = None

    def __check_init__(self):
        if self.mode not in ("tendency", "correction"):
            raise ValueError(f"`mode` must be 'tendency' or 'correction', got {self.mode!r}.")
        if self.method not in METHODS:
            raise ValueError(f"`method` must be one of {METHODS}, got {self.method!r}.")
        if self.method == "mc-dropout" and not (
            isinstance(self.realisations, int) and self.realisations >= 1
        ):
            raise ValueError("an MC-dropout ensemble needs `realisations` >= 1 (its members).")

    # --- construction --------------------------------------------------------------

    @classmethod
    def init(
        cls,
        make: Callable[[PRNGKeyArray], Any],
        *,
        size: int,
        key: PRNGKeyArray,
        physics: solvers.AbstractSystem | None = None,
        mode: Literal["tendency", "correction"] = "tendency",
    ) -> "Ensemble":
        """Build `size` members `make(key_m)` from independent keys, stacked."""
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"`size` must be a positive int, got {size!r}.")
        members = eqx.filter_vmap(make)(jr.split(key, size))
        return cls(members, physics, mode)

    @classmethod
    def stack(
        cls,
        members: Sequence[Any],
        *,
        physics: solvers.AbstractSystem | None = None,
        mode: Literal["tendency", "correction"] = "tendency",
    ) -> "Ensemble":
        """Stack a list of structurally identical members."""
        if len(members) == 0:
            raise ValueError("`members` must not be empty.")
        params = [eqx.filter(m, eqx.is_array) for m in members]
        static = eqx.filter(members[0], eqx.is_array, inverse=True)
        stacked = jtu.tree_map(lambda *xs: jnp.stack(xs), *params)
        return cls(eqx.combine(stacked, static), physics, mode)

    # --- the member count: asked here, nowhere else ------------------------------------

    @property
    def trained(self) -> int:
        """Networks in `members` (1 for MC dropout)."""
        sizes = _leading_sizes(self.members)
        if len(sizes) != 1:
            raise ValueError(
                "every array of `members` must carry the member axis first; found leading "
                f"sizes {sorted(sizes)}."
            )
        return sizes.pop()

    @property
    def size(self) -> int:
        """Members of the forecast: the MC-dropout realisations, else the networks."""
        return self.realisations if self.method == "mc-dropout" else self.trained

    # --- one member as a system -------------------------------------------------------

    def _build(self, params, static, m, b, physics, keys, stochastic: bool):
        one = eqx.combine(jtu.tree_map(lambda x: x[m % self.trained], params), static)
        k_mask, k_noise, _ = keys
        if self.method == "mc-dropout":
            one = draw_dropout_masks(one, key=jr.fold_in(jr.fold_in(k_mask, m), b))
        if isinstance(one, solvers.AbstractSystem):
            system = one
            if physics is not None:
                if not isinstance(one, Hybrid):
                    raise ValueError(
                        "`physics` replaces the physics of Hybrid members; this ensemble's "
                        f"members are {type(one).__name__}."
                    )
                system = Hybrid(physics, one.closure, mode=one.mode)
        else:
            if physics is None:
                raise ValueError(
                    "`physics` is required for an Ensemble of closures without physics."
                )
            system = Hybrid(physics, one, mode=self.mode)
        if stochastic and self.noise is not None and k_noise is not None:
            system = StochasticSystem(system, self.noise,
                                      key=jr.fold_in(jr.fold_in(k_noise, m), b))
        return system

    def member(self, i: int, *, key: PRNGKeyArray | None = None,
               physics: solvers.AbstractSystem | None = None) -> solvers.AbstractSystem:
        """Member `i` as a system (a `Hybrid` for closure members): deterministic, with
        the dropout mask of trajectory 0 for MC dropout (drawn from `key`)."""
        params, static = eqx.partition(self.members, eqx.is_array)
        keys = self._keys(key)
        return self._build(params, static, i, 0, self.physics if physics is None else physics,
                           keys, stochastic=False)

    def _keys(self, key):
        # (dropout masks, stochastic term, the system's own Brownian motion)
        if key is None:
            return jr.PRNGKey(_DEFAULT_MASK_KEY), None, None
        k_mask, k_noise, k_solve = jr.split(key, 3)
        return k_mask, k_noise, k_solve

    # --- every member on every trajectory ---------------------------------------------

    def map(
        self,
        fn: Callable[..., Any],
        *xs: Any,
        physics: solvers.AbstractSystem | None = None,
        key: PRNGKeyArray | None = None,
        stochastic: bool = True,
        first_trajectory: int | Array = 0,
    ) -> Any:
        r"""`fn(system, *x_b, key=k)` for every member $m$ and every trajectory $b$,
        vmapped over both: the one place where members become systems (`Hybrid` of a
        closure, an MC-dropout mask drawn per $(m, b)$, the stochastic term with its own
        noise path per $(m, b)$).

        **Arguments:**

        - `fn`: `(system, *x_b, key) -> output`, traceable; `key` is the rollout's own
          key for a system with noise of its own (`solvers.solve(..., key=key)`), one
          per $(m, b)$, or `None` without a `key`.
        - `xs`: per-trajectory inputs, each a pytree with leading axis `B` (initial
          states, start times, `args`, references, ...).
        - `physics`: `None` for the ensemble's own, shared by every trajectory; else a
          stack of `B` systems (`eqx.filter_vmap` of a constructor), one per trajectory
          (e.g. each trajectory's forcing).
        - `key`: dropout masks and noise paths; `None`: no stochastic term, and a fixed
          set of MC-dropout masks.
        - `stochastic`: add the fitted stochastic term (when there is one and a key).
        - `first_trajectory`: global index of `xs`' first trajectory, for the per-(m, b)
          keys when trajectories come in chunks.

        **Returns:** `fn`'s outputs with leading axes `[M, B]`.
        """
        sizes = set().union(*(_leading_sizes(x) for x in xs)) if xs else set()
        if len(sizes) != 1:
            raise ValueError(
                "the per-trajectory inputs must share one leading axis B, got leading "
                f"sizes {sorted(sizes)}."
            )
        n_b = sizes.pop()
        batched = physics is not None
        if batched:
            check_batched(physics, n_b, "physics")
        phys = physics if batched else self.physics
        params, static = eqx.partition(self.members, eqx.is_array)
        keys = self._keys(key)

        def one(m, b, phys_b, *x):
            system = self._build(params, static, m, b + first_trajectory, phys_b, keys,
                                 stochastic)
            k_solve = keys[2]
            if k_solve is not None:
                k_solve = jr.fold_in(jr.fold_in(k_solve, m), b + first_trajectory)
            return fn(system, *x, key=k_solve)

        n_x = len(xs)
        phys_axis = eqx.if_array(0) if batched else None
        per_traj = eqx.filter_vmap(one, in_axes=(None, 0, phys_axis) + (eqx.if_array(0),) * n_x)
        per_member = eqx.filter_vmap(per_traj, in_axes=(0, None, None) + (None,) * n_x)
        return per_member(jnp.arange(self.size), jnp.arange(n_b), phys, *xs)

    def solve_batch(
        self,
        y0s: PyTree[Array],
        ts: ArrayLike,
        *,
        dt: float,
        key: PRNGKeyArray | None = None,
        args: Any = None,
        physics: solvers.AbstractSystem | None = None,
        t0: Float[ArrayLike, "..."] = 0.0,
        stochastic: bool = True,
        calibrated: bool = True,
        solver: Any = None,
    ) -> solvers.Solution:
        """`rollout` with the blow-up record: a `solvers.Solution` with `ys`
        `[M, B, T, *state]` and `blowup_index` `[M, B]` (`-1` where finite)."""
        ts_np = np.asarray(ts, np.float64)
        n_b = _leading_sizes(y0s)
        if len(n_b) != 1:
            raise ValueError(f"`y0s` must be [B, *state], got leading sizes {sorted(n_b)}.")
        n_b = n_b.pop()
        t0s = jnp.broadcast_to(jnp.asarray(t0, jnp.result_type(*jtu.tree_leaves(y0s))), (n_b,))
        if args is not None:
            check_batched(args, n_b, "args")
        return _solve_batch(self, y0s, tuple(float(t) for t in ts_np), float(dt), key, args,
                            physics, t0s, stochastic, calibrated, solver)

    def rollout(
        self,
        y0s: PyTree[Array],
        ts: ArrayLike,
        *,
        dt: float,
        key: PRNGKeyArray | None = None,
        args: Any = None,
        physics: solvers.AbstractSystem | None = None,
        t0: Float[ArrayLike, "..."] = 0.0,
        stochastic: bool = True,
        calibrated: bool = True,
        solver: Any = None,
    ) -> Array:
        r"""Every member from every initial state, in one vmapped, jit-compiled solve.

        **Arguments:**

        - `y0s`: `[B, *state]` initial states.
        - `ts`: `[T]` save times relative to the start, concrete, from 0.
        - `dt`: the solver step.
        - `key`: dropout masks and the stochastic term's noise paths, one per (member,
          trajectory); `None`: deterministic members (no stochastic term) and a fixed
          set of dropout masks.
        - `args`: `None` or a pytree with leading axis `B`, each trajectory's `args`
          for physics and closure (e.g. `Trajectories.args`).
        - `physics`: `None` (the ensemble's physics) or a stack of `B` systems, one per
          trajectory (e.g. `Trajectories.physics`).
        - `t0`: absolute start time(s), scalar or `[B]`.
        - `stochastic`: add the fitted stochastic term (with a `key`).
        - `calibrated`: apply the fitted spread inflation.
        - `solver`: a diffrax solver, default each system's own.

        **Returns:** `[M, B, T, *state]`. A rollout that blew up holds NaN/Inf from
        then on and is reported with a `RolloutBlowupWarning`; `solve_batch` returns
        the exact steps.
        """
        sol = self.solve_batch(y0s, ts, dt=dt, key=key, args=args, physics=physics, t0=t0,
                               stochastic=stochastic, calibrated=calibrated, solver=solver)
        warn_blowups(sol.blowup_index)
        return sol.ys

    def solve(
        self,
        y0: PyTree[Array],
        ts: ArrayLike,
        *,
        dt: float,
        physics: solvers.AbstractSystem | None = None,
        key: PRNGKeyArray | None = None,
        args: Any = None,
        t_offset: Float[ArrayLike, ""] = 0.0,
        **kwargs: Any,
    ) -> solvers.Solution:
        """All members from one initial state `y0`: a `Solution` with `ys`
        `[M, T, *state]` and `blowup_index` `[M]`. `physics` replaces the stored
        physics for this call (one system, shared)."""
        ens = self if physics is None else eqx.tree_at(
            lambda e: e.physics, self, physics, is_leaf=lambda x: x is None)
        batch = jtu.tree_map(lambda x: jnp.asarray(x)[None], y0)
        batch_args = None if args is None else jtu.tree_map(lambda x: jnp.asarray(x)[None], args)
        sol = ens.solve_batch(batch, ts, dt=dt, key=key, args=batch_args, t0=t_offset,
                              **kwargs)
        ys = jtu.tree_map(lambda x: x[:, 0], sol.ys)
        return solvers.Solution(sol.ts, ys, sol.stats, sol.blowup_index[:, 0])

    def __call__(self, t: ArrayLike, y: PyTree[Array], args: Any = None) -> Array:
        """The members' closures at one state: `[M, *state]` (networks, no masks)."""
        if isinstance(self.members, solvers.AbstractSystem):
            return eqx.filter_vmap(lambda m: m.vector_field(t, y, args))(self.members)
        return eqx.filter_vmap(lambda m: m(t, y, args))(self.members)


def inflate(ys: Array, inflation: Array | None) -> Array:
    r"""$\bar x + \alpha (x_m - \bar x)$ over the leading member axis."""
    if inflation is None:
        return ys
    mean = jnp.mean(ys, axis=0, keepdims=True)
    return mean + jnp.asarray(inflation, ys.dtype) * (ys - mean)


def warn_blowups(blowup_index: Array) -> None:
    """A `RolloutBlowupWarning` naming how many rollouts blew up, if any did."""
    blow = np.asarray(blowup_index)
    if np.any(blow >= 0):
        first = np.argwhere(blow >= 0)[0]
        warnings.warn(
            f"{int(np.sum(blow >= 0))} of {blow.size} rollouts blew up (non-finite state), "
            f"the first at (member, trajectory) {tuple(int(i) for i in first)}, save "
            f"{int(blow[tuple(first)])}; their values are NaN/Inf from there on.",
            RolloutBlowupWarning,
            stacklevel=3,
        )


@eqx.filter_jit
def _solve_batch(ens, y0s, ts, dt, key, args, physics, t0s, stochastic, calibrated, solver):
    ts_np = np.asarray(ts)

    def one(system, y0, t0, a, *, key):
        sol = solvers.solve(system, y0, ts_np, dt=dt, t_offset=t0, throw=False, args=a,
                            solver=solver, key=key)
        return sol.ys, sol.blowup_index

    if args is None:
        ys, blow = ens.map(lambda s, y0, t0, *, key: one(s, y0, t0, None, key=key), y0s, t0s,
                           physics=physics, key=key, stochastic=stochastic)
    else:
        ys, blow = ens.map(one, y0s, t0s, args, physics=physics, key=key,
                           stochastic=stochastic)
    if calibrated:
        ys = jtu.tree_map(lambda x: inflate(x, ens.inflation), ys)
    return solvers.Solution(jnp.asarray(ts_np, t0s.dtype), ys, {}, blow)
