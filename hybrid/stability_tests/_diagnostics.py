"""What `stability` measures on a state: energy, enstrophy and a profile (spectrum,
cluster moduli) per system."""

import abc
import math
from typing import Any, ClassVar

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

import solvers

from .._ensemble import Ensemble
from .._hybrid import Hybrid


class AbstractStabilityDiagnostics(eqx.Module):
    r"""What `stability` measures on a state. Every method takes states with any
    leading batch axes, `[..., *state]`.

    - `energy(y) -> [...]`: the quantity whose blow-up and drift are watched.
    - `enstrophy(y) -> [...]` or `None` when the state has none.
    - `profile(y) -> [..., K]` or `None`: a non-negative profile whose long-time mean
      is compared with the reference's (an energy spectrum, cluster moduli).
    - `profile_mask(state_shape) -> bool [K]`: the entries of the profile compared.
    - `profile_log`: compare $\log_{10}$ of the profile (spectra, decades) or the
      profile itself (moduli).
    """

    profile_log: ClassVar[bool] = True

    @abc.abstractmethod
    def energy(self, y: Array) -> Array:
        """Energy per state."""

    def enstrophy(self, y: Array) -> Array | None:
        """Enstrophy per state, `None` where it does not apply (the default)."""
        return None

    def profile(self, y: Array) -> Array | None:
        """The profile `[..., K]` compared with the reference, or `None` (default)."""
        return None

    def profile_mask(self, state_shape: tuple[int, ...]) -> np.ndarray | None:
        """Which of the `K` profile entries count (all by default)."""
        return None

    @property
    def profile_name(self) -> str:
        return "spectrum"


def _resolved_shells(n_shells: int, n: int) -> np.ndarray:
    # Shells 1 <= k < n/3: inside the 2/3-rule dealiased band of the coarse solvers and
    # clear of the grid's corner shells; k = 0 (the mean) carries no dynamics.
    k = np.arange(n_shells)
    return (k >= 1) & (3 * k < n)


class Field1DDiagnostics(AbstractStabilityDiagnostics):
    r"""A periodic velocity field $u(x)$ on `n` points of $[0, L)$ (Burgers).

    - energy $E = \tfrac12\langle u^2\rangle$;
    - enstrophy $Z = \tfrac12\langle u_x^2\rangle = \sum_k (2\pi k/L)^2 E(k)$;
    - spectrum $E(k) = \tfrac12(|\hat u_k|^2 + |\hat u_{-k}|^2)$, $k = 0..n/2$, with
      $\hat u_k$ the DFT over $n$, so that $\sum_k E(k) = E$ (Parseval); compared on
      the shells $1 \le k < n/3$.

    **Arguments:** `length`: the period $L$, default $2\pi$.
    """

    length: float = eqx.field(static=True, default=2 * math.pi)

    def energy(self, y):
        return 0.5 * jnp.mean(y**2, axis=-1)

    def profile(self, y):
        n = y.shape[-1]
        power = jnp.abs(jnp.fft.rfft(y, axis=-1) / n) ** 2
        # one-sided: modes 0 < k < n/2 stand for +k and -k; k = 0 and (even n) the
        # Nyquist mode only for themselves
        weight = np.full(n // 2 + 1, 1.0)
        weight[0] = 0.5
        if n % 2 == 0:
            weight[-1] = 0.5
        return power * weight.astype(power.dtype)

    def enstrophy(self, y):
        n = y.shape[-1]
        k = 2 * math.pi / self.length * np.arange(n // 2 + 1)
        return jnp.sum(self.profile(y) * (k**2).astype(y.dtype), axis=-1)

    def profile_mask(self, state_shape):
        n = state_shape[-1]
        return _resolved_shells(n // 2 + 1, n)


class VorticityDiagnostics(AbstractStabilityDiagnostics):
    r"""A periodic 2D vorticity field $\omega$ on `n x n` points of $[0, L)^2$
    (Navier–Stokes): energy `solvers.energy`, enstrophy `solvers.enstrophy`
    ($\tfrac12\langle\omega^2\rangle$), shell spectrum `solvers.energy_spectrum`,
    compared on the shells $1 \le k < n/3$.

    **Arguments:** `length`: the period $L$, default $2\pi$.
    """

    length: float = eqx.field(static=True, default=2 * math.pi)

    def energy(self, y):
        return solvers.energy(y, length=self.length)

    def enstrophy(self, y):
        return solvers.enstrophy(y)

    def profile(self, y):
        return solvers.energy_spectrum(y, length=self.length)[1]

    def profile_mask(self, state_shape):
        n = state_shape[-1]
        n_shells = int(np.rint(np.sqrt(2.0) * (n // 2))) + 1
        return _resolved_shells(n_shells, n)


class ClusterDiagnostics(AbstractStabilityDiagnostics):
    r"""Cluster order parameters `[M, 2]` = $(\mathrm{Re}\,z_m, \mathrm{Im}\,z_m)$
    (Kuramoto): energy $\tfrac12\langle |z_m|^2\rangle_m$; no enstrophy; instead of a
    spectrum the moduli $r_m = |z_m|$, compared as values (not logarithms: an
    incoherent cluster has $r_m \approx 0$)."""

    profile_log: ClassVar[bool] = False

    def energy(self, y):
        return 0.5 * jnp.mean(jnp.sum(y**2, axis=-1), axis=-1)

    def profile(self, y):
        return jnp.sqrt(jnp.sum(y**2, axis=-1))

    @property
    def profile_name(self) -> str:
        return "order-parameter moduli"


class EnergyDiagnostics(AbstractStabilityDiagnostics):
    r"""Any state: energy $\tfrac12\langle y^2\rangle$ over its `ndim` state axes,
    no enstrophy, no profile.

    **Arguments:** `ndim`: the number of state axes.
    """

    ndim: int = eqx.field(static=True)

    def energy(self, y):
        return 0.5 * jnp.mean(y**2, axis=tuple(range(-self.ndim, 0)))


def _core_physics(model: Any) -> Any:
    if isinstance(model, Hybrid):
        return _core_physics(model.physics)
    if isinstance(model, Ensemble):
        if model.physics is not None:
            return _core_physics(model.physics)
        if isinstance(model.members, solvers.AbstractSystem):
            return _core_physics(model.members)
        return None
    return model


def default_diagnostics(system: Any, state_shape: tuple[int, ...]) -> AbstractStabilityDiagnostics:
    """The diagnostics `stability` uses by default: `Field1DDiagnostics` for
    `solvers.Burgers1D`, `VorticityDiagnostics` for `solvers.NavierStokes2D`,
    `ClusterDiagnostics` for `solvers.OttAntonsenNetwork` (cluster order parameters),
    `EnergyDiagnostics` of the state's axes for anything else (pass `diagnostics` for
    a system of your own: the state's shape alone does not say what it holds).
    `system` is the physics (or a `Hybrid`/`Ensemble` holding it)."""
    core = _core_physics(system)
    if isinstance(core, solvers.Burgers1D):
        return Field1DDiagnostics(core.length)
    if isinstance(core, solvers.NavierStokes2D):
        return VorticityDiagnostics(core.length)
    if isinstance(core, solvers.OttAntonsenNetwork):
        return ClusterDiagnostics()
    return EnergyDiagnostics(len(state_shape))
