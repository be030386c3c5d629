"""The fixed network of a graph task (Kuramoto, graph Burgers): one random hyperbolic
graph per run and its renormalization into clusters on several scales, built once per
configuration and shared by every task on the same keys."""

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from hybrid.coarse_graining import Renormalization, renormalize
from solvers.graphs import Graph, HyperbolicCoordinates, random_hyperbolic

from .._config import Config, data_key
from .._store import keep, stored
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
                 renormalization: Renormalization, key: tuple):
        # what it was built from: (seed, fine_n, avg_degree, coarse_n, scales,
        # clustering, default float dtype)
        self.key = key
        self.graph = graph
        self.coordinates = coordinates
        self.renormalization = renormalization
        self._derived: dict[Any, Any] = {}

    @property
    def graph_key(self) -> tuple:
        """What the graph alone depends on: (seed, fine_n, avg_degree, dtype)."""
        return (*self.key[:3], self.key[-1])

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


def _arrays(r: Renormalization) -> dict[str, np.ndarray]:
    return {"labels": np.asarray(r.labels), "sizes": np.asarray(r.sizes),
            "coupling_matrix": np.asarray(r.coupling_matrix),
            "influence": np.asarray(r.influence),
            **{f"parents_{i}": np.asarray(p, np.int64) for i, p in enumerate(r.parents)}}


@functools.lru_cache(maxsize=4)
def _network(seed: int, fine_n: int, avg_degree: float, coarse_n: int, scales: int,
             clustering: str, dtype: str) -> Network:
    # Host-side work with concrete values, even when first asked for inside a trace.
    # `dtype`: the default float (x64 or not), which the renormalization's arrays take.
    graph, coords = _graph(seed, fine_n, avg_degree)

    def build() -> dict[str, np.ndarray]:
        with jax.ensure_compile_time_eval():
            r = renormalize(graph, coarse_n, method=clustering, scales=scales,
                            key=_keys(seed)[1], coordinates=coords)
        return _arrays(r)

    # kept with the run (`DIR/data/derived`): minutes at a million nodes, and the
    # evaluation must group the nodes as the data were grouped
    key = (seed, fine_n, avg_degree, coarse_n, scales, clustering, dtype)
    a = stored("renormalization", key, build)
    with jax.ensure_compile_time_eval():
        renorm = Renormalization(
            labels=jnp.asarray(a["labels"]), sizes=jnp.asarray(a["sizes"]),
            coupling_matrix=jnp.asarray(a["coupling_matrix"]),
            influence=jnp.asarray(a["influence"]),
            parents=tuple(tuple(int(p) for p in a[f"parents_{i}"])
                          for i in range(scales - 1) if f"parents_{i}" in a))
    return Network(graph, coords, renorm, key=key)


def network(cfg: GraphConfig) -> Network:
    """The run's graph and its renormalization, from `cfg.seed` (cached): the same
    object for every task with the same seed, size, degree and clustering; its
    renormalization kept with the run that asks for it (`neuroscale.stored`)."""
    key = (cfg.seed, cfg.fine_n, float(cfg.avg_degree), cfg.coarse_n, cfg.scales,
           cfg.clustering, str(jax.dtypes.canonicalize_dtype(np.float64)))
    net = _network(*key)
    keep("renormalization", key, lambda: _arrays(net.renormalization))
    return net


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
