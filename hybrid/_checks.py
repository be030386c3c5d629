"""Argument checks of the library: fail before any work, name the argument."""

import math
from typing import Any

import jax
import jax.random as jr
import numpy as np


def positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}, got {value!r}.")
    return value


def positive_float(value: Any, name: str, *, allow_zero: bool = False) -> float:
    if isinstance(value, jax.core.Tracer):
        raise ValueError(f"`{name}` must be a concrete number, got a traced value.")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a number, got {value!r}.") from None
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        what = "a finite number >= 0" if allow_zero else "a positive number"
        raise ValueError(f"`{name}` must be {what}, got {value!r}.")
    return v


def choice(value: Any, name: str, options: tuple[str, ...]) -> str:
    if value not in options:
        raise ValueError(f"`{name}` must be one of {options}, got {value!r}.")
    return value


def prng_key(key: Any, name: str = "key") -> Any:
    """A single JAX PRNG key (raw `uint32[2]` or typed), else a `ValueError`."""
    if not isinstance(key, jax.Array):
        raise ValueError(
            f"`{name}` must be a JAX PRNG key (jax.random.PRNGKey(seed) or "
            f"jax.random.key(seed)), got {type(key).__name__}."
        )
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(f"`{name}` must be a single key, got shape {key.shape}.")
        return key
    if key.shape != (2,) or str(key.dtype) != "uint32":
        raise ValueError(
            f"`{name}` must be a JAX PRNG key (jax.random.PRNGKey(seed) or "
            f"jax.random.key(seed)), got dtype {key.dtype} and shape {key.shape}."
        )
    return key


def key_data(key: Any) -> list[int]:
    """The key's bits as a list (for signatures)."""
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jr.key_data(key)
    return np.asarray(key).ravel().tolist()
