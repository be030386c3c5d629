"""The uncertainty figures are written as non-empty PNG files, and refuse bad input."""

import numpy as np
import pytest

from hybrid import viz as F

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _ensemble(m=6, b=2, t=9, n=16, seed=0):
    rng = np.random.default_rng(seed)
    ts = np.linspace(0.0, 2.0, t)
    x = 2 * np.pi * np.arange(n) / n
    ref = np.sin(x[None, None, :] - ts[None, :, None]) * np.ones((b, 1, 1))
    growth = ts[None, None, :, None]
    ens = ref[None] + 0.2 * growth * rng.normal(size=(m, b, t, n))
    ens[:, :, 0] = ref[None, :, 0]  # shared initial state
    return ens, ref, ts


def _is_png(path):
    data = path.read_bytes()
    return len(data) > 1000 and data[:8] == PNG_MAGIC


def test_figures_write_pngs(tmp_path):
    ens, ref, ts = _ensemble()
    p = F.fan_chart(tmp_path / "fan.png", ens, ref, ts, locations=[0, 5, 9],
                    labels=["x0", "x5", "x9"], trajectory=1)
    assert _is_png(p)
    assert _is_png(F.spread_error_chart(tmp_path / "se.png", ens, ref, ts))
    assert _is_png(F.rank_histogram_chart(tmp_path / "rank.png", ens, ref))
    # 2D states, Kuramoto-like phases through a transform, default locations
    ens2 = ens.reshape(6, 2, 9, 4, 4)
    ref2 = ref.reshape(2, 9, 4, 4)
    assert _is_png(F.fan_chart(tmp_path / "fan2.png", ens2, ref2, ts, transform=np.sin))
    names = F.write_uq_figures(tmp_path / "out", ens, ref, ts)
    assert set(names) == {"uq_fan.png", "uq_spread_error.png", "uq_rank_histogram.png"}
    assert all(_is_png(tmp_path / "out" / name) for name in names)


def test_figures_refuse_bad_input(tmp_path):
    ens, ref, ts = _ensemble()
    with pytest.raises(ValueError, match=r"`ensemble` must be \[M, B, T, \*state\]"):
        F.fan_chart(tmp_path / "a.png", ens[:, 0], ref, ts)
    with pytest.raises(ValueError, match="`ts` must have shape"):
        F.spread_error_chart(tmp_path / "a.png", ens, ref, ts[:-1])
    with pytest.raises(ValueError, match="`locations` must be flat state indices"):
        F.fan_chart(tmp_path / "a.png", ens, ref, ts, locations=[16])
    with pytest.raises(ValueError, match="at least 2 members"):
        F.rank_histogram_chart(tmp_path / "a.png", ens[:1], ref)
    assert not (tmp_path / "a.png").exists()
