r"""A state of several fields: positions and momenta of a driven chain of oscillators.

    python examples/multi_field_system.py [--quick] [--out DIR]

The truth: $n$ unit masses on a ring, positions $q_i$, momenta $p_i$ (state `[2, n]`),

$$\dot q_i = p_i,\quad \dot p_i = k\,(d_i - d_{i-1}) + \beta\,(d_i^3 - d_{i-1}^3)
- \gamma p_i + F \cos(\Omega t) \sin(2\pi i / n),\qquad d_i = q_{i+1} - q_i,$$

a damped, driven Fermi–Pasta–Ulam–Tsingou chain. The known physics lacks the cubic
springs ($\beta = 0$) and steps 5x coarser in time. The closure learns the missing
force in conservative form, $c_i = g_\theta(d_i) - g_\theta(d_{i-1})$ on the momenta
(a tiny MLP of one stretch), so that momentum is conserved for any $\theta$.

Training, calibration, evaluation, persistence and the stability test are the
library's (`hybrid.fit`, `hybrid.calibrate`, `hybrid.evaluate`, `hybrid.save`,
`hybrid.testing.assert_stable`), whatever the state holds: nothing here tells them
that the state has two fields. About a minute on 2 CPU cores.

**Scale up:** more masses (`n`), trajectories, `steps`, `horizon`.
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


class OscillatorChain(solvers.AbstractSystem):
    """The driven, damped FPUT chain; state `[2, n]` = (positions, momenta)."""

    n: int = eqx.field(static=True)
    beta: float = 0.0
    stiffness: float = 1.0
    damping: float = 0.1
    drive: float = 0.3
    frequency: float = 0.5  # near the lowest ring mode, 2 sin(pi / n): a large response

    @property
    def state_shape(self):
        return (2, self.n)

    def vector_field(self, t, y, args):
        q, p = y
        d = jnp.roll(q, -1) - q
        spring = self.stiffness * d + self.beta * d**3
        x = 2 * jnp.pi * jnp.arange(self.n) / self.n
        force = spring - jnp.roll(spring, 1) - self.damping * p
        force = force + self.drive * jnp.cos(self.frequency * t) * jnp.sin(x)
        return jnp.stack([p, force])


class SpringClosure(eqx.Module):
    """$c_i = g(d_i) - g(d_{i-1})$ on the momenta: a learned extra spring force."""

    g: eqx.nn.MLP

    def __init__(self, width: int, *, key):
        self.g = eqx.nn.MLP("scalar", "scalar", width, depth=2, activation=jnp.tanh, key=key)
        # start close to "no closure": a small last layer
        self.g = eqx.tree_at(lambda g: g.layers[-1].weight, self.g, self.g.layers[-1].weight * 0.01)

    def __call__(self, t, y, args):
        q = y[0]
        g = jax.vmap(self.g)(jnp.roll(q, -1) - q)
        return jnp.stack([jnp.zeros_like(q), g - jnp.roll(g, 1)])


def initial_states(key, count: int, n: int):
    """Random smooth displacements (a few ring modes), at rest."""
    modes = jnp.arange(1, 4)
    a, b = jr.normal(key, (2, count, 3)) * 1.0 / modes
    x = 2 * jnp.pi * jnp.arange(n) / n
    q = a[..., None] * jnp.cos(modes[:, None] * x) + b[..., None] * jnp.sin(modes[:, None] * x)
    q = q.sum(axis=1)
    return jnp.stack([q, jnp.zeros_like(q)], axis=1)


def reference(truth, key, count, saves, save_dt=0.1, spinup=50.0):
    """The truth solved 5x finer in time from random states, after a spin-up onto the
    driven chain's attractor."""
    ts = spinup + np.arange(saves + 1) * save_dt

    def one(y0):
        return solvers.solve(truth, y0, np.concatenate([[0.0], ts]), dt=save_dt / 5).ys[1:]

    return hybrid.Trajectories(jax.vmap(one)(initial_states(key, count, truth.n)), ts)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="a system whose state has several fields")
    parser.add_argument("--quick", action="store_true", help="smallest settings")
    parser.add_argument("--out", default="out/examples/multi_field", help="output folder")
    parser.add_argument("--n", type=int, default=16, help="masses on the ring")
    args = parser.parse_args(argv)
    t_start, out = time.perf_counter(), Path(args.out)
    truth, physics = OscillatorChain(args.n, beta=1.0), OscillatorChain(args.n, beta=0.0)
    k_train, k_val, k_test, k_fit = jr.split(jr.PRNGKey(0), 4)
    train = reference(truth, k_train, 16, 200)
    val, test = reference(truth, k_val, 4, 200), reference(truth, k_test, 8, 200)

    def make(key):
        return SpringClosure(16, key=key)

    setup = dict(dt=0.1, key=k_fit, horizon=10, members=4, batch_size=16,
                 learning_rate=1e-2)
    ensemble = hybrid.fit(physics, make, train, steps=100 if args.quick else 300,
                          checkpoint_dir=out / "checkpoints", progress=not args.quick, **setup)
    ensemble = hybrid.calibrate(ensemble, val, dt=0.1, key=k_fit)
    metrics = hybrid.evaluate(ensemble, test, dt=0.1, key=k_fit)
    hybrid.save(out / "model", ensemble)
    reloaded = hybrid.load(out / "model", hybrid.fit(physics, make, train, steps=0, **setup))
    # 2000 steps (200x the training window) from every held-out state: no blow-up, and a
    # mean energy over the second half within 50% of the truth's
    report = hybrid.testing.assert_stable(reloaded, test.ys[:, 0], steps=2000, dt=0.1,
                                          save_every=100, t0=test.ts[0], reference=test.ys,
                                          max_energy_drift=0.5)
    h, b, uq = metrics["hybrid"], metrics["baseline"], metrics["uq"]
    print(f"held-out rmse over {metrics['eval_time']:g} time units: hybrid {h['rmse']:.4g}, "
          f"physics alone {b['rmse']:.4g} ({b['rmse'] / h['rmse']:.1f}x smaller)")
    print(f"ensemble: crps {uq['crps']:.4g}, spread/skill {uq['spread_skill']:.3g}, "
          f"coverage90 {uq['coverage90']:.3g}")
    print(report.summary())
    print(f"{time.perf_counter() - t_start:.0f} s in all")
    return metrics


if __name__ == "__main__":
    main()
