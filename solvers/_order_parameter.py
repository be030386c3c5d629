"""The Kuramoto order parameter and its Ott–Antonsen evolution."""

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Complex, Float


def order_parameter(theta: Float[ArrayLike, "... N"], axis: int = -1) -> Complex[Array, "..."]:
    r"""The complex Kuramoto order parameter $r e^{i\psi} = \frac1N \sum_j
    e^{i\theta_j}$; $r = |\cdot| \in [0, 1]$ measures synchrony.

    **Arguments:**

    - `theta`: phases; any leading axes (e.g. the time axis of `Solution.ys`).
    - `axis`: the oscillator axis, default -1.

    **Returns:** a complex array with `axis` reduced.
    """
    theta = jnp.asarray(theta)
    return jnp.mean(jnp.exp(1j * theta), axis=axis)


def ott_antonsen_order_parameter(
    t: Float[ArrayLike, "..."],
    r0: float,
    coupling: float,
    width: float,
) -> Float[Array, "..."]:
    r"""The exact $r(t)$ of the all-to-all Kuramoto model with Lorentzian
    frequencies on the Ott–Antonsen manifold, as $N \to \infty$:

    $\dot r = -\Delta r + \frac K2 r (1 - r^2)$, a Bernoulli equation solved by
    $r(t)^{-2} = e^{-2at} r_0^{-2} + \frac K2 \frac{1 - e^{-2at}}{a}$,
    $a = K/2 - \Delta$ (the limit $2t$ of the last fraction at $a = 0$).
    For $K > 2\Delta$, $r \to \sqrt{1 - 2\Delta/K}$; below, $r \to 0$.

    **Arguments:**

    - `t`: times since the initial state.
    - `r0`: $r(0) \in (0, 1]$.
    - `coupling`: $K$.
    - `width`: the Lorentzian half width $\Delta$.

    **Returns:** $r(t)$, shaped like `t`.

    **Reference:** E. Ott, T. M. Antonsen, Chaos 18, 037113 (2008).
    """
    t = jnp.asarray(t)
    a = 0.5 * coupling - width
    safe = jnp.where(a == 0, 1.0, a)
    growth = jnp.where(a == 0, 2.0 * t, -jnp.expm1(-2.0 * safe * t) / safe)
    inv_r2 = jnp.exp(-2.0 * a * t) / r0**2 + 0.5 * coupling * growth
    return 1.0 / jnp.sqrt(inv_r2)
