"""Neural closures: `closure(t, y, args) -> dy` on one unbatched periodic state, added
to a coarse solver's tendency or state by `hybrid.Hybrid`."""

from ._eddy_viscosity import EddyViscosity as EddyViscosity
from ._graph_attention import ClusterContext as ClusterContext
from ._graph_attention import GraphAttentionClosure as GraphAttentionClosure
from ._graph_flux import FluxContext as FluxContext
from ._graph_flux import GraphFluxClosure as GraphFluxClosure
from ._multiscale_attention import MultiscaleAttentionClosure as MultiscaleAttentionClosure
from ._registry import CLOSURES as CLOSURES
from ._registry import make_closure as make_closure
from ._stencil import StencilClosure as StencilClosure
