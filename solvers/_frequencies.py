"""Natural frequencies and initial phases for Kuramoto oscillators."""

import jax
import jax.numpy as jnp
from jax.scipy.special import ndtri
from jaxtyping import Array, Float

from ._validation import check_positive, check_positive_int


def _uniforms(key, n: int, quantiles: bool, dtype) -> Array:
    """Uniforms in (0, 1): iid from `key`, or the midpoints (i + 1/2)/n of n equal
    bins (deterministic quantiles), shuffled by `key` unless it is None."""
    if not quantiles:
        if key is None:
            raise ValueError("`key` is required unless `quantiles=True`.")
        # Open interval: the inverse CDFs below are infinite at 0 and 1.
        tiny = jnp.finfo(dtype).tiny
        return jax.random.uniform(key, (n,), dtype, minval=tiny, maxval=1.0)
    u = (jnp.arange(n, dtype=dtype) + 0.5) / n
    return u if key is None else jax.random.permutation(key, u)


def _float_dtype(dtype):
    return jnp.dtype(dtype) if dtype is not None else jnp.zeros(()).dtype


def lorentzian_frequencies(
    key,
    n: int,
    *,
    center: float = 0.0,
    width: float = 1.0,
    quantiles: bool = False,
    dtype=None,
) -> Float[Array, " n"]:
    r"""Natural frequencies from the Lorentzian (Cauchy) density
    $g(\omega) = \frac{\Delta / \pi}{(\omega - \omega_0)^2 + \Delta^2}$.

    With this $g$ the all-to-all Kuramoto model synchronises above $K_c = 2\Delta$
    and reduces exactly to the Ott–Antonsen equation.

    **Arguments:**

    - `key`: a JAX PRNG key; with `quantiles=True` it only shuffles, and may be
      `None` (sorted output).
    - `n`: the number of oscillators.
    - `center`: $\omega_0$, default 0.
    - `width`: the half width $\Delta > 0$, default 1.
    - `quantiles`: the $n$ midpoint quantiles $\omega_0 + \Delta \tan(\pi(u_i -
      1/2))$, $u_i = (i + 1/2)/n$, instead of random draws: a deterministic sample
      whose empirical law converges like $1/n$, not $1/\sqrt n$.
    - `dtype`: default float64 under x64, else float32.

    **Returns:** `Float[Array, "n"]`.
    """
    n = check_positive_int(n, "n")
    check_positive(width, "width")
    dtype = _float_dtype(dtype)
    u = _uniforms(key, n, quantiles, dtype)
    return center + width * jnp.tan(jnp.pi * (u - 0.5))


def gaussian_frequencies(
    key,
    n: int,
    *,
    mean: float = 0.0,
    std: float = 1.0,
    quantiles: bool = False,
    dtype=None,
) -> Float[Array, " n"]:
    r"""Natural frequencies from the normal density $\mathcal N(\mu, s^2)$
    (synchronisation threshold $K_c = 2 / (\pi g(\mu)) = \sqrt{8/\pi}\, s$).

    **Arguments:**

    - `key`: a JAX PRNG key (may be `None` with `quantiles=True`: sorted output).
    - `n`: the number of oscillators.
    - `mean`: $\mu$, default 0.
    - `std`: $s > 0$, default 1.
    - `quantiles`: the $n$ midpoint quantiles $\mu + s\,\Phi^{-1}((i + 1/2)/n)$
      (shuffled by `key`) instead of random draws.
    - `dtype`: default float64 under x64, else float32.

    **Returns:** `Float[Array, "n"]`.
    """
    n = check_positive_int(n, "n")
    check_positive(std, "std")
    dtype = _float_dtype(dtype)
    if not quantiles:
        if key is None:
            raise ValueError("`key` is required unless `quantiles=True`.")
        return mean + std * jax.random.normal(key, (n,), dtype)
    return mean + std * ndtri(_uniforms(key, n, True, dtype))


def wrapped_cauchy_phases(
    key,
    n: int,
    *,
    r0: float,
    mean_phase: float = 0.0,
    quantiles: bool = False,
    dtype=None,
) -> Float[Array, " n"]:
    r"""Phases from the wrapped Cauchy (Poisson kernel) density
    $p(\theta) = \frac{1}{2\pi} \frac{1 - \rho^2}{1 + \rho^2 - 2\rho\cos(\theta - \psi)}$
    with $\rho$ = `r0`: its order parameter is $r_0 e^{i\psi}$.

    Drawn independently of the frequencies, these phases lie on the Ott–Antonsen
    manifold, so that $r(t)$ follows `solvers.ott_antonsen_order_parameter` for
    Lorentzian frequencies.

    **Arguments:**

    - `key`: a JAX PRNG key (may be `None` with `quantiles=True`: sorted output).
    - `n`: the number of oscillators.
    - `r0`: $\rho \in [0, 1)$, the initial order parameter.
    - `mean_phase`: $\psi$, default 0.
    - `quantiles`: deterministic midpoint quantiles, shuffled by `key`.
    - `dtype`: default float64 under x64, else float32.

    **Returns:** `Float[Array, "n"]`, phases in $(\psi - \pi, \psi + \pi)$.
    """
    n = check_positive_int(n, "n")
    check_positive(r0, "r0", allow_zero=True)
    if not r0 < 1:
        raise ValueError(f"`r0` must be in [0, 1), got {r0}.")
    dtype = _float_dtype(dtype)
    u = _uniforms(key, n, quantiles, dtype)
    # The Möbius image of the uniform law: theta = 2 arctan(s tan(pi (u - 1/2))),
    # s = (1 - rho) / (1 + rho).
    s = (1.0 - r0) / (1.0 + r0)
    return mean_phase + 2.0 * jnp.arctan(s * jnp.tan(jnp.pi * (u - 0.5)))
