"""Low-storage Runge–Kutta / Crank–Nicolson IMEX stepping (jax-cfd's
`crank_nicolson_rk4`) as a diffrax solver."""

from typing import ClassVar

import diffrax
import jax.numpy as jnp

from ._term import SemiLinearTerm
from ._term import operator_in_precision as _as_dtype

# Carpenter–Kennedy low-storage RK4 coefficients, as in jax_cfd.spectral.time_stepping.
_ALPHAS = (0.0, 0.1496590219993, 0.3704009573644, 0.6222557631345, 0.9582821306748, 1.0)
_BETAS = (0.0, -0.4178904745, -1.192151694643, -1.697784692471, -1.514183444257)
_GAMMAS = (0.1496590219993, 0.3792103129999, 0.8229550293869, 0.6994504559488,
           0.1530572479681)


class CrankNicolsonRK4(diffrax.AbstractSolver):
    r"""IMEX: explicit low-storage RK4 on $N$, Crank–Nicolson on the diagonal $L$.

    The same arithmetic as jax-cfd's `crank_nicolson_rk4`, so that a system built on
    jax-cfd steps exactly like jax-cfd. Second order overall (Crank–Nicolson), with
    the high-order explicit part that favours advection-dominated flows. Fixed steps.

    **Reference:** Canuto et al., "Spectral Methods" (2007), appendix D.3;
    Carpenter & Kennedy (1994).
    """

    term_structure: ClassVar = SemiLinearTerm
    interpolation_cls: ClassVar = diffrax.LocalLinearInterpolation

    def order(self, terms):
        return 2

    def init(self, terms, t0, t1, y0, args):
        return None

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        del solver_state, made_jump
        dt = t1 - t0
        # The operator follows the state's precision (a float64 operator must not
        # promote a float32 run to complex128 stage by stage).
        linear = _as_dtype(terms.linear, jnp.real(y0).dtype)
        u = y0
        h = 0
        for k in range(len(_BETAS)):
            t_stage = t0 + _ALPHAS[k] * dt
            h = terms.nonlinear(t_stage, u, args) + _BETAS[k] * h
            mu = 0.5 * dt * (_ALPHAS[k + 1] - _ALPHAS[k])
            # jax-cfd's `implicit_solve`, (1 - mu L)^{-1} u: a reciprocal of the
            # (usually real) operator and a product, not a complex division.
            u = (1 / (1 - mu * linear)) * (u + _GAMMAS[k] * dt * h + mu * (linear * u))
        dense_info = dict(y0=y0, y1=u)
        return u, None, dense_info, None, diffrax.RESULTS.successful

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)
