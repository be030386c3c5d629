"""Ensemble methods against exact answers: anchored ensembles on Bayesian linear
regression (known posterior), randomized prior functions, MC-dropout masks, the
stochastic closure term's fitted amplitude, post-hoc spread inflation."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
import numpy as np
import optax
import pytest

import solvers
from hybrid import Hybrid
from hybrid import metrics as M
from hybrid import uq as B
from hybrid import uq as C
from hybrid import uq as S
from hybrid.closures import StencilClosure

# --- the linear-Gaussian toy problem ---------------------------------------------------
#
# y = phi(x)^T w + eps, eps ~ N(0, 0.3^2), prior w ~ N(0, diag(s^2)), 20 points on
# [-1, 0.5]; test inputs inside and beyond the data. Posterior covariance
# Sigma = (Phi^T Phi / sig^2 + diag(1/s^2))^-1, predictive variance of f(x*) =
# phi*^T Sigma phi*.

SIG = 0.3
PRIOR_STD = np.array([1.0, 1.0, 0.5, 0.5, 0.25])
N_DATA = 20
X_TEST = np.array([-1.0, -0.5, 0.0, 0.5, 1.0, 1.5])
MEMBERS = 256  # sampling error of a variance from 256 draws: sqrt(2/255) = 8.9%


def _phi(x):
    x = jnp.asarray(x)
    return jnp.stack([jnp.ones_like(x), x, x**2, x**3, x**4], -1)


class _Linear(eqx.Module):
    # a "closure" f(t, x, args) = phi(x)^T w, so the wrappers of _bayes apply to it
    w: jax.Array

    def __call__(self, t, x, args=None):
        return _phi(x) @ self.w


def _toy():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1.0, 0.5, N_DATA)
    w_true = PRIOR_STD * rng.normal(size=5)
    y = np.asarray(_phi(x)) @ w_true + SIG * rng.normal(size=N_DATA)
    P = np.asarray(_phi(x))
    cov = np.linalg.inv(P.T @ P / SIG**2 + np.diag(1 / PRIOR_STD**2))
    mean = cov @ P.T @ y / SIG**2
    return jnp.asarray(x), jnp.asarray(y), mean, cov


def _train_members(loss, params0, extra):
    """Minimise loss(params, *extra_m) for every member at once: vmapped L-BFGS in one
    jit-compiled program (the problem is a convex quadratic)."""
    opt = optax.lbfgs()

    def member(p0, *ex):
        f = lambda p: loss(p, *ex)  # noqa: E731
        vg = optax.value_and_grad_from_state(f)

        def step(carry, _):
            p, state = carry
            value, grad = vg(p, state=state)
            updates, state = opt.update(grad, state, p, value=value, grad=grad, value_fn=f)
            return (optax.apply_updates(p, updates), state), None

        (p, _), _ = jax.lax.scan(step, (p0, opt.init(p0)), None, length=40)
        return p

    return jax.jit(jax.vmap(member))(params0, *extra)


def _predictive_variance(ws):
    f = np.asarray(_phi(X_TEST)) @ np.asarray(ws).T  # [x, M]
    return f.mean(axis=1), f.var(axis=1, ddof=1)


@pytest.mark.parametrize("perturb", [True, False])
def test_anchored_ensemble_linear_gaussian_posterior(perturb):
    x, y, mean, cov = _toy()
    prior = B.GaussianPrior(_Linear(jnp.zeros(5)), _Linear(jnp.asarray(PRIOR_STD)))
    key_a, key_n = jr.split(jr.PRNGKey(1))
    anchors = B.draw_anchors(prior, MEMBERS, key=key_a)  # _Linear with w [M, 5]
    noise_keys = jr.split(key_n, MEMBERS)

    def loss(params, anchor, noise_key):
        # randomize-then-optimize: the member's own, fixed perturbation of the targets
        target = B.perturb_targets(y, SIG, key=noise_key) if perturb else y
        mse = jnp.mean((params(0.0, x) - target) ** 2)
        reg = B.anchor_penalty(params, anchor, prior.std, noise_var=SIG**2, num_data=N_DATA)
        return mse + reg

    members = _train_members(loss, anchors, (anchors, noise_keys))

    # converged: every member is the closed-form minimiser of its own objective
    P = np.asarray(_phi(x))
    prec0 = np.diag(1 / PRIOR_STD**2)
    a = np.asarray(anchors.w)
    targets = np.stack([
        np.asarray(B.perturb_targets(y, SIG, key=k)) if perturb else np.asarray(y)
        for k in noise_keys
    ])
    exact_members = (cov @ (P.T @ targets.T / SIG**2 + prec0 @ a.T)).T
    np.testing.assert_allclose(members.w, exact_members, atol=1e-6)

    F = np.asarray(_phi(X_TEST))
    var_exact = np.einsum("ij,jk,ik->i", F, cov, F)
    ens_mean, var_ens = _predictive_variance(members.w)
    ratio = var_ens / var_exact
    print(f"perturb={perturb}: variance ensemble / exact posterior at x={X_TEST}: "
          f"{np.round(ratio, 3)}")
    if perturb:
        # exact in distribution: within 30% at all six points. Over 2000 simulated seeds,
        # exact posterior samples (M = 256) break this with probability 0.8%; the
        # largest deviation has median 0.14.
        np.testing.assert_allclose(ratio, 1.0, atol=0.3)
        # and centred on the posterior mean (5 standard errors of a 256-member mean)
        assert np.all(np.abs(ens_mean - F @ mean) < 5 * np.sqrt(var_exact / MEMBERS))
    else:
        # Pearce et al. without the perturbation: Cov = Sigma Sigma0^-1 Sigma, which
        # matches the sample ...
        var_pearce = np.einsum("ij,jk,ik->i", F, cov @ prec0 @ cov, F)
        np.testing.assert_allclose(var_ens / var_pearce, 1.0, atol=0.3)
        # ... and is 10-30% of the exact variance where the data are (x <= 0.5), 80-95%
        # in the extrapolation where the prior dominates (x = 1, 1.5)
        assert np.all(var_pearce[:4] / var_exact[:4] < 0.35)
        assert np.all(var_pearce[4:] / var_exact[4:] > 0.75)
        assert np.all(ratio[:4] < 0.5)


def test_randomized_prior_rto_is_exact_on_linear_gaussian():
    # Osband et al. (2018), Lemma 3: trainable theta + fixed prior function with theta~
    # from the prior, L2 towards 0 on theta and perturbed targets -> posterior samples
    x, y, mean, cov = _toy()
    prior = B.GaussianPrior(_Linear(jnp.zeros(5)), _Linear(jnp.asarray(PRIOR_STD)))
    key_p, key_n = jr.split(jr.PRNGKey(2))
    priors = B.draw_anchors(prior, MEMBERS, key=key_p)
    models = B.RandomizedPrior(_Linear(jnp.zeros((MEMBERS, 5))), priors, 1.0)
    zeros = B.RandomizedPrior(_Linear(jnp.zeros((MEMBERS, 5))), priors, 1.0)
    std = B.RandomizedPrior(prior.std, prior.std, 1.0)  # the prior's leaves are skipped

    def loss(model, anchor, noise_key):
        target = B.perturb_targets(y, SIG, key=noise_key)
        mse = jnp.mean((model(0.0, x) - target) ** 2)
        return mse + B.anchor_penalty(model, anchor, std, noise_var=SIG**2, num_data=N_DATA)

    trained = _train_members(loss, models, (zeros, jr.split(key_n, MEMBERS)))
    np.testing.assert_array_equal(trained.prior.w, priors.w)  # never trained
    F = np.asarray(_phi(X_TEST))
    var_exact = np.einsum("ij,jk,ik->i", F, cov, F)
    _, var_ens = _predictive_variance(trained.trainable.w + trained.prior.w)
    ratio = var_ens / var_exact
    print("randomized prior + RTO: variance ensemble / exact:", np.round(ratio, 3))
    np.testing.assert_allclose(ratio, 1.0, atol=0.3)


# --- priors, anchors, penalty, target noise ----------------------------------------------


def test_prior_from_init_matches_initialisation():
    make = lambda k: StencilClosure(1, key=k, width=32, depth=2)  # noqa: E731
    with pytest.raises(ValueError, match=r"zero prior std\) for the leaves .*layers\[1\]\.bias"):
        B.prior_from_init(make, key=jr.PRNGKey(0))
    prior = B.prior_from_init(make, key=jr.PRNGKey(0), min_std=1e-3)
    # eqx Conv: uniform on +-1/sqrt(fan_in), std 1/sqrt(3 fan_in); first layer
    # fan_in = 2 channels x 5 taps; 32 x 320 samples: standard error ~0.7%
    std0 = float(prior.std.layers[0].weight)
    assert std0 == pytest.approx(1 / math.sqrt(3 * 10), rel=0.03)
    assert float(prior.std.layers[1].bias) == 1e-3  # the floored zero bias
    assert prior.mean.layers[0].weight.shape == (32, 2, 5)
    # draws have the prior's moments and combine into a working closure
    draws = B.draw_anchors(prior, 64, key=jr.PRNGKey(1))
    w = np.asarray(draws.layers[0].weight)
    assert w.shape == (64, 32, 2, 5)
    assert w.std() == pytest.approx(std0, rel=0.03) and abs(w.mean()) < 0.01
    static = eqx.filter(eqx.filter_eval_shape(make, jr.PRNGKey(0)), eqx.is_array, inverse=True)
    one = eqx.combine(jtu.tree_map(lambda a: a[0], draws), static)
    assert eqx.filter_jit(one)(0.0, jnp.sin(jnp.linspace(0, 6, 32))).shape == (32,)
    with pytest.raises(ValueError, match="`num_draws` must be an int >= 2"):
        B.prior_from_init(make, key=jr.PRNGKey(0), num_draws=1)


def test_anchor_penalty_hand_case():
    params = {"w": jnp.array([1.0, 2.0]), "b": jnp.array(3.0), "n": None}
    anchor = {"w": jnp.array([0.0, 1.0]), "b": jnp.array(0.0), "n": None}
    std = {"w": jnp.array(0.5), "b": None, "n": None}  # b: no prior
    # noise_var / N * sum ((p - a) / s)^2 = 0.09 / 10 * (4 + 4)
    got = B.anchor_penalty(params, anchor, std, noise_var=0.09, num_data=10)
    assert float(got) == pytest.approx(0.09 / 10 * 8.0, rel=1e-12)
    assert float(B.anchor_penalty(params, anchor, std, noise_var=0.0, num_data=10)) == 0.0
    with pytest.raises(ValueError, match="same structure"):
        B.anchor_penalty({"w": params["w"]}, anchor, std, noise_var=1.0, num_data=1)
    with pytest.raises(ValueError, match="`num_data` must be positive"):
        B.anchor_penalty(params, anchor, std, noise_var=1.0, num_data=0)


def test_target_noise_fixed_per_member_and_item():
    k = jr.PRNGKey(3)
    a = B.target_noise(k, (2, 7), (16,), 0.5)
    np.testing.assert_array_equal(a, B.target_noise(k, (2, 7), (16,), 0.5))  # every step
    assert not np.allclose(a, B.target_noise(k, (2, 8), (16,), 0.5))  # another item
    assert not np.allclose(a, B.target_noise(jr.PRNGKey(4), (2, 7), (16,), 0.5))  # member
    # a window's noise is the items' noise, whatever window they come in
    win = B.trajectory_target_noise(k, 2, jnp.arange(5, 9), (16,), 0.5)
    assert win.shape == (4, 16)
    np.testing.assert_array_equal(win[2], a)
    big = B.target_noise(k, 0, (100_000,), 0.5)
    assert float(jnp.std(big)) == pytest.approx(0.5, rel=0.01)


# --- randomized prior functions ------------------------------------------------------------


def test_randomized_prior_is_untrained():
    k1, k2 = jr.split(jr.PRNGKey(5))
    trainable = eqx.filter_jit(lambda k: StencilClosure(1, key=k, width=8, depth=2))(k1)
    prior = eqx.filter_jit(
        lambda k: StencilClosure(1, key=k, width=8, depth=2, init_scale=1.0))(k2)
    rp = B.RandomizedPrior(trainable, prior, scale=2.0)
    y = jnp.sin(jnp.linspace(0, 2 * np.pi, 32, endpoint=False)) + 0.3
    out, parts = eqx.filter_jit(lambda: (rp(0.0, y), trainable(0.0, y) + 2.0 * prior(0.0, y)))()
    np.testing.assert_allclose(out, parts, rtol=1e-12)

    def loss(model):
        return jnp.sum((model(0.0, y) - 1.0) ** 2)

    grads = eqx.filter_jit(eqx.filter_grad(loss))(rp)
    prior_grads = jtu.tree_leaves(eqx.filter(grads.prior, eqx.is_array))
    assert prior_grads and all(float(jnp.max(jnp.abs(g))) == 0.0 for g in prior_grads)
    assert any(float(jnp.max(jnp.abs(g))) > 0 for g in jtu.tree_leaves(grads.trainable))
    # the state gradient still goes through the prior (exact rollout gradients)
    gy = jax.jit(jax.grad(lambda u: jnp.sum(rp(0.0, u) ** 2)))(y)
    gy_ref = jax.jit(jax.grad(
        lambda u: jnp.sum((trainable(0.0, u) + 2.0 * prior(0.0, u)) ** 2)))(y)
    np.testing.assert_allclose(gy, gy_ref, rtol=1e-10)

    # training: the prior stays bit-identical under freeze_non_trainable, even with
    # weight decay (which moves zero-gradient parameters: plain adamw changes it)
    params, static = eqx.partition(rp, eqx.is_array)
    for opt, frozen in ((B.freeze_non_trainable(optax.adamw(1e-2)), True),
                        (optax.adamw(1e-2), False)):
        @eqx.filter_jit
        def two_steps(p, opt=opt):
            state = opt.init(p)
            for _ in range(2):
                g = eqx.filter_grad(lambda q: loss(eqx.combine(q, static)))(p)
                updates, state = opt.update(g, state, p)
                p = optax.apply_updates(p, updates)
            return p

        p = two_steps(params)
        same = jtu.tree_map(lambda a, b: bool(jnp.all(a == b)), p.prior, params.prior)
        assert all(jtu.tree_leaves(same)) is frozen  # plain adamw decays the prior
        assert not np.allclose(p.trainable.layers[0].weight, params.trainable.layers[0].weight)
    spec = B.trainable_filter(rp)
    assert not any(jtu.tree_leaves(spec.prior))
    assert all(jtu.tree_leaves(eqx.filter(spec.trainable, lambda b: b is True)))


# --- MC dropout ------------------------------------------------------------------------------


def test_mc_dropout_one_mask_per_trajectory():
    closure = eqx.filter_jit(
        lambda k: StencilClosure(1, key=k, width=16, depth=3, init_scale=1.0))(jr.PRNGKey(6))
    dc = B.with_mc_dropout(closure, 0.25)
    draw = eqx.filter_jit(lambda k: B.draw_dropout_masks(dc, key=k))
    call = eqx.filter_jit(lambda c, t, u: c(t, u))
    assert [type(layer).__name__ for layer in dc.layers] == ["Conv", "ChannelDropout",
                                                            "ChannelDropout"]
    y = jnp.sin(jnp.linspace(0, 2 * np.pi, 32, endpoint=False))
    # no mask: the mean network, identical to the closure
    np.testing.assert_array_equal(call(dc, 0.0, y), call(closure, 0.0, y))
    r1, r2 = draw(jr.PRNGKey(0)), draw(jr.PRNGKey(1))
    assert r1.layers[1].mask.shape == (16,)
    # a realisation is a fixed function: same output at every time and call
    np.testing.assert_array_equal(call(r1, 0.0, y), call(r1, 3.7, y))
    assert not np.allclose(call(r1, 0.0, y), call(r2, 0.0, y))
    # ... so a rollout is deterministic given its mask, and differs between masks
    physics = solvers.Burgers1D(32, 0.05)
    ts = jnp.linspace(0.0, 0.5, 6)

    @eqx.filter_jit
    def rollout(closure_m, u0):
        return solvers.solve(Hybrid(physics, closure_m), u0, ts, dt=0.05).ys

    u0s = jnp.stack([y, 0.5 * jnp.cos(jnp.linspace(0, 2 * np.pi, 32, endpoint=False))])
    # B = 2 trajectories, one mask each, as the evaluation draws them
    keys = jr.split(jr.PRNGKey(7), 2)
    batch = jax.jit(jax.vmap(lambda k, u0: rollout(B.draw_dropout_masks(dc, key=k), u0)))(
        keys, u0s)
    for b in range(2):
        alone = rollout(draw(keys[b]), u0s[b])
        np.testing.assert_allclose(batch[b], alone, rtol=1e-12, atol=1e-14)
    assert not np.allclose(rollout(r1, y), rollout(r2, y))
    # masks are Bernoulli(1 - rate) per channel: the inverted scaling is unbiased
    masks = jax.jit(jax.vmap(lambda k: B.draw_dropout_masks(dc, key=k).layers[1].mask))(
        jr.split(jr.PRNGKey(8), 2000))
    assert set(np.unique(np.asarray(masks))) <= {0.0, 1.0}
    # 32000 Bernoulli(0.75) draws: standard error 0.0024
    assert float(masks.mean()) == pytest.approx(0.75, abs=0.01)
    # masks are samples, not parameters; clearing gives back the mean network
    assert not any(jtu.tree_leaves(B.trainable_filter(r1).layers[1].mask))
    np.testing.assert_array_equal(call(B.clear_dropout_masks(r1), 0.0, y), call(closure, 0.0, y))
    with pytest.raises(ValueError, match="`rate` must be in"):
        B.with_mc_dropout(closure, 1.0)
    with pytest.raises(ValueError, match="no ChannelDropout layers"):
        B.draw_dropout_masks(closure, key=jr.PRNGKey(0))


# --- the stochastic closure term -------------------------------------------------------------


class _OU(solvers.AbstractSystem):
    # dy = -theta y dt, integrated in physical space
    theta: float
    n: int = eqx.field(static=True)

    @property
    def state_shape(self):
        return (self.n,)

    def vector_field(self, t, y, args):
        return -self.theta * y


def test_stochastic_term_recovers_known_sigma_through_solve():
    # data: Ornstein-Uhlenbeck paths of StochasticSystem through solvers.solve
    theta, sigma, n, save = 0.2, 0.3, 8, 0.1
    ou = _OU(theta, n)
    noise = S.DiagonalNoise.from_sigma(sigma)
    ts = np.arange(21) * save
    y0s = jr.normal(jr.PRNGKey(9), (16, n))
    paths = jax.jit(jax.vmap(
        lambda y0, k: solvers.solve(S.StochasticSystem(ou, noise, key=k), y0, ts, dt=0.05).ys
    ))(y0s, jr.split(jr.PRNGKey(10), 16))
    states, res, interval = jax.vmap(
        lambda ys: S.rollout_residuals(ou, ys, ts, dt=0.05)
    )(paths)
    assert float(interval[0]) == pytest.approx(save)
    states = states.reshape(-1, n)
    res = res.reshape(-1, n)
    fitted = S.fit_noise(S.DiagonalNoise.from_sigma(1.0), states, res, save)
    est = float(jnp.exp(fitted.log_sigma))
    # 2560 residuals: standard error of sigma-hat 1.4%; the exact OU transition variance
    # is sigma^2 (1 - exp(-2 theta D)) / (2 theta) = 0.98 sigma^2 D (-1% bias): 5%
    print(f"fitted sigma {est:.4f}, true {sigma}")
    assert est == pytest.approx(sigma, rel=0.05)
    # one amplitude per oscillator: each within 4 standard errors (320 residuals: 4%)
    per_point = S.fit_noise(S.DiagonalNoise(jnp.zeros(n)), states, res, save)
    np.testing.assert_allclose(jnp.exp(per_point.log_sigma), sigma, rtol=0.16)
    # the maximum-likelihood value is the NLL's minimiser
    nll = [float(S.noise_nll(S.DiagonalNoise.from_sigma(s), states, res, save))
           for s in (0.9 * est, est, 1.1 * est)]
    assert nll[1] < nll[0] and nll[1] < nll[2]


def test_state_dependent_noise_fit_recovers_parameters():
    # Euler-Maruyama data with log sigma(y) = a + b |y|, residuals against the exact
    # drift step: the likelihood is the model's, so the MLE is consistent
    a, b, theta, dt = math.log(0.2), 0.5, 0.5, 0.05
    feat = lambda y: jnp.abs(y)[None]  # noqa: E731
    truth = S.StateDependentNoise(jnp.asarray(a), jnp.asarray([b]), feat)
    y = jr.normal(jr.PRNGKey(11), (400, 4))

    def step(y, k):
        s = jax.vmap(lambda u: truth(0.0, u))(y)
        y1 = y - theta * y * dt + s * math.sqrt(dt) * jr.normal(k, y.shape)
        return y1, (y, y1 - (y - theta * y * dt))

    _, (states, res) = jax.lax.scan(step, y, jr.split(jr.PRNGKey(12), 10))
    states, res = states.reshape(-1, 4), res.reshape(-1, 4)  # 16000 residuals
    fitted = S.fit_noise(S.StateDependentNoise.init(1.0, features=feat), states, res, dt)
    # standard errors ~ 1 / sqrt(2 N) ~ 0.006 for a, ~0.01 for b
    print("fitted a, b:", float(fitted.bias), float(fitted.coef[0]), "true", a, b)
    assert float(fitted.bias) == pytest.approx(a, abs=0.05)
    assert float(fitted.coef[0]) == pytest.approx(b, abs=0.05)
    # the default feature is the local gradient magnitude
    g = S.gradient_magnitude(jnp.sin(jnp.linspace(0, 2 * np.pi, 64, endpoint=False)))
    assert g.shape == (1, 64)
    np.testing.assert_allclose(g[0, 0], np.sin(2 * np.pi / 64), rtol=1e-12)


def test_stochastic_term_on_a_spectral_system_has_the_right_variance():
    # Burgers at nu large and u = 0: the noise is what moves the state, diffused by the
    # viscous term that ETDRK4 integrates exactly. With a non-uniform sigma(x) and no
    # advection (u stays small), each Fourier mode is an OU process, so the variance per
    # grid point after T is sum_k |F sigma|^2 (1 - exp(-2 nu k^2 T)) / (2 nu k^2): compare
    # Var / (that) over 2000 paths (standard error ~3%).
    n, nu, T, dt = 16, 0.05, 1.0, 0.05
    x = jnp.arange(n) * 2 * np.pi / n
    sigma = 1e-3 * (1.0 + 0.5 * jnp.cos(x))
    noise = S.DiagonalNoise(jnp.log(sigma))
    burgers = solvers.Burgers1D(n, nu)
    ts = np.array([0.0, T])

    def path(k):
        return solvers.solve(S.StochasticSystem(burgers, noise, key=k), jnp.zeros(n), ts,
                             dt=dt).ys[-1]

    finals = jax.jit(jax.vmap(path))(jr.split(jr.PRNGKey(13), 2000))
    var = np.var(np.asarray(finals), axis=0)
    # exact: the covariance of u(T) = int_0^T e^{L (T - s)} sigma dW(s) (L diagonal in
    # Fourier space), evaluated per mode through the DFT matrix
    F = np.fft.fft(np.eye(n)) / n  # u_hat = F u
    k = np.fft.fftfreq(n, 1 / n)
    lam = -nu * k**2
    weight = np.where(lam == 0, T, -np.expm1(2 * lam * T) / np.where(lam == 0, 1, -2 * lam))
    A = np.linalg.inv(F) @ np.diag(np.sqrt(weight)) @ F @ np.diag(np.asarray(sigma))
    exact = np.real(np.sum(A * A.conj(), axis=1))
    print("Var / exact:", np.round(var / exact, 3))
    np.testing.assert_allclose(var / exact, 1.0, atol=0.15)
    assert abs(float(np.mean(var / exact)) - 1.0) < 0.05


def test_stochastic_system_errors():
    with pytest.raises(ValueError, match="`sigma` must be positive"):
        S.DiagonalNoise.from_sigma(0.0)
    ou = _OU(0.1, 4)
    with pytest.raises(ValueError, match="`steps` must be an int"):
        S.rollout_residuals(ou, jnp.zeros((5, 4)), np.arange(5.0), dt=0.5, steps=5)
    with pytest.raises(ValueError, match="equally spaced"):
        S.rollout_residuals(ou, jnp.zeros((3, 4)), np.array([0.0, 1.0, 3.0]), dt=0.5)
    # the noise path needs a key
    with pytest.raises(ValueError, match="`key` is required"):
        S.StochasticSystem(ou, S.DiagonalNoise.from_sigma(0.1), key=None)


# --- post-hoc spread calibration --------------------------------------------------------------


def test_spread_inflation_calibrates_held_out_data():
    rng = np.random.default_rng(15)
    m, s = 20, 0.5  # under-dispersed: members N(0, s^2), reference N(0, 1)

    def sample(p):
        return rng.normal(size=(m, p)) * s, rng.normal(size=p)

    val_e, val_r = sample(5000)
    alpha = float(C.fit_spread_inflation(val_e, val_r))
    # closed form: error^2 = 1 + s^2/M, spread^2 = (M+1)/M s^2
    assert alpha == pytest.approx(math.sqrt((1 + s**2 / m) / ((m + 1) / m * s**2)), rel=0.03)
    assert float(M.spread_skill(C.inflate_spread(val_e, alpha), val_r)) == pytest.approx(1.0)
    test_e, test_r = sample(5000)
    inflated = C.inflate_spread(test_e, alpha)
    np.testing.assert_allclose(inflated.mean(0), test_e.mean(0), atol=1e-12)  # mean kept
    assert float(M.spread_skill(inflated, test_r)) == pytest.approx(1.0, abs=0.05)
    assert float(M.coverage(inflated, test_r, 0.9, method="pit")) == pytest.approx(0.9, abs=0.02)
    assert float(M.crps_fair(inflated, test_r)) < float(M.crps_fair(test_e, test_r))
    # per lead time, [M, B, T, n]: spread growing in time, t0 without spread -> 1
    scale = np.array([0.0, 0.5, 1.0, 2.0])[None, None, :, None]
    ens = 0.5 * scale * rng.normal(size=(m, 40, 4, 16))
    ref = scale[0] * rng.normal(size=(40, 4, 16))
    per_t = np.asarray(C.fit_spread_inflation(ens, ref, over_time=True))
    assert per_t[0] == 1.0
    np.testing.assert_allclose(per_t[1:], 2 * math.sqrt((1 + 0.25 / m) / (1 + 1 / m)), rtol=0.08)
    ssr = M.spread_skill(C.inflate_spread(ens, per_t), ref, over_time=True)
    np.testing.assert_allclose(ssr[1:], 1.0, rtol=1e-10)
    with pytest.raises(ValueError, match="`factor` has 3 lead times"):
        C.inflate_spread(ens, per_t[:3])
