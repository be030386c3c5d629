"""A diffrax term that keeps the split $L \\hat u + N(t, \\hat u)$ visible to
exponential and implicit-explicit solvers."""

from collections.abc import Callable
from typing import Any

import diffrax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike


class SemiLinearTerm(diffrax.AbstractTerm):
    r"""$\dot z = L z + N(t, z, \text{args})$ with a diagonal linear operator $L$.

    Any diffrax solver sees an ordinary ODE term (`vf` returns the full tendency);
    `ETDRK4` and `CrankNicolsonRK4` read `linear` and `nonlinear` separately so that
    the stiff linear part is treated exactly or implicitly.

    **Arguments:**

    - `linear`: the diagonal of $L$, broadcastable against the state.
    - `nonlinear`: `(t, z, args) -> N`, the explicit part.
    """

    linear: Array
    nonlinear: Callable[[ArrayLike, Array, Any], Array]

    def vf(self, t, y, args):
        return self.linear * y + self.nonlinear(t, y, args)

    def contr(self, t0, t1, **kwargs):
        return t1 - t0

    def prod(self, vf, control):
        return vf * jnp.asarray(control, dtype=jnp.real(vf).dtype)


def operator_in_precision(linear: Array, real) -> Array:
    """A diagonal operator cast to the state's precision (real stays real, complex
    stays complex): solvers follow the state's dtype, not the operator's."""
    if jnp.iscomplexobj(linear):
        return linear.astype(jnp.result_type(real, jnp.complex64))
    return linear.astype(real)
