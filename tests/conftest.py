"""Numerical tests run in float64 (tolerances are written for it); tests that check
float32 behaviour build float32 arrays explicitly. Seeds are fixed per test."""

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    np.random.seed(0)
    yield


@pytest.fixture
def key():
    return jax.random.PRNGKey(0)
