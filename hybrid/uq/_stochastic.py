r"""A stochastic closure term: additive noise whose amplitude is fitted on data, so a
rollout's spread grows where the (deterministic) closure is unsure.

The coarse model becomes the Itô SDE

$$dy = \big(f_\text{physics}(t, y) + c_\theta(t, y)\big)\,dt + \sigma_\phi(y) \odot dW,$$

with a diagonal amplitude $\sigma_\phi$ (`DiagonalNoise`: constant or per grid
point; `StateDependentNoise`: $\log\sigma = a + b^\top \varphi(y)$ from local features
such as the gradient magnitude). Its parameters are fitted by maximum likelihood of
the residuals of the deterministic model over one (or a few) save intervals $\Delta$:
$r_n = y_{n+k} - \Phi_{k\Delta}(y_n) \approx \mathcal N(0, \sigma_\phi(y_n)^2 k\Delta)$
(Euler–Maruyama over the interval; it neglects how the dynamics propagate noise within
the interval, a relative error of order $k\Delta\,\|\partial f/\partial y\|$).

`StochasticSystem(system, noise, key=key)` wraps any system so that `solvers.solve`
integrates the SDE: the system's own deterministic solver, then the noise increment
after every step (`NoiseSplitting`), so spectral systems keep their stiff integrators.

**Reference:** J. Berner, U. Achatz, L. Batté et al., "Stochastic parameterization:
toward a new view of weather and climate models", BAMS 98, 565 (2017); for fitting on
one-step residuals, e.g. D. Crommelin, E. Vanden-Eijnden, Multiscale Model. Simul. 6,
1357 (2008).
"""

import abc
import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, Float

import solvers

# ----------------------------------------------------------------------------------------
# noise models


class AbstractNoise(eqx.Module):
    r"""Diagonal additive noise amplitude $\sigma(t, y)$ of $dy = \dots + \sigma \odot dW$."""

    @abc.abstractmethod
    def __call__(self, t: ArrayLike, y: Array, args: Any = None) -> Array:
        """$\\sigma$ at state `y`, of `y`'s shape, non-negative, in state units per
        $\\sqrt{\\text{time}}$."""


class DiagonalNoise(AbstractNoise):
    r"""State-independent noise $\sigma = e^{\lambda}$: one amplitude for the whole
    state (`log_sigma` 0-d) or one per grid point / oscillator (`log_sigma` of the
    state's shape).

    **Arguments:** `log_sigma` $\lambda$; build from an amplitude with
    `DiagonalNoise.from_sigma(sigma)`.
    """

    log_sigma: Float[Array, "..."]

    @classmethod
    def from_sigma(cls, sigma: Float[ArrayLike, "..."]) -> "DiagonalNoise":
        sigma = jnp.asarray(sigma, jnp.result_type(float))
        if not bool(jnp.all(sigma > 0)):
            raise ValueError("`sigma` must be positive.")
        return cls(jnp.log(sigma))

    def __call__(self, t, y, args=None):
        return jnp.broadcast_to(jnp.exp(self.log_sigma), jnp.shape(y)).astype(
            jnp.result_type(y)
        )


def gradient_magnitude(y: Array) -> Float[Array, " 1 *n"]:
    r"""One feature per grid point, $|\nabla_h y|$ with periodic centred differences in
    grid units, $\big(\sum_d ((y_{j+e_d} - y_{j-e_d})/2)^2\big)^{1/2}$: large at shocks and
    fronts, where a coarse closure is least certain. Shape `[1, *y.shape]`."""
    sq = sum(
        jnp.square((jnp.roll(y, -1, axis=d) - jnp.roll(y, 1, axis=d)) / 2) for d in range(y.ndim)
    )
    return jnp.sqrt(sq)[None]


def cluster_modulus(y: Array) -> Float[Array, " 1 M 2"]:
    r"""One feature per cluster of cluster states `[M, 2]` (Re, Im of each cluster's
    order parameter): the modulus $|z_m|$, on both components. Shape `[1, M, 2]`."""
    r = jnp.sqrt(jnp.sum(jnp.square(y), axis=-1, keepdims=True))
    return jnp.broadcast_to(r, y.shape)[None]


