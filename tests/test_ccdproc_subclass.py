import numpy as np
import pytest
from astropy.nddata import CCDData

from crcombine import Combiner, CRCombiner, CRMaskBuilder


@pytest.fixture(scope="module")
def setup():
    from helpers import make_stack
    stack = make_stack(shape=(96, 96), seed=51)
    builder = CRMaskBuilder(gain=1, readnoise=5, seed=3)
    masks = builder.build(stack.ccds())
    return stack, builder, masks


@pytest.mark.parametrize("method", ["mediancr", "meancrt", "meancr", "meancr2"])
def test_new_methods_match_crcombiner(setup, method):
    stack, builder, masks = setup
    c = Combiner(stack.ccds(), crmasks=masks, builder=builder)
    r = getattr(c, f"{method}_combine")()
    ref = CRCombiner(stack.ccds(), masks, builder=builder).combine(method)
    np.testing.assert_allclose(r.data, ref.data, rtol=1e-6)
    np.testing.assert_allclose(r.uncertainty.array, ref.uncertainty.array, rtol=1e-5)
    assert r.data.dtype == np.float64 and r.meta["NCOMBINE"] == 3 and r.unit == "electron"
    assert r.mask.dtype == bool
    np.testing.assert_array_equal(r.mask, ref.mask)
    if method in ("mediancr", "meancrt"):
        assert not r.mask.any()


def test_masks_built_on_demand_and_later_changes_seen(setup):
    stack, builder, masks = setup
    c = Combiner(stack.ccds(), builder=builder)
    np.testing.assert_allclose(c.mediancr_combine().data,
                               Combiner(stack.ccds(), crmasks=masks,
                                        builder=builder).mediancr_combine().data)
    ccds = stack.ccds()
    ccds[0].data[5, 5] = 1e6                        # a hot value in one exposure
    c = Combiner(ccds, builder=builder)
    assert c.average_combine().data[5, 5] > 3e5
    c.minmax_clipping(max_clip=1e5)                 # rejected after construction ...
    r = c.meancr_combine()                          # ... and the new method sees it
    others = [e[5, 5] for e in stack.exposures[1:]]
    assert r.flags[5, 5] == 2 and r.data[5, 5] == pytest.approx(np.mean(others), rel=1e-5)


def test_needs_builder_or_recorded_parameters(setup):
    stack, _, masks = setup
    with pytest.raises(ValueError, match="builder"):
        Combiner(stack.ccds()).mediancr_combine()
    # masks built by crcombine record gain and read noise: enough on their own
    r = Combiner(stack.ccds(), crmasks=masks).mediancr_combine()
    assert np.isfinite(r.data).all()


def test_inherited_behaviour_untouched(setup):
    stack, builder, _ = setup
    ccds = [CCDData(e, unit="adu") for e in stack.exposures]
    ours = Combiner(ccds, builder=builder)
    ours.sigma_clipping(low_thresh=3, high_thresh=3)
    base = Combiner.__mro__[1](ccds)                   # the real ccdproc class
    base.sigma_clipping(low_thresh=3, high_thresh=3)
    np.testing.assert_array_equal(ours.average_combine().data, base.average_combine().data)
    np.testing.assert_array_equal(ours.median_combine().uncertainty.array,
                                  base.median_combine().uncertainty.array)
