"""`Trajectories`: coarse reference data, the input of training, calibration and
evaluation."""

from typing import Any

import equinox as eqx
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PyTree

import solvers


def _leading(tree: PyTree) -> set[int]:
    return {x.shape[0] for x in jtu.tree_leaves(eqx.filter(tree, eqx.is_array)) if x.ndim}


class Trajectories(eqx.Module):
    r"""Reference trajectories on the coarse grid: `ys[b, k]` is the state of
    trajectory `b` at time `ts[k]`.

    **Arguments:**

    - `ys`: `[B, T, *state]`, e.g. filtered fine simulations (`hybrid.coarse_grain`).
    - `ts`: `[T]` equally spaced, increasing save times (absolute: a time-dependent
      forcing sees them).
    - `args`: optional pytree with leading axis `B`: what physics and closure receive
      as `args` in a rollout of each trajectory (its forcing parameters, frequencies,
      a closure's conditioning, ...).
    - `physics`: optional stack of `B` systems (`eqx.filter_vmap` of a constructor),
      each trajectory's own coarse physics when it differs between trajectories (e.g.
      a random forcing drawn per trajectory); `None` when the physics given to
      `hybrid.fit` / `Ensemble.rollout` serves every trajectory.

    `len(data)` is `B`; `data[i:j]`, `data[[0, 3]]` select trajectories (and their
    `args` and `physics`) and return `Trajectories`.
    """

    ys: Float[Array, "B T ..."]
    ts: Float[Array, " T"]
    args: PyTree | None = None
    physics: solvers.AbstractSystem | None = None

    def __init__(self, ys: ArrayLike, ts: ArrayLike, *, args: PyTree | None = None,
                 physics: solvers.AbstractSystem | None = None):
        ys = jnp.asarray(ys)
        if ys.ndim < 2 or not jnp.issubdtype(ys.dtype, jnp.floating):
            raise ValueError(
                "`ys` must be a floating array [B, T, *state] (trajectories, times, state), "
                f"got shape {ys.shape} and dtype {ys.dtype}."
            )
        ts_np = np.asarray(ts, np.float64)
        if ts_np.shape != (ys.shape[1],):
            raise ValueError(
                f"`ts` must have shape [T] = [{ys.shape[1]}] (axis 1 of `ys`), got "
                f"{ts_np.shape}."
            )
        if ts_np.size > 1:
            gaps = np.diff(ts_np)
            # float32 times carry a rounding error of about 1e-7 |t| each
            atol = 1e-6 * float(np.max(np.abs(ts_np)))
            if not (np.all(gaps > 0) and np.allclose(gaps, gaps[0], rtol=1e-5, atol=atol)):
                raise ValueError("`ts` must be equally spaced and increasing.")
        n = ys.shape[0]
        for name, tree in (("args", args), ("physics", physics)):
            sizes = _leading(tree)
            if sizes and sizes != {n}:
                raise ValueError(
                    f"`{name}` must hold one entry per trajectory: every array with a "
                    f"leading axis of B = {n}, got leading sizes {sorted(sizes)}."
                )
        if physics is not None and not isinstance(physics, solvers.AbstractSystem):
            raise ValueError(
                f"`physics` must be a stack of solvers.AbstractSystem, got "
                f"{type(physics).__name__}."
            )
        self.ys = ys
        self.ts = jnp.asarray(ts_np, ys.dtype)
        self.args = args
        self.physics = physics

    def __len__(self) -> int:
        return int(self.ys.shape[0])

    def __getitem__(self, index: Any) -> "Trajectories":
        if isinstance(index, (int, np.integer)):
            index = slice(int(index), int(index) + 1 if index != -1 else None)
        elif isinstance(index, (list, tuple)):
            index = np.asarray(index)

        def take(x):
            return x[index] if eqx.is_array(x) and x.ndim else x

        return Trajectories(self.ys[index], self.ts, args=jtu.tree_map(take, self.args),
                            physics=jtu.tree_map(take, self.physics))

    @property
    def state_shape(self) -> tuple[int, ...]:
        return tuple(self.ys.shape[2:])

    @property
    def save_dt(self) -> float:
        """The spacing of `ts`."""
        ts = np.asarray(self.ts, np.float64)
        if ts.size < 2:
            raise ValueError("one save time has no spacing.")
        return float((ts[-1] - ts[0]) / (ts.size - 1))

    def physics_of(self, b: int) -> solvers.AbstractSystem | None:
        """Trajectory `b`'s own physics, or `None` without per-trajectory physics."""
        if self.physics is None:
            return None
        return jtu.tree_map(lambda x: x[b] if eqx.is_array(x) and x.ndim else x,
                            self.physics)

    def __repr__(self) -> str:
        extra = "".join(
            f", {name}=..." for name in ("args", "physics") if getattr(self, name) is not None
        )
        return (f"Trajectories({len(self)} trajectories x {self.ys.shape[1]} saves of state "
                f"{self.state_shape}{extra})")
