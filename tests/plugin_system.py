"""A system the library does not ship, as a user would write it (used by
tests/test_plugin.py, also through `neuroscale train --task`): a ring of Duffing
oscillators, state `[2, n]` (positions, momenta); the known physics lacks the cubic
spring. No array fields: the system is the same for every trajectory."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr

import solvers
from neuroscale import AbstractTask, Config, data_key


class DuffingRing(solvers.AbstractSystem):
    n: int = eqx.field(static=True)
    cubic: float = eqx.field(static=True, default=0.0)

    @property
    def state_shape(self):
        return (2, self.n)

    def vector_field(self, t, y, args):
        q, p = y
        coupling = 0.5 * (jnp.roll(q, 1) + jnp.roll(q, -1) - 2 * q)
        return jnp.stack([p, -q - self.cubic * q**3 + coupling - 0.05 * p])


class SiteClosure(eqx.Module):
    """A learned force on the momenta, the same MLP of (q_i, p_i) at every site."""

    mlp: eqx.nn.MLP

    def __init__(self, *, key):
        mlp = eqx.nn.MLP(2, 1, 16, depth=2, activation=jnp.tanh, key=key)
        self.mlp = eqx.tree_at(lambda m: m.layers[-1].weight, mlp, mlp.layers[-1].weight * 0.1)

    def __call__(self, t, y, args):
        force = jax.vmap(self.mlp, in_axes=1)(y)[:, 0]
        return jnp.stack([jnp.zeros_like(force), force])


def initial_state(key, n):
    kq, kp = jr.split(key)
    return jnp.stack([jr.normal(kq, (n,)), 0.5 * jr.normal(kp, (n,))])


@dataclasses.dataclass(frozen=True)
class DuffingConfig(Config):
    cubic: float = data_key(1.0)


class DuffingTask(AbstractTask):
    name = "duffing-ring"
    config_class = DuffingConfig
    closures = ("site",)
    finer_factors = ()
    defaults = dict(fine_n=8, coarse_n=8, closure="site", members=2, train_steps=30,
                    horizon=4, batch_size=4, dt=0.1, save_dt=0.1, fine_dt=0.02,
                    t_spinup=0.0, t_train=3.0, n_train=4, n_val=2, n_test=2,
                    eval_horizon=20, stability_factor=10, physics_weight=0.0)

    @classmethod
    def validate(cls, cfg):
        if cfg.coarse_n != cfg.fine_n:
            raise ValueError("config key `coarse_n` must equal `fine_n` (no grid to coarsen).")

    @property
    def ndim(self):
        return 0

    def sample(self, key):
        return DuffingRing(self.cfg.fine_n, self.cfg.cubic), initial_state(key, self.cfg.fine_n)

    def coarse_physics(self, fine, n):
        return DuffingRing(n, 0.0)

    def coarse_grain(self, y, n):
        return y

    def make_closure(self, key, **kwargs):
        return SiteClosure(key=key)
