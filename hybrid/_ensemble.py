"""`Ensemble`: M closures (or hybrid models) on one leading axis, one vmapped solve."""

from collections.abc import Callable, Sequence
from typing import Any, Literal

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
from jaxtyping import Array, ArrayLike, PRNGKeyArray, PyTree

import solvers

from ._hybrid import Hybrid


class Ensemble(eqx.Module):
    r"""A stack of `M` closures or hybrid models with one leading member axis.

    Every array leaf of `members` carries the member axis first, so the whole
    ensemble is one pytree: trained by one vmapped, jit-compiled program and rolled
    out by one vmapped solve, with trajectories of shape `[M, T, *state]`.

    **Arguments:**

    - `members`: the stacked members (see `Ensemble.init` / `Ensemble.stack`): either
      `hybrid.Hybrid` models, or bare closures together with `physics`.
    - `physics`: the (unstacked) known physics shared by every member, when the
      members are closures; `None` when they are full systems.
    - `mode`: `Hybrid` mode for closure members.
    """

    members: PyTree
    physics: solvers.AbstractSystem | None = None
    mode: Literal["tendency", "correction"] = eqx.field(static=True, default="tendency")

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
        if not isinstance(size, int) or size < 1:
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

    @property
    def size(self) -> int:
        leaves = jtu.tree_leaves(eqx.filter(self.members, eqx.is_array))
        return int(leaves[0].shape[0])

    def member(self, i: int) -> Any:
        """Member `i` as a system (a `Hybrid` for closure members)."""
        params, static = eqx.partition(self.members, eqx.is_array)
        one = eqx.combine(jtu.tree_map(lambda x: x[i], params), static)
        return self._system(one)

    def _system(self, member) -> solvers.AbstractSystem:
        if self.physics is None:
            return member
        return Hybrid(self.physics, member, mode=self.mode)

    def solve(
        self,
        y0: PyTree[Array],
        ts: ArrayLike,
        *,
        dt: float,
        physics: solvers.AbstractSystem | None = None,
        **kwargs,
    ) -> solvers.Solution:
        """All members from the same `y0`, one vmapped `solvers.solve`.

        `physics` overrides the stored physics (e.g. the coarse solver with another
        trajectory's forcing). A `key` (for systems with noise) is split into one key
        per member, so that members follow independent noise paths. **Returns:** a
        `Solution` with `ys` `[M, T, *state]` and `blowup_index` `[M]`.
        """
        phys = self.physics if physics is None else physics
        ens = Ensemble(self.members, phys, self.mode)
        key = kwargs.pop("key", None)
        # a noisy system needs one Brownian path per member, not one shared by all
        keys = None if key is None else jr.split(key, self.size)

        def one(member, k):
            return solvers.solve(ens._system(member), y0, ts, dt=dt, key=k, **kwargs)

        sol = eqx.filter_vmap(one)(self.members, keys)
        return solvers.Solution(sol.ts[0], sol.ys, sol.stats, sol.blowup_index)

    def __call__(self, t, y, args) -> Array:
        """The members' closures at one state: `[M, *state]` (closure members only)."""
        if self.physics is not None:
            return eqx.filter_vmap(lambda m: m(t, y, args))(self.members)
        return eqx.filter_vmap(lambda m: m.vector_field(t, y, args))(self.members)


def member_mean(x: Array) -> Array:
    """Ensemble mean over the leading member axis."""
    return jnp.mean(x, axis=0)


