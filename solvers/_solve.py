"""`solve`: integrate any `AbstractSystem` and save at given times."""

import math
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import lineax as lx
import numpy as np
from jaxtyping import Array, ArrayLike, PyTree

from ._etdrk4 import with_fixed_step
from ._solution import Solution
from ._system import AbstractSystem


def _check_ts(ts) -> np.ndarray:
    if isinstance(ts, jax.core.Tracer):
        raise ValueError(
            "`ts` must be concrete (a NumPy or JAX array known before tracing): the "
            "number of solver steps is derived from it. Close over `ts` instead of "
            "passing it through `jax.jit`."
        )
    ts_np = np.asarray(ts, dtype=np.float64)
    if ts_np.ndim != 1 or ts_np.shape[0] < 1:
        raise ValueError(f"`ts` must be a 1D array of save times, got shape {ts_np.shape}.")
    if not np.all(np.isfinite(ts_np)):
        raise ValueError("`ts` must be finite.")
    if ts_np.shape[0] > 1 and not np.all(np.diff(ts_np) > 0):
        raise ValueError("`ts` must be strictly increasing.")
    return ts_np


def _check_dt(dt) -> float:
    if isinstance(dt, jax.core.Tracer):
        raise ValueError("`dt` must be a concrete Python or NumPy number.")
    try:
        dt_f = float(dt)
    except (TypeError, ValueError):
        raise ValueError(f"`dt` must be a positive number, got {dt!r}.") from None
    if not (math.isfinite(dt_f) and dt_f > 0):
        raise ValueError(f"`dt` must be a positive finite number, got {dt!r}.")
    return dt_f


def _auto_levels(n: int) -> int:
    # Nested checkpointing levels for n steps between two saves: plain scan for a
    # handful of steps, sqrt-checkpointing up to a few hundred, cube-root beyond.
    # Memory grows like levels * n**(1/levels); compute like (levels + 1) forwards.
    if n <= 8:
        return 1
    if n <= 400:
        return 2
    return 3


def _checkpointed_steps(step, carry, t_start, h, n: int, levels: int):
    """Apply `step(carry, t0, t1)` n times from t_start with step h, with nested
    `jax.checkpoint` so that reverse mode stores O(levels * n**(1/levels)) states."""

    def run(carry, i0, count, level):
        if count == 0:
            return carry
        if level <= 1 or count <= 2:

            def body(c, i):
                t0 = t_start + (i0 + i) * h
                return step(c, t0, t0 + h), None

            carry, _ = jax.lax.scan(body, carry, jnp.arange(count))
            return carry
        block = max(1, math.ceil(count ** ((level - 1) / level)))
        n_blocks, rest = divmod(count, block)

        def block_body(c, j):
            return run(c, i0 + j * block, block, level - 1), None

        block_body = jax.checkpoint(block_body, prevent_cse=False)
        carry, _ = jax.lax.scan(block_body, carry, jnp.arange(n_blocks))
        if rest:
            tail = jax.checkpoint(lambda c: run(c, i0 + n_blocks * block, rest, level - 1))
            carry = tail(carry)
        return carry

    return run(carry, 0, n, levels)


def _first_nonfinite(finite_flags: Array) -> Array:
    bad = ~finite_flags
    return jnp.where(jnp.any(bad), jnp.argmax(bad), -1).astype(jnp.int32)


