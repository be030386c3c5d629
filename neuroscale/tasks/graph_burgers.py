"""The graph Burgers task: a scalar field transported and diffused on a random
hyperbolic graph (`solvers.GraphBurgers`), coarse-grained to the means of its
renormalized clusters, whose coarse physics is the same dynamics on the cluster graph
plus a learned conservative closure."""

import dataclasses
import functools

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array

import hybrid
import solvers
from solvers.graphs import Graph

from .._config import data_key
from .._store import keep, stored
from ._network import AbstractGraphTask, GraphConfig, Network, validate_graph_config

# Angular modes of the random initial fields and forcings, k = 1 .. _MODES.
_MODES = 3


@dataclasses.dataclass(frozen=True)
class GraphBurgersConfig(GraphConfig):
    r"""Graph Burgers keys: those of the graph and its renormalization (`avg_degree`,
    `clustering`, `scales`, the attention `heads`; `GraphConfig`), the `viscosity`
    $\nu$, the graph `spacing` $h$ (transport scales as $1/h$, diffusion as
    $1/h^2$), the amplitude of the random value added on each cluster of the initial
    fields (`patches`) and that of the random steady `forcing` (0: none);
    `energy_limiter` (default true): the coarse physics bounds the closure so that
    the unforced hybrid cannot create energy (`ClusterBurgers.limit_closure`)."""

    viscosity: float = data_key(0.05)
    # 0.25: the cluster means of the default 20k-node graph move by 10% of their rms
    # over 10 time units (6% at spacing 1, where the cluster model alone is near exact)
    spacing: float = data_key(0.25)
    patches: float = data_key(0.5)
    forcing: float = data_key(0.0)
    energy_limiter: bool = True


def _symmetric_weights(graph: Graph) -> Graph:
    """The run's graph with symmetric weights $w_{ij} = 1/\\max(k_i, k_j)$: every row
    sums to at most 1 (no stiffness at the hubs, whose degree reaches ~10^4 at 1M
    nodes), and symmetric weights conserve $\\sum_i u_i$."""
    s = np.asarray(graph.senders, np.int64)
    r = np.asarray(graph.receivers, np.int64)
    degree = np.bincount(r, minlength=graph.n_nodes).astype(np.float64)
    w = 1.0 / np.maximum(degree[s], degree[r])
    return Graph(graph.senders, graph.receivers, w, n_nodes=graph.n_nodes)


class _Coarse:
    r"""What the coarse model of a run needs, derived once from the network: the
    cluster graph (cut weights $C_{mn} = \sum_{i \in m, j \in n} w_{ij}$, both
    directions), its `GraphBurgers` on the clusters' circular-mean angles with the
    weights per unit mean cluster size $C_{mn} / \bar s$, the clusters' volumes
    $|m| / \bar s$, and the cluster means of the forcing modes."""

    def __init__(self, net: Network, fine_graph: Graph, viscosity: float, spacing: float):
        r = net.renormalization
        labels = np.asarray(r.labels, np.int64)
        m = r.n_clusters
        sizes = np.asarray(r.sizes, np.float64)
        s_f = labels[np.asarray(fine_graph.senders, np.int64)]
        r_f = labels[np.asarray(fine_graph.receivers, np.int64)]
        cut = np.bincount(r_f * m + s_f, weights=np.asarray(fine_graph.weights, np.float64),
                          minlength=m * m).reshape(m, m)
        np.fill_diagonal(cut, 0.0)
        cut = 0.5 * (cut + cut.T)
        receivers, senders = np.nonzero(cut)
        self.senders, self.receivers = senders, receivers
        self.cut = cut[receivers, senders]
        self.mean_size = float(sizes.mean())
        phi = np.asarray(net.coordinates.angle, np.float64)
        z = np.bincount(labels, np.cos(phi), m) + 1j * np.bincount(labels, np.sin(phi), m)
        self.angles = np.mod(np.angle(z), 2 * np.pi)
        graph = Graph(senders, receivers, self.cut / self.mean_size, n_nodes=m)
        self.burgers = solvers.GraphBurgers(graph, viscosity, coordinates=self.angles,
                                            spacing=spacing)
        self.volume = sizes / sizes.mean()
        self.basis = _basis(phi, labels, sizes)


