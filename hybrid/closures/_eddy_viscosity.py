"""Classical closures: eddy viscosity with one coefficient (Smagorinsky, Leith)."""

import math
from typing import Any, Literal

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ._stencil import check_ndim, check_state


class EddyViscosity(eqx.Module):
    r"""An eddy-viscosity closure with one learnable coefficient $C > 0$: the classical
    baseline a learned closure has to beat.

    - 1D velocity $u$ (Burgers), Smagorinsky: $\nu_t = (C\Delta)^2 |u_x|$ and
      $c(u) = \partial_x(\nu_t \partial_x u)$, in flux form on the cell faces (the mean
      of $u$ is conserved exactly, energy is only removed).
    - 2D vorticity $\omega$ (Navier–Stokes), $c(\omega) = \nabla\cdot(\nu_t\nabla\omega)$
      with Smagorinsky's $\nu_t = (C\Delta)^2 |\bar S|$, $|\bar S| = \sqrt{2 \bar S_{ij}
      \bar S_{ij}}$ of the velocity of $\omega$, or (`kind="leith"`) Leith's
      $\nu_t = (C\Delta)^3 |\nabla\omega|$, the variant for the enstrophy cascade of 2D
      turbulence; spectral derivatives on the periodic grid.

    $\Delta = L / n$ is the grid spacing. The coefficient is stored as $\log C$, so
    that training it (`hybrid.fit` with this closure, one member) keeps it positive.

    **Arguments:**

    - `ndim`: 1 (Smagorinsky only) or 2.
    - `kind`: `"smagorinsky"` (default) or `"leith"` (2D).
    - `coefficient`: initial $C$, default 0.17 (Lilly's value for 3D turbulence; the
      fit moves it).
    - `length`: the period $L$ of the domain; default `None`, grid units ($\Delta = 1$).
    - `key`: unused (a classical closure has nothing random), for `make_closure`.

    **References:** J. Smagorinsky, Mon. Weather Rev. 91 (1963); C. E. Leith, Phys.
    Fluids 11 (1968); D. K. Lilly, IBM Sci. Comput. Symp. (1967).
    """

    log_coefficient: Float[Array, ""]
    ndim: int = eqx.field(static=True)
    kind: str = eqx.field(static=True)
    length: float | None = eqx.field(static=True)

    def __init__(self, ndim: int, *, key: PRNGKeyArray | None = None,
                 kind: Literal["smagorinsky", "leith"] = "smagorinsky",
                 coefficient: float = 0.17, length: float | None = None, **unused: Any):
        del key, unused
        self.ndim = check_ndim(ndim)
        if kind not in ("smagorinsky", "leith"):
            raise ValueError(f"`kind` must be 'smagorinsky' or 'leith', got {kind!r}.")
        if kind == "leith" and self.ndim != 2:
            raise ValueError("`kind='leith'` is the 2D vorticity closure: `ndim` must be 2.")
        if not (isinstance(coefficient, (int, float)) and coefficient > 0):
            raise ValueError(f"`coefficient` must be a positive number, got {coefficient!r}.")
        if length is not None and not (isinstance(length, (int, float)) and length > 0):
            raise ValueError(f"`length` must be a positive number or None, got {length!r}.")
        self.kind = kind
        self.length = None if length is None else float(length)
        self.log_coefficient = jnp.asarray(math.log(coefficient))

    @property
    def coefficient(self) -> Array:
        return jnp.exp(self.log_coefficient)

    def __call__(self, t: ArrayLike, y: Float[Array, "*n"], args: Any = None) -> Array:
        y = check_state(y, self.ndim)
        n = y.shape[0]
        length = float(n) if self.length is None else self.length
        delta = length / n
        c = self.coefficient.astype(y.dtype)
        if self.ndim == 1:
            grad = (jnp.roll(y, -1) - y) / delta  # at the faces j + 1/2
            flux = (c * delta) ** 2 * jnp.abs(grad) * grad
            return (flux - jnp.roll(flux, 1)) / delta
        k = 2 * jnp.pi / length * jnp.fft.fftfreq(n, 1.0 / n)
        kx, ky = k[:, None], k[None, :]
        w = jnp.fft.fft2(y)

        def deriv(field_hat, kk):
            return jnp.real(jnp.fft.ifft2(1j * kk * field_hat)).astype(y.dtype)

        wx, wy = deriv(w, kx), deriv(w, ky)
        if self.kind == "leith":
            nu = (c * delta) ** 3 * jnp.sqrt(wx**2 + wy**2)
        else:
            k2 = kx**2 + ky**2
            psi = -w / jnp.where(k2 == 0, 1.0, k2)  # laplacian(psi) = -omega
            psi = jnp.where(k2 == 0, 0.0, psi)
            u_hat, v_hat = 1j * ky * psi, -1j * kx * psi  # u = psi_y, v = -psi_x
            ux, uy = deriv(u_hat, kx), deriv(u_hat, ky)
            vx = deriv(v_hat, kx)
            s = jnp.sqrt(2 * (2 * ux**2 + 0.5 * (uy + vx) ** 2))  # v_y = -u_x
            nu = (c * delta) ** 2 * s
        return deriv(jnp.fft.fft2(nu * wx), kx) + deriv(jnp.fft.fft2(nu * wy), ky)
