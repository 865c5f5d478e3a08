import numpy as np
import pytest

from crcombine import DetectionBoundary
from crcombine._boundary import boundary_points


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
