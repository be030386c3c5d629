"""The Kuramoto task: oscillators on a random hyperbolic graph, renormalized into
clusters whose order parameters follow the Ott–Antonsen network model plus a
learned closure."""

import dataclasses
import math
from pathlib import Path

import diffrax
import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array

import hybrid
import solvers
from hybrid.coarse_graining import Renormalization

from .._config import data_key
from ._network import AbstractGraphTask, GraphConfig, Network, network, validate_graph_config


@dataclasses.dataclass(frozen=True)
class KuramotoConfig(GraphConfig):
    """Kuramoto keys: those of the graph and its renormalization (`avg_degree`,
    `clustering`: `"spectral"` or `"geometric"`, `scales`, the attention `heads`;
    `GraphConfig`), the `coupling` K and the law of the natural `frequencies`
    (`"gaussian"` or `"lorentzian"`)."""

    coupling: float = data_key(3.0)
    frequencies: str = data_key("gaussian")


class NetworkKuramoto(solvers.AbstractSystem):
    r"""`solvers.Kuramoto` on the run's fixed graph, held as a static field so that a
    data set stores only the per-trajectory frequencies (not $E$ edges per
    trajectory) and the graph is a compile-time constant."""

    omega: Array
    coupling: float = eqx.field(static=True)
    network: Network = eqx.field(static=True)

    @property
    def state_shape(self) -> tuple[int, ...]:
        return (self.omega.shape[-1],)

    def system(self) -> solvers.Kuramoto:
        # The graph's column layout is built once per run (a Kuramoto with zero
        # frequencies), not at every trace: at 1M nodes that is seconds each time.
        net = self.network
        template = net.cached(("kuramoto", self.coupling), lambda: solvers.Kuramoto(
            np.zeros(net.graph.n_nodes, np.float32), self.coupling, graph=net.graph))
        return eqx.tree_at(lambda k: k.omega, template, self.omega)

    def vector_field(self, t, theta, args):
        return self.system().vector_field(t, theta, args)


class ClusterModel(solvers.AbstractSystem):
    r"""The coarse physics of the Kuramoto task: the Ott–Antonsen network of the
    clusters (`physics`), plus what the closure conditions on besides it: each
    cluster's share of the influence $\Pi_m$ and its influence-weighted mean
    frequency $\omega^\pi_m$ (see `Renormalization.influence_frequency`). The same
    vector field as `physics`, integrated with `solvers.RalstonRK3` (three closure
    evaluations per step, and straight-line code that differentiates inside the
    ensemble's `shard_map`)."""

    physics: solvers.OttAntonsenNetwork
    influence: Array
    influence_omega: Array

    @property
    def state_shape(self) -> tuple[int, ...]:
        return self.physics.state_shape

    @property
    def omega(self) -> Array:
        return self.physics.omega

    @property
    def width(self) -> Array:
        return self.physics.width

    @property
    def coupling_matrix(self) -> Array:
        return self.physics.coupling_matrix

    @property
    def coupling(self):
        return self.physics.coupling

    def coupling_at(self, t) -> Array:
        return self.physics.coupling_at(t)

    def check_state(self, y, name: str = "y0") -> None:
        self.physics.check_state(y, name)

    def vector_field(self, t, y, args):
        return self.physics.vector_field(t, y, args)

    def default_solver(self) -> diffrax.AbstractSolver:
        return solvers.RalstonRK3()


