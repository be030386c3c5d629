"""Closures by name, for configuration files and the command line."""

import functools
from collections.abc import Callable
from typing import Any

from jaxtyping import PRNGKeyArray

from ._eddy_viscosity import EddyViscosity
from ._graph_attention import GraphAttentionClosure
from ._graph_flux import GraphFluxClosure
from ._multiscale_attention import MultiscaleAttentionClosure
from ._stencil import StencilClosure

# name -> constructor `(ndim, *, key, **kwargs) -> closure`. Add an architecture by
# adding an entry here (e.g. the graph attention of the Kuramoto clusters).
CLOSURES: dict[str, Callable[..., Any]] = {
    "stencil": StencilClosure,
    "attention": MultiscaleAttentionClosure,
    "graph-attention": GraphAttentionClosure,
    "graph-flux": GraphFluxClosure,
    "smagorinsky": functools.partial(EddyViscosity, kind="smagorinsky"),
    "leith": functools.partial(EddyViscosity, kind="leith"),
}


def make_closure(name: str, ndim: int, *, key: PRNGKeyArray, **kwargs: Any) -> Any:
    """A freshly initialised closure of architecture `name`.

    **Arguments:**

    - `name`: a key of `CLOSURES`: `"stencil"` (`StencilClosure`), `"attention"`
      (`MultiscaleAttentionClosure`), `"graph-attention"` (`GraphAttentionClosure`),
      `"graph-flux"` (`GraphFluxClosure`), or the classical `"smagorinsky"` /
      `"leith"` (`EddyViscosity`).
    - `ndim`: spatial dimensions of the state (1 or 2 for the grid closures, 0 for the
      cluster states of `"graph-attention"`, which also needs `sizes` and `parents`,
      and of `"graph-flux"`, which needs `n_clusters` and `parents`).
    - `key`: a `jax.random` key for the initial weights.
    - `**kwargs`: passed on to the constructor (`width`, `depth`, ...).

    **Returns:** the closure, an `eqx.Module` called as `closure(t, y, args) -> dy`.
    """
    try:
        constructor = CLOSURES[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"`closure` must be one of {tuple(CLOSURES)}, got {name!r}."
        ) from None
    return constructor(ndim, key=key, **kwargs)
