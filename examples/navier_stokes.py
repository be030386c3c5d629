"""Navier–Stokes: a 2D closure for forced turbulence (Kolmogorov flow), trained end
to end through coarse solver rollouts.

    python examples/navier_stokes.py [--out DIR] [--quick] [--set KEY=VALUE ...]

Fine data: 2D incompressible Navier–Stokes in vorticity form (jax-cfd's spectral
Crank–Nicolson RK4) with Kolmogorov forcing ($k=4$) and linear drag, spun up for
`t_spinup`, filtered to `coarse_n`^2. Model: the coarse solver plus a learned 2D
stencil closure (`hybrid.Hybrid`), an ensemble of `members` trained through
`horizon`-step coarse rollouts (Kochkov et al., PNAS 2021, at toy size). Evaluation
on held-out trajectories: RMSE and decorrelation time of the hybrid and of the
coarse solver without closure against the filtered truth, ensemble scores, and long
rollouts (`hybrid.stability`: blow-up, energy and enstrophy drift, departure of the
energy spectrum on the resolved shells). Writes `DIR/metrics.json`, `DIR/report.md`
and figures, and prints the key numbers.

The defaults below are sized for a laptop CPU (a few minutes on 2 cores);
`--quick` is a smoke test whose numbers mean little.

**Scale up** with configuration keys (`--set KEY=VALUE`, or the same keys in
`neuroscale train navier-stokes --config FILE.toml`): `fine_n=128` and `coarse_n=16`
(resolutions, 8x), `viscosity=2e-3` (Reynolds number), `t_spinup=10`, `n_train=8`
and `t_train=10` (data), `train_steps=400`, `horizon=8`, `members=4`, `width=16
depth=3` (closure; `closure=attention` for the multiscale attention closure),
`eval_horizon=30` (3 time units: the flow is chaotic, and past a few time units no
coarse model keeps any skill). Those are the library defaults (`neuroscale train
navier-stokes`, about 10 minutes on 2 cores); `fine_n=256 coarse_n=32
viscosity=1e-3 width=32` is the next step up, for a GPU.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import run_example  # noqa: E402

# Small CPU defaults: every key is a configuration key of `neuroscale train navier-stokes`.
SMALL = dict(fine_n=64, coarse_n=16, viscosity=2e-3, t_spinup=5.0, t_train=5.0, n_train=4,
             n_test=2, n_val=2, train_steps=120, horizon=4, members=2, width=16, depth=3,
             batch_size=4, eval_horizon=50, stability_factor=100, checkpoint_every=40)
QUICK = dict(SMALL, fine_n=32, coarse_n=8, t_spinup=1.0, t_train=1.0, n_train=2, n_test=2,
             train_steps=6, horizon=2, width=8, depth=2, batch_size=2, eval_horizon=5,
             stability_factor=5, checkpoint_every=3)


def main(argv: list[str] | None = None) -> dict:
    return run_example("navier-stokes", __doc__, SMALL, QUICK, argv)


if __name__ == "__main__":
    main()
