import numpy as np
import pytest
from astropy import units as u
from astropy.stats import mad_std
from astropy.nddata import CCDData
from scipy import ndimage

from crcombine import CRMaskBuilder
from reference import estimate_overdispersion
from helpers import make_stack, to_adu

EIGHT = np.ones((3, 3), bool)


@pytest.fixture(scope="module")
def synthetic():
    stack = make_stack(shape=(256, 256), seed=5, n_single=80, n_coincident=60)
    masks = CRMaskBuilder(gain=1, readnoise=stack.readnoise, seed=3).build(stack.ccds())
    return stack, masks


def test_recall_of_coincident_hits(synthetic):
    stack, masks = synthetic
    # pixels hit in >= 2 of 3 exposures with deposits >= 20 sigma in each
    strong = stack.hit_count(nsigma=20) >= 2
    assert strong.sum() > 100
    recall = (masks.mediancr & strong).sum() / strong.sum()
    assert recall >= 0.95, recall
    # every coincident hit must be undone in the exposures that carry it
    hit = stack.deposits > 20 * stack.sigma
    per_exposure = (masks.crmask & hit & strong).sum() / (hit & strong).sum()
    assert per_exposure >= 0.95, per_exposure


def test_mask_inclusions(synthetic):
    stack, masks = synthetic
    assert not (masks.mediancr & ~masks.meancrt).any()           # MEDIANCR within MEANCRT
    assert masks.crmask.shape == (3, 256, 256) and masks.crmask.dtype == bool
    # with the single-exposure MM boundary, CRMASKi lies within the dilated MEANCRT
    mm = CRMaskBuilder(gain=1, readnoise=stack.readnoise, seed=3,
                       crmask_method="mm").build(stack.ccds())
    grown = ndimage.binary_dilation(mm.meancrt, EIGHT, iterations=1)
    for plane in mm.crmask:
        assert not (plane & ~grown).any()
    assert mm.crmask.any()


def test_exposure_masks_find_single_hits_without_false_flags(synthetic):
    """The noise-model masks (default) catch every strong single-exposure hit."""
    stack, masks = synthetic
    strong = stack.deposits > 10 * stack.sigma
    clean = ~ndimage.binary_dilation(stack.deposits > 0, EIGHT[None], iterations=1)
    recall = (masks.crmask & strong).sum() / strong.sum()
    assert recall >= 0.98, recall
    assert (masks.crmask & clean).sum() <= 0.0005 * clean.size


def test_exposure_masks_spare_star_cores_under_seeing_changes():
    """Seeing +/-10 %, transparency +/-5 %, drift 0.2 px: stars are not flagged."""
    from crcombine import CRCombiner
    from crcombine.datasets import make_cr_stack
    ccds, truth = make_cr_stack((384, 384), 3, seed=7, star_density=4e-3)
    comb = CRCombiner(ccds, builder=CRMaskBuilder(gain=1, readnoise=3.4, seed=1))
    flagged = comb.masks.crmask.any(axis=0)
    near = ndimage.binary_dilation((truth["deposits"] > 0).any(axis=0), EIGHT)
    ideal = truth["expected"].mean(axis=0)
    sigma1 = np.sqrt(ideal + 3.4 ** 2)
    assert (flagged & ~near).mean() <= 0.0005                     # false flags <= 0.05 %
    bright = ~near & (ideal > 100 * sigma1)
    result = comb.combine("meancr").data
    assert abs(np.median((result - ideal)[bright] / ideal[bright])) < 0.001
    # the same stack with no derivative tolerance flags the stars
    strict = CRMaskBuilder(gain=1, readnoise=3.4, seed=1, crmask_scale=(0, 0)).build(ccds)
    assert (strict.crmask.any(axis=0) & ~near).mean() > 5 * max((flagged & ~near).mean(),
                                                                1e-5)


@pytest.mark.parametrize("seed", [3, 4])
def test_coincident_hits_found_under_seeing_changes(seed):
    """Issue 3's target for ``mediancr`` on a 512 x 512 star field with seeing +/-10 %,
    transparency +/-5 % and 0.2 px drift: <= 5 % of the coincident-hit pixels left."""
    from crcombine import CRCombiner
    from crcombine.datasets import make_cr_stack
    ccds, truth = make_cr_stack((512, 512), 3, seed=seed, coincident_rate=1e-4)
    comb = CRCombiner(ccds, builder=CRMaskBuilder(gain=1, readnoise=3.4, seed=1))
    masks = comb.masks
    ideal = truth["expected"].mean(axis=0)
    left = comb.combine("mediancr").data - ideal > 5 * np.sqrt(ideal + 3.4 ** 2)
    coincident = truth["coincident"]
    assert (left & coincident).sum() <= 0.05 * coincident.sum()
    # the sky is the same in every exposure: no over-dispersion on flat pixels,
    # the stars' disagreement is left to the derivative term
    assert masks.parameters["nbinom_shape"] is None and masks.parameters["mm_scale"] > 0.3
    near = ndimage.binary_dilation((truth["deposits"] > 0).any(axis=0), EIGHT)
    assert (masks.mediancr & ~near).mean() <= 1e-4
    # without the derivative term the MM rule flags the stars
    strict = CRMaskBuilder(gain=1, readnoise=3.4, seed=1, nbinom_shape=None,
                           mm_scale=0).build(ccds)
    assert (strict.mediancr & ~near).mean() > 0.02


