"""`solve`: integrate any `AbstractSystem` and save at given times."""

import math
from collections.abc import Callable
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


def _check_dt(dt, name: str = "dt") -> float:
    """`dt` as a float, else a `ValueError` naming the argument `name`."""
    if isinstance(dt, jax.core.Tracer):
        raise ValueError(f"`{name}` must be a concrete Python or NumPy number.")
    try:
        dt_f = float(dt)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a positive number, got {dt!r}.") from None
    if not (math.isfinite(dt_f) and dt_f > 0):
        raise ValueError(f"`{name}` must be a positive number, got {dt!r}.")
    return dt_f


def _auto_levels(n: int) -> int:
    # Levels of the non-uniform path (its step sizes are traced, so there is no step
    # to model): plain scan for a handful of steps, sqrt-checkpointing up to a few
    # hundred, cube-root beyond.
    if n <= 8:
        return 1
    if n <= 400:
        return 2
    return 3


# Nested checkpointing of the steps between two saves. A schedule is a list of
# segments `(count, blocks)`, run one after the other: `count` steps, with `blocks` the
# block sizes from the outermost checkpointed level inwards (`()`: a plain scan that
# tapes every step). Reverse mode stores one carry per block of each level and tapes
# the innermost block; every level recomputes its steps once more, so a gradient
# through L levels costs about L + 1 forward passes.

# Memory (modelled) that `_auto_schedule` may spend, relative to three balanced levels,
# to recompute fewer steps.
_MEMORY_ALLOWANCE = 1.25


def _balanced_blocks(n: int, levels: int) -> tuple[int, ...]:
    # `levels` levels of about n**(1/levels) blocks each (memory ~ levels * n**(1/levels)).
    blocks = []
    count = n
    for level in range(levels, 1, -1):
        count = max(1, math.ceil(count ** ((level - 1) / level)))
        blocks.append(count)
    return tuple(blocks)


def _nbytes(tree) -> int:
    return sum(
        math.prod(np.shape(x)) * np.dtype(getattr(x, "dtype", None) or jnp.result_type(x)).itemsize
        for x in jtu.tree_leaves(tree)
    )


def _residual_bytes_per_step(step, carry, t_start, h) -> int:
    """Bytes reverse mode stores per taped step: the residuals of a short scan of
    `step`, whose loop-invariant part cancels in the difference of two lengths."""

    def residuals(k):
        def run(c):
            def body(c, i):
                t0 = t_start + i * h
                return step(c, t0, t0 + h), None

            return jax.lax.scan(body, c, jnp.arange(k))[0]

        _, pullback = jax.eval_shape(lambda c: jax.vjp(run, c), carry)
        return _nbytes(pullback)

    return max(0, residuals(3) - residuals(2))


