"""Property-based tests: invariants that hold for any small stack and parameters."""

import warnings

import numpy as np
from astropy.nddata import CCDData
from astropy.utils.exceptions import AstropyUserWarning
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crcombine import COMBINATION_METHODS, CRCombiner, CRMaskBuilder


@st.composite
def stacks(draw):
    n = draw(st.integers(3, 6))
    ny = draw(st.integers(8, 24))
    nx = draw(st.integers(8, 24))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    level = draw(st.floats(0, 5000))
    readnoise = draw(st.floats(0.5, 20))
    data = rng.poisson(level, (n, ny, nx)) + rng.normal(0, readnoise, (n, ny, nx))
    hits = rng.random((n, ny, nx)) < draw(st.floats(0, 0.05))
    data[hits] += rng.uniform(100, 1e4, hits.sum())
    masks = rng.random((n, ny, nx)) < draw(st.floats(0, 0.2))
    nans = rng.random((n, ny, nx)) < draw(st.floats(0, 0.05))
    data[nans] = np.nan
    masks[:, 0, 0] = True      # one pixel with nothing valid
    ccds = [CCDData(d, mask=m, unit="electron") for d, m in zip(data, masks)]
    params = dict(nsimulations=draw(st.integers(1, 3)), dilation=draw(st.integers(0, 2)),
                  knots=draw(st.integers(2, 5)), seed=draw(st.integers(0, 1000)),
                  nbinom_shape=draw(st.sampled_from([None, "auto", 50.0])))
    return ccds, readnoise, params


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stacks())
def test_invariants(case):
    ccds, readnoise, params = case
    n = len(ccds)
    shape = ccds[0].shape
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", AstropyUserWarning)  # tiny stacks: few boundary points
        comb = CRCombiner(ccds, builder=CRMaskBuilder(gain=1, readnoise=readnoise, **params))
        masks = comb.masks
        results = {m: comb.combine(m) for m in COMBINATION_METHODS}
    assert masks.mediancr.shape == shape and masks.crmask.shape == (n,) + shape
    assert masks.mediancr.dtype == bool and masks.crmask.dtype == bool
    assert not (masks.mediancr & ~masks.meancrt).any()
    valid = np.stack([~c.mask & np.isfinite(c.data) for c in ccds]).any(axis=0)
    for method, r in results.items():
        assert r.data.shape == shape and r.data.dtype == np.float32
        assert r.flags.min() >= 0 and r.flags.max() <= n
        assert np.isfinite(r.data[valid]).all(), method
        assert np.isfinite(r.uncertainty.array[valid]).all(), method
        assert (r.uncertainty.array[valid] >= 0).all(), method
        np.testing.assert_array_equal(r.mask, ~valid)
        np.testing.assert_array_equal(r.flags == 0, ~valid)
    outside = ~masks.mediancr & valid
    np.testing.assert_array_equal(results["mediancr"].data[outside],
                                  results["median"].data[outside])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyUserWarning)
        again = CRMaskBuilder(gain=1, readnoise=readnoise, **params).build(ccds)
    for name in ("mediancr", "meancrt", "crmask", "meancr"):
        np.testing.assert_array_equal(getattr(again, name), getattr(masks, name))
