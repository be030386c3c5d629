"""Metrics against hand cases, analytic crossings and closed-form scores of Gaussian
predictive distributions; the statistical tolerances are a few standard errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hybrid import metrics as M

SQRT_PI = math.sqrt(math.pi)


def _phi(z):
    return np.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)


def _Phi(z):
    return 0.5 * (1 + np.vectorize(math.erf)(z / math.sqrt(2)))


def _crps_gaussian(y, mu, sigma):
    # Gneiting & Raftery (2007), eq. (21)
    z = (y - mu) / sigma
    return sigma * (z * (2 * _Phi(z) - 1) + 2 * _phi(z) - 1 / SQRT_PI)


# --- rmse -------------------------------------------------------------------------


def test_rmse_hand_cases():
    assert float(M.rmse([1.0, 2.0, 3.0], [1.0, 2.0, 5.0])) == pytest.approx(math.sqrt(4 / 3))
    assert float(M.rmse(np.zeros((2, 3)), np.zeros((2, 3)))) == 0.0
    pred = np.array([[1.0, 1.0], [0.0, 0.0]])
    ref = np.array([[0.0, 0.0], [0.0, 4.0]])
    np.testing.assert_allclose(M.rmse(pred, ref, axis=1), [1.0, math.sqrt(8.0)], rtol=1e-14)
    np.testing.assert_allclose(M.rmse(pred, ref, axis=0), [math.sqrt(0.5), math.sqrt(8.5)])
    with pytest.raises(ValueError, match="`pred` and `ref` must have the same shape"):
        M.rmse(np.zeros(3), np.zeros(4))


def test_rmse_over_time_hand_case():
    # [B=2, T=3, n=4]: error c_t everywhere at time t, both trajectories
    c = np.array([0.0, 1.0, 3.0])
    ref = np.random.default_rng(0).normal(size=(2, 3, 4))
    pred = ref + c[None, :, None]
    np.testing.assert_allclose(M.rmse_over_time(pred, ref), c, atol=1e-14)
    # one trajectory [T, n] and a 2D-field batch [B, T, n, n]
    np.testing.assert_allclose(M.rmse_over_time(pred[0], ref[0]), c, atol=1e-14)
    pred2 = np.broadcast_to(pred[..., None], (2, 3, 4, 4))
    ref2 = np.broadcast_to(ref[..., None], (2, 3, 4, 4))
    np.testing.assert_allclose(M.rmse_over_time(pred2, ref2), c, atol=1e-14)
    np.testing.assert_allclose(M.rmse_over_time(pred2[0], ref2[0], time_axis=0), c, atol=1e-14)


# --- correlation time ---------------------------------------------------------------


def _shifted_sines(speeds, ts, n=64):
    # corr(sin(x + c t), sin(x)) over a full periodic grid = cos(c t) exactly
    x = 2 * np.pi * np.arange(n) / n
    ref = np.broadcast_to(np.sin(x), (len(speeds), len(ts), n))
    pred = np.sin(x[None, None, :] + np.asarray(speeds)[:, None, None] * ts[None, :, None])
    return pred, ref


def test_pearson_of_shifted_sine_is_cosine():
    ts = np.linspace(0.0, 3.0, 31)
    pred, ref = _shifted_sines([1.0, 0.5], ts)
    corr = M.pearson_over_time(pred, ref)
    assert corr.shape == (2, 31)
    np.testing.assert_allclose(corr[0], np.cos(ts), atol=1e-12)
    np.testing.assert_allclose(corr[1], np.cos(0.5 * ts), atol=1e-12)


def test_corr_time_crossing():
    dt = 0.05
    ts = np.arange(0.0, 2.0 + dt / 2, dt)
    speeds = np.array([1.0, 2.0, 0.7])
    pred, ref = _shifted_sines(speeds, ts)
    exact = np.arccos(0.95) / speeds  # 0.318, 0.159, 0.454
    times, censored = M.corr_time_per_trajectory(pred, ref, ts)
    assert not np.any(censored)
    # linear interpolation of cos between saves: error ~ dt^2 |c''| / (8 |c'|) << dt
    np.testing.assert_allclose(times, exact, atol=0.1 * dt)
    assert float(M.corr_time(pred, ref, ts)) == pytest.approx(exact.mean(), abs=0.1 * dt)
    # the same on a time grid that does not start at 0: measured from ts[0]
    times_shift, _ = M.corr_time_per_trajectory(pred, ref, ts + 10.0)
    np.testing.assert_allclose(times_shift, times, atol=1e-9)
    # a stricter threshold decorrelates earlier
    t99 = float(M.corr_time(pred[:1], ref[:1], ts, threshold=0.99))
    assert t99 == pytest.approx(np.arccos(0.99), abs=0.1 * dt)


def test_corr_time_censored_blowup_and_single_trajectory():
    ts = np.linspace(0.0, 0.2, 11)
    pred, ref = _shifted_sines([1.0], ts)  # cos(0.2) = 0.98 > 0.95: never drops
    times, censored = M.corr_time_per_trajectory(pred, ref, ts)
    assert bool(censored[0]) and float(times[0]) == pytest.approx(0.2)
    assert float(M.corr_time(pred[0], ref[0], ts)) == pytest.approx(0.2)  # [T, n]
    # a blow-up (NaN) at save 4 counts as a drop at the last good save
    bad = pred.copy()
    bad[0, 4:] = np.nan
    times, censored = M.corr_time_per_trajectory(bad, ref, ts)
    assert not bool(censored[0]) and float(times[0]) == pytest.approx(ts[3])
    with pytest.raises(ValueError, match="`ts` must have shape"):
        M.corr_time(pred, ref, ts[:-1])


def test_pearson_constant_fields_no_nan():
    n = 16
    x = 2 * np.pi * np.arange(n) / n
    const = np.full((3, n), 0.1)
    wave = np.broadcast_to(np.sin(x), (3, n))
    assert np.all(np.asarray(M.pearson_over_time(const, const + 0.5)) == 1.0)
    assert np.all(np.asarray(M.pearson_over_time(const, wave)) == 0.0)
    assert np.all(np.asarray(M.pearson_over_time(wave, const)) == 0.0)
    assert np.all(np.asarray(M.pearson_over_time(np.zeros((3, n)), np.zeros((3, n)))) == 1.0)
    ts = np.arange(3.0)
    assert float(M.corr_time(const, wave, ts)) == 0.0  # uncorrelated from the start


# --- CRPS -----------------------------------------------------------------------------


def test_crps_hand_case():
    # members {0, 1}, y = 0: mean|x - y| = 1/2, sum_{m,m'} |x_m - x_m'| = 2
    ens, y = np.array([0.0, 1.0]), np.array(0.0)
    assert float(M.crps_fair(ens, y)) == pytest.approx(0.5 - 2 / (2 * 2 * 1))
    assert float(M.crps(ens, y, fair=False)) == pytest.approx(0.5 - 2 / (2 * 4))
    # against the O(M^2) definition, members on axis 1
    rng = np.random.default_rng(1)
    ens = rng.normal(size=(3, 7, 5))
    ref = rng.normal(size=(3, 5))
    pair = np.abs(ens[:, :, None] - ens[:, None, :]).sum(axis=(1, 2))
    direct = np.abs(ens - ref[:, None]).mean(axis=1) - pair / (2 * 7 * 6)
    np.testing.assert_allclose(M.crps(ens, ref, 1, reduce=False), direct, rtol=1e-12)
    with pytest.raises(ValueError, match="at least 2 members"):
        M.crps_fair(ens[:, :1], ref, 1)
    with pytest.raises(ValueError, match="`ref` must have the shape of `ensemble`"):
        M.crps_fair(ens, ref)


def test_crps_large_ensemble_matches_gaussian_closed_form():
    rng = np.random.default_rng(2)
    mu, sigma, n_y, m = 0.3, 1.7, 200, 2000
    y = mu + sigma * np.linspace(-2.5, 2.5, n_y)
    ens = mu + sigma * rng.normal(size=(m, n_y))
    exact = _crps_gaussian(y, mu, sigma)
    per_point = np.asarray(M.crps(ens, y, reduce=False))
    # per point the Monte-Carlo error is ~ sigma / sqrt(M) ~ 2%; the mean over 200 y ~ 0.3%
    np.testing.assert_allclose(per_point, exact, rtol=0.1)
    assert float(M.crps_fair(ens, y)) == pytest.approx(exact.mean(), rel=0.01)


def test_fair_crps_unbiased_for_small_ensembles_plain_biased_high():
    rng = np.random.default_rng(3)
    m, reps = 4, 100_000
    y = rng.normal(size=reps)  # any y: each column is compared with its own closed form
    ens = rng.normal(size=(m, reps))
    exact = _crps_gaussian(y, 0.0, 1.0).mean()  # ~ 1/sqrt(pi) = 0.564
    fair = float(M.crps_fair(ens, y))
    plain = float(M.crps(ens, y, fair=False))
    assert fair == pytest.approx(exact, rel=0.02)  # standard error ~ 0.2%
    # the plain estimator is high by E|X - X'| / (2M) = 1 / (M sqrt(pi)) = 0.14 (~25%)
    assert plain - exact == pytest.approx(1 / (m * SQRT_PI), rel=0.1)
    assert plain > 1.15 * exact


# --- spread-skill -----------------------------------------------------------------------


def test_spread_skill_calibrated_large_ensemble():
    rng = np.random.default_rng(4)
    ens = rng.normal(size=(100, 4000))
    ref = rng.normal(size=4000)
    assert float(M.spread_skill(ens, ref)) == pytest.approx(1.0, abs=0.03)
    # members with half the spread: the ratio is the spread factor, 0.5
    assert float(M.spread_skill(0.5 * ens, ref)) == pytest.approx(0.5, abs=0.02)


@pytest.mark.parametrize("m", [2, 4, 8])
@pytest.mark.parametrize("factor", [0.5, 1.0, 2.0])
def test_spread_skill_reads_the_spread_factor_for_any_member_count(m, factor):
    # Members drawn with `factor` times the spread of the truth's distribution: the
    # unbiased ratio estimates `factor` itself (issue 11: the Fortin-style ratio read
    # 1.58 for factor 2 and 0.54 for factor 0.5 at M = 4, pulled towards 1).
    rng = np.random.default_rng(5 + m)
    centre = rng.normal(size=(200, 500))  # the predictable part, shared
    ens = centre + factor * rng.normal(size=(m, 200, 500))
    ref = centre + rng.normal(size=(200, 500))
    got = float(M.spread_skill(ens, ref))
    assert got == pytest.approx(factor, rel=0.03), (m, factor, got)
    # the old ratio sqrt((M+1)/M var / err^2) is biased towards 1 when mis-dispersed
    var = np.var(ens, axis=0, ddof=1).mean()
    err2 = ((ens.mean(0) - ref) ** 2).mean()
    fortin = math.sqrt((m + 1) / m * var / err2)
    expected_fortin = math.sqrt((m + 1) / m * factor**2 / (1 + factor**2 / m))
    assert fortin == pytest.approx(expected_fortin, rel=0.03)
    if factor != 1.0:
        assert abs(math.log(got / factor)) < abs(math.log(fortin / factor))


def test_spread_skill_small_ensemble_unbiased():
    rng = np.random.default_rng(5)
    m = 4
    ratios = []
    for _ in range(200):
        ens = rng.normal(size=(m, 500))
        ref = rng.normal(size=500)
        ratios.append(float(M.spread_skill(ens, ref)))
    # mean over 200 repetitions of 500 points: standard error ~ 0.3%
    assert np.mean(ratios) == pytest.approx(1.0, abs=0.02)


def test_spread_skill_limits():
    # no spread and no error (a shared initial state): undefined; spread but an
    # error estimate <= 0 (far over-dispersed on few points): inf
    x = np.ones((4, 10))
    assert np.isnan(float(M.spread_skill(x, np.ones(10))))
    ens = np.array([[-10.0, 10.0], [10.0, -10.0], [0.0, 0.0]])  # mean 0 = truth
    assert float(M.spread_skill(ens, np.zeros(2))) == np.inf


def test_spread_skill_over_time():
    rng = np.random.default_rng(6)
    m, b, t, n = 8, 50, 5, 32
    scale = np.array([0.0, 0.5, 1.0, 2.0, 4.0])[None, None, :, None]
    ens = scale * rng.normal(size=(m, b, t, n))
    ref = scale[0] * rng.normal(size=(b, t, n))
    ssr = np.asarray(M.spread_skill(ens, ref, over_time=True))
    assert ssr.shape == (t,)
    assert np.isnan(ssr[0])  # zero error at the shared initial state
    np.testing.assert_allclose(ssr[1:], 1.0, atol=0.08)
    # both halves estimate the members' std s(t) and the error of an infinite
    # ensemble's mean, also s(t) here
    spread, error = M.spread_and_error(ens, ref, over_time=True)
    s = scale.ravel()[1:]
    np.testing.assert_allclose(spread[1:] / s, 1.0, rtol=0.03)
    np.testing.assert_allclose(error[1:] / s, 1.0, rtol=0.08)
    # members last, [B, T, n, M]: the same numbers
    ssr_last = M.spread_skill(np.moveaxis(ens, 0, -1), ref, member_axis=-1, over_time=True)
    np.testing.assert_allclose(ssr_last, ssr, rtol=1e-12)


# --- coverage -----------------------------------------------------------------------------


def test_coverage_interval_hand_case():
    ens = np.broadcast_to(np.arange(11.0)[:, None], (11, 5))  # quantiles q_p = 10 p
    ref = np.array([0.4, 0.5, 5.0, 9.5, 9.6])
    # 90% interval [0.5, 9.5] (inclusive): 3 of 5 inside
    assert float(M.coverage(ens, ref, 0.9, method="interval")) == pytest.approx(0.6)
    # 50% interval [2.5, 7.5]: only 5.0
    assert float(M.coverage(ens, ref, 0.5, method="interval")) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="`level` must be in"):
        M.coverage(ens, ref, 1.0)
    with pytest.raises(ValueError, match="`method` must be"):
        M.coverage(ens, ref, 0.9, method="weibull")


def test_coverage_t_interval_hand_case():
    # members 0, 1, 2, 3: mean 1.5, std sqrt(5/3); 90% half width
    # t_3(0.95) * std * sqrt(1 + 1/4) = 2.3534 * 1.2910 * 1.1180 = 3.3967
    ens = np.broadcast_to(np.arange(4.0)[:, None], (4, 4))
    half = 2.3533634348018264 * math.sqrt(5 / 3) * math.sqrt(1.25)
    ref = np.array([1.5 + half - 1e-9, 1.5 - half + 1e-9, 1.5 + half + 1e-6, np.nan])
    assert float(M.coverage(ens, ref, 0.9)) == pytest.approx(0.5)
    assert M.predictive_quantile(4, 0.9) == pytest.approx(2.3533634348018264, rel=1e-12)


@pytest.mark.parametrize("m", [4, 8, 32])
def test_coverage_separates_calibrated_from_under_dispersed(m):
    # The acceptance numbers of issue 11: a calibrated ensemble covers [0.85, 0.95] of
    # the 90% interval at any member count >= 4, a 10x under-dispersed one < 0.5.
    rng = np.random.default_rng(20 + m)
    p = 100_000
    centre = rng.normal(size=p)
    ens = centre + rng.normal(size=(m, p))
    ref = centre + rng.normal(size=p)
    calibrated = float(M.coverage(ens, ref, 0.9))
    assert 0.85 <= calibrated <= 0.95 and calibrated == pytest.approx(0.9, abs=0.006)
    narrow = centre + 0.1 * (ens - centre)
    assert float(M.coverage(narrow, ref, 0.9)) < 0.5
    # twice too wide: over-covers (0.966 at M = 4, where s itself is uncertain; 0.99+
    # for many members)
    wide = centre + 2.0 * (ens - centre)
    assert float(M.coverage(wide, ref, 0.9)) > 0.95
    # identical members (no spread at all) cover nothing
    assert float(M.coverage(np.broadcast_to(centre, (m, p)), ref, 0.9)) == 0.0
    # PIT coverage cannot tell: identical members of an ensemble of 4 still score 0.75
    if m == 4:
        same = float(M.coverage(np.broadcast_to(centre, (m, p)) + 1e-9 * np.arange(m)[:, None],
                                ref, 0.9, method="pit"))
        assert same == pytest.approx(0.75, abs=0.01)


def _z(level):
    # standard normal quantile of (1 + level) / 2 by bisection on _Phi
    lo, hi = 0.0, 10.0
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _Phi(mid) < (1 + level) / 2 else (lo, mid)
    return 0.5 * (lo + hi)


@pytest.mark.parametrize("level", [0.5, 0.9])
def test_coverage_matches_gaussian_closed_form(level):
    rng = np.random.default_rng(7)
    m, p = 400, 4000
    z = rng.normal(size=(m, p))
    ref = rng.normal(size=p)
    # binomial standard error sqrt(l (1 - l) / 4000) <= 0.008; the quantiles of 400
    # members are within ~0.1 of the true ones (~0.01 in coverage)
    tol = 0.03
    for method in ("t", "interval", "pit"):
        assert float(M.coverage(z, ref, level, method=method)) == pytest.approx(level, abs=tol)
    # forecast N(mu, s^2) against y ~ N(0, 1): covered iff |y - mu| <= z_l s, i.e.
    # P = Phi(mu + z_l s) - Phi(mu - z_l s)
    zl = _z(level)
    for mu, s in [(0.0, 0.5), (0.0, 2.0), (0.8, 1.0)]:
        exact = float(_Phi(mu + zl * s) - _Phi(mu - zl * s))
        got = float(M.coverage(mu + s * z, ref, level))
        assert got == pytest.approx(exact, abs=tol), (mu, s, got, exact)


def test_coverage_pit_hand_case_and_small_ensembles():
    ens = np.broadcast_to(np.arange(4.0)[:, None], (4, 5))  # members 0, 1, 2, 3
    ref = np.array([1.5, -1.0, 10.0, 1.0, np.nan])
    # PIT bins of width 1/5; rank 2 -> [0.4, 0.6] inside [0.05, 0.95]: 1; rank 0 ->
    # [0, 0.2]: 0.15 / 0.2 = 0.75, rank 4 likewise; y = 1 ties member 1: ranks 1 and 2,
    # both inside: 1; NaN reference: 0
    assert float(M.coverage(ens, ref, 0.9, method="pit")) == pytest.approx(
        (1 + 0.75 + 0.75 + 1 + 0) / 5, rel=1e-12)
    # 50%: [0.25, 0.75]: rank 2: 1, ends: 0, tie of ranks 1 ([0.2, 0.4] -> 0.75) and 2
    assert float(M.coverage(ens, ref, 0.5, method="pit")) == pytest.approx(
        (1 + 0 + 0 + (0.75 + 1) / 2 + 0) / 5, rel=1e-12)
    # A calibrated 4-member ensemble: PIT and t coverage are unbiased for any M, the
    # empirical 90% interval cannot exceed the members' range, (M-1)/(M+1) = 0.6.
    rng = np.random.default_rng(12)
    m, p = 4, 200_000
    ens = rng.normal(size=(m, p))
    ref = rng.normal(size=p)
    for level in (0.5, 0.9):
        # binomial-like standard error < 0.0012
        assert float(M.coverage(ens, ref, level, method="pit")) == pytest.approx(level, abs=0.005)
        assert float(M.coverage(ens, ref, level)) == pytest.approx(level, abs=0.005)
    interval90 = float(M.coverage(ens, ref, 0.9, method="interval"))
    assert interval90 < (m - 1) / (m + 1)
    # as documented: about level (M-1)/(M+1) = 0.54 (measured 0.558)
    assert interval90 == pytest.approx(0.9 * (m - 1) / (m + 1), abs=0.03)
    # P(y inside the full range of the members) = (M-1)/(M+1) exactly
    full = float(np.mean((ref >= ens.min(0)) & (ref <= ens.max(0))))
    assert full == pytest.approx((m - 1) / (m + 1), abs=0.005)


def test_coverage_blowup_counts_as_not_covered():
    ens = np.broadcast_to(np.arange(11.0)[:, None], (11, 4)).copy()
    ref = np.full(4, 5.0)
    ens[3, 0] = np.nan  # one member of point 0 blew up
    for method in ("t", "interval", "pit"):
        assert float(M.coverage(ens, ref, 0.9, method=method)) == pytest.approx(0.75)


# --- Gaussian NLL -------------------------------------------------------------------------


def test_gaussian_nll_closed_form():
    mu, a = 1.5, 0.4
    ens = np.array([mu - a, mu + a])[:, None] * np.ones((1, 3))  # mean mu, var(ddof=1) 2a^2
    ref = np.array([1.5, 2.0, 0.0])
    var = 2 * a**2
    exact = np.mean(0.5 * np.log(2 * np.pi * var) + (ref - mu) ** 2 / (2 * var))
    assert float(M.gaussian_nll(ens, ref)) == pytest.approx(exact, rel=1e-12)
    var0 = a**2
    exact0 = np.mean(0.5 * np.log(2 * np.pi * var0) + (ref - mu) ** 2 / (2 * var0))
    assert float(M.gaussian_nll(ens, ref, ddof=0)) == pytest.approx(exact0, rel=1e-12)
    # collapsed ensemble: the variance floor keeps it finite
    flat = float(M.gaussian_nll(np.ones((4, 3)), np.ones(3), var_floor=1e-4))
    assert flat == pytest.approx(0.5 * np.log(2 * np.pi * 1e-4))


def test_gaussian_nll_calibrated_expectation():
    rng = np.random.default_rng(8)
    sigma = 2.0
    ens = sigma * rng.normal(size=(500, 4000))
    ref = sigma * rng.normal(size=4000)
    # E[NLL] of N(0, s^2) at y ~ N(0, s^2) = log(s sqrt(2 pi)) + 1/2
    exact = math.log(sigma * math.sqrt(2 * math.pi)) + 0.5
    assert float(M.gaussian_nll(ens, ref)) == pytest.approx(exact, abs=0.03)


# --- rank histogram -------------------------------------------------------------------------


def test_rank_histogram_flat_and_u_shaped():
    rng = np.random.default_rng(9)
    m, p = 9, 20_000
    ens = rng.normal(size=(m, p))
    ref = rng.normal(size=p)
    counts = np.asarray(M.rank_histogram(ens, ref))
    assert counts.shape == (m + 1,) and counts.sum() == pytest.approx(p)
    expected = p / (m + 1)
    chi2 = np.sum((counts - expected) ** 2 / expected)
    assert chi2 < 30.0, chi2  # 9 degrees of freedom: P(chi2 > 30) = 4e-4
    under = np.asarray(M.rank_histogram(0.3 * ens, ref))
    assert min(under[0], under[-1]) > 3 * max(under[3:7])


def test_rank_histogram_matches_closed_form_of_misscaled_gaussians():
    # members N(mu, s^2), y ~ N(0, 1): P(rank = r) = C(M, r) E[F(y)^r (1 - F(y))^(M-r)]
    # with F the members' CDF; the expectation by quadrature on a fine grid
    rng = np.random.default_rng(13)
    m, p = 6, 100_000
    y = np.linspace(-9, 9, 20001)
    for mu, s in [(0.0, 0.4), (0.0, 2.0), (0.7, 1.0)]:
        F = _Phi((y - mu) / s)
        probs = np.array([
            math.comb(m, r) * np.trapezoid(F**r * (1 - F) ** (m - r) * _phi(y), y)
            for r in range(m + 1)
        ])
        ens = mu + s * rng.normal(size=(m, p))
        ref = rng.normal(size=p)
        freq = np.asarray(M.rank_histogram(ens, ref)) / p
        # binomial standard errors sqrt(q (1 - q) / p) <= 0.0016
        np.testing.assert_allclose(freq, probs, atol=0.006)
        assert probs.sum() == pytest.approx(1.0, abs=1e-9)


def test_rank_histogram_ties():
    ens = np.zeros((4, 10))
    ref = np.zeros(10)
    # all tied: uniform fractional counts, or random ranks with a key
    np.testing.assert_allclose(M.rank_histogram(ens, ref), np.full(5, 2.0))
    counts = np.asarray(M.rank_histogram(ens, ref, key=jax.random.PRNGKey(0)))
    assert counts.sum() == 10 and np.all(counts == np.round(counts))
    # no ties: exact ranks
    ens = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    ref = np.array([-1.0, 0.5, 2.0])
    np.testing.assert_allclose(M.rank_histogram(ens, ref), [1.0, 1.0, 1.0])
    np.testing.assert_allclose(M.rank_histogram(ens, ref, key=jax.random.PRNGKey(1)), [1, 1, 1])
    # non-finite points are left out (a blown-up member would land in an end rank)
    ens_bad, ref_bad = ens.copy(), ref.copy()
    ens_bad[1, 0] = np.nan
    ref_bad[2] = np.inf
    np.testing.assert_allclose(M.rank_histogram(ens_bad, ref_bad), [0.0, 1.0, 0.0])
    np.testing.assert_allclose(
        M.rank_histogram(ens_bad, ref_bad, key=jax.random.PRNGKey(1)), [0.0, 1.0, 0.0])


# --- summary ----------------------------------------------------------------------------


def test_uq_summary_keys_and_values():
    rng = np.random.default_rng(10)
    ens = rng.normal(size=(5, 3, 4, 8))
    ref = rng.normal(size=(3, 4, 8))
    out = M.uq_summary(ens, ref)
    assert set(out) >= {"crps", "spread_skill", "coverage90", "coverage50", "nll"}
    assert all(type(v) is float and np.isfinite(v) for v in out.values())
    assert out["crps"] == pytest.approx(float(M.crps_fair(ens, ref)))
    assert out["pit_coverage90"] == pytest.approx(
        float(M.coverage(ens, ref, 0.9, method="pit")))
    assert 0.0 <= out["coverage50"] <= out["coverage90"] <= 1.0


def test_uq_summary_skip_initial_state():
    # rollouts from a shared initial state: every member equals the reference at t0
    rng = np.random.default_rng(14)
    ens = rng.normal(size=(5, 3, 4, 8))
    ref = rng.normal(size=(3, 4, 8))
    ens[:, :, 0] = ref[None, :, 0]
    out = M.uq_summary(ens, ref, skip_initial=True)
    later = M.uq_summary(ens[:, :, 1:], ref[:, 1:])
    assert out == pytest.approx(later, rel=1e-12)
    # t0 counts as a perfect, fully covered, extremely sharp forecast otherwise:
    # the NLL of those points is log(2 pi 1e-6) / 2 = -6.0 per point
    full = M.uq_summary(ens, ref)
    assert full["coverage90"] > later["coverage90"]
    assert full["nll"] == pytest.approx(
        0.75 * later["nll"] + 0.25 * 0.5 * math.log(2 * math.pi * 1e-6), rel=1e-9)
    # members last, one trajectory [T, n, M]
    one = M.uq_summary(np.moveaxis(ens[:, 0], 0, -1), ref[0], -1, skip_initial=True)
    assert one == pytest.approx(M.uq_summary(ens[:, 0, 1:], ref[0, 1:]), rel=1e-12)
    with pytest.raises(ValueError, match="`skip_initial` needs at least 2 times"):
        M.uq_summary(ens[:, :, :1], ref[:, :1], skip_initial=True)


def test_metrics_jit():
    rng = np.random.default_rng(11)
    ens = jnp.asarray(rng.normal(size=(4, 2, 6, 8)))
    ref = jnp.asarray(rng.normal(size=(2, 6, 8)))
    ts = jnp.linspace(0.0, 1.0, 6)
    np.testing.assert_allclose(jax.jit(M.crps_fair)(ens, ref), M.crps_fair(ens, ref))
    np.testing.assert_allclose(jax.jit(M.corr_time)(ens[0], ref, ts), M.corr_time(ens[0], ref, ts))