def _all_finite(tree) -> Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jtu.tree_leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def solve(
    system: AbstractSystem,
    y0: PyTree[Array],
    ts: ArrayLike,
    *,
    dt: float,
    args: Any = None,
    solver: diffrax.AbstractSolver | None = None,
    stepsize_controller: diffrax.AbstractStepSizeController | None = None,
    adjoint: diffrax.AbstractAdjoint | None = None,
    max_steps: int = 65536,
    key: Array | None = None,
    throw: bool = True,
    checkpoint_levels: int | None = None,
    t_offset: ArrayLike = 0.0,
) -> Solution:
    r"""Integrate `system` from `ts[0]` and save the physical state at `ts`.

    With the default fixed steps, every interval `[ts[k], ts[k+1]]` is split into
    `ceil((ts[k+1]-ts[k]) / dt)` equal steps of the system's solver (ETDRK4 for
    Burgers, jax-cfd's Crank–Nicolson RK4 for Navier–Stokes, Tsit5 otherwise), run by
    a `lax.scan` with nested `jax.checkpoint`: reverse-mode memory grows like
    $n^{1/L}$ in the number of steps $n$, not linearly. Passing a diffrax
    `stepsize_controller` (e.g. `diffrax.PIDController`) hands the solve to
    `diffrax.diffeqsolve` with adaptive steps instead.

    **Arguments:**

    - `system`: an `AbstractSystem` (`Burgers1D`, `NavierStokes2D`, `Kuramoto`, a
      `hybrid.Hybrid`, or your own).
    - `y0`: the initial physical state, unbatched (use `jax.vmap` for batches).
    - `ts`: `Float[Array, "T"]`, strictly increasing save times; concrete.
    - `dt`: the (maximal) step size; the initial step for adaptive control.
    - `args`: passed to the vector field.
    - `solver`: any diffrax solver acting on `system.terms()`; default
      `system.default_solver()` (`diffrax.Heun()` for noisy systems).
    - `stepsize_controller`: `None` for fixed steps, else a diffrax controller.
    - `adjoint`: for the diffrax path; default `diffrax.RecursiveCheckpointAdjoint()`.
    - `max_steps`: step limit of the adaptive path.
    - `key`: PRNG key for the Brownian motion of systems with noise.
    - `throw`: raise if the rollout produces NaN/Inf (default). With `throw=False`
      the caller inspects `Solution.blowup_index` instead.
    - `checkpoint_levels`: nesting depth of rematerialisation (fixed-step path);
      `None` picks it from the number of steps.
    - `t_offset`: the run covers `ts + t_offset`. Unlike `ts` it may be traced, e.g.
      a random start time drawn inside a jit-compiled training step.

    **Returns:** a `Solution` with `ts` `[T]`, `ys` `[T, *y0.shape]`, `stats` and
    `blowup_index`.
    """
    if not isinstance(system, AbstractSystem):
        raise ValueError(
            f"`system` must be a solvers.AbstractSystem, got {type(system).__name__}."
        )
    system.check_state(y0, "y0")
    ts_np = _check_ts(ts)
    ts_dtype = np.dtype(getattr(ts, "dtype", np.float64))
    dt = _check_dt(dt)
    if checkpoint_levels is not None and (
        not isinstance(checkpoint_levels, int) or checkpoint_levels < 1
    ):
        raise ValueError(
            f"`checkpoint_levels` must be a positive int or None, got {checkpoint_levels!r}."
        )
    if not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"`max_steps` must be a positive int, got {max_steps!r}.")

    dtype = jnp.result_type(y0)
    ts_arr = jnp.asarray(ts_np, dtype=dtype) + jnp.asarray(t_offset, dtype)
    z0 = system.to_internal(y0)
    terms = system.terms()
    noisy = system.diffusion(ts_arr[0], y0, args) is not None
    if noisy:
        if key is None:
            raise ValueError(
                f"`key` is required: {type(system).__name__} has noise (a Brownian "
                "motion is sampled from it)."
            )
        shape = jax.eval_shape(lambda: z0)
        brownian = diffrax.VirtualBrownianTree(
            t0=ts_arr[0],
            t1=ts_arr[-1] if len(ts_np) > 1 else ts_arr[0] + dt,
            tol=dt / 2,
            shape=shape,
            key=key,
        )

        def _diffusion(t, z, a):
            sigma = system.diffusion(t, system.from_internal(z), a)
            return lx.DiagonalLinearOperator(jnp.broadcast_to(sigma, z.shape).astype(z.dtype))

        terms = diffrax.MultiTerm(terms, diffrax.ControlTerm(_diffusion, brownian))
    if solver is None:
        solver = diffrax.Heun() if noisy else system.default_solver()
    solver = system.wrap_solver(solver)

    if len(ts_np) == 1:
        ys = jtu.tree_map(lambda x: x[None], y0)
        return Solution(ts_arr, ys, {"num_steps": 0}, jnp.array(-1, jnp.int32))

    if stepsize_controller is None:
        ys, finite, num_steps = _solve_fixed(
            system, solver, terms, y0, z0, ts_np, ts_dtype, dt, args, dtype,
            checkpoint_levels, jnp.asarray(t_offset, dtype),
        )
        stats = {"num_steps": num_steps}
    else:
        saveat = diffrax.SaveAt(ts=ts_arr, fn=lambda t, z, a: system.from_internal(z))
        sol = diffrax.diffeqsolve(
            terms,
            solver,
            t0=ts_arr[0],
            t1=ts_arr[-1],
            dt0=dt,
            y0=z0,
            args=args,
            saveat=saveat,
            stepsize_controller=stepsize_controller,
            adjoint=adjoint if adjoint is not None else diffrax.RecursiveCheckpointAdjoint(),
            max_steps=max_steps,
            throw=False,
        )
        ys = sol.ys
        finite = jax.vmap(_all_finite)(ys) & (sol.result == diffrax.RESULTS.successful)
        stats = dict(sol.stats)

    blowup_index = _first_nonfinite(finite)
    if throw:
        ys = eqx.error_if(
            ys,
            blowup_index >= 0,
            "solve: the rollout produced a non-finite state (NaN or Inf): it blew up. "
            "Reduce `dt`, or call with `throw=False` and read `Solution.blowup_index`.",
        )
    return Solution(ts_arr, ys, stats, blowup_index)