# Features by name, so that a saved noise model can be rebuilt (`hybrid.load`).
FEATURES: dict[str, Callable[[Array], Array]] = {
    "gradient_magnitude": gradient_magnitude,
    "cluster_modulus": cluster_modulus,
}


def noise_parameters(noise: "AbstractNoise") -> dict[str, Any]:
    """The fitted parameters of a noise model, as lists (for JSON)."""
    return {f.name: np.asarray(getattr(noise, f.name)).tolist()
            for f in dataclasses.fields(noise) if eqx.is_array(getattr(noise, f.name))}


class StateDependentNoise(AbstractNoise):
    r"""Noise that grows with local features of the state,
    $\log \sigma(y)_j = a + \sum_f b_f\, \varphi_f(y)_j$.

    Log-linear, so the residual likelihood is convex in $(a, b)$ and `fit_noise`
    finds its global optimum.

    **Arguments:**

    - `bias`: $a$, 0-d.
    - `coef`: $b$, `[F]`.
    - `features`: `y -> [F, *y.shape]`, static; default `gradient_magnitude`.

    **Construct:** `StateDependentNoise.init(sigma0, num_features=1, features=...)`,
    $\sigma = $ `sigma0` everywhere.
    """

    bias: Float[Array, ""]
    coef: Float[Array, " F"]
    features: Callable[[Array], Array] = eqx.field(static=True, default=gradient_magnitude)

    @classmethod
    def init(
        cls,
        sigma0: float,
        *,
        num_features: int = 1,
        features: Callable[[Array], Array] = gradient_magnitude,
    ) -> "StateDependentNoise":
        if not sigma0 > 0:
            raise ValueError(f"`sigma0` must be positive, got {sigma0!r}.")
        dtype = jnp.result_type(float)
        return cls(jnp.log(jnp.asarray(sigma0, dtype)), jnp.zeros(num_features, dtype), features)

    def __call__(self, t, y, args=None):
        phi = self.features(y)
        if phi.shape != (self.coef.shape[0], *jnp.shape(y)):
            raise ValueError(
                f"`features` must return [F, *y.shape] = {(self.coef.shape[0], *jnp.shape(y))}, "
                f"got {phi.shape}."
            )
        log_s = self.bias + jnp.tensordot(self.coef, phi, axes=1)
        return jnp.exp(log_s).astype(jnp.result_type(y))


# ----------------------------------------------------------------------------------------
# the SDE system


class NoiseSplitting(diffrax.AbstractSolver):
    r"""Additive noise by splitting: one step of the deterministic `solver`, then
    $y_{n+1} \leftarrow y_{n+1} + \sigma(y_n) \odot \Delta W_n$ with
    $\Delta W_n \sim \mathcal N(0, h\,I)$ drawn in *physical* space and mapped to the
    integrator's representation (`system.to_internal`, linear for every system here).

    Lie splitting of an additive (Itô, $\sigma$ at the start of the step) noise: weak
    order 1 in $h$ for the noise, with the deterministic part integrated by the very
    solver the closure was trained with (ETDRK4, Crank–Nicolson RK4, ...), which an SDE
    solver such as Heun would replace. The noise path is a function of the key only:
    one key per (member, trajectory) gives independent paths.
    """

    solver: diffrax.AbstractSolver
    noise: Callable
    system: solvers.AbstractSystem
    key: Array
    term_structure: ClassVar = diffrax.AbstractTerm
    interpolation_cls: ClassVar = diffrax.LocalLinearInterpolation

    def order(self, terms):
        return self.solver.order(terms)

    def init(self, terms, t0, t1, y0, args):
        return self.solver.init(terms, t0, t1, y0, args), self.key

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        inner, key = solver_state
        y1, err, _, inner, result = self.solver.step(terms, t0, t1, y0, args, inner, made_jump)
        key, sub = jax.random.split(key)
        u0 = self.system.from_internal(y0)
        sigma = self.noise(t0, u0, args)
        h = jnp.asarray(t1 - t0, u0.dtype)
        dw = jnp.sqrt(h) * jax.random.normal(sub, u0.shape, u0.dtype)
        y1 = y1 + self.system.to_internal(sigma * dw).astype(y1.dtype)
        return y1, err, dict(y0=y0, y1=y1), (inner, key), result

    def func(self, terms, t0, y0, args):
        return self.solver.func(terms, t0, y0, args)


