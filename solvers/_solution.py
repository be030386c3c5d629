"""The result of `solvers.solve`."""

from typing import Any

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PyTree


class Solution(eqx.Module):
    """A rollout saved at the requested times.

    **Fields:**

    - `ts`: `Float[Array, "T"]`, the save times.
    - `ys`: `[T, *state]`, the physical states at `ts`.
    - `stats`: `{"num_steps": int}` and what the integrator reports.
    - `blowup_index`: index into `ts` of the first saved state with a NaN or Inf,
      or `-1` when the whole rollout is finite.

    A rollout that blows up is never silently returned as a normal result: `solve`
    raises unless called with `throw=False`, and then `blowup_index` says where.
    """

    ts: Float[Array, " T"]
    ys: PyTree[Array]
    stats: dict[str, Any]
    blowup_index: Int[Array, ""]

    @property
    def finite(self) -> Bool[Array, ""]:
        """Whether every saved state is finite."""
        return self.blowup_index < 0

    @property
    def blowup_time(self) -> Float[Array, ""]:
        """The first save time with a non-finite state, or NaN when there is none."""
        index = jnp.maximum(self.blowup_index, 0)
        return jnp.where(self.finite, jnp.nan, self.ts[index])
