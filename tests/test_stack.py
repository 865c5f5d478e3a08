import numpy as np
import pytest
from astropy import units as u
from astropy.nddata import CCDData

from crcombine._core.statistics import sort_stack, stack_statistics
from crcombine._inputs.stack import ExposureStack


def _stats(data, nc):
    s, count = sort_stack(data.astype(np.float32))
    return stack_statistics(s, count, nc)


@pytest.mark.parametrize("n", [3, 4, 5, 8])
def test_statistics_match_numpy(n):
    rng = np.random.default_rng(n)
    data = rng.normal(100, 10, (n, 20, 30))
    st = _stats(data, 2)
    np.testing.assert_allclose(st["median2d"], np.median(data, axis=0), rtol=1e-5)
    np.testing.assert_allclose(st["mean2d"], data.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(st["max2d"], data.max(axis=0), rtol=1e-6)
    np.testing.assert_allclose(st["minR"], data.min(axis=0), rtol=1e-6)


def test_min2d_is_plain_minimum_for_three():
    data = np.random.default_rng(1).normal(0, 1, (3, 10, 10))
    np.testing.assert_allclose(_stats(data, 2)["min2d"], np.min(data, axis=0), rtol=1e-6)


def test_min2d_is_mean_of_lowest():
    # N = 5, n_c = 3: mean of the 2 lowest values
    data = np.random.default_rng(2).normal(0, 1, (5, 10, 10))
    expect = np.sort(data, axis=0)[:2].mean(axis=0)
    np.testing.assert_allclose(_stats(data, 3)["min2d"], expect, rtol=1e-5, atol=1e-6)


def test_statistics_ignore_invalid_values():
    rng = np.random.default_rng(3)
    data = rng.normal(50, 5, (5, 8, 8))
    data[0, 1, 1] = np.nan
    data[:2, 2, 2] = np.nan
    data[:, 3, 3] = np.nan
    st = _stats(data, 2)
    for key, func in [("median2d", np.nanmedian), ("mean2d", np.nanmean),
                      ("max2d", np.nanmax), ("minR", np.nanmin)]:
        with np.errstate(all="ignore"):
            import warnings
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                expect = func(data, axis=0)
        np.testing.assert_allclose(st[key], expect, rtol=1e-5, equal_nan=True)
    # 4 valid values at (1, 1), n_c = 2 -> mean of the 2 lowest
    vals = np.sort(data[1:, 1, 1])
    assert st["min2d"][1, 1] == pytest.approx(vals[:2].mean(), rel=1e-5)
    assert np.isnan(st["min2d"][3, 3])


def test_stack_in_electrons_and_inputs_untouched():
    data = np.arange(12, dtype=np.int16).reshape(3, 4) + 1000
    ccds = [CCDData(data.copy(), unit="adu") for _ in range(3)]
    ccds[1].mask = np.zeros((3, 4), bool)
    ccds[1].mask[0, 0] = True
    before = [c.data.copy() for c in ccds]
    st = ExposureStack.from_ccds(ccds, gain=2.0 * u.electron / u.adu, readnoise=3 * u.adu,
                                 bias=1000)
    assert st.data.dtype == np.float32
    np.testing.assert_array_equal(st.data[0], (data - 1000) * 2)
    assert np.isnan(st.data[1, 0, 0])
    assert st.readnoise == 6.0  # ADU read noise times the gain
    for c, b in zip(ccds, before):
        np.testing.assert_array_equal(c.data, b)
    np.testing.assert_array_equal(st.to_data_unit(st.data[0]), data)


def test_big_endian_and_nonfinite_inputs():
    data = np.full((5, 5), 10.0, dtype=">f8")
    bad = data.copy()
    bad[2, 2] = np.inf
    st = ExposureStack.from_ccds([CCDData(data, unit="electron"), CCDData(bad, unit="electron"),
                                  CCDData(data, unit="electron")], gain=1, readnoise=1, bias=0)
    assert np.isnan(st.data[1, 2, 2]) and np.isfinite(st.data[0]).all()


def test_per_pixel_gain_and_readnoise():
    shape = (4, 5)
    gain = np.full(shape, 2.0)
    gain[0, 0] = 4.0
    ccds = [CCDData(np.full(shape, 110.0), unit="adu") for _ in range(3)]
    st = ExposureStack.from_ccds(ccds, gain=gain, readnoise=np.full(shape, 3.0), bias=10)
    assert st.data[0, 0, 0] == 400 and st.data[0, 1, 1] == 200
    with pytest.raises(ValueError, match="gain must be a scalar or an array of the image shape"):
        ExposureStack.from_ccds(ccds, gain=np.ones((2, 2)), readnoise=1, bias=0)
