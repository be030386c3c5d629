"""Fourth-order exponential time differencing Runge–Kutta (ETDRK4) as a diffrax
solver for semi-linear systems with a diagonal linear operator."""

from typing import ClassVar

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jaxtyping import Array

from ._term import SemiLinearTerm
from ._term import operator_in_precision as _as_dtype

# Contour points of the Kassam–Trefethen evaluation of the phi-functions. 32 points
# on a unit circle around each h*L give ~machine precision in float64 and float32.
_CONTOUR_POINTS = 32
# The coefficients are cached for one step size; a step within this relative distance
# of it reuses them (float time arithmetic perturbs t1 - t0 slightly at large t).
_CACHE_RTOL = 1e-3


def etdrk4_coefficients(linear: Array, h) -> tuple[Array, ...]:
    r"""The ETDRK4 coefficients $(E, E_{1/2}, Q, f_1, f_2, f_3)$ for step $h$.

    Evaluated by a contour integral in the complex plane, which avoids the
    cancellation of the closed forms near $hL = 0$.

    **Reference:** Kassam & Trefethen, "Fourth-order time-stepping for stiff PDEs",
    SIAM J. Sci. Comput. 26 (2005).
    """
    real_operator = not jnp.iscomplexobj(linear)
    cdtype = jnp.result_type(linear, jnp.complex64)
    hl = h * linear
    j = np.arange(1, _CONTOUR_POINTS + 1)
    if real_operator:
        # The contour is symmetric about the real axis and the integrands are real on
        # it for real hL: the upper half circle and a real part give the same mean.
        j = j[: _CONTOUR_POINTS // 2]
    roots = np.exp(2j * np.pi * (j - 0.5) / _CONTOUR_POINTS)
    lr = hl.astype(cdtype)[..., None] + roots.astype(cdtype)
    # exp(hL + r) = exp(hL) exp(r): one exponential per mode (real for a real L) and
    # constants, instead of a complex exponential per mode and contour point, which
    # cost milliseconds per call on CPU for a few thousand modes.
    e = jnp.exp(hl)
    e2 = jnp.exp(hl / 2)
    elr = e.astype(cdtype)[..., None] * np.exp(roots).astype(cdtype)
    e2lr = e2.astype(cdtype)[..., None] * np.exp(roots / 2).astype(cdtype)
    inv = 1 / lr
    inv3 = inv * inv * inv
    lr2 = lr * lr
    q = h * jnp.mean((e2lr - 1) * inv, axis=-1)
    f1 = h * jnp.mean((-4 - lr + elr * (4 - 3 * lr + lr2)) * inv3, axis=-1)
    f2 = h * jnp.mean((2 + lr + elr * (-2 + lr)) * inv3, axis=-1)
    f3 = h * jnp.mean((-4 - 3 * lr - lr2 + elr * (4 - lr)) * inv3, axis=-1)
    out = (e, e2, q, f1, f2, f3)
    if real_operator:
        out = tuple(jnp.real(c) for c in out)
    return out


class ETDRK4(diffrax.AbstractSolver):
    r"""ETDRK4 for $\dot z = L z + N(t, z)$, exact in the stiff linear part $L$.

    Fourth order; for `SemiLinearTerm`s only (the systems' `terms()`); fixed steps
    (no error estimate). The coefficients depend on the step size: `init` computes
    them for its step `t1 - t0`.

    **Arguments:**

    - `fixed_step`: if `False` (default), a step of another size (beyond a relative
      1e-3, the rounding of float time arithmetic) recomputes the coefficients and
      caches them for the steps that follow. If `True`, the caller promises that
      every step has the size given to `init`, and the coefficients are used as they
      are: they stay loop-invariant, so reverse mode through a `lax.scan` of steps
      does not store them per step (the per-step `lax.cond` of the default costs
      about 1.7x in the time of a gradient). `solvers.solve` sets it when all its
      steps have the same size.

    **Reference:** Cox & Matthews, J. Comput. Phys. 176 (2002); Kassam & Trefethen,
    SIAM J. Sci. Comput. 26 (2005).
    """

    fixed_step: bool = eqx.field(default=False, static=True)

    term_structure: ClassVar = SemiLinearTerm
    interpolation_cls: ClassVar = diffrax.LocalLinearInterpolation

    def order(self, terms):
        return 4

    def init(self, terms, t0, t1, y0, args):
        real = jnp.real(y0).dtype
        h = jnp.asarray(t1 - t0, real)
        return h, etdrk4_coefficients(_as_dtype(terms.linear, real), h)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        del made_jump
        h_cached, coeffs = solver_state
        real = h_cached.dtype
        h = jnp.asarray(t1 - t0, real)
        if self.fixed_step:
            # Returned as it came in: the scan's carry forwarding then sees it as
            # loop-invariant.
            new_state = solver_state
        else:
            reuse = jnp.abs(h - h_cached) <= _CACHE_RTOL * jnp.abs(h_cached)
            coeffs = jax.lax.cond(
                reuse,
                lambda: coeffs,
                lambda: etdrk4_coefficients(_as_dtype(terms.linear, real), h),
            )
            new_state = (jnp.where(reuse, h_cached, h), coeffs)
        e, e2, q, f1, f2, f3 = coeffs
        nl = terms.nonlinear
        half = t0 + 0.5 * h
        nv = nl(t0, y0, args)
        a = e2 * y0 + q * nv
        na = nl(half, a, args)
        b = e2 * y0 + q * na
        nb = nl(half, b, args)
        c = e2 * a + q * (2 * nb - nv)
        nc = nl(t1, c, args)
        y1 = e * y0 + f1 * nv + 2 * f2 * (na + nb) + f3 * nc
        dense_info = dict(y0=y0, y1=y1)
        return y1, None, dense_info, new_state, diffrax.RESULTS.successful

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)


def with_fixed_step(solver: diffrax.AbstractSolver) -> diffrax.AbstractSolver:
    """`solver` with every `ETDRK4` in it, wrapped or not, set to `fixed_step=True`:
    for callers that guarantee equal steps (`solvers.solve`'s uniform path)."""

    def is_etdrk4(x):
        return isinstance(x, ETDRK4)

    return jtu.tree_map(
        lambda x: ETDRK4(fixed_step=True) if is_etdrk4(x) else x, solver, is_leaf=is_etdrk4
    )
