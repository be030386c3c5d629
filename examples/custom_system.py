r"""Your own PDE, your own closure: the whole library on a system it does not ship.

    python examples/custom_system.py [--quick] [--out DIR]

The truth: the Kuramoto–Sivashinsky equation, a chaotic 1D PDE,

$$u_t + u u_x + u_{xx} + u_{xxxx} = 0 \quad\text{on } [0, 22),$$

written as a `solvers.AbstractSpectralSystem` (a diagonal linear operator plus a
nonlinear term: ETDRK4 treats the stiff fourth derivative exactly). The fine reference
runs on 64 points; the known physics is the same equation on 16 points, whose missing
scales make it drift off within a few time units. A small closure of your own (an
`eqx.Module`) learns the missing subgrid flux, and the library does the rest:

- `hybrid.fit`: an anchored ensemble of 4 closures trained end to end through
  rollouts of the coarse solver (checkpoints in `DIR/checkpoints`: rerun to resume);
- `hybrid.calibrate`: the stochastic closure term and the spread inflation, fitted on
  validation trajectories;
- `hybrid.evaluate`: rmse, decorrelation time, CRPS, spread–skill, coverage against
  the physics alone on held-out trajectories;
- `hybrid.save` / `hybrid.load`, and `hybrid.testing.assert_stable` (what you would put
  in your own test suite) on the reloaded ensemble.

About 2 minutes on 2 CPU cores (`--quick`: under a minute, numbers mean little).
**Scale up:** more trajectories, `steps`, `horizon`, members, a longer domain.
"""

import argparse
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

import hybrid
import solvers

# --- the physics you know ---------------------------------------------------------------


class KuramotoSivashinsky(solvers.AbstractSpectralSystem):
    r"""$u_t = -u_{xx} - u_{xxxx} - \tfrac12 (u^2)_x$, periodic on $[0, L)$, `n` points."""

    n: int = eqx.field(static=True)
    length: float = eqx.field(static=True, default=22.0)

    @property
    def state_shape(self):
        return (self.n,)

    @property
    def wavenumbers(self):
        return 2 * jnp.pi / self.length * jnp.fft.rfftfreq(self.n, 1.0 / self.n)

    @property
    def linear_operator(self):
        k = self.wavenumbers
        return k**2 - k**4

    def nonlinear(self, t, z, args):
        k = self.wavenumbers.astype(jnp.real(z).dtype)
        u = jnp.fft.irfft(z, n=self.n)
        dealias = jnp.arange(z.shape[-1]) < self.n / 3  # the 2/3 rule
        return -0.5j * k * dealias * jnp.fft.rfft(u * u)


# --- your closure -----------------------------------------------------------------------


class FluxClosure(eqx.Module):
    """A periodic convolution of (u, u^2) to a face flux F; the closure is -dF/dx, so
    the spatial mean of u is conserved whatever the weights."""

    convs: tuple[eqx.nn.Conv1d, ...]
    length: float = eqx.field(static=True)

    def __init__(self, *, key, width=16, length=22.0):
        k1, k2 = jr.split(key)
        conv = dict(padding=2, padding_mode="CIRCULAR")
        last = eqx.nn.Conv1d(width, 1, 5, key=k2, **conv)
        self.convs = (eqx.nn.Conv1d(2, width, 5, key=k1, **conv),
                      eqx.tree_at(lambda c: c.weight, last, last.weight * 1e-2))
        self.length = length

    def __call__(self, t, u, args):
        flux = self.convs[1](jax.nn.gelu(self.convs[0](jnp.stack([u, u * u]))))[0]
        return -(flux - jnp.roll(flux, 1)) * u.shape[0] / self.length


# --- data, training, uncertainty, evaluation, persistence, stability --------------------


def reference(fine, key, count, saves, save_dt=0.5, spinup=50.0):
    """`count` fine trajectories from random smooth states, after a spin-up onto the
    attractor, filtered to the coarse grid."""
    ts = spinup + np.arange(saves + 1) * save_dt

    def one(k):
        u0 = solvers.random_smooth_field(k, fine.n, amplitude=1.0)
        return solvers.solve(fine, u0, np.concatenate([[0.0], ts]), dt=0.05).ys[1:]

    ys = jax.vmap(one)(jr.split(key, count))
    return hybrid.Trajectories(hybrid.coarse_grain(ys, 16, ndim=1), ts)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="the library on your own PDE")
    parser.add_argument("--quick", action="store_true", help="smallest settings")
    parser.add_argument("--out", default="out/examples/custom_system", help="output folder")
    args = parser.parse_args(argv)
    t_start, out = time.perf_counter(), Path(args.out)
    steps, n_train = (60, 4) if args.quick else (400, 16)
    fine, coarse = KuramotoSivashinsky(64), KuramotoSivashinsky(16)
    k_train, k_val, k_test, k_fit = jr.split(jr.PRNGKey(0), 4)
    train = reference(fine, k_train, n_train, 100)
    val, test = reference(fine, k_val, 4, 40), reference(fine, k_test, 8, 40)

    def make(key):
        return FluxClosure(key=key)

    setup = dict(dt=0.25, key=k_fit, horizon=8, members=4, batch_size=8)
    ensemble = hybrid.fit(coarse, make, train, steps=steps, checkpoint_dir=out / "checkpoints",
                          progress=not args.quick, **setup)
    ensemble = hybrid.calibrate(ensemble, val, dt=0.25, key=k_fit)
    metrics = hybrid.evaluate(ensemble, test, dt=0.25, key=k_fit)

    hybrid.save(out / "model", ensemble)
    reloaded = hybrid.load(out / "model", hybrid.fit(coarse, make, train, steps=0, **setup))
    report = hybrid.testing.assert_stable(reloaded, test.ys[:, 0], steps=400, dt=0.5,
                                          solver_dt=0.25, t0=test.ts[0], reference=test.ys)

    h, b, uq = metrics["hybrid"], metrics["baseline"], metrics["uq"]
    print(f"held-out rmse over {metrics['eval_time']:g} time units: hybrid {h['rmse']:.4g} "
          f"(one member {h['member_rmse']:.4g}), physics alone {b['rmse']:.4g} "
          f"({b['rmse'] / h['rmse']:.1f}x smaller)")
    print(f"corr_time: hybrid {h['corr_time']:.3g}, physics alone {b['corr_time']:.3g}")
    print(f"ensemble: crps {uq['crps']:.4g}, spread/skill {uq['spread_skill']:.3g}, "
          f"coverage90 {uq['coverage90']:.3g}")
    print(report.summary())
    print(f"{time.perf_counter() - t_start:.0f} s in all; model in {out / 'model'}")
    return metrics


if __name__ == "__main__":
    main()
