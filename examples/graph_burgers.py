"""Burgers on a random hyperbolic graph: a conservative closure for the same dynamics
on the renormalized cluster graph, trained end to end through rollouts of it.

    python examples/graph_burgers.py [--out DIR] [--quick] [--set KEY=VALUE ...]

Fine data: a scalar field on `fine_n` nodes of one random hyperbolic graph (average
degree `avg_degree`, `solvers.graphs.random_hyperbolic`), transported along the edges
(oriented by the hyperbolic angle, the flow made divergence free) and diffused
(`solvers.GraphBurgers`, viscosity `viscosity`, graph spacing `spacing`), from
random fields smooth in the angle, optionally with a random steady `forcing`. Coarse
model: the means of `coarse_n` renormalized clusters, with the same dynamics on the
cluster graph (cut weights between the clusters, the clusters' mean angles; per unit
cluster size, so the total stays conserved) plus a learned closure of antisymmetric
fluxes between linked clusters (`hybrid.closures.GraphFluxClosure`: attention over
the clusters and their coarser scales), an ensemble of `members` trained through
`horizon`-step rollouts. Evaluation on held-out trajectories (new initial fields on
the same graph): RMSE and decorrelation time of the cluster means for the hybrid and
for the coarse physics alone, ensemble scores, long rollouts (`hybrid.stability`).
Writes `DIR/metrics.json`, `DIR/report.md` and figures, and prints the key numbers.

The defaults below are sized for a laptop CPU (a few minutes on 2 cores);
`--quick` is a smoke test whose numbers mean little.

**Scale up** with configuration keys (`--set KEY=VALUE`, or the same keys in
`neuroscale train graph-burgers --config FILE.toml`): `fine_n=20000` (nodes; 1e6 in
`benchmarks/graph_burgers_1m.toml`, measured in `benchmarks/README.md`), `coarse_n=32`
(clusters), `scales=3`, `n_train=16`, `train_steps=400`, `horizon=10`, `members=4`,
`width=32 heads=4 depth=2` (closure), `eval_horizon=100`. Those are the library
defaults (`neuroscale train graph-burgers`).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import run_example  # noqa: E402

# Small CPU defaults: every key is a configuration key of `neuroscale train graph-burgers`.
SMALL = dict(fine_n=3000, coarse_n=16, avg_degree=8.0, spacing=0.25, fine_dt=0.02,
             n_train=8, n_test=4, n_val=2, t_train=10.0, train_steps=150, horizon=10,
             members=2, width=16, heads=2, depth=2, batch_size=4, eval_horizon=100,
             stability_factor=100, checkpoint_every=50)
QUICK = dict(SMALL, fine_n=400, coarse_n=8, clustering="geometric", n_train=2, n_test=2,
             t_train=2.0, train_steps=6, horizon=2, width=8, depth=1, eval_horizon=5,
             stability_factor=5, checkpoint_every=3)


def main(argv: list[str] | None = None) -> dict:
    return run_example("graph-burgers", __doc__, SMALL, QUICK, argv)


if __name__ == "__main__":
    main()