def _basis(phi: np.ndarray, labels: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """`[M, 2 K]`: the cluster means of $\\cos k\\phi_i$, $\\sin k\\phi_i$."""
    cols = []
    for k in range(1, _MODES + 1):
        cols += [np.cos(k * phi), np.sin(k * phi)]
    return np.stack([np.bincount(labels, c, sizes.shape[0]) / sizes for c in cols], axis=-1)


def _modes(phi: Array, coefficients: Array) -> Array:
    r"""$\sum_k a_k \cos k\phi + b_k \sin k\phi$ with `coefficients` $(a_1, b_1, a_2,
    \dots)$."""
    out = jnp.zeros_like(phi)
    for k in range(1, _MODES + 1):
        a, b = coefficients[2 * k - 2], coefficients[2 * k - 1]
        out = out + a * jnp.cos(k * phi) + b * jnp.sin(k * phi)
    return out


class NetworkGraphBurgers(solvers.AbstractSystem):
    r"""`solvers.GraphBurgers` on the run's fixed graph (symmetric weights
    $1/\max(k_i, k_j)$, edges oriented by the hyperbolic angles), built once per run
    and held through the static `network`, plus a steady forcing
    $f_i = \sum_k a_k \cos k\phi_i + b_k \sin k\phi_i$ with per-trajectory
    `coefficients` (a data set stores only those, not the graph)."""

    coefficients: Array
    viscosity: float = eqx.field(static=True)
    spacing: float = eqx.field(static=True)
    network: Network = eqx.field(static=True)

    @property
    def state_shape(self) -> tuple[int, ...]:
        return (self.network.graph.n_nodes,)

    def system(self) -> solvers.GraphBurgers:
        net = self.network
        # The transport flow depends on the graph alone (not on viscosity or spacing):
        # its Laplacian solve is most of the construction (minutes at 1M nodes), so it
        # is kept with the run (`neuroscale.stored`) and read back by `evaluate`.
        key = net.graph_key

        def build() -> solvers.GraphBurgers:
            make = functools.partial(solvers.GraphBurgers, _symmetric_weights(net.graph),
                                     self.viscosity, coordinates=net.coordinates,
                                     spacing=self.spacing)
            built = None  # the system, when the flow had to be computed: built once

            def compute():
                nonlocal built
                built = make()
                return {"flow": np.asarray(built.flow)}

            flow = stored("graph-burgers-flow", key, compute)["flow"]
            return make(flow=flow) if built is None else built

        system = net.cached(("graph-burgers", self.viscosity, self.spacing), build)
        keep("graph-burgers-flow", key, lambda: {"flow": np.asarray(system.flow)})
        return system

    def vector_field(self, t, u, args):
        base = self.system()
        du = base.vector_field(t, u, None)
        phi = base.coordinates.astype(u.dtype)
        return du + _modes(phi, self.coefficients.astype(u.dtype))

    def default_solver(self) -> diffrax.AbstractSolver:
        return self.system().default_solver()


class ClusterBurgers(solvers.AbstractSystem):
    r"""The coarse physics of the graph Burgers task: `solvers.GraphBurgers` on the
    renormalized cluster graph (cut weights $C_{mn} = \sum_{i \in m, j \in n} w_{ij}$
    per unit mean cluster size $\bar s$, edges oriented by the clusters'
    circular-mean angles), per unit cluster volume, plus the exact cluster mean of the
    trajectory's forcing:

    $\dot{\bar u}_m = \frac{\bar s}{|m|}\,\mathrm{GB}_C(\bar u)_m + \bar f_m$.

    Dividing by the volume makes it a finite-volume scheme on the clusters: it
    conserves the true total $\sum_m |m| \bar u_m = \sum_i u_i$ (up to the forcing),
    as the fine dynamics does."""

    forcing: Array
    viscosity: float = eqx.field(static=True)
    spacing: float = eqx.field(static=True)
    network: Network = eqx.field(static=True)
    energy_limiter: bool = eqx.field(static=True, default=True)

    @property
    def coarse(self) -> _Coarse:
        net = self.network
        return net.cached(("graph-burgers-coarse", self.viscosity, self.spacing),
                          lambda: _Coarse(net, _symmetric_weights(net.graph), self.viscosity,
                                          self.spacing))

    @property
    def state_shape(self) -> tuple[int, ...]:
        return (self.network.renormalization.n_clusters,)

    def vector_field(self, t, y, args):
        c = self.coarse
        du = c.burgers.vector_field(t, y, None) / jnp.asarray(c.volume, y.dtype)
        return du + self.forcing.astype(y.dtype)

    def default_solver(self) -> diffrax.AbstractSolver:
        return solvers.SSPRK3()

    def limit_closure(self, t, y, closure_tendency, args):
        r"""With `energy_limiter`: a closure may not make the hybrid create energy.
        Its tendency $c$ is scaled by

        $s = \min\Big(1, \frac{\max(-P_\text{phys}, 0)}{P_c}\Big)$ when $P_c > 0$,
        else 1,

        with $P_c = \sum_m \frac{|m|}{\bar s} \bar u'_m c_m$ and $P_\text{phys}$ the
        same rate of this physics without its forcing ($\bar u'$: $\bar u$ minus its
        size-weighted mean), so that the unforced hybrid's energy $\sum_m
        \frac{|m|}{\bar s} \bar u_m^2$ never grows, $P_\text{phys} + s P_c \le 0$,
        and the forced one gains at most what the forcing puts in.

        Why this bound and not a closure that only dissipates: on the reference data
        the true closure term *adds* energy almost all the time (the cluster model's
        upwinding is too dissipative: at 3,000 nodes and 16 clusters the true rate is
        71-88% of the physics' and never positive), while the fine dynamics, hence
        every true cluster-mean trajectory measured, loses energy. The bound lets the
        closure give back up to all of the physics' dissipation and no more. A
        trained closure is left alone on states like the data; the bound acts where
        a rollout leaves them, which is where long rollouts blew up (graph Burgers at
        1M nodes, 2 of 16 rollouts at step 145, without it). Scaling by $s \in [0,
        1]$ keeps the closure conservative (its fluxes stay antisymmetric) and never
        stiffens the step. It applies to whatever the closure is (an ensemble
        member, a randomized prior's sum, MC dropout). The physics is energy stable
        on its own: Engquist–Osher is an E-flux and the cluster flow is divergence
        free, so $P_\text{phys} \le 0$."""
        if not self.energy_limiter:
            return closure_tendency
        c = self.coarse
        dy = closure_tendency
        volume = jnp.asarray(c.volume, y.dtype)
        physics = c.burgers.vector_field(t, y, None) / volume
        dev = y - jnp.sum(volume * y) / jnp.sum(volume)
        p_closure = jnp.sum(volume * dev * dy)
        room = jnp.maximum(-jnp.sum(volume * dev * physics), 0.0)
        over = p_closure > room
        s = jnp.where(over, room / jnp.where(over, p_closure, 1.0), 1.0)
        # the bound as a fixed factor in backpropagation: through it, the gradient of
        # a saturated closure would not see the closure's size
        return jax.lax.stop_gradient(s) * dy


class GraphBurgersTask(AbstractGraphTask):
    r"""Burgers dynamics on a random hyperbolic graph, coarse-grained to the means of
    `coarse_n` renormalized clusters.

    Fine system: `solvers.GraphBurgers` on one random hyperbolic graph per run (seed
    `cfg.seed`, `fine_n` nodes, average degree `avg_degree`; the same graph and
    renormalization as the Kuramoto task for the same keys), with symmetric weights
    $w_{ij} = 1/\max(k_i, k_j)$, edges oriented by the hyperbolic angle and the flow
    made divergence free, viscosity `viscosity`, Engquist–Osher flux, `SSPRK3`.
    Initial fields per trajectory: smooth over the hyperbolic angle plus a random
    value on each renormalized cluster, $u_i = c_0 + \sum_{k=1}^{3} (c_k \cos k\phi_i
    + d_k \sin k\phi_i) + p_{m(i)}$, $c_0 \sim \mathcal N(0, 0.3^2)$, $c_k, d_k \sim
    \mathcal N(0, (0.8/k)^2)$, $p_m \sim \mathcal N(0, \text{patches}^2)$; with
    `forcing` $> 0$ a steady forcing of the smooth form, amplitudes `forcing`$/k$.
    (The patches put jumps at the clusters' cuts: with smooth fields alone the cluster
    means of a large graph barely move in the simulated time, since neighbours differ
    by little along the edges; at 100k nodes, 32 clusters and `spacing=0.25` the rms
    change of the means over 10 time units is 0.3% of the field without patches,
    1.2% with `patches=0.5`.)

    Coarse system: the size-weighted cluster means $\bar u_m$ (`[M]`); physics
    `ClusterBurgers` (the same dynamics on the renormalized cluster graph, per unit
    cluster volume, exactly conservative); closure `GraphFluxClosure` (learned
    antisymmetric fluxes on the cluster graph's links from attention over the
    clusters and their coarser scales: the total stays conserved).
    """

    name = "graph-burgers"
    baseline_name = "cluster model (the same dynamics on the clusters), no closure"
    config_class = GraphBurgersConfig
    closures = ("graph-flux",)
    defaults = dict(
        seed=0, fine_n=20000, coarse_n=32, members=4, train_steps=400, horizon=10,
        eval_horizon=100, closure="graph-flux", dt=0.1, save_dt=0.1, fine_dt=0.05,
        t_spinup=0.0, t_train=10.0, n_train=16, n_val=4, n_test=4, avg_degree=10.0,
        clustering="spectral", scales=3, width=32, heads=4, depth=2, viscosity=0.05,
        forcing=0.0,
    )

    @classmethod
    def validate(cls, cfg):
        validate_graph_config(cfg)
        if not cfg.viscosity > 0:
            raise ValueError(f"config key `viscosity` must be > 0, got {cfg.viscosity!r}.")
        if not cfg.spacing > 0:
            raise ValueError(f"config key `spacing` must be > 0, got {cfg.spacing!r}.")
        if not cfg.patches >= 0:
            raise ValueError(f"config key `patches` must be >= 0, got {cfg.patches!r}.")
        if not cfg.forcing >= 0:
            raise ValueError(f"config key `forcing` must be >= 0, got {cfg.forcing!r}.")

    def sample(self, key):
        cfg = self.cfg
        net = self.network
        k_mean, k_modes, k_force, k_patch = jr.split(key, 4)
        dtype = jnp.zeros(()).dtype
        scale = jnp.repeat(1.0 / jnp.arange(1, _MODES + 1, dtype=dtype), 2)
        modes = 0.8 * scale * jr.normal(k_modes, (2 * _MODES,), dtype)
        forcing = cfg.forcing * scale * jr.normal(k_force, (2 * _MODES,), dtype)
        angle = jnp.asarray(net.coordinates.angle, dtype)
        r = net.renormalization
        patches = cfg.patches * jr.normal(k_patch, (r.n_clusters,), dtype)
        u0 = 0.3 * jr.normal(k_mean, (), dtype) + _modes(angle, modes) + patches[r.labels]
        return NetworkGraphBurgers(forcing, float(cfg.viscosity), float(cfg.spacing), net), u0

    def _check_n(self, n: int) -> None:
        if n != self.cfg.coarse_n:
            raise ValueError(
                f"the graph Burgers task coarse-grains to its {self.cfg.coarse_n} clusters "
                f"only, got n={n}.")

    def coarse_physics(self, fine, n):
        self._check_n(n)
        physics = ClusterBurgers(jnp.zeros(n), float(self.cfg.viscosity),
                                 float(self.cfg.spacing), self.network,
                                 bool(self.cfg.energy_limiter))
        forcing = jnp.asarray(physics.coarse.basis, fine.coefficients.dtype) @ fine.coefficients
        return eqx.tree_at(lambda p: p.forcing, physics, forcing)

    def make_closure(self, key, **kwargs):
        r = self.renormalization
        kwargs = {"width": self.cfg.width, "depth": self.cfg.depth, "heads": self.cfg.heads,
                  **kwargs}
        return hybrid.closures.make_closure(self.cfg.closure, 0, key=key,
                                            n_clusters=r.n_clusters, parents=r.parents,
                                            **kwargs)

    def closure_args(self, physics):
        c = physics.coarse
        r = self.renormalization
        # The raw cut weights and the coarse flow in the same units (FluxContext
        # divides both by the mean cluster size).
        return hybrid.closures.FluxContext.build(
            r.sizes, c.senders, c.receivers, c.cut, np.asarray(c.burgers.flow) * c.mean_size,
            parents=r.parents, forcing=physics.forcing)

    def coarse_grain(self, y, n):
        r"""Size-weighted cluster means $\bar u_m = \frac{1}{|m|}\sum_{i \in m} u_i$:
        `[..., N] -> [..., M]`."""
        self._check_n(n)
        r = self.renormalization
        y = jnp.asarray(y)
        lead = y.shape[:-1]
        flat = jnp.moveaxis(y.reshape(-1, y.shape[-1]), -1, 0)  # [N, B]
        sums = jax.ops.segment_sum(flat, r.labels, num_segments=r.n_clusters)
        means = sums / r.sizes.astype(y.dtype)[:, None]
        return jnp.moveaxis(means, 0, -1).reshape(*lead, r.n_clusters).astype(y.dtype)

    def _weights(self, dtype) -> Array:
        sizes = self.renormalization.sizes.astype(dtype)
        return sizes / jnp.sum(sizes)

    def energy(self, y):
        r"""$\tfrac12 \sum_m \frac{|m|}{N} \bar u_m^2$ per leading index."""
        return 0.5 * jnp.sum(self._weights(y.dtype) * y**2, axis=-1)

    def figures(self, out, ts, ref, hybrid_mean, base):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        ts, ref = np.asarray(ts), np.asarray(ref)
        order = np.argsort(np.asarray(self.network_angles()))
        fig, axes = plt.subplots(1, 3, figsize=(11, 3.2), sharey=True)
        lim = float(np.max(np.abs(ref))) or 1.0
        for ax, data, title in zip(axes, (ref, np.asarray(hybrid_mean), np.asarray(base)),
                                   ("reference", "hybrid (mean)", "coarse physics"),
                                   strict=True):
            im = ax.imshow(data[:, order].T, aspect="auto", origin="lower", cmap="RdBu_r",
                           vmin=-lim, vmax=lim, extent=(ts[0], ts[-1], -0.5, len(order) - 0.5))
            ax.set_title(title)
            ax.set_xlabel("t")
        axes[0].set_ylabel("cluster (by angle)")
        fig.colorbar(im, ax=axes, shrink=0.8)
        fig.savefig(out / "clusters.png", dpi=110)
        plt.close(fig)
        return {"clusters.png": "cluster means of a held-out trajectory, clusters ordered "
                                "by their mean hyperbolic angle"}

    def network_angles(self) -> np.ndarray:
        """The clusters' circular-mean hyperbolic angles."""
        physics = ClusterBurgers(jnp.zeros(self.cfg.coarse_n), float(self.cfg.viscosity),
                                 float(self.cfg.spacing), self.network)
        return physics.coarse.angles