def test_overdispersion_measured_on_flat_pixels():
    """A flat field with a 3 % multiplicative jitter per exposure and pixel (flat-field
    drifts): the builder measures kappa = 1 / 0.03^2 from the flat pixels."""
    rng = np.random.default_rng(5)
    level = np.full((256, 256), 5000.0)
    ccds = [CCDData((rng.poisson(level * rng.normal(1, 0.03, level.shape))
                     + rng.normal(0, 5, level.shape)).astype(np.float32), unit="electron")
            for _ in range(3)]
    masks = CRMaskBuilder(gain=1, readnoise=5, seed=1).build(ccds)
    assert masks.parameters["nbinom_shape"] == pytest.approx(1 / 0.03 ** 2, rel=0.2)
    assert masks.parameters["mm_scale"] == 0          # no structure
    assert masks.mediancr.sum() == 0


def test_per_exposure_scales_follow_each_exposure():
    """N = 4 with one exposure sharper and brighter than the others (seeing 0.93 vs
    1.00-1.09, transparency +3 %): its star cores stand above the median in every
    star, so it needs its own, larger derivative tolerance; one scale for all (from
    the negative side) flagged the cores (-3.7 % flux on bright stars)."""
    from crcombine import CRCombiner
    from crcombine.datasets import make_cr_stack
    ccds, truth = make_cr_stack((512, 512), 4, seed=1)
    assert np.argmin(truth["seeing"]) == 2
    comb = CRCombiner(ccds, builder=CRMaskBuilder(gain=1, readnoise=3.4, seed=1))
    masks = comb.masks
    near = ndimage.binary_dilation((truth["deposits"] > 0).any(axis=0), EIGHT)
    assert (masks.crmask.any(axis=0) & ~near).mean() <= 0.0005       # <= 0.05 %
    false = [(plane & ~near).sum() for plane in masks.crmask]
    assert false[2] <= 2 * max(min(false), 5)
    ideal = truth["expected"].mean(axis=0)
    sigma1 = np.sqrt(ideal + 3.4 ** 2)
    bright = ~near & (ideal > 100 * sigma1)
    result = comb.combine("meancr").data
    assert abs(np.median((result - ideal)[bright] / ideal[bright])) < 0.001


def test_mismatch_scale_covers_the_far_tail_of_a_smoother_exposure():
    """An exposure below the reference on most structured pixels: its 0.99
    quantile is about 0, yet its far tail stands above; with ``spread`` the
    tolerance covers the 0.9999 quantile.  Centred tails keep margin x q0.99."""
    from crcombine._detection.comparison import mismatch_scale
    rng = np.random.default_rng(3)
    below = rng.normal(-0.08, 0.03, 200_000)
    far = np.quantile(below, 0.9999)
    assert far > 0
    assert mismatch_scale(below[None])[0] < far                      # the old rule
    assert mismatch_scale(below[None], spread=True)[0] > far
    centred = rng.normal(0.0, 0.1, 200_000)[None]
    np.testing.assert_allclose(mismatch_scale(centred, spread=True),
                               mismatch_scale(centred), rtol=0.02)


@pytest.mark.parametrize("seed", [4, 5])
def test_psf_matching_finds_the_hits_on_star_wings(seed):
    """Seeing +/-10 %, transparency +/-5 %, drift 0.2 px on a 512 x 512 star field: the
    exposures differ by up to 3x on star wings, where the derivative term of the
    reference rule lets single hits of a few hundred electrons through and masking
    the faint exposure raises the mean.  Against each exposure's PSF-matched
    prediction, with masked values filled from it, ``meancr`` keeps at least 3 times
    fewer residual CR pixels, at the same false flags, flux and noise."""
    from crcombine import CRCombiner
    from crcombine.datasets import make_cr_stack
    ccds, truth = make_cr_stack((512, 512), 3, seed=seed)
    ideal = truth["expected"].mean(axis=0)
    sigma1 = np.sqrt(ideal + 3.4 ** 2)
    near = ndimage.binary_dilation((truth["deposits"] > 0).any(axis=0), EIGHT)
    bright = ~near & (ideal > 100 * sigma1)
    left, false = {}, {}
    for psf in (True, False):
        comb = CRCombiner(ccds, builder=CRMaskBuilder(gain=1, readnoise=3.4, seed=1,
                                                      psf_matching=psf))
        diff = comb.combine("meancr").data - ideal
        left[psf] = int((diff > 5 * sigma1).sum())
        false[psf] = (comb.masks.crmask.any(axis=0) & ~near).mean()
        if psf:
            kernels = np.array(comb.masks.parameters["psf_kernels"])
            assert kernels.shape == (3, 26)
            assert abs(np.median(diff[bright] / ideal[bright])) < 0.001
            assert mad_std((diff / (sigma1 / np.sqrt(3)))[~near]) < 1.02
    assert left[False] >= 15                     # the case exists on this stack
    assert left[True] <= left[False] / 3 and left[True] <= 8
    assert false[True] <= 0.0005 and false[True] <= false[False] + 1e-4


