import numpy as np
import pytest

from crcombine import DetectionBoundary
from crcombine._detection.boundary import boundary_points


def _points(seed=0):
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 1000, 60)
    return x, 4 * np.sqrt(x + 25) + rng.normal(0, 2, x.size)


def test_fit_is_monotone_and_clamped():
    x, y = _points()
    b = DetectionBoundary.fit(x, y, knots=5)
    grid = np.linspace(-500, 3000, 2000)
    values = b(grid)
    assert np.all(np.diff(values) >= -1e-9)
    assert b(-500.0) == pytest.approx(b(0.0))       # constant below the range
    assert b(3000.0) == pytest.approx(b(1000.0))    # constant above, no cubic excursion
    assert np.isnan(b(np.array([np.nan]))[0])


def test_upward_extension_moves_the_curve_above_the_points():
    x, y = _points(1)
    plain = DetectionBoundary.fit(x, y, niter=0)
    extended = DetectionBoundary.fit(x, y, niter=3, weight=10)
    assert (y > extended(x)).sum() < (y > plain(x)).sum()
    assert np.mean(extended(x) - plain(x)) > 0
    assert len(extended.iterations) == 4


def test_fixed_point_is_honoured():
    x, y = _points(2)
    b = DetectionBoundary.fit(x, y, fixed_points=[[500.0, 200.0]])
    assert b(500.0) == pytest.approx(200.0, rel=0.02)


def test_piecewise_and_its_validation():
    b = DetectionBoundary.piecewise([[0, 10], [100, 30], [50, 20]])
    assert b(25.0) == pytest.approx(15.0)
    assert b(1e6) == 30.0 and b(-5.0) == 10.0
    with pytest.raises(ValueError, match="not decreasing"):
        DetectionBoundary.piecewise([[0, 10], [100, 5]])


def test_boundary_points_value_exceeded_by_one():
    # one column with 1000 samples spread uniformly over y in [0, 10): the
    # value exceeded by exactly one sample is ~ 10 - 10/1000
    rng = np.random.default_rng(0)
    nfine = 2000
    counts = np.zeros((3, nfine + 1), dtype=np.int64)
    ys = rng.uniform(0, 10, 1000)
    np.add.at(counts[1], (ys / 20 * nfine).astype(int), 1)
    x, y, total = boundary_points(counts, np.array([0.0, 1.0, 2.0, 3.0]), 20.0, min_count=100)
    assert total.tolist() == [1000]
    assert (ys > y[0]).sum() in (0, 1, 2)
    assert y[0] == pytest.approx(np.sort(ys)[-2], abs=0.02)


def test_sparse_columns_are_pooled():
    counts = np.zeros((4, 11), dtype=np.int64)
    counts[:, 1] = [60, 60, 10, 5]
    counts[3, 5] = 1
    x, y, total = boundary_points(counts, np.arange(5.0), 10.0, min_count=100)
    assert total.tolist() == [136]  # 60+60 reach 100; the sparse tail joins them
    assert y[0] == pytest.approx(5.0)  # the top sample (row 5, 1 count): lower edge of its bin


def test_too_few_points_warn_and_fall_back_to_lines():
    from astropy.utils.exceptions import AstropyUserWarning
    with pytest.warns(AstropyUserWarning, match="only 3 boundary points"):
        b = DetectionBoundary.fit([0, 10, 20], [5, 4, 9], knots=3)
    assert b.kind == "piecewise"
    np.testing.assert_allclose(b(np.array([0.0, 10.0, 20.0])), [5, 5, 9])  # running maximum


@pytest.mark.parametrize("lam, kappa", [(100.0, None), (400.0, None), (5000.0, None),
                                        (300.0, 3000.0)])
def test_cornish_fisher_draws_match_exact_draws(lam, kappa):
    """Where the simulated exposure is nearly normal, its expansion has the exact tails."""
    from crcombine._detection.simulate import ExposureModel
    rn, size = 3.4, 2_000_000
    model = ExposureModel(np.full(size, lam, dtype=np.float32), rn, kappa)
    assert model.all_smooth
    cf = model.draw(np.random.default_rng(1))
    rng = np.random.default_rng(2)
    counts = (rng.poisson(lam, size) if kappa is None
              else rng.negative_binomial(kappa, kappa / (kappa + lam), size))
    exact = counts + rng.normal(0, rn, size)
    sigma = exact.std()
    p = [1e-4, 1e-3, 0.5, 0.999, 0.9999]
    q_cf, q_exact = np.quantile(cf, p), np.quantile(exact, p)
    assert np.all(np.abs(q_cf - q_exact) < 0.08 * sigma), (q_cf - q_exact) / sigma
    # a plain normal of the same variance misses the skewed tail (what the test can see)
    normal = lam + sigma * np.random.default_rng(3).standard_normal(size)
    if lam == 100.0:
        assert abs(np.quantile(normal, 0.9999) - q_exact[-1]) > 0.12 * sigma


def test_skewed_or_noiseless_pixels_are_drawn_exactly():
    from crcombine._detection.simulate import ExposureModel
    lam = np.array([1.0, 50.0, 5.0, 200.0, 200.0], dtype=np.float32)
    rn = np.array([0.5, 3.4, 3.4, 3.4, 0.5], dtype=np.float32)
    model = ExposureModel(lam, rn)
    # skewness k3 / s^3: 0.72, 0.10, 0.07 (read noise dominates), 0.07; no smoothing noise
    assert model.smooth.tolist() == [False, False, True, True, False]
    draws = np.stack([model.draw(np.random.default_rng(s)) for s in range(4000)])
    np.testing.assert_allclose(draws.mean(axis=0), lam, atol=0.6)
    np.testing.assert_allclose(draws.var(axis=0), lam + rn ** 2, rtol=0.1)
