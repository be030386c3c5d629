"""2D incompressible Navier–Stokes in vorticity form, pseudo-spectral, on jax-cfd."""

import math
from typing import Any

import diffrax
import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax_cfd.base import forcings as cfd_forcings
from jax_cfd.base import grids as cfd_grids
from jax_cfd.spectral import utils as cfd_spectral_utils
from jaxtyping import Array, ArrayLike, Complex, Float, PRNGKeyArray

from ._crank_nicolson_rk4 import CrankNicolsonRK4
from ._ns_diagnostics import velocity_from_vorticity
from ._system import AbstractSpectralSystem
from ._validation import check_positive, check_positive_int

_FORCINGS = (None, "kolmogorov")
# Kochkov et al. (2021) force at wavenumber 4 (jax-cfd's ForcedNavierStokes2D).
_KOLMOGOROV_WAVENUMBER = 4


def _grid(n: int, length: float) -> cfd_grids.Grid:
    return cfd_grids.Grid((n, n), domain=((0.0, length), (0.0, length)))


class NavierStokes2D(AbstractSpectralSystem):
    r"""Periodic incompressible 2D Navier–Stokes in vorticity form,

    $\partial_t \omega + u \cdot \nabla \omega = \nu \Delta \omega - \mu \omega
    + (\nabla \times f)$, with $u = (\partial_y \psi, -\partial_x \psi)$ and
    $-\Delta \psi = \omega$.

    Pseudo-spectral on the square $[0, L)^2$ with $x_i = i L / n$, $y_j = j L / n$,
    exactly jax-cfd's `spectral.equations.NavierStokes2D`: the advection
    $-u \cdot \nabla \omega$ is evaluated in physical space and dealiased with the
    2/3 brick-wall filter; viscosity $\nu$ and linear drag $\mu$ form the diagonal
    linear operator $\nu \Delta - \mu$, treated implicitly by the default solver
    `CrankNicolsonRK4` (jax-cfd's `crank_nicolson_rk4`). The constant parts
    (wavenumbers, filter, the curl of the forcing) are computed once, here.

    **Arguments:**

    - `n`: grid points per side (`n >= 4`, even recommended).
    - `viscosity`: $\nu > 0$; may be traced (e.g. under `jax.grad`). Good values on
      $L = 2\pi$ with Kolmogorov forcing: $10^{-3}$ ($Re = 1000$, Kochkov et al.,
      needs $n \gtrsim 256$ to be resolved) to $10^{-2}$ (resolved at $n = 64$).
    - `drag`: linear drag $\mu \geq 0$, default 0. Kochkov et al. use 0.1.
    - `forcing`: `None` or `"kolmogorov"`: the velocity forcing
      $f = (\sin(k y), 0)$ with $k = 4 \cdot 2\pi / L$, whose curl
      $-k \cos(k y)$ enters the vorticity equation. On the default $L = 2\pi$ this
      is exactly jax-cfd's `kolmogorov_forcing(grid, k=4)`, as in
      `ForcedNavierStokes2D`; on other lengths the wavenumber is scaled so that the
      forcing stays periodic.
    - `length`: the period $L$, default $2\pi$.

    **State:** `omega: Float[Array, "n n"]`, index `[i, j]` = $(x_i, y_j)$.

    **Reference:** Kochkov, Smith, Alieva, Wang, Brenner & Hoyer, "Machine
    learning–accelerated computational fluid dynamics", PNAS 118 (2021);
    Boffetta & Ecke, "Two-dimensional turbulence", Annu. Rev. Fluid Mech. 44 (2012).
    """

    n: int = eqx.field(static=True)
    viscosity: Float[ArrayLike, ""]
    drag: Float[ArrayLike, ""]
    forcing: str | None = eqx.field(static=True)
    length: float = eqx.field(static=True)
    laplacian: Float[Array, "n m"]
    spectral_operators: Float[Array, "4 n m"]
    dealias: Float[Array, "n m"]
    forcing_curl: Complex[Array, "n m"] | None

    def __init__(
        self,
        n: int,
        viscosity: float,
        *,
        drag: float = 0.0,
        forcing: str | None = None,
        length: float = 2 * math.pi,
    ):
        self.n = check_positive_int(n, "n", minimum=4)
        self.viscosity = check_positive(viscosity, "viscosity")
        self.drag = check_positive(drag, "drag", allow_zero=True)
        if not (forcing is None or (isinstance(forcing, str) and forcing in _FORCINGS)):
            raise ValueError(f"`forcing` must be None or 'kolmogorov', got {forcing!r}.")
        self.forcing = forcing
        self.length = float(check_positive(length, "length"))

        grid = _grid(self.n, self.length)
        kx, ky = grid.rfft_mesh()  # ordinal frequencies (cycles per unit length)
        kx = 2 * jnp.pi * kx
        ky = 2 * jnp.pi * ky
        k2 = kx**2 + ky**2
        # Weakly typed (integer mode numbers times a Python float), so that the linear
        # operator follows the state's precision: a float32 state stays float32 under
        # x64 instead of being promoted by the implicit solve.
        modes_x = np.rint(np.fft.fftfreq(self.n, 1 / self.n)).astype(np.int32)
        modes_y = np.rint(np.fft.rfftfreq(self.n, 1 / self.n)).astype(np.int32)
        m2 = jnp.asarray(modes_x[:, None] ** 2 + modes_y[None, :] ** 2)
        self.laplacian = -((2 * math.pi / self.length) ** 2) * m2
        # i * each row maps omega_hat to (u, v, d_x omega, d_y omega) in Fourier space:
        # psi_hat = omega_hat / |k|^2, u = d_y psi, v = -d_x psi. The mean of psi is
        # irrelevant (zero at k = 0).
        inv_k2 = jnp.where(k2 == 0, 0.0, 1 / jnp.where(k2 == 0, 1.0, k2))
        self.spectral_operators = jnp.stack([ky * inv_k2, -kx * inv_k2, kx, ky])
        self.dealias = cfd_spectral_utils.brick_wall_filter_2d(grid)
        if forcing == "kolmogorov":
            wavenumber = _KOLMOGOROV_WAVENUMBER * 2 * math.pi / self.length
            offsets = ((0, 0), (0, 0))
            fx, fy = cfd_forcings.kolmogorov_forcing(grid, k=wavenumber, offsets=offsets)(None)
            fx_hat, fy_hat = jnp.fft.rfft2(fx.data), jnp.fft.rfft2(fy.data)
            self.forcing_curl = cfd_spectral_utils.spectral_curl_2d(
                grid.rfft_mesh(), (fx_hat, fy_hat)
            )
        else:
            self.forcing_curl = None

    @property
    def state_shape(self) -> tuple[int, ...]:
        return (self.n, self.n)

    @property
    def grid(self) -> cfd_grids.Grid:
        """The jax-cfd `Grid` on $[0, L)^2$ (for jax-cfd's utilities)."""
        return _grid(self.n, self.length)

    @property
    def mesh(self) -> tuple[Float[Array, "n n"], Float[Array, "n n"]]:
        """The grid points $(x_i, y_j)$ as two `[n, n]` arrays, `indexing="ij"`."""
        x = jnp.arange(self.n, dtype=jnp.result_type(float)) * (self.length / self.n)
        return tuple(jnp.meshgrid(x, x, indexing="ij"))

    @property
    def linear_operator(self) -> Float[Array, "n m"]:
        return self.viscosity * self.laplacian - self.drag

    def nonlinear(self, t: ArrayLike, z: Complex[Array, "n m"], args: Any) -> Array:
        real = jnp.real(z).dtype
        # One batched inverse FFT for the velocity and the vorticity gradient.
        fields_hat = 1j * (self.spectral_operators.astype(real) * z)
        u, v, dx_omega, dy_omega = jnp.fft.irfftn(fields_hat, s=self.state_shape, axes=(-2, -1))
        advection = -(dx_omega * u + dy_omega * v)
        out = jnp.fft.rfftn(advection) * self.dealias.astype(real)
        if self.forcing_curl is not None:
            out = out + self.forcing_curl.astype(z.dtype)
        return out

    def default_solver(self) -> diffrax.AbstractSolver:
        return CrankNicolsonRK4()


