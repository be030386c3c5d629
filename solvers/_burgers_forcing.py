"""Random large-scale forcing and smooth initial conditions for Burgers."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ._validation import check_positive, check_positive_int


class BurgersForcing(eqx.Module):
    r"""A sum of travelling sinusoids, as in Bar-Sinai et al. (2019):

    $f(t, x) = \sum_i A_i \sin(\omega_i t + 2\pi l_i x / L + \phi_i)$.

    An `eqx.Module` of arrays, so a batch of forcings is a pytree that `jax.vmap`
    maps over (together with the `Burgers1D` holding it).

    **Reference:** Bar-Sinai, Hoyer, Hickey & Brenner, "Learning data-driven
    discretizations for partial differential equations", PNAS 116 (2019).
    """

    amplitudes: Float[Array, " m"]
    frequencies: Float[Array, " m"]
    wavenumbers: Float[Array, " m"]
    phases: Float[Array, " m"]
    length: float = eqx.field(static=True)

    def __call__(self, t: ArrayLike, x: Float[Array, " n"]) -> Float[Array, " n"]:
        arg = (
            self.frequencies[:, None] * t
            + 2 * jnp.pi * self.wavenumbers[:, None] * x[None, :] / self.length
            + self.phases[:, None]
        )
        return jnp.sum(self.amplitudes[:, None] * jnp.sin(arg), axis=0).astype(x.dtype)

    @classmethod
    def random(
        cls,
        key: PRNGKeyArray,
        *,
        n_modes: int = 20,
        amplitude: float = 0.5,
        max_frequency: float = 0.4,
        wavenumbers: tuple[int, ...] = (3, 4, 5, 6),
        length: float = 2 * jnp.pi,
    ) -> "BurgersForcing":
        r"""Draw $A_i \sim U[-a, a]$, $\omega_i \sim U[-w, w]$, $l_i$ uniform from
        `wavenumbers`, $\phi_i \sim U[0, 2\pi]$. The defaults are Bar-Sinai et al.'s."""
        check_positive_int(n_modes, "n_modes")
        check_positive(amplitude, "amplitude", allow_zero=True)
        check_positive(max_frequency, "max_frequency", allow_zero=True)
        if len(wavenumbers) == 0:
            raise ValueError("`wavenumbers` must not be empty.")
        ka, kw, kl, kp = jr.split(key, 4)
        return cls(
            amplitudes=jr.uniform(ka, (n_modes,), minval=-amplitude, maxval=amplitude),
            frequencies=jr.uniform(kw, (n_modes,), minval=-max_frequency, maxval=max_frequency),
            wavenumbers=jr.choice(kl, jnp.asarray(wavenumbers, float), (n_modes,)),
            phases=jr.uniform(kp, (n_modes,), maxval=2 * jnp.pi),
            length=float(length),
        )


def random_smooth_field(
    key: PRNGKeyArray,
    n: int,
    *,
    max_wavenumber: int = 6,
    amplitude: float = 1.0,
    slope: float = 1.0,
    zero_mean: bool = True,
    dtype=None,
) -> Float[Array, " n"]:
    r"""A random smooth periodic field on $n$ points.

    $u(x) = \sum_{k=1}^{K} k^{-s} (a_k \cos kx + b_k \sin kx)$ with standard normal
    $a_k, b_k$, rescaled so that $\max|u| = $ `amplitude`. With `zero_mean=False`
    a random mean in $[-A/2, A/2]$ is added.

    **Arguments:** `key`; `n` points; `max_wavenumber` $K$ (default 6); `amplitude`
    (default 1); `slope` $s$ of the spectrum (default 1); `zero_mean`; `dtype`.

    **Returns:** `Float[Array, "n"]`.
    """
    check_positive_int(n, "n")
    check_positive_int(max_wavenumber, "max_wavenumber")
    if max_wavenumber >= n // 2:
        raise ValueError(f"`max_wavenumber` must be < n/2 = {n // 2}, got {max_wavenumber}.")
    check_positive(amplitude, "amplitude")
    dtype = dtype or jnp.zeros(()).dtype
    ka, kb, km = jr.split(key, 3)
    k = jnp.arange(1, max_wavenumber + 1)
    a = jr.normal(ka, (max_wavenumber,)) * k**-slope
    b = jr.normal(kb, (max_wavenumber,)) * k**-slope
    x = jnp.arange(n) * 2 * jnp.pi / n
    u = jnp.sum(a[:, None] * jnp.cos(k[:, None] * x) + b[:, None] * jnp.sin(k[:, None] * x), 0)
    u = amplitude * u / jnp.max(jnp.abs(u))
    if not zero_mean:
        u = u + jr.uniform(km, (), minval=-amplitude / 2, maxval=amplitude / 2)
    return jax.lax.stop_gradient(u).astype(dtype)
