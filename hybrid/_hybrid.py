"""`Hybrid`: known physics plus a learned closure, itself a system."""

from collections.abc import Callable
from typing import Any, ClassVar, Literal

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, PyTree

import solvers


def _closure_name(closure) -> str:
    return getattr(closure, "__name__", None) or type(closure).__name__


def call_closure(closure: Callable, t, y, args):
    """`closure(t, y, args)`, checked at trace time: a closure must return a tendency of
    the state's structure and shape, else a `ValueError` naming the closure (rather than
    a shape error deep inside the solver's Fourier transforms)."""
    dy = closure(t, y, args)
    want = jax.tree.map(jnp.shape, y)
    got = jax.tree.map(jnp.shape, dy) if dy is not None else None
    if jax.tree.structure(dy) != jax.tree.structure(y) or got != want:
        raise ValueError(
            f"the closure {_closure_name(closure)} returned {got if got is not None else dy!r} "
            f"for a state of shape {want}: a closure `(t, y, args) -> dy` must return a "
            "tendency of the state's shape."
        )
    return dy


class _ClosureTendency(eqx.Module):
    # The closure's tendency on the integrator's internal representation; `limit`:
    # passed through the physics' `limit_closure` (tendency mode; a per-step
    # correction is not a tendency).
    closure: Callable
    system: solvers.AbstractSystem
    limit: bool = eqx.field(static=True, default=False)

    def physical(self, t, y, args):
        """The tendency on the physical state `y`."""
        dy = call_closure(self.closure, t, y, args)
        return self.system.limit_closure(t, y, dy, args) if self.limit else dy

    def __call__(self, t, z, args):
        return self.system.to_internal(self.physical(t, self.system.from_internal(z), args))


class _NonlinearPlusClosure(eqx.Module):
    nonlinear: Callable
    closure: _ClosureTendency

    def __call__(self, t, z, args):
        return self.nonlinear(t, z, args) + self.closure(t, z, args)


class _VectorFieldPlusClosure(eqx.Module):
    term: diffrax.AbstractTerm
    closure: _ClosureTendency

    def __call__(self, t, z, args):
        return self.term.vf(t, z, args) + self.closure(t, z, args)


class CorrectedSolver(diffrax.AbstractSolver):
    r"""Solver-in-the-loop: after each step of `solver`, add a learned correction to
    the state, $y_{n+1} = \Phi_{\Delta t}(y_n) + c_\theta(t_{n+1}, \Phi_{\Delta t}(y_n))$.

    The correction is per step, so it is tied to the step size it was trained with.

    **Reference:** Um, Brand, Fei, Holl & Thuerey, "Solver-in-the-loop", NeurIPS 2020.
    """

    solver: diffrax.AbstractSolver
    correction: _ClosureTendency
    term_structure: ClassVar = diffrax.AbstractTerm
    interpolation_cls: ClassVar = diffrax.LocalLinearInterpolation

    def order(self, terms):
        return self.solver.order(terms)

    def init(self, terms, t0, t1, y0, args):
        return self.solver.init(terms, t0, t1, y0, args)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        y1, err, _, state, result = self.solver.step(
            terms, t0, t1, y0, args, solver_state, made_jump
        )
        y1 = y1 + self.correction(t1, y1, args)
        return y1, err, dict(y0=y0, y1=y1), state, result

    def func(self, terms, t0, y0, args):
        return self.solver.func(terms, t0, y0, args)


class Hybrid(solvers.AbstractSystem):
    r"""Known physics plus a learned closure: a `solvers.AbstractSystem` itself.

    - `mode="tendency"`: $\dot y = f_\text{physics}(t, y) + c_\theta(t, y)$, the
      closure inside the integrator (for spectral physics it joins the explicit,
      nonlinear part, so ETDRK4 / Crank–Nicolson still treat the stiff part).
    - `mode="correction"`: $y_{n+1} = \Phi_{\Delta t}(y_n) + c_\theta(\cdot)$ after
      every solver step (solver-in-the-loop), whatever solver `solvers.solve` uses.

    **Arguments:**

    - `physics`: any `solvers.AbstractSystem` (usually at coarse resolution).
    - `closure`: an `eqx.Module` (or callable) `(t, y, args) -> dy` with `dy` of the
      state's shape, in physical space; see `hybrid.closures`.
    - `mode`: `"tendency"` (default) or `"correction"`.

    `solvers.solve(Hybrid(...), y0, ts, dt=...)` runs it like any system, and
    gradients flow to the closure's parameters through the whole rollout.
    """

    physics: solvers.AbstractSystem
    closure: Callable[[ArrayLike, PyTree[Array], Any], PyTree[Array]]
    mode: Literal["tendency", "correction"] = eqx.field(static=True)

    def __init__(
        self,
        physics: solvers.AbstractSystem,
        closure: Callable,
        *,
        mode: Literal["tendency", "correction"] = "tendency",
    ):
        if not isinstance(physics, solvers.AbstractSystem):
            raise ValueError(
                f"`physics` must be a solvers.AbstractSystem, got {type(physics).__name__}."
            )
        if not callable(closure):
            raise ValueError(f"`closure` must be callable (t, y, args) -> dy, got {closure!r}.")
        if mode not in ("tendency", "correction"):
            raise ValueError(f"`mode` must be 'tendency' or 'correction', got {mode!r}.")
        self.physics = physics
        self.closure = closure
        self.mode = mode

    @property
    def state_shape(self) -> tuple[int, ...]:
        return self.physics.state_shape

    def check_state(self, y, name: str = "y0") -> None:
        self.physics.check_state(y, name)

    def vector_field(self, t, y, args):
        dy = self.physics.vector_field(t, y, args)
        if self.mode == "tendency":
            dy = dy + self._closure_internal().physical(t, y, args)
        return dy

    def to_internal(self, y):
        return self.physics.to_internal(y)

    def from_internal(self, z):
        return self.physics.from_internal(z)

    def _closure_internal(self) -> _ClosureTendency:
        return _ClosureTendency(self.closure, self.physics, limit=self.mode == "tendency")

    def terms(self) -> diffrax.AbstractTerm:
        terms = self.physics.terms()
        if self.mode == "correction":
            return terms
        if isinstance(terms, solvers.SemiLinearTerm):
            nonlinear = _NonlinearPlusClosure(terms.nonlinear, self._closure_internal())
            return solvers.SemiLinearTerm(terms.linear, nonlinear)
        if isinstance(terms, diffrax.ODETerm):
            return diffrax.ODETerm(_VectorFieldPlusClosure(terms, self._closure_internal()))
        raise ValueError(
            f"`physics` has terms of type {type(terms).__name__}; Hybrid in tendency mode "
            "supports ODETerm and SemiLinearTerm."
        )

    def default_solver(self) -> diffrax.AbstractSolver:
        return self.physics.default_solver()

    def wrap_solver(self, solver: diffrax.AbstractSolver) -> diffrax.AbstractSolver:
        solver = self.physics.wrap_solver(solver)
        if self.mode == "correction":
            return CorrectedSolver(solver, self._closure_internal())
        return solver

    def diffusion(self, t, y, args):
        return self.physics.diffusion(t, y, args)


def zero_closure(t, y, args):
    """The closure that adds nothing: `Hybrid(physics, zero_closure)` == physics."""
    return jnp.zeros_like(y)