def test_hit_that_lifts_a_faint_exposure_to_the_median_is_found():
    """On a star wing, an exposure with worse seeing lies below the others; a hit there
    can lift it just to the median, so that it does not stand above the reference.
    Against its PSF-matched prediction it stands out by the hit, and the guard that
    keeps the prediction's own artefacts out compares it with the others matched to
    its PSF (not with the median): the hits are masked and ``meancr`` is clean."""
    from crcombine.datasets import make_cr_stack
    ccds, truth = make_cr_stack((256, 256), 3, seed=4, star_density=5e-3)
    expected = truth["expected"]
    median = np.median(expected, axis=0)
    lift = median - expected.min(axis=0)
    sigma_ref = np.sqrt((median + 3.4 ** 2) * 1.449)
    quiet = ~ndimage.binary_dilation((truth["deposits"] > 0).any(axis=0), iterations=4)
    quiet[:8], quiet[-8:], quiet[:, :8], quiet[:, -8:] = False, False, False, False
    candidates = np.argwhere(quiet & (lift > 12 * sigma_ref))
    picked = []
    for y, x in candidates[np.argsort(-lift[tuple(candidates.T)])]:
        if all(max(abs(y - v), abs(x - u)) > 8 for v, u in picked):
            picked.append((y, x))
        if len(picked) == 6:
            break
    assert len(picked) == 6
    faint = [int(np.argmin(expected[:, y, x])) for y, x in picked]
    for (y, x), i in zip(picked, faint):
        ccds[i].data[y, x] += np.float32(lift[y, x])   # up to the median, not above it
    from crcombine import CRCombiner
    comb = CRCombiner(ccds, builder=CRMaskBuilder(gain=1, readnoise=3.4, seed=1))
    found = [bool(comb.masks.crmask[i, y, x]) for (y, x), i in zip(picked, faint)]
    assert all(found)
    ideal = expected.mean(axis=0)
    diff = comb.combine("meancr").data - ideal
    sigma1 = np.sqrt(ideal + 3.4 ** 2)
    assert all(abs(diff[y, x]) < 3 * sigma1[y, x] for y, x in picked)
    hits = (truth["deposits"] > 0).any(axis=0)
    hits[tuple(np.transpose(picked))] = True
    near = ndimage.binary_dilation(hits, EIGHT, iterations=2)
    assert (comb.masks.crmask.any(axis=0) & ~near).mean() <= 0.0005


def test_drift_of_half_a_pixel_does_not_flag_star_outskirts():
    """Seed 3 of the generator draws drifts of 0.40 and 0.66 px and seeings of 0.92-1.06:
    the mismatch with the median exceeds the derivative scale's cap, and the exposure
    with the worst seeing stands above the median on the outskirts of stars (0.075 %
    of the pixels flagged without a CR).  The flags its PSF-matched prediction does
    not confirm are dropped: the false flags are within the 0.05 % target, and
    ``meancr`` keeps its residuals low."""
    from crcombine import CRCombiner
    from crcombine.datasets import make_cr_stack
    ccds, truth = make_cr_stack((512, 512), 3, seed=3)
    assert np.abs(truth["drift"]).max() > 0.6
    comb = CRCombiner(ccds, builder=CRMaskBuilder(gain=1, readnoise=3.4, seed=1))
    near = ndimage.binary_dilation((truth["deposits"] > 0).any(axis=0), EIGHT)
    assert (comb.masks.crmask.any(axis=0) & ~near).mean() <= 0.0005
    ideal = truth["expected"].mean(axis=0)
    left = (comb.combine("meancr").data - ideal) > 5 * np.sqrt(ideal + 3.4 ** 2)
    assert left.sum() <= 4


