"""Shape conventions and argument checks shared by the metrics."""

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike


def _time_axis(ndim: int, time_axis: int | None, name: str = "pred") -> int:
    if time_axis is None:
        time_axis = 0 if ndim <= 2 else 1
    if not -ndim <= time_axis < ndim:
        raise ValueError(f"`time_axis` {time_axis} is out of range for `{name}` of ndim {ndim}.")
    return time_axis % ndim


def _same_shape(a: Array, b: Array, na: str, nb: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"`{na}` and `{nb}` must have the same shape, got {a.shape} and {b.shape}."
        )


def _float(x: ArrayLike) -> Array:
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.inexact) else x.astype(jnp.result_type(float))


def _members_last(ensemble: ArrayLike, ref: ArrayLike, member_axis: int, min_members: int = 1):
    """Ensemble with its member axis moved last, and the reference, checked."""
    ens = _float(ensemble)
    ref = _float(ref)
    shape = ens.shape
    if ens.ndim < 1 or not -ens.ndim <= member_axis < ens.ndim:
        raise ValueError(
            f"`member_axis` {member_axis} is out of range for `ensemble` of shape {ens.shape}."
        )
    ens = jnp.moveaxis(ens, member_axis, -1)
    if ens.shape[:-1] != ref.shape:
        raise ValueError(
            "`ref` must have the shape of `ensemble` without its member axis: got "
            f"`ensemble` {shape} (member_axis={member_axis}) and `ref` {ref.shape}."
        )
    if ens.shape[-1] < min_members:
        raise ValueError(
            f"`ensemble` needs at least {min_members} members, got {ens.shape[-1]}."
        )
    return ens, ref


