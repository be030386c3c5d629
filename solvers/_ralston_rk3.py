"""Ralston's third-order explicit Runge–Kutta method."""

from typing import ClassVar

import diffrax


class RalstonRK3(diffrax.AbstractSolver):
    r"""Ralston's third-order explicit Runge–Kutta method, fixed steps, stages written
    out: $k_1 = f(t, y)$, $k_2 = f(t + h/2, y + h k_1/2)$, $k_3 = f(t + 3h/4, y +
    3hk_2/4)$, $y_1 = y + h(2k_1 + 3k_2 + 4k_3)/9$.

    Three vector-field calls per step (Tsit5 makes six): the Kuramoto hybrid's cluster
    model uses it, where each call evaluates a learned closure; at its $\Delta t =
    0.1$ the error on the Ott–Antonsen network is ~1e-6, far below the model error
    the closure corrects. Unlike diffrax's Runge–Kutta solvers, whose stages run in an
    `eqxi.while_loop`, it is straight-line code, which also differentiates under the
    `jax.shard_map` of the ensemble training.

    **Reference:** A. Ralston, "Runge–Kutta methods with minimum error bounds", Math.
    Comp. 16 (1962).
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
        k1 = terms.vf(t0, y0, args)
        k2 = terms.vf(t0 + 0.5 * h, y0 + (0.5 * h) * k1, args)
        k3 = terms.vf(t0 + 0.75 * h, y0 + (0.75 * h) * k2, args)
        y1 = y0 + (h / 9) * (2 * k1 + 3 * k2 + 4 * k3)
        return y1, None, dict(y0=y0, y1=y1), None, diffrax.RESULTS.successful

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)
