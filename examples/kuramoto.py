"""Kuramoto on a random hyperbolic graph: a closure for the renormalized cluster
model, trained end to end through rollouts of it.

    python examples/kuramoto.py [--out DIR] [--quick] [--set KEY=VALUE ...]

Fine data: `fine_n` phase oscillators on one random hyperbolic graph (average degree
`avg_degree`, `solvers.graphs.random_hyperbolic`), coupling `coupling`, Gaussian
natural frequencies. Coarse model: the graph renormalized into `coarse_n` clusters
whose complex order parameters follow the Ott–Antonsen network equations
(`solvers.OttAntonsenNetwork`, exact for Lorentzian all-to-all populations, only
approximate here), plus a learned graph-attention closure across the clusters and
their coarser scales; an ensemble of `members` trained through `horizon`-step
rollouts of the cluster model. Evaluation on held-out trajectories (new frequencies
and initial phases on the same graph): RMSE and decorrelation time of the cluster
order parameters for the hybrid and for Ott–Antonsen alone, ensemble scores, and
long rollouts (`hybrid.stability`, which for cluster states compares the order
parameter moduli $|z_m|$ instead of a spectrum). Writes `DIR/metrics.json`,
`DIR/report.md` and figures, and prints the key numbers.

The defaults below are sized for a laptop CPU (a few minutes on 2 cores);
`--quick` is a smoke test whose numbers mean little.

**Scale up** with configuration keys (`--set KEY=VALUE`, or the same keys in
`neuroscale train kuramoto --config FILE.toml`): `fine_n=20000` (oscillators; the
graph is built in about O(N log N), 1e6 is practical on a GPU), `coarse_n=32`
(clusters), `scales=3` (coarser scales the attention sees), `avg_degree`,
`coupling`, `n_train=16` and `t_train=20` (data), `train_steps=400`, `horizon=10`,
`members=4`, `width=32 heads=4 depth=2` (closure), `eval_horizon=100`. Those are
the library defaults (`neuroscale train kuramoto`).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import run_example  # noqa: E402

# Small CPU defaults: every key is a configuration key of `neuroscale train kuramoto`.
SMALL = dict(fine_n=2000, coarse_n=16, avg_degree=8.0, n_train=8, n_test=4, n_val=2,
             t_train=20.0, train_steps=100, horizon=10, members=2, width=16, heads=2,
             depth=1, batch_size=4, eval_horizon=100, stability_factor=100,
             checkpoint_every=50)
QUICK = dict(SMALL, fine_n=400, coarse_n=8, clustering="geometric", n_train=2, n_test=2,
             t_train=2.0, train_steps=6, horizon=2, width=8, eval_horizon=5,
             stability_factor=5, checkpoint_every=3)


def main(argv: list[str] | None = None) -> dict:
    return run_example("kuramoto", __doc__, SMALL, QUICK, argv)


if __name__ == "__main__":
    main()