def random_vorticity(
    key: PRNGKeyArray,
    n: int,
    *,
    peak_wavenumber: float = 4.0,
    max_velocity: float = 1.0,
    length: float = 2 * math.pi,
    dtype=None,
) -> Float[Array, "n n"]:
    r"""A random smooth, zero-mean vorticity field for `NavierStokes2D`.

    Gaussian, with the isotropic energy spectrum
    $E(k) \propto (k/k_p)^4 \exp(-2 (k/k_p)^2)$ peaked at $k_p$ = `peak_wavenumber`
    (in modes per domain), rescaled so that the largest speed $\max |u|$ is
    `max_velocity`, as jax-cfd's `initial_conditions.filtered_velocity_field` does.

    **Arguments:**

    - `key`: a PRNG key.
    - `n`: grid points per side.
    - `peak_wavenumber`: $k_p > 0$, default 4 (Kochkov et al.'s initial fields).
    - `max_velocity`: the largest speed, default 1. Kochkov et al. use 7 at
      $\nu = 10^{-3}$ with Kolmogorov forcing.
    - `length`: the period $L$, default $2\pi$.
    - `dtype`: real dtype, default JAX's default float.

    **Returns:** `omega: Float[Array, "n n"]`, index `[i, j]` = $(x_i, y_j)$.

    **Reference:** Kochkov et al., PNAS 118 (2021); jax-cfd's
    `initial_conditions.filtered_velocity_field`.
    """
    n = check_positive_int(n, "n", minimum=4)
    check_positive(peak_wavenumber, "peak_wavenumber")
    check_positive(max_velocity, "max_velocity")
    check_positive(length, "length")
    dtype = jnp.result_type(float) if dtype is None else jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"`dtype` must be a real floating dtype, got {dtype}.")
    mx = np.fft.fftfreq(n, d=1.0 / n)[:, None]
    my = np.fft.rfftfreq(n, d=1.0 / n)[None, :]
    m = np.sqrt(mx**2 + my**2) / float(peak_wavenumber)
    # A shell holds ~2 pi m modes and |omega_hat|^2 = |k|^2 |u_hat|^2, so the amplitude
    # per mode is sqrt(m E(m)); zero at m = 0 (zero mean).
    amplitude = m**2.5 * np.exp(-(m**2))
    noise_hat = jnp.fft.rfft2(jr.normal(key, (n, n), dtype))
    omega = jnp.fft.irfft2(noise_hat * amplitude.astype(dtype), s=(n, n))
    u, v = velocity_from_vorticity(omega, length=length)
    speed = jnp.sqrt(jnp.max(u**2 + v**2))
    return (omega * (max_velocity / speed)).astype(dtype)
