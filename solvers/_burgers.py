"""1D viscous Burgers, pseudo-spectral with 2/3 dealiasing."""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Complex, Float

from ._system import AbstractSpectralSystem
from ._validation import check_positive, check_positive_int


class Burgers1D(AbstractSpectralSystem):
    r"""Periodic viscous Burgers, $u_t + u u_x = \nu u_{xx} + f(t, x)$.

    Pseudo-spectral on $x_j = j L / n$: the advection $-\tfrac12 \partial_x(u^2)$ is
    evaluated with the 2/3 rule, the viscous term is treated exactly by `ETDRK4`
    (the default solver). The spatial mean is conserved to round-off (the $k=0$ mode
    of the flux divergence vanishes) unless the forcing has a mean.

    **Arguments:**

    - `n`: grid points (even recommended).
    - `viscosity`: $\nu > 0$. Good values on $L=2\pi$: 0.01–0.1 (shocks resolved by
      $n \gtrsim 2\pi \cdot 4 / (\nu \cdot 30)$... in practice 512 points at
      $\nu = 0.01$).
    - `length`: period $L$, default $2\pi$.
    - `forcing`: `None` or a callable `(t, x) -> f` with `x` the grid, e.g.
      `solvers.BurgersForcing.random(key)` (Bar-Sinai et al. 2019).

    **State:** `u: Float[Array, "n"]`.
    """

    n: int = eqx.field(static=True)
    viscosity: Float[ArrayLike, ""]
    length: float = eqx.field(static=True)
    forcing: Callable[[ArrayLike, Array], Array] | None = None

    def __init__(
        self,
        n: int,
        viscosity: float,
        *,
        length: float = 2 * jnp.pi,
        forcing: Callable[[ArrayLike, Array], Array] | None = None,
    ):
        self.n = check_positive_int(n, "n", minimum=4)
        self.viscosity = check_positive(viscosity, "viscosity")
        self.length = float(check_positive(length, "length"))
        if forcing is not None and not callable(forcing):
            raise ValueError(f"`forcing` must be None or a callable (t, x) -> f, got {forcing!r}.")
        self.forcing = forcing

    @property
    def state_shape(self) -> tuple[int, ...]:
        return (self.n,)

    @property
    def grid(self) -> Float[Array, " n"]:
        """The grid points $x_j = j L / n$."""
        return jnp.arange(self.n) * (self.length / self.n)

    @property
    def wavenumbers(self) -> Float[Array, " m"]:
        """Angular wavenumbers $k = 2\\pi m / L$ of the `rfft` modes."""
        return 2 * jnp.pi / self.length * jnp.arange(self.n // 2 + 1)

    @property
    def dealias_mask(self) -> Float[Array, " m"]:
        """2/3 rule: keep the modes $|m| < n/3$."""
        m = jnp.arange(self.n // 2 + 1)
        return (m < self.n / 3).astype(jnp.float32)

    @property
    def linear_operator(self) -> Float[Array, " m"]:
        k = self.wavenumbers
        return -self.viscosity * k**2

    def nonlinear(self, t: ArrayLike, z: Complex[Array, " m"], args: Any) -> Array:
        mask = self.dealias_mask.astype(jnp.real(z).dtype)
        u = jnp.fft.irfft(mask * z, n=self.n)
        ik = 1j * self.wavenumbers.astype(jnp.real(z).dtype)
        out = -0.5 * ik * mask * jnp.fft.rfft(u * u)
        if self.forcing is not None:
            f = self.forcing(t, self.grid.astype(u.dtype))
            out = out + jnp.fft.rfft(jnp.asarray(f, u.dtype))
        return out