def test_hits_in_a_sharper_drifted_exposure_are_found_the_other_way():
    """Seed 3: the sharpest exposure drifted by 0.4 px.  Predicted from the others
    (their mean is broader and offset) it needs allowances of 0.39 x the gradient and
    0.17 x the level, which hide hits of several hundred electrons on star wings;
    matched to the others (a kernel that smooths it) it needs almost none.  Hits of
    800 e- on 12 star-wing pixels (300-3000 e-) are masked, and ``meancr`` keeps no
    5-sigma residual there (predicted only, 6 of 12 were masked, residuals to 14
    sigma)."""
    from crcombine import CRCombiner
    from crcombine.datasets import make_cr_stack
    ccds, truth = make_cr_stack((512, 512), 3, seed=3)
    expected = truth["expected"]
    sharp = int(np.argmin(truth["seeing"]))
    level = expected[sharp]
    quiet = ~ndimage.binary_dilation((truth["deposits"] > 0).any(axis=0), iterations=4)
    quiet[:8], quiet[-8:], quiet[:, :8], quiet[:, -8:] = False, False, False, False
    candidates = np.argwhere(quiet & (level > 300) & (level < 3000))
    picked = []
    for y, x in candidates[np.random.default_rng(0).permutation(len(candidates))]:
        if all(max(abs(y - v), abs(x - u)) > 8 for v, u in picked):
            picked.append((y, x))
        if len(picked) == 12:
            break
    for y, x in picked:
        ccds[sharp].data[y, x] += np.float32(800.0)
    comb = CRCombiner(ccds, builder=CRMaskBuilder(gain=1, readnoise=3.4, seed=1))
    assert np.max(comb.masks.parameters["psf_allowance"][sharp]) > 0.1
    assert sum(bool(comb.masks.crmask[sharp, y, x]) for y, x in picked) >= 10
    ideal = expected.mean(axis=0)
    diff = comb.combine("meancr").data - ideal
    assert all(diff[y, x] < 5 * np.sqrt(ideal[y, x] + 3.4 ** 2) for y, x in picked)


def test_level_allowance_measures_the_kernels_residual_on_bright_pixels():
    """A prediction 3 % short of the brightest pixels: the level allowance is 2.5 times the
    99th percentile of what stands above 3 sigma, as a fraction of the level, measured on
    pixels brighter than 100 sigma only (a faint pixel 50 % short does not count)."""
    from crcombine._detection import matched as _matched
    rng = np.random.default_rng(3)
    level = np.r_[rng.uniform(2e4, 1e5, 5000), np.full(100, 50.0)].astype(np.float32)
    sigma = np.sqrt(level + 3.4 ** 2)
    short = np.where(level > 1000, 0.03, 0.5).astype(np.float32)
    excess = short * level + rng.normal(0, 1, level.size) * sigma
    tails = _matched.relative_tails(excess, level, sigma, np.ones(level.size, dtype=bool))
    assert tails.size == 5000
    expected = 2.5 * np.quantile((excess - 3 * sigma)[:5000] / level[:5000], 0.99)
    allowance = _matched.level_allowance([tails, tails[:50]])
    assert allowance[0] == pytest.approx(expected) and 0.06 < allowance[0] < 0.075
    assert allowance[1] == 0                               # fewer than 100 bright pixels


def test_prediction_never_falls_below_the_faintest_value_within_reach():
    """A kernel with negative lobes next to a bright core: the prediction stops at the sky.

    A sharpening 5 x 5 kernel (1.8 at the centre, -0.05 around it) on a sky of
    40 e- with a 20000 e- single-pixel core predicts 40 - 1000 e- beside the
    core; the floor is the faintest value within the window times the
    kernel's sum.  Away from the core, and at the core, it is the plain
    convolution; the pair path (a few pixels) gives the same.
    """
    from numpy.lib.stride_tricks import sliding_window_view
    from crcombine._detection import psfmatch as _psfmatch
    source = np.full((21, 21), 40.0, dtype=np.float32)
    source[10, 10] = 20000.0
    k = np.full((5, 5), -0.05)
    k[2, 2] = 1.8
    kernel = np.r_[k.ravel(), 2.0]                       # sum 0.6, constant 2 e-
    plain = ndimage.correlate(source, k.astype(np.float32), mode="nearest") + 2.0
    out = _psfmatch.predict(source, kernel, 5)
    near = np.zeros(source.shape, bool)
    near[8:13, 8:13] = True
    near[10, 10] = False
    assert plain[near].max() < 0                          # the lobes' artefact
    np.testing.assert_allclose(out[near], 40.0 * k.sum() + 2.0, rtol=1e-6)
    np.testing.assert_allclose(out[~near], plain[~near], rtol=1e-6)
    windows = sliding_window_view(np.pad(source, 2, mode="edge"), (5, 5))
    where = np.nonzero(np.ones(source.shape, bool))
    few = _psfmatch._window_prediction(windows[where].reshape(-1, 25), kernel)
    np.testing.assert_allclose(few.reshape(source.shape), out, rtol=1e-6)


