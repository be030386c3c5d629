"""The strong-stability-preserving third-order Runge–Kutta method of Shu and Osher."""

from typing import ClassVar

import diffrax


class SSPRK3(diffrax.AbstractSolver):
    r"""Shu and Osher's third-order strong-stability-preserving Runge–Kutta method,
    fixed steps, stages written out as convex combinations of forward Euler steps:

    $y^{(1)} = y + h f(t, y)$,
    $y^{(2)} = \tfrac34 y + \tfrac14\big(y^{(1)} + h f(t + h, y^{(1)})\big)$,
    $y_1 = \tfrac13 y + \tfrac23\big(y^{(2)} + h f(t + h/2, y^{(2)})\big)$.

    Its SSP coefficient is 1: any property that a forward Euler step keeps up to a
    step $h_{FE}$ (a maximum principle, total-variation diminishing, positivity) a
    step of this method keeps up to the same $h \le h_{FE}$. That makes it the
    default of `GraphBurgers`, whose monotone fluxes give no new extrema under
    `GraphBurgers.stable_dt`. Three vector-field calls per step; straight-line code
    like `RalstonRK3` (no `eqxi.while_loop` over stages).

    **Reference:** C.-W. Shu, S. Osher, "Efficient implementation of essentially
    non-oscillatory shock-capturing schemes", J. Comput. Phys. 77, 439 (1988);
    S. Gottlieb, C.-W. Shu, E. Tadmor, "Strong stability-preserving high-order time
    discretization methods", SIAM Review 43, 89 (2001).
    """

    term_structure: ClassVar = diffrax.AbstractTerm
    interpolation_cls: ClassVar = diffrax.LocalLinearInterpolation

    def order(self, terms):
        return 3

    def init(self, terms, t0, t1, y0, args):
        return None

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        del solver_state, made_jump
        h = t1 - t0
        y1 = y0 + h * terms.vf(t0, y0, args)
        y2 = 0.75 * y0 + 0.25 * (y1 + h * terms.vf(t1, y1, args))
        y3 = y0 / 3 + (2 / 3) * (y2 + h * terms.vf(t0 + 0.5 * h, y2, args))
        return y3, None, dict(y0=y0, y1=y3), None, diffrax.RESULTS.successful

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)
