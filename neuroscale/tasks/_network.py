"""The fixed network of a graph task (Kuramoto, graph Burgers): one random hyperbolic
graph per run and its renormalization into clusters on several scales, built once per
configuration and shared by every task on the same keys."""

import dataclasses
import functools
from typing import Any

import jax
import jax.random as jr

from hybrid.coarse_graining import Renormalization, renormalize
from solvers.graphs import Graph, HyperbolicCoordinates, random_hyperbolic

from .._config import Config, data_key
from .._task import AbstractTask

# fold_in stream of the run's seed for the graph and its renormalization (the data
# splits use 0, 1, 4: neuroscale/_data.py)
NETWORK_STREAM = 10


@dataclasses.dataclass(frozen=True)
class GraphConfig(Config):
    """The keys of a task on the run's random hyperbolic graph: its `avg_degree`, the
    renormalization (`clustering`: `"spectral"` or `"geometric"`; `scales`) and the
    attention `heads` of the cluster closures."""

    avg_degree: float = data_key(10.0)
    clustering: str = data_key("spectral")
    scales: int = data_key(3)
    heads: int = 4


def validate_graph_config(cfg: GraphConfig) -> None:
    """The checks of `GraphConfig`'s keys (`ValueError` naming the key)."""
    if cfg.coarse_n > cfg.fine_n:
        raise ValueError(
            "config key `coarse_n` (clusters) must not exceed `fine_n` (nodes).")
    if not 0 < cfg.avg_degree < cfg.fine_n - 1:
        raise ValueError(
            f"config key `avg_degree` ({cfg.avg_degree}) must be in (0, `fine_n` - 1).")
    if cfg.width % cfg.heads:
        raise ValueError(
            f"config key `heads` ({cfg.heads}) must divide `width` ({cfg.width}).")
    if cfg.clustering not in ("spectral", "geometric"):
        raise ValueError("config key `clustering` must be 'spectral' or 'geometric', "
                         f"got {cfg.clustering!r}.")
    if cfg.scales < 1:
        raise ValueError(f"config key `scales` must be >= 1, got {cfg.scales}.")


class Network:
    """The fixed network of a run: graph, hyperbolic coordinates and renormalization,
    plus whatever a task derives from them once (`cached`).

    A plain object compared by identity: built once per configuration
    (`network(cfg)`, cached), it sits in static fields and jit caches key on it."""

    def __init__(self, graph: Graph, coordinates: HyperbolicCoordinates,
                 renormalization: Renormalization):
        self.graph = graph
        self.coordinates = coordinates
        self.renormalization = renormalization
        self._derived: dict[Any, Any] = {}

    def cached(self, key: Any, build):
        """`build()` the first time `key` is asked for, then the same object: e.g. a
        fine system with its column layout, laid out once per run instead of at every
        trace."""
        if key not in self._derived:
            with jax.ensure_compile_time_eval():
                self._derived[key] = build()
        return self._derived[key]

    def __repr__(self) -> str:
        r = self.renormalization
        return (f"Network(n_nodes={self.graph.n_nodes}, n_edges={self.graph.n_edges}, "
                f"scales={r.scale_sizes})")


def _keys(seed: int):
    key = jr.fold_in(jr.PRNGKey(seed), NETWORK_STREAM)
    return jr.split(key)  # graph, clustering


@functools.lru_cache(maxsize=4)
def _graph(seed: int, fine_n: int, avg_degree: float) -> tuple[Graph, HyperbolicCoordinates]:
    with jax.ensure_compile_time_eval():
        return random_hyperbolic(fine_n, avg_degree=avg_degree, key=_keys(seed)[0],
                                 return_coordinates=True)


@functools.lru_cache(maxsize=4)
def _network(seed: int, fine_n: int, avg_degree: float, coarse_n: int, scales: int,
             clustering: str) -> Network:
    # Host-side work with concrete values, even when first asked for inside a trace.
    graph, coords = _graph(seed, fine_n, avg_degree)
    with jax.ensure_compile_time_eval():
        renorm = renormalize(graph, coarse_n, method=clustering, scales=scales,
                             key=_keys(seed)[1], coordinates=coords)
    return Network(graph, coords, renorm)


def network(cfg: GraphConfig) -> Network:
    """The run's graph and its renormalization, from `cfg.seed` (cached): the same
    object for every task with the same seed, size, degree and clustering."""
    return _network(cfg.seed, cfg.fine_n, float(cfg.avg_degree), cfg.coarse_n, cfg.scales,
                    cfg.clustering)


class AbstractGraphTask(AbstractTask):
    """A task on the run's random hyperbolic graph (`GraphConfig`), coarse-grained to
    its renormalized clusters: cluster states (`ndim` 0), the shared `network` and
    its `renormalization`, no finer plain-solver baselines (no grid to refine)."""

    finer_factors = ()

    @property
    def ndim(self) -> int:
        return 0

    @property
    def network(self) -> Network:
        return network(self.cfg)

    @property
    def renormalization(self) -> Renormalization:
        return self.network.renormalization