def test_psf_matching_steps_aside_when_the_kernels_cannot_match():
    """Exposures 4 px apart, not aligned: a 5 x 5 kernel cannot reach that far, its
    predictions are no better than the median, and the masks are those of the
    reference rule alone (no kernels recorded, no fill)."""
    from crcombine.datasets import make_cr_stack
    ccds, _ = make_cr_stack((384, 384), 3, seed=7, dither=[(0, 0), (4, 1), (-1, -4)])
    masks = CRMaskBuilder(gain=1, readnoise=3.4, seed=1).build(ccds)
    plain = CRMaskBuilder(gain=1, readnoise=3.4, seed=1, psf_matching=False).build(ccds)
    assert "psf_kernels" not in masks.parameters
    assert np.array_equal(masks.crmask, plain.crmask)


@pytest.mark.parametrize("seed", [3, 4])
def test_fibre_spectra_keep_their_sky_lines(seed):
    """MEGARA-like fibre spectra (traces every 4 rows, bright narrow sky lines) under
    seeing +/-10 %: the traces and lines are not flagged (numina-crmasks flagged 63 %
    of the pixels of such a stack, ``benchmarks/quality.py --scene fibres --numina``)
    and ``meancr`` keeps the noise and flux of the mean.  (The coincident hits left
    on the traces are measured by the benchmark, not asserted: 3-10 % here.)"""
    from crcombine import CRCombiner
    from crcombine.datasets import make_cr_stack
    ccds, truth = make_cr_stack((512, 512), 3, seed=seed, scene="fibres", coincident_rate=1e-4)
    comb = CRCombiner(ccds, builder=CRMaskBuilder(gain=1, readnoise=3.4, seed=1))
    masks = comb.masks
    near = ndimage.binary_dilation((truth["deposits"] > 0).any(axis=0), EIGHT)
    for flagged in (masks.mediancr, masks.meancrt, masks.crmask.any(axis=0)):
        assert (flagged & ~near).mean() <= 0.0005                 # <= 0.05 %
    ideal = truth["expected"].mean(axis=0)
    sigma1 = np.sqrt(ideal + 3.4 ** 2)
    diff = comb.combine("meancr").data - ideal
    bright = ~near & (ideal > 100 * sigma1)
    assert bright.sum() > 1000
    assert abs(np.median(diff[bright] / ideal[bright])) < 0.001
    assert mad_std((diff / (sigma1 / np.sqrt(3)))[~near]) < 1.02


def test_sky_offset_between_exposures_is_taken_out(monkeypatch):
    """One exposure with 15 e- more sky (twilight, scattered light) than the others, on
    a 40 e- sky: with the offset taken out (the ``backg`` of the JWST rule) its mask
    keeps to the false-flag target; compared without it, it flags the sky 25 times
    more.  (The median of three absorbs part of the offset, so that exposure still
    gets about twice the flags it has without any offset: 31 against 13 here.)"""
    from crcombine._detection import builder as _masks
    from crcombine.datasets import make_cr_stack
    ccds, truth = make_cr_stack((512, 512), 3, seed=6)
    ccds[0] = CCDData(ccds[0].data + np.float32(15.0), unit=ccds[0].unit)
    near = ndimage.binary_dilation((truth["deposits"] > 0).any(axis=0), EIGHT)

    def false_flags():
        masks = CRMaskBuilder(gain=1, readnoise=3.4, seed=1).build(ccds)
        return [int((plane & ~near).sum()) for plane in masks.crmask]

    false = false_flags()
    assert sum(false) <= 0.0005 * near.size
    monkeypatch.setattr(_masks, "background_offsets", lambda d: np.zeros(d.shape[0]))
    assert false_flags()[0] > 10 * max(false[0], 10)


def test_noise_rule_false_rate_on_pure_noise():
    """The comparison allows for the noise of the median it compares with: on three
    CR-free exposures of flat sky, seeds above 5 sigma come at the normal rate
    (3e-7; the largest of three exceeds their median by 5 sigma at 2e-5)."""
    from reference import exposure_masks
    rng = np.random.default_rng(3)
    scaled = (rng.poisson(100.0, (3, 512, 1024)) + rng.normal(0, 5, (3, 512, 1024))).astype(
        np.float32)
    reference = np.median(scaled, axis=0)
    masks = exposure_masks(scaled, reference, np.ones(3), 5.0, dilation=0, adaptive=False,
                           scale=(0.0, 0.0))
    assert masks.sum() <= 5


