"""Diagnostics of 2D periodic vorticity fields: velocity, energy, enstrophy, spectrum.

All functions take `omega: Float[Array, "... n n"]` on $[0, L)^2$ (leading axes are
batch axes, e.g. the time axis of `Solution.ys`) and average over the domain.
"""

import math

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._validation import check_positive


def _check_field(omega, name: str = "omega") -> None:
    shape = getattr(omega, "shape", None)
    if shape is None or len(shape) < 2 or shape[-1] != shape[-2]:
        got = shape if shape is not None else type(omega).__name__
        raise ValueError(f"`{name}` must be an array of shape [..., n, n], got {got}.")


def _real_dtype(omega):
    # Weakly typed inputs (e.g. Python-scalar arithmetic) keep their precision; integer
    # fields are computed in the default float.
    dtype = jnp.result_type(jnp.asarray(omega).dtype)
    return dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.result_type(float)


def _mode_numbers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer mode numbers of the full `fft2` layout, `indexing="ij"`."""
    m = np.fft.fftfreq(n, d=1.0 / n)
    mx, my = np.meshgrid(m, m, indexing="ij")
    return mx, my


def velocity_from_vorticity(
    omega: Float[Array, "... n n"], *, length: float = 2 * math.pi
) -> tuple[Float[Array, "... n n"], Float[Array, "... n n"]]:
    r"""The divergence-free velocity $(u, v)$ of a periodic vorticity field.

    $-\Delta \psi = \omega$, $u = \partial_y \psi$, $v = -\partial_x \psi$, solved
    spectrally (the mean of $\omega$ is ignored: it carries no periodic velocity).
    The convention of jax-cfd's `spectral.utils.vorticity_to_velocity` and of
    `NavierStokes2D`.

    **Arguments:**

    - `omega`: `Float[Array, "... n n"]`, index `[..., i, j]` = $(x_i, y_j)$.
    - `length`: the period $L$, default $2\pi$.

    **Returns:** `(u, v)`, each of the shape of `omega`.
    """
    _check_field(omega)
    check_positive(length, "length")
    n = omega.shape[-1]
    k0 = 2 * math.pi / float(length)
    kx = k0 * np.fft.fftfreq(n, d=1.0 / n)[:, None]
    ky = k0 * np.fft.rfftfreq(n, d=1.0 / n)[None, :]
    k2 = kx**2 + ky**2
    inv_k2 = np.where(k2 == 0, 0.0, 1 / np.where(k2 == 0, 1.0, k2))
    real = _real_dtype(omega)
    omega_hat = jnp.fft.rfftn(jnp.asarray(omega, real), axes=(-2, -1))
    psi_hat = omega_hat * inv_k2.astype(real)
    u = jnp.fft.irfftn(1j * ky.astype(real) * psi_hat, s=(n, n), axes=(-2, -1))
    v = jnp.fft.irfftn(-1j * kx.astype(real) * psi_hat, s=(n, n), axes=(-2, -1))
    return u, v


def energy(omega: Float[Array, "... n n"], *, length: float = 2 * math.pi) -> Float[Array, "..."]:
    r"""Kinetic energy per unit area, $E = \tfrac12 \langle |u|^2 \rangle$.

    The velocity comes from the vorticity through the stream function
    (`velocity_from_vorticity`); $\langle\cdot\rangle$ is the domain average.

    **Arguments:**

    - `omega`: `Float[Array, "... n n"]`.
    - `length`: the period $L$, default $2\pi$ (the energy scales like $L^2$ at
      fixed vorticity).

    **Returns:** `Float[Array, "..."]`.
    """
    u, v = velocity_from_vorticity(omega, length=length)
    return 0.5 * jnp.mean(u**2 + v**2, axis=(-2, -1))


def enstrophy(omega: Float[Array, "... n n"]) -> Float[Array, "..."]:
    r"""Enstrophy per unit area, $Z = \tfrac12 \langle \omega^2 \rangle$.

    **Arguments:**

    - `omega`: `Float[Array, "... n n"]`.

    **Returns:** `Float[Array, "..."]`.
    """
    _check_field(omega)
    return 0.5 * jnp.mean(jnp.asarray(omega) ** 2, axis=(-2, -1))


def energy_spectrum(
    omega: Float[Array, "... n n"], *, length: float = 2 * math.pi
) -> tuple[Float[Array, " K"], Float[Array, "... K"]]:
    r"""Isotropic, shell-summed kinetic energy spectrum $E(k)$.

    $E(k_m) = \sum_{m - 1/2 \le |\mathbf{m}| < m + 1/2}
    \tfrac12 |\hat u_{\mathbf m}|^2 + \tfrac12 |\hat v_{\mathbf m}|^2$ over the integer
    wave vectors $\mathbf m$ of the grid, with $k_m = 2\pi m / L$ and $\hat u$
    normalised so that, by Parseval, $\sum_m E(k_m) = E$ = `energy(omega)` exactly.

    **Arguments:**

    - `omega`: `Float[Array, "... n n"]`.
    - `length`: the period $L$, default $2\pi$.

    **Returns:** `(k, E)`: the shell wavenumbers $k_m$, $m = 0, \dots, K-1$ with
    $K = \lfloor \sqrt{2}\, n/2 \rceil + 1$ (every wave vector of the grid falls in a
    shell), and `E` of shape `[..., K]`.
    """
    _check_field(omega)
    check_positive(length, "length")
    n = omega.shape[-1]
    k0 = 2 * math.pi / float(length)
    mx, my = _mode_numbers(n)
    m2 = mx**2 + my**2
    shell = np.rint(np.sqrt(m2)).astype(np.int32)
    n_shells = int(shell.max()) + 1
    inv_m2 = np.where(m2 == 0, 0.0, 1 / np.where(m2 == 0, 1.0, m2))
    real = _real_dtype(omega)
    omega_hat = jnp.fft.fft2(jnp.asarray(omega, real), axes=(-2, -1)) / n**2
    # |u_hat|^2 + |v_hat|^2 = |k|^2 |psi_hat|^2 = |omega_hat|^2 / |k|^2.
    density = 0.5 * jnp.abs(omega_hat) ** 2 * (inv_m2 / k0**2).astype(real)
    batch = density.shape[:-2]
    flat = density.reshape(batch + (n * n,))
    spectrum = jnp.zeros(batch + (n_shells,), real).at[..., shell.reshape(-1)].add(flat)
    k = jnp.asarray(k0 * np.arange(n_shells), real)
    return k, spectrum
