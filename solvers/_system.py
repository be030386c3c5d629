"""The system protocol: what every physical system offers to `solve`."""

import abc
from typing import Any

import diffrax
import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, PyTree

from ._etdrk4 import ETDRK4
from ._term import SemiLinearTerm, operator_in_precision


class AbstractSystem(eqx.Module):
    r"""Base of every system: an ODE $\dot y = f(t, y, \text{args})$.

    A system states its tendency in physical space through `vector_field`, and tells
    `solvers.solve` how it wants to be integrated:

    - `to_internal` / `from_internal`: the representation the integrator works in
      (physical space by default; spectral systems integrate Fourier coefficients).
    - `terms()`: the diffrax term(s) acting on the internal state.
    - `default_solver()`: the diffrax solver used when the caller passes none.
    - `check_state(y)`: raises `ValueError` naming `y0` for a state of the wrong
      shape or dtype.

    Subclasses implement `vector_field`, `check_state` and `state_shape`; spectral
    systems derive from `AbstractSpectralSystem` instead, which supplies the rest.
    """

    @abc.abstractmethod
    def vector_field(self, t: ArrayLike, y: PyTree[Array], args: Any) -> PyTree[Array]:
        """The full tendency $dy/dt$ in physical space."""

    @property
    @abc.abstractmethod
    def state_shape(self) -> tuple[int, ...]:
        """Shape of one (unbatched) physical state."""

    def check_state(self, y: Any, name: str = "y0") -> None:
        """Raise `ValueError` naming `name` unless `y` is a floating state of the
        right shape."""
        shape = getattr(y, "shape", None)
        dtype = getattr(y, "dtype", None)
        if shape is None or dtype is None:
            raise ValueError(
                f"`{name}` must be an array of shape {self.state_shape}, "
                f"got {type(y).__name__}."
            )
        if tuple(shape) != tuple(self.state_shape):
            raise ValueError(
                f"`{name}` must have shape {self.state_shape} for "
                f"{type(self).__name__}, got {tuple(shape)}; batch with jax.vmap."
            )
        if not jnp.issubdtype(dtype, jnp.floating):
            raise ValueError(
                f"`{name}` must have a real floating dtype (float32 or float64), "
                f"got {dtype}."
            )

    def to_internal(self, y: PyTree[Array]) -> PyTree[Array]:
        """Physical state -> the integrator's state (identity by default)."""
        return y

    def from_internal(self, z: PyTree[Array]) -> PyTree[Array]:
        """The integrator's state -> physical state (identity by default)."""
        return z

    def terms(self) -> diffrax.AbstractTerm:
        """The diffrax term acting on the internal state."""
        return diffrax.ODETerm(self.vector_field)

    def default_solver(self) -> diffrax.AbstractSolver:
        """Fixed-step-friendly default: Tsit5 (5th order explicit Runge–Kutta)."""
        return diffrax.Tsit5()

    def wrap_solver(self, solver: diffrax.AbstractSolver) -> diffrax.AbstractSolver:
        """Hook for systems that act between solver steps (e.g. a learned correction
        added to the state after each step); `solve` applies it to every solver,
        default or given. Identity by default."""
        return solver

    def limit_closure(self, t: ArrayLike, y: PyTree[Array], closure_tendency: PyTree[Array],
                      args: Any) -> PyTree[Array]:
        """Hook for physics that bound what a learned closure may add to its tendency
        (e.g. no creation of an energy the physics itself can only dissipate):
        `hybrid.Hybrid` in tendency mode passes every closure tendency through it,
        whatever the closure and the ensemble. Identity by default."""
        return closure_tendency

    def diffusion(self, t: ArrayLike, y: PyTree[Array], args: Any) -> Array | None:
        """Additive noise amplitude $\\sigma$ for $dy = f\\,dt + \\sigma\\,dW$, or
        `None` for a deterministic system (the default)."""
        return None


class AbstractSpectralSystem(AbstractSystem):
    r"""A periodic semi-linear system integrated in Fourier space.

    $\partial_t \hat u = L \hat u + N(t, \hat u)$ with a diagonal linear operator $L$
    (diffusion, drag) and a nonlinear part $N$ (advection, forcing). The internal
    state is the real FFT `rfftn` of the physical field; the default solver treats
    $L$ exactly or implicitly (`ETDRK4`, `CrankNicolsonRK4`).
    """

    @property
    @abc.abstractmethod
    def linear_operator(self) -> Array:
        """Diagonal of $L$ on the `rfftn` modes."""

    @abc.abstractmethod
    def nonlinear(self, t: ArrayLike, z: Array, args: Any) -> Array:
        """$N(t, \\hat u)$ on the `rfftn` modes."""

    def to_internal(self, y: Array) -> Array:
        return jnp.fft.rfftn(y)

    def from_internal(self, z: Array) -> Array:
        return jnp.fft.irfftn(z, s=self.state_shape)

    def terms(self) -> SemiLinearTerm:
        return SemiLinearTerm(self.linear_operator, self.nonlinear)

    def default_solver(self) -> diffrax.AbstractSolver:
        """`ETDRK4`: the stiff linear part exactly, the nonlinear part to fourth order
        (override for another split solver, e.g. `CrankNicolsonRK4`)."""
        return ETDRK4()

    def vector_field(self, t: ArrayLike, y: Array, args: Any) -> Array:
        z = self.to_internal(y)
        linear = operator_in_precision(self.linear_operator, jnp.real(z).dtype)
        return self.from_internal(linear * z + self.nonlinear(t, z, args)).astype(y.dtype)