class StochasticSystem(solvers.AbstractSystem):
    r"""`system` with an additive stochastic closure term,
    $dy = f(t, y)\,dt + \sigma(y) \odot dW$.

    The deterministic part is `system`'s own, integrated by its own solver (whatever
    `solvers.solve` picks or is given); the noise is added after every step by
    `NoiseSplitting`, in physical space, so it works for spectral systems (Burgers,
    Navier–Stokes, hybrids on them) as for the others. The Brownian path is a function
    of `key`: build one system per (member, trajectory) with its own key (vmap over
    keys) for independent paths.

    **Arguments:** `system` (any `solvers.AbstractSystem`, e.g. a `hybrid.Hybrid`);
    `noise` (an `AbstractNoise`, e.g. fitted with `fit_noise`); `key` (a `jax.random`
    key for the noise path).
    """

    system: solvers.AbstractSystem
    noise: AbstractNoise
    key: Array

    def __init__(self, system: solvers.AbstractSystem, noise: AbstractNoise, *, key: Array):
        if not isinstance(system, solvers.AbstractSystem):
            raise ValueError(
                f"`system` must be a solvers.AbstractSystem, got {type(system).__name__}."
            )
        if not callable(noise):
            raise ValueError(f"`noise` must be callable (t, y, args) -> sigma, got {noise!r}.")
        if key is None:
            raise ValueError("`key` is required: the noise path is drawn from it.")
        self.system = system
        self.noise = noise
        self.key = key

    @property
    def state_shape(self) -> tuple[int, ...]:
        return self.system.state_shape

    def check_state(self, y, name: str = "y0") -> None:
        self.system.check_state(y, name)

    def vector_field(self, t, y, args):
        return self.system.vector_field(t, y, args)

    def to_internal(self, y):
        return self.system.to_internal(y)

    def from_internal(self, z):
        return self.system.from_internal(z)

    def terms(self) -> diffrax.AbstractTerm:
        return self.system.terms()

    def default_solver(self) -> diffrax.AbstractSolver:
        return self.system.default_solver()

    def wrap_solver(self, solver: diffrax.AbstractSolver) -> diffrax.AbstractSolver:
        return NoiseSplitting(self.system.wrap_solver(solver), self.noise, self.system, self.key)

    def diffusion(self, t, y, args):
        return self.system.diffusion(t, y, args)


# ----------------------------------------------------------------------------------------
# fitting the amplitude on residuals


def rollout_residuals(
    system: solvers.AbstractSystem,
    ys: Float[ArrayLike, " T *state"],
    ts: Float[ArrayLike, " T"],
    *,
    dt: float,
    steps: int = 1,
    args: Any = None,
    t_offset: Float[ArrayLike, ""] = 0.0,
) -> tuple[Float[Array, " N *state"], Float[Array, " N *state"], float]:
    r"""Residuals of the deterministic model over `steps` save intervals along one
    trajectory, $r_n = y_{n+k} - \Phi_{k\Delta}(y_n)$, $n = 0 \dots T-k-1$.

    **Arguments:**

    - `system`: the deterministic model (e.g. the trained `Hybrid`), not its
      `StochasticSystem`.
    - `ys`: `[T, *state]`, one reference trajectory (coarse-grained), saved at `ts`.
    - `ts`: `[T]` concrete, equally spaced save times ($\Delta$ = their spacing).
    - `dt`: solver step; `steps`: $k$, default 1; `args`: for the vector field;
      `t_offset`: absolute time of `ts[0]` if `ts` are relative (may be traced).

    Batches: `eqx.filter_vmap` over trajectories (with per-trajectory physics if it
    differs), then pool the samples.

    **Returns:** `(states, residuals, interval)`: the starting states $y_n$ and the
    residuals, both `[T-k, *state]`, and $k\Delta$.
    """
    ts_np = np.asarray(ts, np.float64)
    if ts_np.ndim != 1 or ts_np.shape[0] < 2:
        raise ValueError(f"`ts` must be a 1D array of at least 2 save times, got {ts_np.shape}.")
    gaps = np.diff(ts_np)
    if not np.allclose(gaps, gaps[0], rtol=1e-6, atol=0.0) or gaps[0] <= 0:
        raise ValueError("`ts` must be equally spaced and increasing.")
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps < len(ts_np):
        raise ValueError(f"`steps` must be an int in [1, T) = [1, {len(ts_np)}), got {steps!r}.")
    ys = jnp.asarray(ys)
    if ys.shape[0] != ts_np.shape[0]:
        raise ValueError(f"`ys` must have T = {len(ts_np)} states, got shape {ys.shape}.")
    interval = float(steps * gaps[0])
    rel = np.array([0.0, interval])
    starts = ys[:-steps]
    t0s = jnp.asarray(ts_np[:-steps], ys.dtype) + jnp.asarray(t_offset, ys.dtype)

    def one(y0, t0):
        return solvers.solve(system, y0, rel, dt=dt, args=args, t_offset=t0, throw=False).ys[-1]

    pred = jax.vmap(one)(starts, t0s)
    return starts, ys[steps:] - pred, interval