class KuramotoTask(AbstractGraphTask):
    r"""Kuramoto oscillators on a random hyperbolic graph, coarse-grained to the order
    parameters of `coarse_n` clusters.

    Fine system: `fine_n` oscillators on one random hyperbolic graph per run (seed
    `cfg.seed`, average degree `avg_degree`), coupling $K$ = `coupling`, natural
    frequencies drawn per trajectory from $\mathcal N(0, 1)$ (`frequencies="gaussian"`)
    or the standard Lorentzian. Initial phases per trajectory: a random global phase
    $\psi_0$, a smooth random pattern over the hyperbolic angle $\phi_i$ and
    wrapped-Cauchy scatter $\eta_i$ of random coherence $\rho \sim U(0.4, 0.9)$,
    $\theta_i = \psi_0 + \sum_{k=1,2} a_k \cos(k\phi_i + b_k) + \eta_i$, $a_k \sim
    \mathcal N(0, (\pi/6)^2)$, $b_k \sim U(0, 2\pi)$. (Globally incoherent starts,
    e.g. twisted states, are avoided on purpose: from them the few hubs that set the
    pace, $\pi_i \propto k_i^{3/2}$, also pick the collective phase, which no
    cluster-level state predicts.)

    Coarse system: the graph renormalized into `coarse_n` clusters (`clustering`,
    `scales`, see `hybrid.coarse_graining.renormalize`); the state is the clusters'
    order parameters `[M, 2]`, the physics `solvers.OttAntonsenNetwork` with the
    inter-cluster coupling matrix and per-cluster Lorentzian parameters of the
    trajectory's frequencies (wrapped in a `ClusterModel`). For Gaussian frequencies,
    finite clusters and sparse links this is only approximate (on these graphs a few
    hubs set the collective frequency, $\Omega \approx \sum_i \pi_i \omega_i$); the
    closure (`GraphAttentionClosure`) learns the rest and receives the `ClusterModel`,
    with the clusters' influence-weighted frequencies, as `args`.

    **References:** Ott & Antonsen, Chaos 18 (2008); Krioukov et al., Phys. Rev. E 82
    (2010).
    """

    name = "kuramoto"
    baseline_name = "Ott–Antonsen clusters, no closure"
    config_class = KuramotoConfig
    closures = ("graph-attention",)
    reference_in_frontier = True
    defaults = dict(
        seed=0, fine_n=20000, coarse_n=32, members=4, train_steps=400, horizon=10,
        eval_horizon=100, closure="graph-attention", dt=0.1, save_dt=0.1, fine_dt=0.05,
        t_spinup=0.0, t_train=20.0, n_train=16, n_test=4, avg_degree=10.0, coupling=3.0,
        frequencies="gaussian", clustering="spectral", scales=3, width=32, heads=4, depth=2,
    )

    @classmethod
    def validate(cls, cfg):
        validate_graph_config(cfg)
        if cfg.frequencies not in ("gaussian", "lorentzian"):
            raise ValueError("config key `frequencies` must be 'gaussian' or 'lorentzian', "
                             f"got {cfg.frequencies!r}.")

    def sample(self, key):
        cfg = self.cfg
        net = self.network
        n = cfg.fine_n
        k_freq, k_psi, k_amp, k_shift, k_rho, k_phase = jr.split(key, 6)
        if cfg.frequencies == "gaussian":
            omega = solvers.gaussian_frequencies(k_freq, n)
        else:
            omega = solvers.lorentzian_frequencies(k_freq, n)
        dtype = omega.dtype
        psi0 = jr.uniform(k_psi, (), dtype, 0.0, 2 * math.pi)
        # A smooth phase pattern over the hyperbolic angle (modes 1 and 2), so that
        # clusters start apart, plus wrapped-Cauchy scatter of coherence rho (the
        # Mobius image of uniform phases).
        amp = (math.pi / 6) * jr.normal(k_amp, (2,), dtype)
        shift = jr.uniform(k_shift, (2,), dtype, 0.0, 2 * math.pi)
        rho = jr.uniform(k_rho, (), dtype, 0.4, 0.9)
        u = jr.uniform(k_phase, (n,), dtype, jnp.finfo(dtype).tiny, 1.0)
        s = (1.0 - rho) / (1.0 + rho)
        eta = 2.0 * jnp.arctan(s * jnp.tan(math.pi * (u - 0.5)))
        angle = jnp.asarray(net.coordinates.angle, dtype)
        pattern = amp[0] * jnp.cos(angle + shift[0]) + amp[1] * jnp.cos(2 * angle + shift[1])
        theta0 = psi0 + pattern + eta
        return NetworkKuramoto(omega, float(cfg.coupling), net), theta0

    def _check_n(self, n: int) -> None:
        if n != self.cfg.coarse_n:
            raise ValueError(
                f"the Kuramoto task coarse-grains to its {self.cfg.coarse_n} clusters only, "
                f"got n={n}."
            )

    def coarse_physics(self, fine, n):
        self._check_n(n)
        return self._cluster_model(fine, self.renormalization)

    def _cluster_model(self, fine, r: Renormalization) -> "ClusterModel":
        centre, width = r.frequency_parameters(fine.omega, law=self.cfg.frequencies)
        physics = solvers.OttAntonsenNetwork(centre, width, fine.coupling,
                                             coupling_matrix=r.coupling_matrix)
        return ClusterModel(physics, r.cluster_influence().astype(centre.dtype),
                            r.influence_frequency(fine.omega))

    @property
    def finer_factors(self) -> tuple[int, ...]:
        """2x and 4x more clusters: the Ott–Antonsen model alone on a finer
        renormalization of the same graph (the oscillators themselves are the frontier's
        `fine model` row, `reference_in_frontier`)."""
        return tuple(k for k in (2, 4) if self.cfg.coarse_n * k < self.cfg.fine_n)

    def _finer_renormalization(self, factor: int) -> Renormalization:
        return network(dataclasses.replace(self.cfg, coarse_n=self.cfg.coarse_n * factor)
                       ).renormalization

    def finer(self, fine, factor):
        """The cluster model without closure on `factor` times more clusters (its own
        renormalization of the run's graph), at the same `dt`."""
        if factor not in self.finer_factors:
            return None
        r = self._finer_renormalization(factor)
        return self._cluster_model(fine, r), self.cfg.dt, r.coarse_grain

    def finer_to_coarse(self, ys, factor):
        r"""A finer cluster model's trajectory on this task's clusters: the order
        parameters averaged over the nodes of each cluster,
        $Z_c = \sum_m \frac{|c \cap m|}{|c|} z_m$ (exact for the phases' order
        parameters, `tests/test_kuramoto_hybrid.py`)."""
        r, rf = self.renormalization, self._finer_renormalization(factor)
        overlap = np.zeros((r.n_clusters, rf.n_clusters))
        np.add.at(overlap, (np.asarray(r.labels), np.asarray(rf.labels)), 1.0)
        overlap /= overlap.sum(axis=1, keepdims=True)
        return jnp.einsum("cm,...md->...cd", jnp.asarray(overlap, ys.dtype), ys)

    def make_closure(self, key, **kwargs):
        r = self.renormalization
        kwargs = {"width": self.cfg.width, "depth": self.cfg.depth, "heads": self.cfg.heads,
                  **kwargs}
        return hybrid.closures.make_closure(self.cfg.closure, 0, key=key, sizes=r.sizes,
                                            parents=r.parents, **kwargs)

    def closure_args(self, physics):
        # The closure conditions on the trajectory's cluster model (frequencies, A),
        # preprocessed once per rollout.
        r = self.renormalization
        return hybrid.closures.ClusterContext.build(physics, r.sizes, r.parents)

    def coarse_grain(self, y, n):
        self._check_n(n)
        return self.renormalization.coarse_grain(y).astype(y.dtype)

    def energy(self, y):
        r"""$\tfrac12 \langle |z_m|^2 \rangle_m$ per leading index."""
        return jnp.mean(y**2, axis=(-2, -1))  # (Re^2 + Im^2) / 2, averaged

    def diagnostics(self, physics):
        return hybrid.ClusterDiagnostics()

    @property
    def noise_features(self):
        return hybrid.uq.cluster_modulus

    def figures(self, out: Path, ts, ref, hybrid_mean, base):
        hybrid.viz.clusters_figure(out / "clusters.png", np.asarray(ts), np.asarray(ref),
                                   np.asarray(hybrid_mean), np.asarray(base))
        return {"clusters.png": "cluster order parameters of a held-out trajectory"}