def test_features_table(synthetic):
    _, masks = synthetic
    t = masks.features
    assert len(t) == ndimage.label(masks.mediancr, EIGHT)[1]
    assert np.all(np.diff(t["max_distance"]) <= 0)                # ranked, most certain first
    assert t["n_pixels"].sum() == masks.mediancr.sum()
    row = t[0]
    ys, xs = np.nonzero(masks.labels == row["label"])
    assert row["xcentroid"] == pytest.approx(xs.mean()) and row["ycentroid"] == pytest.approx(
        ys.mean())
    assert 1 <= row["n_seeds"] <= row["n_pixels"]


def test_false_alarms_on_cr_free_stack():
    """On 3 x 1024 x 1024 with no CR, seeds stay within the boundary criterion.

    The boundary point of a diagram column holding T simulated pixels is the
    value exceeded by one of them, so about one real pixel per occupied column
    per ``nsimulations`` exceeds it: with ~C occupied columns the expectation is
    C / nsimulations seeds, before the upward extension makes the boundary more
    conservative.  Each seed grows into at most 9 pixels (one 3x3 dilation).
    """
    stack = make_stack(shape=(1024, 1024), seed=21, n_single=0, n_coincident=0)
    masks = CRMaskBuilder(gain=1, readnoise=stack.readnoise, seed=4,
                          nbinom_shape=None).build(stack.ccds())
    occupied = int((masks.diagram["data"].counts["median"].sum(axis=1) > 0).sum())
    expected = occupied / 10
    seeds = int(masks.features["n_seeds"].sum())
    assert seeds <= expected + 3 * np.sqrt(expected) + 1, (seeds, occupied)
    assert masks.mediancr.sum() <= 9 * seeds
    assert masks.mediancr.sum() <= 50   # "a few tens of pixels" at most


