"""Coarse-graining of periodic grid fields: the one filter used for training data,
evaluation references and the initial states of finer baselines (`coarse_grain`)."""

import math
from typing import Literal

import jax.numpy as jnp
from jaxtyping import Array


def _check(u, n: int, ndim: int, name: str = "n"):
    if ndim not in (1, 2):
        raise ValueError(f"`ndim` must be 1 or 2, got {ndim!r}.")
    if not isinstance(n, int) or n < 2:
        raise ValueError(f"`{name}` must be an int >= 2, got {n!r}.")
    if u.ndim < ndim:
        raise ValueError(f"`u` must have at least {ndim} dims, got shape {u.shape}.")
    if ndim == 2 and u.shape[-1] != u.shape[-2]:
        raise ValueError(f"`u` must be square in its last two dims, got {u.shape}.")


def _keep_1d(n_from: int, n_to: int) -> int:
    # rfft modes kept: |k| < min(n_from, n_to) / 2 (both Nyquist modes dropped, so the
    # result is the real, symmetric truncation on either grid).
    return (min(n_from, n_to) + 1) // 2


def _keep_dealiased(n_from: int, n_to: int) -> int:
    # rfft modes kept: |k| < n_to / 3, the band a pseudo-spectral solver on n_to points
    # resolves with the 2/3 rule (and within the finer grid's own band)
    return min(math.ceil(n_to / 3), _keep_1d(n_from, n_to))


def spectral_resample(u: Array, n: int, *, ndim: int = 1, dealiased: bool = False) -> Array:
    r"""Resample periodic fields to `n` points per dimension through Fourier space.

    Down: sharp spectral cut-off $|k| < n/2$ (or, `dealiased=True`, $|k| < n/3$ in
    each dimension: the band that a pseudo-spectral solver on $n$ points evolves under
    the 2/3 rule) then sampling on the coarse grid (exact for band-limited fields).
    Up: zero padding (spectral interpolation).

    **Arguments:** `u` `[..., m]` (1D) or `[..., m, m]` (2D); `n`; `ndim` 1 or 2;
    `dealiased`.

    **Returns:** `[..., n]` or `[..., n, n]`, same dtype.
    """
    _check(u, n, ndim)
    m = u.shape[-1]
    if m == n and not dealiased:
        return u
    keep = _keep_dealiased(m, n) if dealiased else _keep_1d(m, n)
    if ndim == 1:
        uh = jnp.fft.rfft(u, axis=-1)[..., :keep] * (n / m)
        out = jnp.zeros(u.shape[:-1] + (n // 2 + 1,), uh.dtype).at[..., :keep].set(uh)
        return jnp.fft.irfft(out, n=n, axis=-1).astype(u.dtype)
    uh = jnp.fft.rfft2(u, axes=(-2, -1)) * (n * n / (m * m))
    out = jnp.zeros(u.shape[:-2] + (n, n // 2 + 1), uh.dtype)
    out = out.at[..., :keep, :keep].set(uh[..., :keep, :keep])
    if keep > 1:
        out = out.at[..., n - keep + 1 :, :keep].set(uh[..., m - keep + 1 :, :keep])
    return jnp.fft.irfft2(out, s=(n, n), axes=(-2, -1)).astype(u.dtype)


def box_coarse_grain(u: Array, n: int, *, ndim: int = 1) -> Array:
    r"""Cell averages over blocks of $r = m / n$ points (finite-volume view).

    **Arguments:** `u` `[..., m]` or `[..., m, m]` with `m` a multiple of `n`.
    **Returns:** `[..., n]` or `[..., n, n]`.
    """
    _check(u, n, ndim)
    m = u.shape[-1]
    if m % n:
        raise ValueError(f"`n` must divide the fine size {m} for box filtering, got {n}.")
    r = m // n
    if ndim == 1:
        return u.reshape(u.shape[:-1] + (n, r)).mean(-1)
    return u.reshape(u.shape[:-2] + (n, r, n, r)).mean((-3, -1))


METHODS = ("spectral", "dealiased", "box")


def coarse_grain(
    u: Array, n: int, *, ndim: int = 1,
    method: Literal["spectral", "dealiased", "box"] = "spectral",
) -> Array:
    """Coarse-grain periodic fields to `n` points per dimension with `method`:
    `"spectral"` (sharp cut-off at $|k| < n/2$, the default), `"dealiased"` (sharp
    cut-off at $|k| < n/3$: only the band a 2/3-rule pseudo-spectral solver on the
    coarse grid evolves, so reference and solver agree on which modes exist) or
    `"box"` (cell averages)."""
    if method == "spectral":
        return spectral_resample(u, n, ndim=ndim)
    if method == "dealiased":
        return spectral_resample(u, n, ndim=ndim, dealiased=True)
    if method == "box":
        return box_coarse_grain(u, n, ndim=ndim)
    raise ValueError(f"`method` must be one of {METHODS}, got {method!r}.")
