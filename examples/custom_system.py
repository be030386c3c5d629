r"""Your own system, your own closure: a driven, damped chain of nonlinear oscillators.

    python examples/custom_system.py [--quick] [--n 16] [--train-steps 300]

`neuroscale train` knows Burgers, Navier–Stokes and Kuramoto. For anything else:
write the physics you know as a `solvers.AbstractSystem` (its tendency
`vector_field(t, y, args)`), write a closure as an `eqx.Module`
`(t, y, args) -> dy`, put them together with `hybrid.Hybrid`, and train through
`solvers.solve` rollouts with optax. That is all this file does.

The truth: $n$ unit masses on a ring, positions $q_i$, momenta $p_i$,

$$\dot q_i = p_i,\quad \dot p_i = k\,(d_i - d_{i-1}) + \beta\,(d_i^3 - d_{i-1}^3)
- \gamma p_i + F \cos(\Omega t) \sin(2\pi i / n),\qquad d_i = q_{i+1} - q_i,$$

a damped, driven Fermi–Pasta–Ulam–Tsingou chain. The known physics lacks the cubic
springs ($\beta = 0$) and steps 5x coarser in time. The closure learns the missing
force in conservative form, $c_i = g_\theta(d_i) - g_\theta(d_{i-1})$ with $g_\theta$
a tiny MLP of one stretch, so that momentum is conserved for any $\theta$.

Prints the training loss going down, the error of the hybrid and of the physics
alone on held-out initial conditions, and a long-rollout stability check
(`hybrid.testing.assert_stable`, what you would put in your own test suite).
About half a minute on 2 CPU cores (`--quick`: half the training steps).

**Scale up:** `--n` (masses), `--train-steps`, `--horizon` (unrolled steps per
loss: longer is stabler and harder), `--batch` (windows per step), `--width` of the
MLP. For a PDE, write it as a `solvers.AbstractSpectralSystem` (a diagonal linear
operator plus a nonlinear term: ETDRK4 then treats the stiff part exactly).
"""

import argparse
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

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


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="train a closure for your own system")
    parser.add_argument("--quick", action="store_true", help="smallest settings (smoke test)")
    parser.add_argument("--n", type=int, default=16, help="masses on the ring")
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--horizon", type=int, default=10, help="unrolled steps per loss")
    parser.add_argument("--batch", type=int, default=16, help="windows per training step")
    parser.add_argument("--width", type=int, default=16, help="hidden width of g")
    parser.add_argument("--lr", type=float, default=1e-2, help="peak learning rate")
    args = parser.parse_args(argv)
    if args.quick:
        args.train_steps, args.batch = 150, 8
    t_start = time.perf_counter()
    n, dt, save_dt = args.n, 0.1, 0.1
    truth = OscillatorChain(n, beta=1.0)
    physics = OscillatorChain(n, beta=0.0)
    k_train, k_test, k_model, k_loop = jr.split(jr.PRNGKey(0), 4)

    # The truth, solved 5x finer in time: 16 training trajectories of 20 time units,
    # after a spin-up of 50 onto the driven chain's attractor (where the cubic springs
    # double the energy of the linear chain's).
    t_spin, ts = 50.0, np.arange(201) * save_dt

    def reference(y0s):
        def one(y0):
            y_spun = solvers.solve(truth, y0, np.array([0.0, t_spin]), dt=dt / 5).ys[-1]
            return solvers.solve(truth, y_spun, ts, dt=dt / 5, t_offset=t_spin).ys

        return jax.vmap(one)(y0s)

    data = reference(initial_states(k_train, 16, n))  # [16, 201, 2, n]

    # --- training through rollouts: the whole of it --------------------------------
    window_ts = np.arange(args.horizon + 1) * save_dt

    def loss_fn(closure, y0s, targets, t0s):
        model = hybrid.Hybrid(physics, closure)

        def rollout(y0, t0):
            return solvers.solve(model, y0, window_ts, dt=dt, t_offset=t0).ys[1:]

        return jnp.mean((jax.vmap(rollout)(y0s, t0s) - targets) ** 2)

    optimizer = optax.adam(optax.cosine_decay_schedule(args.lr, args.train_steps, 0.1))

    @eqx.filter_jit
    def train_step(closure, opt_state, key):
        ki, ks = jr.split(key)
        i = jr.randint(ki, (args.batch,), 0, data.shape[0])
        s = jr.randint(ks, (args.batch,), 0, data.shape[1] - args.horizon)
        windows = jax.vmap(lambda i, s: jax.lax.dynamic_slice_in_dim(
            data[i], s, args.horizon + 1))(i, s)
        loss, grads = eqx.filter_value_and_grad(loss_fn)(
            closure, windows[:, 0], windows[:, 1:], t_spin + s * save_dt)
        updates, opt_state = optimizer.update(grads, opt_state, closure)
        return eqx.apply_updates(closure, updates), opt_state, loss

    closure = SpringClosure(args.width, key=k_model)
    opt_state = optimizer.init(eqx.filter(closure, eqx.is_array))
    losses = []
    for step, key in enumerate(jr.split(k_loop, args.train_steps)):
        closure, opt_state, loss = train_step(closure, opt_state, key)
        losses.append(float(loss))
        if step % max(1, args.train_steps // 6) == 0 or step == args.train_steps - 1:
            print(f"step {step:4d}  loss {loss:.3e}")
    # ---------------------------------------------------------------------------------

    # Held-out initial conditions: 20 time units, 20x the training window.
    test = reference(initial_states(k_test, 8, n))
    model = hybrid.Hybrid(physics, closure)

    def rmse(system, until):
        ys = jax.vmap(lambda y0: solvers.solve(system, y0, ts, dt=dt, t_offset=t_spin).ys)(
            test[:, 0])
        k = int(round(until / save_dt)) + 1
        return float(jnp.sqrt(jnp.mean((ys[:, :k] - test[:, :k]) ** 2)))

    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    print(f"\ntraining loss {first:.3e} -> {last:.3e} (mean of the first and last 10 steps)")
    print(f"held-out rmse (field rms {float(jnp.sqrt(jnp.mean(test**2))):.3g}):")
    errors = {}
    for until in (5.0, 20.0):
        e_physics, e_hybrid = rmse(physics, until), rmse(model, until)
        errors[until] = (e_physics, e_hybrid)
        print(f"  t in [0, {until:g}]: physics alone {e_physics:.4g}, hybrid {e_hybrid:.4g} "
              f"({e_physics / e_hybrid:.1f}x smaller)")

    # What you would put in your own test suite: 2000 steps (200x the training window)
    # from every held-out initial state: no blow-up, and a mean energy over the second
    # half within 50% of the truth's (the held-out trajectories are the reference).
    report = hybrid.testing.assert_stable(model, test[:, 0], steps=2000, dt=dt,
                                          save_every=100, t0=t_spin, reference=test,
                                          max_energy_drift=0.5)
    print(report.summary())
    print(f"{time.perf_counter() - t_start:.0f} s in all")
    return {"loss_first": first, "loss_last": last, "rmse_physics": errors[20.0][0],
            "rmse_hybrid": errors[20.0][1]}


if __name__ == "__main__":
    main()