def test_fixed_seed_is_reproducible_and_recorded(stack3):
    ccds = stack3.ccds()
    a = CRMaskBuilder(gain=1, readnoise=5, seed=123).build(ccds)
    b = CRMaskBuilder(gain=1, readnoise=5, seed=123).build(ccds)
    for name in ("mediancr", "meancrt", "crmask", "meancr"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.seed == 123 and a.uuid != b.uuid
    c = CRMaskBuilder(gain=1, readnoise=5).build(ccds)
    assert isinstance(c.seed, int)                      # a drawn seed is recorded...
    d = CRMaskBuilder(gain=1, readnoise=5, seed=c.seed).build(ccds)
    np.testing.assert_array_equal(c.crmask, d.crmask)   # ...and reproduces the result


def test_adu_with_bias_and_gain_equals_electrons():
    stack = make_stack(shape=(128, 128), seed=8)
    electrons = np.round(stack.exposures * 8) / 8        # exact in float32 both ways
    ccd_e = [CCDData(e, unit="electron") for e in electrons]
    ccd_adu = [CCDData(to_adu(e, 2.0, 1000.0), unit="adu") for e in electrons]
    me = CRMaskBuilder(gain=1, readnoise=5, seed=2).build(ccd_e)
    ma = CRMaskBuilder(gain=2.0 * u.electron / u.adu, readnoise=2.5 * u.adu,
                       bias=1000 * u.adu, seed=2).build(ccd_adu)
    for name in ("mediancr", "meancrt", "crmask", "meancr"):
        np.testing.assert_array_equal(getattr(me, name), getattr(ma, name))
    assert me.mediancr.any()


def test_flux_factors_list_and_auto():
    stack = make_stack(shape=(256, 256), seed=9, nstars=60)
    factors = np.array([1.0, 0.8, 1.25])
    ccds = [CCDData(e * f, unit="electron") for e, f in zip(stack.exposures, factors)]
    given = CRMaskBuilder(gain=1, readnoise=5, seed=1, flux_factor=factors).build(ccds)
    auto = CRMaskBuilder(gain=1, readnoise=5, seed=1, flux_factor="auto").build(ccds)
    ratio = auto.flux_factor / auto.flux_factor[0]
    np.testing.assert_allclose(ratio, factors, rtol=0.01)
    assert np.all(auto.flux_factor_uncertainty < 0.01)
    strong = stack.hit_count(nsigma=20) >= 2
    for m in (given, auto):
        assert (m.mediancr & strong).sum() / strong.sum() >= 0.95
    # without flux factors the exposures disagree on every star: the MM rule
    # alone (Poisson null, no derivative term) flags them, and the derivative
    # term measured to absorb the disagreement is much larger
    clean = ~ndimage.binary_dilation(stack.hit_count() > 0, EIGHT)
    rule = dict(gain=1, readnoise=5, seed=1, nbinom_shape=None)
    none = CRMaskBuilder(mm_scale=0, **rule).build(ccds)
    poisson = CRMaskBuilder(mm_scale=0, flux_factor=factors, **rule).build(ccds)
    assert (none.mediancr & clean).sum() > 10 * max((poisson.mediancr & clean).sum(), 5)
    unscaled = CRMaskBuilder(**rule).build(ccds)
    assert unscaled.parameters["mm_scale"] > 5 * max(given.parameters["mm_scale"], 0.05)


def test_overdispersion_estimate():
    rng = np.random.default_rng(0)
    level = rng.uniform(500, 20000, (200, 200))
    poisson = np.stack([rng.poisson(level) + rng.normal(0, 5, level.shape)
                        for _ in range(3)]).astype(np.float32)
    kappa = estimate_overdispersion(poisson, np.median(poisson, axis=0), 5.0)
    assert kappa is None or kappa > 2000          # no measurable extra variance
    scale = 1 + rng.normal(0, 0.03, (3, 1, 1))    # 3 % transparency changes... per pixel:
    extra = np.stack([rng.poisson(level) + level * rng.normal(0, 0.03, level.shape)
                      for _ in range(3)]).astype(np.float32)
    kappa = estimate_overdispersion(extra, np.median(extra, axis=0), 5.0)
    assert kappa == pytest.approx(1 / 0.03 ** 2, rel=0.2)
    del scale


def test_piecewise_boundary_is_used(stack3):
    ccds = stack3.ccds()
    low = CRMaskBuilder(gain=1, readnoise=5, seed=1, boundary="piecewise",
                        piecewise_points=[[0, 1], [1e5, 1]]).build(ccds)
    high = CRMaskBuilder(gain=1, readnoise=5, seed=1, boundary="piecewise",
                         piecewise_points=[[0, 1e6], [1e5, 1e6]]).build(ccds)
    assert low.boundaries["median"].kind == "piecewise"
    assert high.mediancr.sum() == 0 and low.mediancr.sum() > 10 * max(1, high.mediancr.sum())


def test_threshold_and_dilation(stack3):
    ccds = stack3.ccds()
    base = CRMaskBuilder(gain=1, readnoise=5, seed=1, dilation=0).build(ccds)
    grown = CRMaskBuilder(gain=1, readnoise=5, seed=1, dilation=2).build(ccds)
    np.testing.assert_array_equal(
        grown.mediancr, ndimage.binary_dilation(base.mediancr, EIGHT, iterations=2))
    high = CRMaskBuilder(gain=1, readnoise=5, seed=1, dilation=0, threshold=1e5).build(ccds)
    assert high.mediancr.sum() == 0


def test_cr_coincidences_for_five_exposures():
    stack = make_stack(shape=(128, 128), n=5, seed=12, coincident_exposures=3, n_coincident=30)
    masks = CRMaskBuilder(gain=1, readnoise=5, seed=1).build(stack.ccds())
    assert masks.parameters["cr_coincidences"] == 3
    strong = stack.hit_count(nsigma=20) >= 3
    assert (masks.mediancr & strong).sum() / strong.sum() >= 0.95


@pytest.mark.parametrize("n", [3, 5, 8])
def test_auto_flux_factor_uncertainty_is_honest(n):
    from reference import estimate_flux_factors
    rng = np.random.default_rng(n)
    scene = rng.uniform(200, 20000, (120, 120))
    true = rng.uniform(0.9, 1.1, n)
    data = np.stack([rng.poisson(scene * f) + rng.normal(0, 5, scene.shape)
                     for f in true]).astype(np.float32)
    est, err = estimate_flux_factors(data, 5.0)
    true = true / np.median(true)
    z = (est - true) / err
    assert np.all(np.abs(z) < 5), z
    # the standard error matches the scatter of the ratios (not ~0 for the median exposure)
    expected = 1.2533 * np.sqrt(np.mean(1 / scene) * (1 + 1 / (n - 1))) / np.sqrt(scene.size)
    assert np.all(err > 0.5 * expected) and np.all(err < 2 * expected), (err, expected)


def test_false_alarm_sets_the_number_of_false_seeds():
    """On CR-free stacks the false seeds follow ``false_alarm``, never above it.

    Flat sky (where the simulations drawn at the noisy median made the count
    0.2 of the setting: 9 seeds for 50) and star fields, several seeds and
    sizes.  The boundary is the ``1 - false_alarm / npix`` quantile of the
    exact null distribution, so that the pixels above it number
    ``false_alarm``; the seed guards then drop those whose minimum a low
    value pulled down (`crcombine._detection.diagram.seed_guards`), about a
    third of them: each stack's count is at most 3 sigma above the setting,
    and the total of the eight stacks between 0.5 and 1 times 8 x the setting
    (within 3 sigma).  ``python benchmarks/false_alarm.py`` gives the same
    ratio on other stacks.
    """
    counts = {5: [], 50: []}
    for size, seed, nstars in [(512, 1, 0), (512, 2, 64), (768, 3, 96), (384, 4, 0)]:
        stack = make_stack(shape=(size, size), seed=seed, n_single=0, n_coincident=0,
                           nstars=nstars)
        for fa in (5, 50):
            m = CRMaskBuilder(gain=1, readnoise=5, seed=seed, nbinom_shape=None, dilation=0,
                              false_alarm=fa).build(stack.ccds())
            seeds = int(m.mediancr.sum())
            assert seeds <= fa + 3 * np.sqrt(fa) + 1, (size, seed, fa, seeds)
            counts[fa].append(seeds)
    for fa, found in counts.items():
        expected = fa * len(found)
        assert 0.5 * expected - 3 * np.sqrt(expected) <= sum(found) \
            <= expected + 3 * np.sqrt(expected), (fa, found)
    assert all(m.boundaries[s].kind == "quantile" for s in ("median", "mean"))
    assert "single" not in m.boundaries          # simulated only for crmask_method='mm'
    mm = CRMaskBuilder(gain=1, readnoise=5, seed=1, nbinom_shape=None, false_alarm=5,
                       crmask_method="mm").build(stack.ccds())
    assert mm.boundaries["single"].kind == "quantile"


def test_denoised_signal_takes_out_the_noise_of_the_median():
    """Flat sky: the local mean; a star: the median as it was; flux factors respected."""
    from crcombine._core.noise import median_variance_factor
    from crcombine._detection.simulate import denoised_signal
    rng = np.random.default_rng(3)
    truth = np.full((200, 200), 100.0)
    yy, xx = np.mgrid[:200, :200]
    truth += 20000 * np.exp(-0.5 * ((yy - 100) ** 2 + (xx - 100) ** 2) / 1.3 ** 2)
    factors = np.array([1.0, 0.8, 1.25])
    stack = np.stack([(rng.poisson(truth * f) + rng.normal(0, 5, truth.shape)) / f
                      for f in factors])
    median = np.median(stack, axis=0).astype(np.float32)
    out = denoised_signal(median, factors, 5.0, 3)
    assert out.dtype == np.float32 and out.shape == median.shape
    sky = (np.hypot(yy - 100, xx - 100) > 15)
    noise = np.sqrt(median_variance_factor(3) * (np.mean(1 / factors) * 100
                                                 + 25 * np.mean(1 / factors ** 2)))
    assert np.std(median[sky] - 100) == pytest.approx(noise, rel=0.05)
    assert np.std(out[sky] - 100) < 0.3 * noise            # most of the noise is gone
    assert abs(np.mean(out[sky]) - np.mean(median[sky])) < 0.02  # no bias (0.11 e- uncorrected)
    core = np.hypot(yy - 100, xx - 100) <= 2
    np.testing.assert_allclose(out[core], median[core], rtol=1e-3)


def test_masks_do_not_depend_on_the_number_of_threads(stack3):
    ccds = stack3.ccds()
    one = CRMaskBuilder(gain=1, readnoise=5, seed=9, threads=1, crmask_method="mm").build(ccds)
    four = CRMaskBuilder(gain=1, readnoise=5, seed=9, threads=4, crmask_method="mm").build(ccds)
    for stat in ("median", "mean", "single"):
        np.testing.assert_array_equal(one.diagram["simulated"].counts[stat],
                                      four.diagram["simulated"].counts[stat])
    np.testing.assert_array_equal(one.crmask, four.crmask)


def test_flux_factor_regions():
    """The factors come from the regions only: a half with another illumination is left out."""
    stack = make_stack(shape=(200, 256), seed=19, nstars=40, sky=1000.0)
    left = np.array([1.0, 0.8, 1.25])                 # transparency, seen on the left half
    right = np.array([1.0, 1.3, 0.7])                 # another illumination on the right
    ccds = []
    for e, f, g in zip(stack.exposures, left, right):
        d = e * f
        d[:, 128:] = e[:, 128:] * g
        ccds.append(CCDData(d, unit="electron"))
    regions = [[1, 128, 1, 200]]                       # x 1-128, y 1-200 (FITS, inclusive)
    params = dict(gain=1, readnoise=5, seed=1, flux_factor="auto")
    inside = CRMaskBuilder(flux_factor_regions=regions, **params).build(ccds)
    np.testing.assert_allclose(inside.flux_factor / inside.flux_factor[0], left, rtol=0.005)
    whole = CRMaskBuilder(**params).build(ccds)
    assert np.max(np.abs(whole.flux_factor / whole.flux_factor[0] / left - 1)) > 0.05
    assert inside.parameters["flux_factor_regions"] == regions
    right_only = CRMaskBuilder(flux_factor_regions=[129, 256, 1, 200], **params).build(ccds)
    np.testing.assert_allclose(right_only.flux_factor / right_only.flux_factor[0], right,
                               rtol=0.005)
    with pytest.raises(ValueError, match="flux_factor_regions: region .* reaches outside"):
        CRMaskBuilder(flux_factor_regions=[[1, 300, 1, 10]], **params).build(ccds)
