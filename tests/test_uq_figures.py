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


def test_the_figures_draw_what_the_ensemble_says():
    # What the charts plot, on ensembles whose answer is known: a calibrated one
    # (truth and members drawn alike), one 10x too narrow, one 3x too wide.
    rng = np.random.default_rng(3)
    # 16,000 points per lead time: the unbiased ratio's denominator, E - V / M, is a
    # difference whose sampling error is a few percent
    m, b, t, n = 8, 125, 6, 128
    centre = rng.normal(size=(b, t, n))
    ref = centre + rng.normal(size=(b, t, n))
    noise = rng.normal(size=(m, b, t, n))
    for factor, flat in ((1.0, True), (0.1, False), (3.0, False)):
        ens = centre + factor * noise
        series = F.spread_error_series(ens, ref)
        # spread is the members' std, error the rmse of their mean, sqrt(1 + f^2 / M)
        np.testing.assert_allclose(series["spread"], factor, rtol=0.05)
        np.testing.assert_allclose(series["error"], np.sqrt(1 + factor**2 / m), rtol=0.05)
        np.testing.assert_allclose(series["ratio"], factor, rtol=0.08)
        freq = F.rank_frequencies(ens, ref, skip_initial=False)
        assert freq.shape == (m + 1,) and abs(freq.sum() - 1) < 1e-12
        ends = freq[0] + freq[-1]
        if flat:
            # a calibrated ensemble: flat at 1 / (M + 1)
            np.testing.assert_allclose(freq, 1 / (m + 1), atol=0.01)
        elif factor < 1:
            # under-dispersed: the truth outside the members, a U (exactly 0.887 here)
            assert ends == pytest.approx(0.887, abs=0.01)
        else:
            # over-dispersed: a hump, the end ranks nearly empty (exactly 0.028 here,
            # against 2 / (M + 1) = 0.22 when calibrated)
            assert ends == pytest.approx(0.028, abs=0.006)