def _auto_schedule(n: int, step, carry, t_start, h) -> list[tuple[int, tuple[int, ...]]]:
    r"""The checkpointing of `n` steps when the caller gives no `checkpoint_levels`.

    - Up to 8 steps: a plain scan. Up to 400: two levels of about $\sqrt n$ blocks.
    - Beyond, as many steps as a memory budget allows get two levels (recomputed once)
      and the others three (recomputed twice), from a memory model: a stored carry
      costs $C$ bytes (the part of the state that changes from step to step), a taped
      step $R$ (its residuals, from a trace of the step). The budget is
      `_MEMORY_ALLOWANCE` times what three balanced levels of about $n^{1/3}$ blocks
      need, so memory still grows like $n^{1/3}$. Where $R \gg C$ (Navier–Stokes:
      $R/C \approx 24$) the budget holds two levels for every step, with blocks of
      $b \approx \sqrt{n C / R}$; where a carry costs about as much as a taped step
      (Burgers: $R/C \approx 4$), three levels with the last steps at two.
    """
    if n <= 8:
        return [(n, ())]
    if n <= 400:
        return [(n, _balanced_blocks(n, 2))]
    mid, inner = _balanced_blocks(n, 3)
    c_bytes = _nbytes(carry)
    r_bytes = _residual_bytes_per_step(step, carry, t_start, h)
    if c_bytes == 0 or r_bytes == 0:
        return [(n, (mid, inner))]
    rho = r_bytes / c_bytes  # memory in units of one stored carry
    budget = _MEMORY_ALLOWANCE * (math.ceil(n / mid) + math.ceil(mid / inner) + inner * rho)
    best = (0, 0.0, inner)  # (steps at two levels, -memory, their block size)
    for b in range(1, math.isqrt(n) + 2):
        two = math.ceil(n / b) + b * rho
        if two <= budget:
            best = max(best, (n, -two, b))
            continue
        # (n - tail) / mid + tail / b + b * rho <= budget, in whole blocks of b
        room = budget - b * rho - n / mid
        if room > 0:
            tail = min(n, int(room / (1 / b - 1 / mid)) // b * b)
            best = max(best, (tail, -budget, b))
    tail, _, b = best
    if tail == n:
        return [(n, (b,))]
    if tail == 0:
        return [(n, (mid, inner))]
    return [(n - tail, (mid, inner)), (tail, (b,))]


def _checkpointed_steps(step, carry, t_start, h, schedule):
    """Apply `step(carry, t0, t1)` from t_start with step h, segment by segment of
    `schedule` (see `_auto_schedule`), with nested `jax.checkpoint`."""

    def run(carry, i0, count, blocks):
        if count == 0:
            return carry
        if not blocks or count <= 2:

            def body(c, i):
                t0 = t_start + (i0 + i) * h
                return step(c, t0, t0 + h), None

            carry, _ = jax.lax.scan(body, carry, jnp.arange(count))
            return carry
        block = min(blocks[0], count)
        n_blocks, rest = divmod(count, block)

        def block_body(c, j):
            return run(c, i0 + j * block, block, blocks[1:]), None

        block_body = jax.checkpoint(block_body, prevent_cse=False)
        carry, _ = jax.lax.scan(block_body, carry, jnp.arange(n_blocks))
        if rest:
            tail = jax.checkpoint(lambda c: run(c, i0 + n_blocks * block, rest, blocks[1:]))
            carry = tail(carry)
        return carry

    i0 = 0
    for count, blocks in schedule:
        carry = run(carry, i0, count, blocks)
        i0 += count
    return carry


def _interval_group(m: int, n: int, step, carry, t_start, h) -> int:
    r"""Intervals per checkpointed group when each of the `m` save intervals has only
    `n` (≤ 8) steps: reverse mode stores one carry per group and tapes one group's
    $g n$ steps, memory $m / g + g n \rho$ carries with $\rho$ = taped bytes per step
    / carry bytes, least at $g = \sqrt{m / (n \rho)}$."""
    c_bytes = _nbytes(carry)
    r_bytes = _residual_bytes_per_step(step, carry, t_start, h)
    rho = r_bytes / c_bytes if c_bytes and r_bytes else 1.0
    return max(1, min(m, round(math.sqrt(m / (n * rho)))))


def _grouped_scan(interval, carry, t_starts, group: int):
    """`lax.scan(interval, carry, t_starts)`'s outputs, with `jax.checkpoint` around
    each group of `group` consecutive intervals."""

    def run(c, t_block):
        return jax.lax.scan(interval, c, t_block)

    run = jax.checkpoint(run, prevent_cse=False)
    m = t_starts.shape[0]
    n_groups, rest = divmod(m, group)
    outs = []
    if n_groups:
        blocks = t_starts[: n_groups * group].reshape(n_groups, group)
        carry, out = jax.lax.scan(run, carry, blocks)
        outs.append(jtu.tree_map(lambda x: x.reshape((n_groups * group,) + x.shape[2:]), out))
    if rest:
        carry, out = run(carry, t_starts[n_groups * group:])
        outs.append(out)
    return jtu.tree_map(lambda *xs: jnp.concatenate(xs), *outs)


def _schedule(n: int, levels: int | None, step, carry, t_start, h):
    if levels is not None:
        return [(n, _balanced_blocks(n, levels))]
    return _auto_schedule(n, step, carry, t_start, h)


def _hoist_invariants(step, carry, t0, h):
    """Split the carry into what `step` changes and what it returns untouched (e.g.
    the coefficients of a fixed-step ETDRK4): the latter is closed over rather than
    stored at every checkpoint. **Returns:** `(step on the varying part, varying part
    of carry, merge: varying part -> full carry)`."""
    leaves, treedef = jtu.tree_flatten(carry)
    if not all(eqx.is_array(x) for x in leaves):
        return step, carry, lambda c: c
    jaxpr = jax.make_jaxpr(
        lambda ls: jtu.tree_leaves(step(jtu.tree_unflatten(treedef, ls), t0, t0 + h))
    )(leaves).jaxpr
    invariant = [o is i for o, i in zip(jaxpr.outvars, jaxpr.invars, strict=True)]
    if not any(invariant):
        return step, carry, lambda c: c
    fixed = [x for x, inv in zip(leaves, invariant, strict=True) if inv]

    def merge(varying):
        it_var, it_fix = iter(varying), iter(fixed)
        return jtu.tree_unflatten(
            treedef, [next(it_fix) if inv else next(it_var) for inv in invariant]
        )

    def varying_step(varying, t0, t1):
        out = jtu.tree_leaves(step(merge(varying), t0, t1))
        return [x for x, inv in zip(out, invariant, strict=True) if not inv]

    return varying_step, [x for x, inv in zip(leaves, invariant, strict=True) if not inv], merge


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
    save_fn: Callable[[PyTree[Array]], PyTree[Array]] | None = None,
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
    - `save_fn`: `None` (save the state) or a function of one physical state whose
      output is saved instead, at every save time and for `y0` (diffrax's
      `SaveAt(fn=...)`), e.g. a coarse-graining: a long fine rollout is then never
      held whole, only its coarse saves. Blow-ups are still detected on the state.

    **Returns:** a `Solution` with `ts` `[T]`, `ys` `[T, *y0.shape]` (or `[T, ...]`
    of `save_fn`'s output), `stats` and `blowup_index`.
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
    if save_fn is not None and not callable(save_fn):
        raise ValueError(f"`save_fn` must be None or a callable of the state, got {save_fn!r}.")
    save = (lambda y: y) if save_fn is None else save_fn

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
        ys = jtu.tree_map(lambda x: x[None], save(y0))
        return Solution(ts_arr, ys, {"num_steps": 0}, jnp.array(-1, jnp.int32))

    if stepsize_controller is None:
        ys, finite, num_steps = _solve_fixed(
            system, solver, terms, y0, z0, ts_np, ts_dtype, dt, args, dtype,
            checkpoint_levels, jnp.asarray(t_offset, dtype), save,
        )
        stats = {"num_steps": num_steps}
    else:
        saveat = diffrax.SaveAt(ts=ts_arr, fn=lambda t, z, a: save(system.from_internal(z)))
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
    system, solver, terms, y0, z0, ts_np, ts_dtype, dt, args, dtype, levels, offset, save
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
        m = len(intervals)
        nested = n > 8 if levels is None else levels > 1
        # Few steps per save but many saves (a training rollout): checkpoint groups
        # of whole intervals instead.
        grouped = levels is None and not nested and m > 1 and n * m > 8
        run_step, carry0, merge = step, (z_init, state0), lambda c: c
        if nested or grouped:
            run_step, carry0, merge = _hoist_invariants(step, carry0, t0_, h)
        schedule = _schedule(n, levels, run_step, carry0, t0_, h)

        def interval(carry, t_start):
            carry = _checkpointed_steps(run_step, carry, t_start, h, schedule)
            z = merge(carry)[0]
            return carry, (save(system.from_internal(z)), _all_finite(z))

        if m > 1 and nested:
            # Save-point level of the checkpointing: each interval is recomputed
            # from its starting state rather than storing its inner blocks.
            interval = jax.checkpoint(interval, prevent_cse=False)
        t_starts = jnp.asarray(ts_np[:-1], dtype) + offset
        if grouped:
            group = _interval_group(m, n, run_step, carry0, t0_, h)
            ys, finite = _grouped_scan(interval, carry0, t_starts, group)
        else:
            _, (ys, finite) = jax.lax.scan(interval, carry0, t_starts)
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

            carry = _checkpointed_steps(masked, carry, t_start, h,
                                        [(n_max, _balanced_blocks(n_max, lv))])
            z = carry[0]
            return carry, (save(system.from_internal(z)), _all_finite(z))

        if lv > 1:
            interval = jax.checkpoint(interval, prevent_cse=False)
        xs = (
            jnp.asarray(ts_np[:-1], dtype) + offset,
            jnp.asarray(steps, dtype),
            jnp.asarray(counts),
        )
        _, (ys, finite) = jax.lax.scan(interval, (z0, state0), xs)

    ys = jtu.tree_map(lambda a, b: jnp.concatenate([a[None], b]), save(y0), ys)
    finite = jnp.concatenate([_all_finite(z0)[None], finite])
    return ys, finite, int(counts.sum())
