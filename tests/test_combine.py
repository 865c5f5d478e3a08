import warnings

import numpy as np
import pytest
from scipy import ndimage
from astropy.nddata import CCDData, StdDevUncertainty

from crcombine import COMBINATION_METHODS, CRCombiner, CRMaskBuilder, combine
from crcombine._core.noise import median_variance_factor
from helpers import make_stack


@pytest.fixture(scope="module")
def combined():
    stack = make_stack(shape=(256, 256), seed=31, n_single=80, n_coincident=60)
    combiner = CRCombiner(stack.ccds(), builder=CRMaskBuilder(gain=1, readnoise=5, seed=7))
    return stack, combiner, {m: combiner.combine(m) for m in COMBINATION_METHODS}


def test_median_mean_min_match_numpy(combined):
    stack, _, res = combined
    np.testing.assert_allclose(res["median"].data, np.median(stack.exposures, axis=0),
                               rtol=1e-5)
    np.testing.assert_allclose(res["mean"].data, stack.exposures.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(res["min"].data, stack.exposures.min(axis=0), rtol=1e-5)


def test_mediancr_is_median_outside_mediancr(combined):
    stack, combiner, res = combined
    m = combiner.masks.mediancr
    assert m.any()
    np.testing.assert_array_equal(res["mediancr"].data[~m], res["median"].data[~m])
    np.testing.assert_array_equal(res["mediancr"].data[m], res["min"].data[m])
    t = combiner.masks.meancrt
    np.testing.assert_array_equal(res["meancrt"].data[~t], res["mean"].data[~t])
    np.testing.assert_array_equal(res["meancrt"].data[t], res["mediancr"].data[t])


def test_cr_methods_remove_the_hits(combined):
    stack, _, res = combined
    sigma = stack.sigma
    hit = stack.hit_count(nsigma=10) >= 1
    for method in ("mediancr", "meancrt", "meancr", "meancr2"):
        resid = (res[method].data - stack.truth) / sigma
        assert (resid[hit] > 5).mean() <= 0.02, method
    assert ((res["mean"].data - stack.truth) / sigma)[hit].max() > 50
    coincident = stack.hit_count(nsigma=20) >= 2
    assert ((res["median"].data - stack.truth) / sigma)[coincident].min() > 5


def test_noise_and_uncertainty_are_honest(combined):
    stack, combiner, res = combined
    clean = ~(combiner.masks.meancrt | (stack.hit_count() > 0))
    for method in ("mean", "median", "meancr"):
        r = res[method]
        assert isinstance(r.uncertainty, StdDevUncertainty)
        z = ((r.data - stack.truth) / r.uncertainty.array)[clean]
        assert np.std(z) == pytest.approx(1.0, abs=0.05), method
    # the median is noisier than the mean by sqrt(0.4487 * 3) = 1.16 for N = 3
    ratio = np.std((res["median"].data - stack.truth)[clean]) / np.std(
        (res["mean"].data - stack.truth)[clean])
    assert ratio == pytest.approx(np.sqrt(3 * median_variance_factor(3)), rel=0.03)
    # meancr keeps the mean's noise
    n_meancr = np.std((res["meancr"].data - stack.truth)[clean])
    n_mean = np.std((res["mean"].data - stack.truth)[clean])
    assert n_meancr <= 1.01 * n_mean


def test_median_variance_factor():
    assert median_variance_factor(1) == 1 and median_variance_factor(2) == 0.5
    assert median_variance_factor(3) == pytest.approx(0.4487, abs=1e-4)
    rng = np.random.default_rng(0)
    for k in (4, 5, 10, 21):   # large even k used to take minutes (2-D quadrature)
        mc = np.var(np.median(rng.standard_normal((200000, k)), axis=1))
        assert median_variance_factor(k) == pytest.approx(mc, rel=0.02)
    assert median_variance_factor(400) == pytest.approx(np.pi / 2 / 400, rel=0.01)


def test_exposure_map_meta_and_wcs(combined):
    stack, combiner, res = combined
    m = combiner.masks
    assert res["mean"].flags.dtype == np.uint8 and (res["mean"].flags == 3).all()
    assert (res["mediancr"].flags[m.mediancr] == 1).all()
    # the unmasked count; where every exposure is masked, 1 (the minimum) or, on flat
    # sky with PSF matching, 0 (the median of the neighbours: masked)
    expect = 3 - m.crmask.sum(axis=0)
    flags = res["meancr"].flags
    np.testing.assert_array_equal(flags[expect > 0], expect[expect > 0])
    assert np.isin(flags[expect == 0], (0, 1)).all()
    np.testing.assert_array_equal(res["meancr"].mask, flags == 0)
    meta = res["meancr"].meta
    assert meta["NCOMBINE"] == 3 and meta["CRMETHOD"] == "meancr"
    assert meta["CRMUUID"] == m.uuid and meta["FLUXF2"] == 1.0
    assert res["meancr"].unit == "electron" and res["meancr"].data.dtype == np.float32


def test_masked_inputs_never_contribute():
    stack = make_stack(shape=(64, 64), seed=2, n_single=0, n_coincident=0)
    ccds = stack.ccds()
    for c in ccds:
        c.mask = np.zeros(c.shape, bool)
    ccds[0].data[5, 5] = 1e6
    ccds[0].mask[5, 5] = True
    ccds[1].data[6, 6] = np.nan
    for c in ccds:
        c.mask[7, 7] = True
    comb = CRCombiner(ccds, builder=CRMaskBuilder(gain=1, readnoise=5, seed=1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for method in COMBINATION_METHODS:
            r = comb.combine(method)
            assert r.data[5, 5] < 500, method
            assert r.flags[5, 5] <= 2 and np.isfinite(r.data[6, 6])
            assert r.mask[7, 7] and np.isnan(r.data[7, 7]) and r.flags[7, 7] == 0
            assert r.mask.sum() == 1


def test_combine_function_writes_output(tmp_path, stack3):
    out = tmp_path / "out.fits"
    r = combine(stack3.ccds(), "meancr", output_file=out, gain=1, readnoise=5, seed=1)
    back = CCDData.read(out)
    np.testing.assert_array_equal(back.data, r.data)
    from astropy.io import fits
    with fits.open(out) as h:
        np.testing.assert_array_equal(h["EXPMAP"].data, r.flags)
    with pytest.raises(FileExistsError, match="overwrite"):
        combine(stack3.ccds(), "meancr", output_file=out, gain=1, readnoise=5)
    combine(stack3.ccds(), "median", output_file=out, overwrite=True, gain=1, readnoise=5)
    assert CCDData.read(out).meta["CRMETHOD"] == "median"


@pytest.mark.parametrize("kind", ["std", "var", "ivar"])
def test_input_uncertainties_are_propagated(kind):
    from astropy.nddata import InverseVariance, VarianceUncertainty
    stack = make_stack(shape=(64, 64), seed=3, n_single=0, n_coincident=0, nstars=0)
    ccds = []
    for i, e in enumerate(stack.exposures):
        sigma = np.full(e.shape, 2.0 + i)       # deliberately unlike the noise model
        unc = {"std": StdDevUncertainty(sigma), "var": VarianceUncertainty(sigma ** 2),
               "ivar": InverseVariance(1 / sigma ** 2)}[kind]
        ccds.append(CCDData(e, unit="electron", uncertainty=unc))
    comb = CRCombiner(ccds, builder=CRMaskBuilder(gain=1, readnoise=5, seed=1))
    r = comb.combine("mean")
    assert isinstance(r.uncertainty, StdDevUncertainty)      # not the input class (#742)
    expect = np.sqrt(2.0 ** 2 + 3.0 ** 2 + 4.0 ** 2) / 3
    np.testing.assert_allclose(r.uncertainty.array, expect, rtol=1e-5)
    m = comb.combine("min")
    lowest = np.argmin(stack.exposures, axis=0)
    np.testing.assert_allclose(m.uncertainty.array, 2.0 + lowest, rtol=1e-6)


def test_input_uncertainty_in_adu_is_converted():
    stack = make_stack(shape=(32, 32), seed=4, n_single=0, n_coincident=0, nstars=0)
    ccds = [CCDData(e / 2 + 100, unit="adu", uncertainty=StdDevUncertainty(np.full(e.shape, 3.0)))
            for e in stack.exposures]
    r = CRCombiner(ccds, builder=CRMaskBuilder(gain=2, readnoise=5, bias=100)).combine("mean")
    np.testing.assert_allclose(r.uncertainty.array, 3.0 / np.sqrt(3), rtol=1e-5)
    assert r.unit == "adu"


def test_header_provenance_and_wcs(tmp_path):
    from astropy.io import fits
    from astropy.wcs import WCS
    stack = make_stack(shape=(48, 40), seed=6)
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [20, 24]
    w.wcs.cdelt = [-1e-4, 1e-4]
    names = []
    for i, e in enumerate(stack.exposures):
        hdr = w.to_header()
        hdr["OBJECT"] = "field"
        hdr["EXPTIME"] = 300.0
        name = tmp_path / f"raw{i}.fits"
        fits.PrimaryHDU(e.astype(np.float32), header=hdr).writeto(name)
        names.append(str(name))
    out = tmp_path / "combined.fits"
    combine(names, "meancr", unit="electron", gain=1, readnoise=5, seed=77, output_file=out)
    back = fits.getheader(out)
    assert back["OBJECT"] == "field" and back["EXPTIME"] == 300.0
    assert back["NCOMBINE"] == 3 and back["CRMETHOD"] == "meancr" and back["CRSEED"] == "77"
    assert [back[f"IMCMB00{i}"] for i in (1, 2, 3)] == ["raw0.fits", "raw1.fits", "raw2.fits"]
    assert back["CRCVERS"] and back["NCOINC"] == 2 and "CRMUUID" in back
    assert WCS(back).wcs.crval[0] == pytest.approx(150.0)


def test_pixel_hit_in_every_exposure_on_flat_sky():
    """A pixel hit in all three exposures has no clean value: with PSF matching,
    ``meancr`` gives it the median of its neighbours on flat sky (exposure map 0),
    where the minimum (numina's substitute, and ours without PSF matching) is a hit;
    near a star the minimum stays."""
    from crcombine import CRCombiner, CRMaskBuilder
    from crcombine._core.images import flat_sky_fill
    from crcombine.datasets import make_cr_stack
    ccds, truth = make_cr_stack((200, 160), 3, seed=21, star_density=5e-3)
    ideal = truth["expected"].mean(axis=0)
    flat = ndimage.maximum_filter(ideal, 9) < 41          # sky of 40 e- all around
    near = ndimage.binary_dilation((truth["deposits"] > 0).any(axis=0), iterations=4)
    y, x = np.argwhere(flat & ~near)[len(np.argwhere(flat & ~near)) // 2]
    # three tracks crossing at (y, x), each exposure hit at a neighbour too, with twice
    # the charge: the crossing's spike in the median gives its neighbours a derivative
    # tolerance of the spike's height, and the mask reaches (y, x) from the neighbour
    for c, charge, (dy, dx) in zip(ccds, (900.0, 700.0, 1200.0), ((0, -1), (0, 1), (1, 0))):
        c.data[y, x] += charge
        c.data[y + dy, x + dx] += 2 * charge
    values = {}
    for psf in (True, False):
        comb = CRCombiner(ccds, builder=CRMaskBuilder(gain=1, readnoise=3.4, seed=1,
                                                      psf_matching=psf))
        assert comb.masks.crmask[:, y, x].all()
        result = comb.combine("meancr")
        values[psf] = result.data[y, x]
        if psf:
            assert result.flags[y, x] == 0
    sigma = np.sqrt(40 + 3.4 ** 2)
    assert abs(values[True] - ideal[y, x]) < 3 * sigma
    assert values[False] - ideal[y, x] > 500                # the smallest of the hits
    # a star profile is not flattened by its neighbours: the minimum stays
    yy, xx = np.mgrid[:9, :9]
    star = (40 + 5000 * np.exp(-((yy - 4) ** 2 + (xx - 4) ** 2) / 2.6)).astype(np.float32)
    none_left = np.zeros(star.shape, dtype=bool)
    none_left[4, 4] = True
    value, replaced = flat_sky_fill(star, none_left, np.sqrt(star + 3.4 ** 2))
    assert not replaced.any() and value[4, 4] == star[4, 4]


def test_group_of_pixels_hit_in_every_exposure_on_flat_sky():
    """Where tracks cross in every exposure over a 3 x 3 block, the masks (dilated)
    leave a 5 x 5 group without a clean value: its inner pixels have fewer than 8
    clean pixels in a 5 x 5 window, and take the median of a wider one (5 x 7 or
    5 x 9) rather than keep the minimum, itself a hit."""
    from crcombine import CRCombiner, CRMaskBuilder
    from crcombine.datasets import make_cr_stack
    ccds, truth = make_cr_stack((200, 160), 3, seed=21, star_density=5e-3)
    ideal = truth["expected"].mean(axis=0)
    flat = ndimage.maximum_filter(ideal, 15) < 41
    near = ndimage.binary_dilation((truth["deposits"] > 0).any(axis=0), iterations=6)
    y, x = np.argwhere(flat & ~near)[len(np.argwhere(flat & ~near)) // 3]
    block = np.s_[y - 1:y + 2, x - 1:x + 2]
    i, j = np.mgrid[:3, :3]
    for k, c in enumerate(ccds):      # every exposure is the lowest somewhere in the block
        c.data[block] += (400.0 + 500.0 * ((i + j + k) % 3)).astype(np.float32)
    comb = CRCombiner(ccds, builder=CRMaskBuilder(gain=1, readnoise=3.4, seed=1))
    none_left = comb.masks.crmask.all(axis=0)
    assert none_left[block].all()
    window = none_left[y - 2:y + 3, x - 2:x + 3]
    assert window.sum() > 25 - 8                   # the centre needs a wider window
    result = comb.combine("meancr")
    sigma = np.sqrt(40 + 3.4 ** 2)
    assert np.all(np.abs(result.data[block] - ideal[block]) < 3 * sigma)
    assert np.all(result.flags[block] == 0)
