"""Neural closures: shapes and dtypes, symmetries, conservation, differentiability,
errors, and a small learning check."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import hybrid
import solvers
from hybrid.closures import (
    CLOSURES,
    MultiscaleAttentionClosure,
    StencilClosure,
    make_closure,
)

NAMES = ("stencil", "attention")


def smooth_field(key, shape, kmax=4, dtype=jnp.float64):
    """A random periodic field of unit-order amplitude with modes |k| <= kmax."""
    n = shape[0]
    x = jnp.arange(n) * 2 * jnp.pi / n
    ks = jnp.arange(1, kmax + 1)
    ka, kb = jr.split(key)
    if len(shape) == 1:
        a = jr.normal(ka, (kmax,)) / ks
        phi = jr.uniform(kb, (kmax,), maxval=2 * jnp.pi)
        y = jnp.sum(a[:, None] * jnp.cos(ks[:, None] * x[None] + phi[:, None]), axis=0)
    else:
        a = jr.normal(ka, (kmax, kmax)) / (ks[:, None] + ks[None, :])
        phi = jr.uniform(kb, (kmax, kmax), maxval=2 * jnp.pi)
        arg = (
            ks[:, None, None, None] * x[None, None, :, None]
            + ks[None, :, None, None] * x[None, None, None, :]
            + phi[:, :, None, None]
        )
        y = jnp.sum(a[:, :, None, None] * jnp.cos(arg), axis=(0, 1))
    return y.astype(dtype)


def state_shape(ndim, n=32):
    return (n,) if ndim == 1 else (16, 16)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("ndim", [1, 2])
@pytest.mark.parametrize("name", NAMES)
def test_shape_and_dtype(name, ndim, dtype, key):
    closure = make_closure(name, ndim, key=key)
    y = smooth_field(jr.PRNGKey(1), state_shape(ndim), dtype=dtype)
    dy = closure(0.0, y, None)
    assert dy.shape == y.shape
    assert dy.dtype == dtype
    assert bool(jnp.all(jnp.isfinite(dy)))


def test_registry(key):
    assert set(CLOSURES) >= {"stencil", "attention"}
    assert isinstance(make_closure("stencil", 1, key=key), StencilClosure)
    assert isinstance(make_closure("attention", 2, key=key), MultiscaleAttentionClosure)
    # The kwargs reach the constructor.
    c = make_closure("stencil", 1, key=key, width=8, depth=2)
    assert c.layers[0].out_channels == 8 and len(c.layers) == 2


# The stencil closure is made of periodic convolutions only: it commutes with every
# periodic shift. The attention closure commutes with shifts by multiples of its
# pooling cell, 2**(levels-1) = 4 points here (its pyramid is anchored at index 0).
@pytest.mark.parametrize(
    "name, ndim, shift",
    [
        ("stencil", 1, 3),
        ("stencil", 2, (3, 5)),
        ("attention", 1, 8),
        ("attention", 2, (4, 12)),
    ],
)
def test_translation_equivariance(name, ndim, shift, key):
    # Larger output weights so the check is not against a near-zero output.
    closure = make_closure(name, ndim, key=key, init_scale=1.0)
    y = smooth_field(jr.PRNGKey(2), state_shape(ndim)) + 0.1 * jr.normal(
        jr.PRNGKey(3), state_shape(ndim)
    )
    axes = tuple(range(ndim))
    lhs = closure(0.0, jnp.roll(y, shift, axis=axes), None)
    rhs = jnp.roll(closure(0.0, y, None), shift, axis=axes)
    assert float(jnp.max(jnp.abs(rhs))) > 1e-2
    np.testing.assert_allclose(lhs, rhs, rtol=0, atol=1e-12)


def test_attention_is_not_translation_invariant(key):
    # The rotary encoding must still let the attention see relative positions: the
    # output is not the same function of a shifted input (a guard against a closure
    # that ignores the state's structure, e.g. broadcasting a global mean).
    closure = make_closure("attention", 1, key=key, init_scale=1.0)
    y = smooth_field(jr.PRNGKey(2), (32,))
    dy = closure(0.0, y, None)
    assert float(jnp.max(jnp.abs(dy - jnp.roll(dy, 4)))) > 1e-3


@pytest.mark.parametrize("ndim", [1, 2])
@pytest.mark.parametrize("name", NAMES)
def test_conservative_closures_conserve_the_mean(name, ndim, key):
    y = smooth_field(jr.PRNGKey(4), state_shape(ndim)) + 0.5
    closure = make_closure(name, ndim, key=key, init_scale=1.0)
    dy = closure(0.0, y, None)
    assert float(jnp.max(jnp.abs(dy))) > 1e-2  # a non-trivial output ...
    assert abs(float(jnp.sum(dy))) < 1e-12  # ... whose sum telescopes to zero
    # Without the flux form the sum is generically non-zero (the test can fail).
    free = make_closure(name, ndim, key=key, init_scale=1.0, conservative=False)
    assert abs(float(jnp.sum(free(0.0, y, None)))) > 1e-6


@pytest.mark.parametrize("ndim", [1, 2])
@pytest.mark.parametrize("name", NAMES)
def test_initial_output_is_small(name, ndim, key):
    # An untrained hybrid is the coarse solver up to a small perturbation.
    n = 128 if ndim == 1 else 32
    y = smooth_field(jr.PRNGKey(5), (n,) * ndim)
    dy = make_closure(name, ndim, key=key)(0.0, y, None)
    ratio = float(jnp.linalg.norm(dy) / jnp.linalg.norm(y))
    assert 0 < ratio < 2e-2, ratio


@pytest.mark.parametrize("ndim", [1, 2])
@pytest.mark.parametrize("name", NAMES)
def test_jit_vmap_grad(name, ndim, key):
    closure = make_closure(name, ndim, key=key, width=16)
    shape = state_shape(ndim)
    ys = jax.vmap(lambda k: smooth_field(k, shape))(jr.split(jr.PRNGKey(6), 3))
    targets = 0.1 * jnp.roll(ys, 1, axis=1)

    @eqx.filter_jit
    def loss(c, ys, targets):
        dys = jax.vmap(lambda y: c(0.0, y, None))(ys)
        return jnp.mean((dys - targets) ** 2)

    @eqx.filter_jit
    def loss_and_grad(c):
        return eqx.filter_value_and_grad(loss)(c, ys, targets)

    value, grads = loss_and_grad(closure)
    # vmap agrees with the loop over the batch.
    batched = jax.vmap(lambda y: closure(0.0, y, None))(ys)
    np.testing.assert_allclose(batched[1], closure(0.0, ys[1], None), rtol=1e-10, atol=1e-14)
    leaves = jax.tree.leaves(eqx.filter(grads, eqx.is_inexact_array))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    # Every layer learns from the first step, not only the output layer.
    nonzero = [float(jnp.max(jnp.abs(g))) > 0 for g in leaves if g.ndim >= 2]
    assert all(nonzero), nonzero
    assert np.isfinite(float(value))


@pytest.mark.parametrize("name", NAMES)
def test_ensemble_of_closures_by_vmap(name):
    # hybrid's training builds its members with filter_vmap over keys.
    members = eqx.filter_vmap(lambda k: make_closure(name, 1, key=k, width=8))(
        jr.split(jr.PRNGKey(7), 3)
    )
    y = smooth_field(jr.PRNGKey(8), (32,))
    dys = eqx.filter_vmap(lambda c: c(0.0, y, None))(members)
    assert dys.shape == (3, 32)
    assert float(jnp.max(jnp.abs(dys[0] - dys[1]))) > 0  # distinct members


def test_bad_arguments(key):
    with pytest.raises(ValueError, match=r"`closure` must be one of \('stencil', 'attention'"):
        make_closure("mlp", 1, key=key)
    for name in NAMES:
        for ndim in (0, 3, True):
            with pytest.raises(ValueError, match="`ndim` must be 1 or 2"):
                make_closure(name, ndim, key=key)
        closure = make_closure(name, 1, key=key)
        with pytest.raises(ValueError, match="`y` must be one unbatched state"):
            closure(0.0, jnp.zeros((4, 32)), None)
        with pytest.raises(ValueError, match="`y` must be a floating-point"):
            closure(0.0, jnp.zeros(32, jnp.int32), None)
        with pytest.raises(ValueError, match="`kernel_size` must be odd"):
            make_closure(name, 1, key=key, kernel_size=4)
        with pytest.raises(ValueError, match="`width` must be an int"):
            make_closure(name, 1, key=key, width=0)
    with pytest.raises(ValueError, match="`levels`=3"):
        make_closure("attention", 1, key=key)(0.0, jnp.zeros(30), None)
    # 32 / 16 = 2 channels per head: not divisible by 2 * ndim = 4 rotary channels.
    with pytest.raises(ValueError, match="`heads`"):
        make_closure("attention", 2, key=key, width=32, heads=16)
    with pytest.raises(ValueError, match="`attend_from`"):
        make_closure("attention", 1, key=key, attend_from=3)


def test_stencil_learns_a_diffusion_operator():
    # Fit nu * (y_{j+1} - 2 y_j + y_{j-1}) / dx^2 on random smooth fields: a flux-form
    # stencil can represent it exactly (F = -nu (y_{j+1} - y_j) / dx), through gelu
    # layers only approximately. Tolerance: 5% relative error on held-out fields.
    n, nu = 32, 0.05
    dx = 2 * np.pi / n

    def target(y):
        return nu * (jnp.roll(y, -1) - 2 * y + jnp.roll(y, 1)) / dx**2

    def fields(key, m):
        return jax.vmap(lambda k: smooth_field(k, (n,), kmax=6, dtype=jnp.float32))(
            jr.split(key, m)
        )

    train, test = fields(jr.PRNGKey(10), 64), fields(jr.PRNGKey(11), 32)
    closure = StencilClosure(1, key=jr.PRNGKey(12), width=16, depth=3)
    params, static = eqx.partition(closure, eqx.is_inexact_array)
    params = jax.tree.map(lambda p: p.astype(jnp.float32), params)

    def rel_error(params, ys):
        c = eqx.combine(params, static)
        dys = jax.vmap(lambda y: c(0.0, y, None))(ys)
        ref = jax.vmap(target)(ys)
        return jnp.linalg.norm(dys - ref) / jnp.linalg.norm(ref)

    opt = optax.adam(3e-3)

    @jax.jit
    def fit(params):
        def step(carry, _):
            params, state = carry
            grads = jax.grad(lambda p: rel_error(p, train) ** 2)(params)
            updates, state = opt.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), None

        (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=400)
        return params

    before = float(rel_error(params, test))
    params = fit(params)
    after = float(rel_error(params, test))
    print(f"relative error before {before:.3f}, after {after:.4f}")
    assert before > 0.9
    assert after < 0.05


# --- the classical baseline: eddy viscosity ----------------------------------------------


def test_eddy_viscosity_conserves_and_dissipates():
    u = solvers.random_smooth_field(jax.random.PRNGKey(0), 32, amplitude=1.0)
    smag = hybrid.closures.EddyViscosity(1, length=2 * np.pi)
    du = smag(0.0, u, None)
    assert abs(float(du.sum())) < 1e-12  # flux form: the mean is conserved
    assert float(jnp.sum(u * du)) < 0  # energy only removed
    # twice the coefficient: four times the viscosity
    twice = hybrid.closures.EddyViscosity(1, length=2 * np.pi, coefficient=0.34)
    np.testing.assert_allclose(twice(0.0, u, None), 4 * du, rtol=1e-10)
    w = solvers.random_vorticity(jax.random.PRNGKey(1), 16)
    for kind in ("smagorinsky", "leith"):
        dw = hybrid.closures.EddyViscosity(2, kind=kind, length=2 * np.pi)(0.0, w, None)
        assert abs(float(dw.sum())) < 1e-10 and float(jnp.sum(w * dw)) < 0, kind
    with pytest.raises(ValueError, match="`kind='leith'` is the 2D vorticity closure"):
        hybrid.closures.EddyViscosity(1, kind="leith")
    with pytest.raises(ValueError, match="`coefficient` must be a positive number"):
        hybrid.closures.EddyViscosity(1, coefficient=0.0)


def test_eddy_viscosity_coefficient_is_fitted_back_by_the_rollout_loss():
    # Data made by the coarse solver with Smagorinsky at C = 0.3; `hybrid.fit` of the
    # one-coefficient closure, started at 0.17, recovers it (measured 0.300).
    physics = solvers.Burgers1D(32, 0.01)
    truth = hybrid.Hybrid(physics, hybrid.closures.EddyViscosity(1, coefficient=0.3,
                                                                  length=2 * np.pi))
    ts = np.arange(21) * 0.1
    u0 = jax.vmap(lambda k: solvers.random_smooth_field(k, 32, amplitude=1.0))(
        jax.random.split(jax.random.PRNGKey(3), 4))
    ys = jax.vmap(lambda u: solvers.solve(truth, u, ts, dt=0.05).ys)(u0)
    make = lambda k: hybrid.closures.EddyViscosity(1, length=2 * np.pi)  # noqa: E731
    ens = hybrid.fit(physics, make, hybrid.Trajectories(ys, ts), dt=0.05,
                     key=jax.random.PRNGKey(0), horizon=4, steps=150, members=1,
                     method="deep", noise_std=0.0, learning_rate=0.05, curriculum=False,
                     progress=False)
    c = float(ens.members.coefficient[0])
    assert c == pytest.approx(0.3, rel=0.05), c
