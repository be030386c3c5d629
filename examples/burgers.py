"""Burgers: a closure ensemble trained end to end through coarse solver rollouts.

    python examples/burgers.py [--out DIR] [--quick] [--set KEY=VALUE ...]

Fine data: forced viscous Burgers on `fine_n` points (ETDRK4), filtered to
`coarse_n` points. Model: the coarse solver plus a learned stencil closure
(`hybrid.Hybrid`), an ensemble of `members`, trained through `horizon`-step
rollouts of the coarse solver. Evaluation on held-out trajectories: RMSE and
decorrelation time against the filtered truth for the hybrid and the coarse solver
without closure, ensemble scores, and long rollouts (`hybrid.stability`,
`stability_factor` x the training horizon). Writes `DIR/metrics.json`,
`DIR/report.md` and figures, and prints the key numbers.

The defaults below are sized for a laptop CPU (about 3-4 minutes on 2 cores);
`--quick` is a smoke test (under 2 minutes) whose numbers mean little.

**Scale up** with configuration keys (`--set KEY=VALUE`, or the same keys in
`neuroscale train burgers --config FILE.toml`): `fine_n=512` (resolution of the
truth), `n_train=32` and `t_train=20` (data), `train_steps=900`, `horizon=16`
(unrolled steps per loss), `members=4` (ensemble), `width=32 depth=4` (closure),
`eval_horizon=200` (the stability check runs `stability_factor=100` x the
training horizon either way). Those are the library defaults
(`neuroscale demo`), about 6-7 minutes on 2 CPU cores; a GPU runs larger
`fine_n`/`n_train`/`batch_size` in the same time. `closure=attention` (the multiscale
attention closure) is more accurate still and about 4-5x slower to train.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import run_example  # noqa: E402

# Small CPU defaults: every key is a configuration key of `neuroscale train burgers`.
SMALL = dict(fine_n=256, coarse_n=32, n_train=8, n_test=4, t_train=10.0, train_steps=150,
             horizon=8, members=2, width=16, depth=3, batch_size=4, eval_horizon=100,
             stability_factor=100, n_val=2, checkpoint_every=50)
QUICK = dict(SMALL, fine_n=64, coarse_n=16, n_train=4, n_test=2, t_train=2.0, t_spinup=0.5,
             train_steps=10, horizon=2, width=8, depth=2, batch_size=2, eval_horizon=10,
             stability_factor=5, checkpoint_every=5)


def main(argv: list[str] | None = None) -> dict:
    return run_example("burgers", __doc__, SMALL, QUICK, argv)


if __name__ == "__main__":
    main()
