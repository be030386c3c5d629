"""Argument checks shared by the systems: fail early, name the argument."""

import math

import jax
import numpy as np


def is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def check_positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"`{name}` must be an int >= {minimum}, got {value!r}.")
    if value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}, got {value}.")
    return int(value)


def check_positive(value, name: str, *, allow_zero: bool = False):
    """A positive finite scalar; traced values (under grad/vmap) pass unchecked."""
    if not is_concrete(value):
        return value
    arr = np.asarray(value)
    if arr.ndim != 0:
        # Arrays (e.g. a batch of viscosities stacked for vmap) are checked elementwise.
        ok = np.all(np.isfinite(arr)) and (np.all(arr >= 0) if allow_zero else np.all(arr > 0))
    else:
        try:
            v = float(arr)
        except (TypeError, ValueError):
            raise ValueError(f"`{name}` must be a number, got {value!r}.") from None
        ok = math.isfinite(v) and (v >= 0 if allow_zero else v > 0)
    if not ok:
        what = "non-negative" if allow_zero else "positive"
        raise ValueError(f"`{name}` must be {what} and finite, got {value!r}.")
    return value