def noise_nll(
    noise: AbstractNoise,
    states: Float[ArrayLike, " N *state"],
    residuals: Float[ArrayLike, " N *state"],
    interval: Float[ArrayLike, ""],
) -> Float[Array, ""]:
    r"""Mean Gaussian negative log-likelihood of residuals over `interval`,
    $\big\langle \tfrac12\log(2\pi\sigma(y_n)^2\Delta)
    + \frac{r_n^2}{2\sigma(y_n)^2\Delta}\big\rangle$, per scalar residual (nats)."""
    states = jnp.asarray(states)
    residuals = jnp.asarray(residuals)
    sigma = jax.vmap(lambda y: noise(0.0, y, None))(states)
    var = jnp.square(sigma) * interval
    return jnp.mean(0.5 * jnp.log(2 * jnp.pi * var) + 0.5 * jnp.square(residuals) / var)


def fit_noise(
    noise: AbstractNoise,
    states: Float[ArrayLike, " N *state"],
    residuals: Float[ArrayLike, " N *state"],
    interval: float,
    *,
    max_steps: int = 200,
) -> AbstractNoise:
    r"""Maximum-likelihood amplitude of the stochastic term from residuals
    (`rollout_residuals`): $\hat\phi = \arg\min_\phi$ `noise_nll`.

    `DiagonalNoise` has the closed form $\hat\sigma^2 = \langle r^2\rangle / \Delta$
    (pooled over the samples, and over the state too for a 0-d `log_sigma`); other
    noise models are fitted by L-BFGS on their floating parameters, starting from
    `noise` (the likelihood of `StateDependentNoise` is convex).

    **Arguments:** `noise` (the model, its values the initial guess); `states`,
    `residuals` `[N, *state]`; `interval` $k\Delta$; `max_steps` of L-BFGS.

    **Returns:** the fitted noise model, of `noise`'s type.
    """
    states = jnp.asarray(states)
    residuals = jnp.asarray(residuals)
    if states.shape != residuals.shape or states.ndim < 1:
        raise ValueError(
            "`states` and `residuals` must have the same shape [N, *state], got "
            f"{states.shape} and {residuals.shape}."
        )
    if not interval > 0:
        raise ValueError(f"`interval` must be positive, got {interval!r}.")
    if isinstance(noise, DiagonalNoise):
        axes = tuple(range(residuals.ndim)) if noise.log_sigma.ndim == 0 else 0
        var = jnp.mean(jnp.square(residuals), axis=axes) / interval
        log_sigma = 0.5 * jnp.log(var)
        if log_sigma.shape != noise.log_sigma.shape:
            raise ValueError(
                f"`noise.log_sigma` must be 0-d or the state's shape {residuals.shape[1:]}, "
                f"got {noise.log_sigma.shape}."
            )
        return DiagonalNoise(log_sigma.astype(noise.log_sigma.dtype))
    return _fit_lbfgs(noise, states, residuals, interval, max_steps)


@eqx.filter_jit
def _fit_lbfgs(noise, states, residuals, interval, max_steps):
    params, static = eqx.partition(noise, eqx.is_inexact_array)

    def loss(p):
        return noise_nll(eqx.combine(p, static), states, residuals, interval)

    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(loss)

    def step(carry, _):
        p, state = carry
        value, grad = value_and_grad(p, state=state)
        updates, state = opt.update(grad, state, p, value=value, grad=grad, value_fn=loss)
        return (optax.apply_updates(p, updates), state), value

    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=max_steps)
    return eqx.combine(params, static)
