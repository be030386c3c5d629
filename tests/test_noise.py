"""Observational noise on training and validation data (issue 13): what it adds, and
that the test truth stays clean."""

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import hybrid


def _data():
    ys = jr.normal(jr.PRNGKey(0), (20, 30, 64)) * 2.0 + 1.0
    return hybrid.Trajectories(ys, np.arange(30) * 0.1, args=jnp.arange(20.0))


@pytest.mark.parametrize("level", [4e-4, 1e-2, 1e-1])
def test_gaussian_noise_has_the_relative_level(level):
    data = _data()
    noisy = hybrid.data.observe(data, level, key=jr.PRNGKey(1))
    rms = float(jnp.sqrt(jnp.mean(data.ys**2)))
    added = noisy.ys - data.ys
    assert float(jnp.std(added)) / rms == pytest.approx(level, rel=0.02)
    assert abs(float(jnp.mean(added))) < 3 * level * rms / np.sqrt(added.size)
    np.testing.assert_array_equal(noisy.args, data.args)
    np.testing.assert_array_equal(noisy.ts, data.ts)


def test_lognormal_noise_is_multiplicative_and_mean_preserving():
    data = _data()
    noisy = hybrid.data.observe(data, 0.1, key=jr.PRNGKey(2), kind="lognormal")
    ratio = noisy.ys / data.ys
    assert float(jnp.min(ratio)) > 0  # signs kept
    log_ratio = jnp.log(ratio)
    assert float(jnp.std(log_ratio)) == pytest.approx(0.1, rel=0.02)
    assert float(jnp.mean(ratio)) == pytest.approx(1.0, abs=2e-3)  # E[y~] = y


def test_bad_noise_input():
    data = _data()
    assert hybrid.data.observe(data, 0.0, key=jr.PRNGKey(0)) is data
    with pytest.raises(ValueError, match="`kind` must be one of"):
        hybrid.data.observe(data, 0.1, key=jr.PRNGKey(0), kind="poisson")
    with pytest.raises(ValueError, match="`level` must be a number >= 0"):
        hybrid.data.observe(data, -0.1, key=jr.PRNGKey(0))
