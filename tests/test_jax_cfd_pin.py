"""The jax-cfd pin. jax-cfd is unmaintained upstream, so pyproject.toml pins it
(`jax-cfd==0.2.1`) and `solvers.NavierStokes2D` is built on exactly the pieces checked
here. Each test names the piece that broke; if one fails after a jax-cfd upgrade,
re-derive solvers/_navier_stokes.py against the new version before moving the pin (and
`AUDITED_VERSION` below).

That our system plus our `CrankNicolsonRK4` steps exactly like jax-cfd's own
`crank_nicolson_rk4(ForcedNavierStokes2D(...))` is
tests/test_navier_stokes.py::test_matches_jax_cfd, called here once (Kolmogorov case)
so that this file alone checks the whole pin.
"""

import importlib
import math
import tomllib
from importlib import metadata
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

# The jax-cfd release whose numbers the tests below were written against.
AUDITED_VERSION = "0.2.1"
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
TWO_PI = 2 * math.pi


def pin_message(what: str) -> str:
    return (
        f"jax-cfd pin broken: {what}. jax-cfd is unmaintained upstream and pinned "
        f"(jax-cfd=={AUDITED_VERSION} in pyproject.toml) because solvers/_navier_stokes.py "
        "builds on these exact pieces; re-derive it against the installed version before "
        "changing the pin."
    )


def _pinned_version() -> str:
    deps = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    pins = [d.replace(" ", "") for d in deps if d.replace(" ", "").startswith("jax-cfd")]
    assert len(pins) == 1 and pins[0].startswith("jax-cfd=="), pin_message(
        f"pyproject.toml must pin jax-cfd exactly (`jax-cfd==X`), found {pins}"
    )
    return pins[0].split("==", 1)[1]


def test_pyproject_pins_the_audited_version():
    pinned = _pinned_version()
    assert pinned == AUDITED_VERSION, pin_message(
        f"pyproject.toml pins jax-cfd=={pinned}, but these tests audit {AUDITED_VERSION}"
    )


def test_installed_version_is_the_pin():
    installed = metadata.version("jax-cfd")
    assert installed == AUDITED_VERSION, pin_message(
        f"jax-cfd {installed} is installed, not the pinned {AUDITED_VERSION}"
    )


@pytest.mark.parametrize(
    "module, name",
    [
        ("jax_cfd.base.grids", "Grid"),
        ("jax_cfd.base.forcings", "kolmogorov_forcing"),
        ("jax_cfd.spectral.utils", "brick_wall_filter_2d"),
        ("jax_cfd.spectral.utils", "spectral_curl_2d"),
        ("jax_cfd.spectral.time_stepping", "crank_nicolson_rk4"),
        ("jax_cfd.spectral.equations", "NavierStokes2D"),
        ("jax_cfd.spectral.equations", "ForcedNavierStokes2D"),
    ],
)
def test_pieces_we_import_exist(module, name):
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        pytest.fail(pin_message(f"`import {module}` fails: {e}"))
    assert callable(getattr(mod, name, None)), pin_message(f"`{module}.{name}` is gone")


def _grid(n, length):
    from jax_cfd.base import grids

    return grids.Grid((n, n), domain=((0.0, length), (0.0, length)))


@pytest.mark.parametrize("n, length", [(16, TWO_PI), (12, 1.0)])
def test_rfft_mesh_is_ordinal_frequencies(n, length):
    # We multiply by 2 pi: the mesh must be in cycles per unit length, [i, j] indexing.
    grid = _grid(n, length)
    assert callable(getattr(grid, "rfft_mesh", None)), pin_message("`Grid.rfft_mesh` is gone")
    kx, ky = grid.rfft_mesh()
    ex, ey = np.meshgrid(
        np.fft.fftfreq(n, length / n), np.fft.rfftfreq(n, length / n), indexing="ij"
    )
    for got, want, axis in ((kx, ex, "x"), (ky, ey, "y")):
        np.testing.assert_allclose(
            got, want, rtol=1e-12, atol=1e-12,
            err_msg=pin_message(f"`Grid.rfft_mesh()` changed along {axis}"),
        )


@pytest.mark.parametrize(
    # n, then the mode numbers kept by jax-cfd 0.2.1's 2/3 rule: kx in [lo, hi], ky <= top.
    "n, lo, hi, top",
    [(64, -21, 20, 21), (48, -16, 15, 15)],
)
def test_brick_wall_filter_is_the_two_thirds_rule(n, lo, hi, top):
    from jax_cfd.spectral import utils

    mx = np.rint(np.fft.fftfreq(n, 1 / n))[:, None]
    my = np.arange(n // 2 + 1)[None, :]
    want = ((mx >= lo) & (mx <= hi) & (my <= top)).astype(float)
    got = np.asarray(utils.brick_wall_filter_2d(_grid(n, TWO_PI)))
    assert got.shape == want.shape, pin_message(
        f"`brick_wall_filter_2d` has shape {got.shape}, expected {want.shape}"
    )
    np.testing.assert_array_equal(
        got, want, err_msg=pin_message("`brick_wall_filter_2d` keeps other modes")
    )


def test_spectral_curl_of_a_shear_flow():
    # u = (sin(2 y), cos(3 x)): curl = d_x v - d_y u = -3 sin(3 x) - 2 cos(2 y).
    from jax_cfd.spectral import utils

    n = 32
    grid = _grid(n, TWO_PI)
    x = np.arange(n) * TWO_PI / n
    X, Y = np.meshgrid(x, x, indexing="ij")
    u_hat, v_hat = jnp.fft.rfft2(np.sin(2 * Y)), jnp.fft.rfft2(np.cos(3 * X))
    curl = jnp.fft.irfft2(utils.spectral_curl_2d(grid.rfft_mesh(), (u_hat, v_hat)), s=(n, n))
    np.testing.assert_allclose(
        curl, -3 * np.sin(3 * X) - 2 * np.cos(2 * Y), atol=1e-12,
        err_msg=pin_message("`spectral_curl_2d` no longer gives d_x v - d_y u"),
    )


def test_kolmogorov_forcing_on_nodes():
    # With offsets ((0, 0), (0, 0)), as ForcedNavierStokes2D uses: f = (sin(k y_j), 0).
    from jax_cfd.base import forcings

    n, k = 16, 4
    grid = _grid(n, TWO_PI)
    fx, fy = forcings.kolmogorov_forcing(grid, k=k, offsets=((0, 0), (0, 0)))(None)
    y = np.arange(n) * TWO_PI / n
    np.testing.assert_allclose(
        fx.data, np.broadcast_to(np.sin(k * y)[None, :], (n, n)), atol=1e-12,
        err_msg=pin_message("`kolmogorov_forcing` x-component is not sin(k y) on nodes"),
    )
    np.testing.assert_array_equal(
        fy.data, 0.0, err_msg=pin_message("`kolmogorov_forcing` y-component is not zero")
    )


def test_navier_stokes_step_matches_jax_cfd():
    # Reuses the full comparison (explicit terms, implicit operator, 10 steps, `solve`);
    # its failure messages carry the same pin warning.
    from test_navier_stokes import test_matches_jax_cfd as matches_jax_cfd

    matches_jax_cfd(32, 1e-3, 0.1, "kolmogorov", TWO_PI)