def _solve_fixed(
    system, solver, terms, y0, z0, ts_np, ts_dtype, dt, args, dtype, levels, offset
):
    intervals = np.diff(ts_np)
    # Rounding of the save times themselves (a float32 `jnp.arange(T) * dt` is not
    # exactly uniform): differences below `tol` are not worth an extra step.
    eps = np.finfo(getattr(ts_dtype, "type", np.float64)).eps
    tol = 8 * eps * float(np.max(np.abs(ts_np))) + 1e-12 * float(intervals.max())
    counts = np.maximum(1, np.ceil((intervals - tol) / dt)).astype(int)
    steps = intervals / counts
    # Equal intervals up to that rounding: one step size for the whole run.
    uniform = bool(np.all(counts == counts[0])) and bool(
        np.max(np.abs(intervals - intervals.mean())) <= tol
    )
    if uniform:
        steps = np.full_like(steps, intervals.mean() / counts[0])
        # Every step has the size given to `init`: step-size caches (ETDRK4's
        # coefficients) stay loop-invariant instead of going through a per-step cond.
        solver = with_fixed_step(solver)

    def step(carry, t0, t1):
        z, state = carry
        z1, _, _, state, _ = solver.step(terms, t0, t1, z, args, state, False)
        # Keep the carry's dtype: a system's constants must not promote the state.
        z1 = jtu.tree_map(lambda new, old: new.astype(old.dtype), z1, z)
        return z1, state

    z_init = z0
    t0_ = jnp.asarray(ts_np[0], dtype) + offset
    state0 = solver.init(terms, t0_, t0_ + jnp.asarray(steps[0], dtype), z_init, args)

    if uniform:
        n = int(counts[0])
        h = jnp.asarray(steps[0], dtype)
        lv = _auto_levels(n) if levels is None else levels

        def interval(carry, t_start):
            carry = _checkpointed_steps(step, carry, t_start, h, n, lv)
            z = carry[0]
            return carry, (system.from_internal(z), _all_finite(z))

        if len(intervals) > 1 and lv > 1:
            # Save-point level of the checkpointing: each interval is recomputed
            # from its starting state rather than storing its inner blocks.
            interval = jax.checkpoint(interval, prevent_cse=False)
        t_starts = jnp.asarray(ts_np[:-1], dtype) + offset
        _, (ys, finite) = jax.lax.scan(interval, (z0, state0), t_starts)
    else:
        n_max = int(counts.max())
        lv = _auto_levels(n_max) if levels is None else levels

        def interval(carry, xs):
            t_start, h, count = xs
            # `count` steps of size h; the padding steps up to n_max are masked. A
            # solver that caches per-step-size data (ETDRK4) refreshes it itself.

            def masked(c, t0, t1):
                i = jnp.rint((t0 - t_start) / h)
                new = step(c, t0, t1)
                return jtu.tree_map(lambda a, b: jnp.where(i < count, a, b), new, c)

            carry = _checkpointed_steps(masked, carry, t_start, h, n_max, lv)
            z = carry[0]
            return carry, (system.from_internal(z), _all_finite(z))

        if lv > 1:
            interval = jax.checkpoint(interval, prevent_cse=False)
        xs = (
            jnp.asarray(ts_np[:-1], dtype) + offset,
            jnp.asarray(steps, dtype),
            jnp.asarray(counts),
        )
        _, (ys, finite) = jax.lax.scan(interval, (z0, state0), xs)

    ys = jtu.tree_map(lambda a, b: jnp.concatenate([a[None], b]), y0, ys)
    finite = jnp.concatenate([_all_finite(z0)[None], finite])
    return ys, finite, int(counts.sum())
