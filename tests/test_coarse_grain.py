"""Coarse-graining operators."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hybrid import coarse_graining as cg


def test_band_limited_field_is_sampled_exactly():
    x_f = np.arange(256) * 2 * np.pi / 256
    x_c = np.arange(32) * 2 * np.pi / 32
    f = lambda x: 0.3 + np.sin(3 * x) - 0.5 * np.cos(15 * x)  # noqa: E731
    out = cg.spectral_resample(jnp.asarray(f(x_f)), 32)
    np.testing.assert_allclose(out, f(x_c), atol=1e-12)
    # modes at or above the coarse Nyquist are removed
    g = f(x_f) + np.cos(16 * x_f) + np.sin(40 * x_f)
    np.testing.assert_allclose(cg.spectral_resample(jnp.asarray(g), 32), f(x_c), atol=1e-12)


def test_2d_band_limited_and_mean_preserved(key):
    n = 64
    x = np.arange(n) * 2 * np.pi / n
    X, Y = np.meshgrid(x, x, indexing="ij")
    f = np.cos(2 * X - 3 * Y) + 0.2 * np.sin(7 * Y) + 1.0
    xc = np.arange(16) * 2 * np.pi / 16
    Xc, Yc = np.meshgrid(xc, xc, indexing="ij")
    fc = np.cos(2 * Xc - 3 * Yc) + 0.2 * np.sin(7 * Yc) + 1.0
    np.testing.assert_allclose(cg.spectral_resample(jnp.asarray(f), 16, ndim=2), fc, atol=1e-12)
    r = jax.random.normal(key, (3, n, n))
    for method in ("spectral", "box"):
        c = cg.coarse_grain(r, 16, ndim=2, method=method)
        assert c.shape == (3, 16, 16)
        np.testing.assert_allclose(c.mean((-2, -1)), r.mean((-2, -1)), atol=1e-12)


def test_upsampling_then_downsampling_is_identity(key):
    u = cg.spectral_resample(jax.random.normal(key, (128,)), 32)  # band-limited
    np.testing.assert_allclose(cg.spectral_resample(cg.spectral_resample(u, 128), 32), u,
                               atol=1e-12)


def test_box_filter_is_cell_average():
    u = jnp.arange(8.0)
    np.testing.assert_allclose(cg.box_coarse_grain(u, 4), [0.5, 2.5, 4.5, 6.5])


def test_bad_arguments():
    with pytest.raises(ValueError, match="`method`"):
        cg.coarse_grain(jnp.zeros(8), 4, method="median")
    with pytest.raises(ValueError, match="`n` must divide"):
        cg.box_coarse_grain(jnp.zeros(10), 4)
    with pytest.raises(ValueError, match="`ndim`"):
        cg.spectral_resample(jnp.zeros(8), 4, ndim=3)
