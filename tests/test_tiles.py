"""Tiled runs (mem_limit), file and dask inputs give the results of the one-tile run."""

import tracemalloc

import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData

from crcombine import CRCombiner, CRMaskBuilder
from crcombine._core import tiles as _tiles
from crcombine._detection.crmasks import crmask_halo
from crcombine.datasets import make_cr_stack

MASKS = ("mediancr", "meancrt", "crmask", "meancr", "labels")
CR_METHODS = ("mediancr", "meancrt", "meancr", "meancr2")


def assert_same(masks, ref, results=None, ref_results=None):
    for name in MASKS:
        assert np.array_equal(getattr(masks, name), getattr(ref, name)), name
    assert np.array_equal(masks.flux_factor, ref.flux_factor)
    assert masks.parameters["nbinom_shape"] == ref.parameters["nbinom_shape"]
    assert list(masks.features["max_distance"]) == list(ref.features["max_distance"])
    assert masks.diagram["simulated"].counts.keys() == ref.diagram["simulated"].counts.keys()
    for stat in ref.diagram["simulated"].counts:
        assert np.array_equal(masks.diagram["simulated"].counts[stat],
                              ref.diagram["simulated"].counts[stat])
    for method in results or ():
        a, b = results[method], ref_results[method]
        assert np.array_equal(a.data, b.data, equal_nan=True), method
        assert np.array_equal(a.uncertainty.array, b.uncertainty.array, equal_nan=True), method
        assert np.array_equal(a.flags, b.flags), method


def run(inputs, methods=CR_METHODS, scheduler=None, unit=None, **params):
    builder = CRMaskBuilder(gain=1, readnoise=3.4, seed=4, scheduler=scheduler, **params)
    combiner = CRCombiner(inputs, builder=builder, unit=unit)
    return combiner.masks, {m: combiner.combine(m) for m in methods}


@pytest.fixture(scope="module")
def star_stack():
    ccds, truth = make_cr_stack((200, 160), 3, seed=21, star_density=5e-3,
                                coincident_rate=4e-4)
    return ccds, truth


@pytest.fixture
def small_blocks(monkeypatch):
    """8-row simulation blocks and sparse samples, so that a small image has many tiles."""
    monkeypatch.setattr(_tiles, "VALUES_PER_BLOCK", 3 * 160 * 8)
    monkeypatch.setattr(_tiles, "MAX_SAMPLE_VALUES", 20000)


@pytest.mark.parametrize("method", ["noise", "mm"])
def test_tiles_give_the_one_tile_result(star_stack, small_blocks, method):
    ccds, truth = star_stack
    params = dict(flux_factor="auto", crmask_method=method, dilation=2)
    assert _tiles.sample_stride(3, (200, 160)) > 1        # the samples are a subsample
    ref_masks, ref = run(ccds, **params)
    assert ref_masks.mediancr.any() and ref_masks.crmask.any()
    assert ref_masks.parameters["mm_scale"] > 0            # the derivative term is used
    for mem_limit in (3.5e6, 4.5e6):       # the halo of PSF matching needs 3.5 MB
        tiles = _tiles.plan_tiles(3, (200, 160), mem_limit=mem_limit,
                                  halo=crmask_halo(method, 2, 5), threads=2)
        assert len(tiles) >= 3
        masks, results = run(ccds, mem_limit=mem_limit, threads=2, **params)
        assert_same(masks, ref_masks, results, ref)
        for name in ("mm_scale", "nbinom_shape"):
            assert masks.parameters[name] == ref_masks.parameters[name]


def test_matched_diagram_gives_the_one_tile_result(star_stack, small_blocks):
    """``matched_diagram``: the kernels, masks and combinations do not depend on the tiles."""
    ccds, _ = star_stack
    params = dict(flux_factor="auto", matched_diagram=True)
    ref_masks, ref = run(ccds, **params)
    assert ref_masks.parameters["matching_kernels"] is not None
    masks, results = run(ccds, mem_limit=4.5e6, threads=2, **params)
    assert len(_tiles.plan_tiles(3, (200, 160), mem_limit=4.5e6, halo=crmask_halo("noise", 1, 5)
                                 + 4, threads=2)) >= 3
    assert_same(masks, ref_masks, results, ref)
    np.testing.assert_allclose(masks.parameters["matching_kernels"],
                               ref_masks.parameters["matching_kernels"], rtol=1e-9, atol=1e-12)


def test_cr_features_across_tile_borders_are_whole(star_stack, small_blocks):
    """A coincident track crossing a tile border is one feature, dilated across it."""
    ccds, truth = star_stack
    ccds = [CCDData(c.data.copy(), unit=c.unit) for c in ccds]
    tiles = _tiles.plan_tiles(3, (200, 160), mem_limit=3.5e6,
                              halo=crmask_halo("noise", 1, 5), threads=2)
    border = tiles[1][0]
    sky = truth["expected"].max(axis=0)[border - 6:border + 6].max(axis=0)
    col = int(np.argmin(sky[5:-5])) + 5                     # a column of bare sky
    for c in ccds[:2]:
        c.data[border - 3:border + 3, col] += 3000.0       # 6 px vertical track over the border
    ref_masks, _ = run(ccds, methods=())
    masks, _ = run(ccds, methods=(), mem_limit=3.5e6, threads=2)
    assert_same(masks, ref_masks)
    label = masks.labels[border, col]
    assert label > 0 and masks.labels[border - 4, col] == masks.labels[border + 3, col] == label
    row = masks.features[masks.features["label"] == label][0]
    assert row["n_seeds"] >= 6 and row["n_pixels"] >= 6 * 3


def test_mem_limit_too_small_is_refused(star_stack):
    ccds, _ = star_stack
    with pytest.raises(ValueError, match="mem_limit=1e\\+06 bytes is too small"):
        CRMaskBuilder(gain=1, readnoise=3.4, mem_limit=1e6).build(ccds)
    with pytest.raises(ValueError, match="mem_limit must be > 0"):
        CRMaskBuilder(gain=1, readnoise=3.4, mem_limit=0)


def write_files(directory, planes, *, gain=2.0, bias=300.0, bpm=None):
    names = []
    for i, plane in enumerate(planes):
        hdus = [fits.PrimaryHDU((plane / gain + bias).astype(np.float32),
                                header=fits.Header({"BUNIT": "adu"}))]
        if bpm is not None:
            hdus.append(fits.ImageHDU(bpm.astype(np.uint8), name="BPM"))
        name = directory / f"exp{i}.fits"
        fits.HDUList(hdus).writeto(name)
        names.append(str(name))
    return names


def test_files_are_opened_once_and_give_the_in_memory_result(tmp_path, star_stack,
                                                             small_blocks, monkeypatch):
    from crcombine._inputs import sources as _sources
    ccds, _ = star_stack
    bpm = np.zeros(ccds[0].shape, dtype=bool)
    bpm[:, 77] = True                                      # a bad column
    names = write_files(tmp_path, [c.data for c in ccds], bpm=bpm)
    opened = []
    real_open = _sources.fits.open
    monkeypatch.setattr(_sources.fits, "open", lambda name, *a, **k: (
        opened.append(name) if isinstance(name, str) else None) or real_open(name, *a, **k))

    def build(**params):
        builder = CRMaskBuilder(gain=2.0, readnoise=3.4, bias=300.0, seed=4,
                                flux_factor="auto", **params)
        combiner = CRCombiner(names, builder=builder, hdu_mask="BPM")
        return combiner.masks, {"meancr": combiner.combine("meancr")}

    ref_masks, ref = build()
    assert not opened                                       # read whole, by CCDData.read
    masks, results = build(mem_limit=3.5e6, threads=2)
    assert sorted(opened) == sorted(names)                  # each file opened once
    assert_same(masks, ref_masks, results, ref)
    assert (results["meancr"].flags[:, 77] == 0).all()      # the BPM column is never used


def test_big_stack_under_mem_limit(tmp_path):
    """20 x 2048^2 under mem_limit=300e6: peak within 20 %, masks of the in-memory run."""
    rng = np.random.default_rng(5)
    shape = (2048, 2048)
    sky = np.full(shape, 150.0, dtype=np.float32)
    yy, xx = rng.integers(0, 2048, (2, 3000))
    sky[yy, xx] += rng.lognormal(7, 1, yy.size).astype(np.float32)
    names = []
    for i in range(20):
        plane = (rng.poisson(sky) + rng.normal(0, 3.4, shape)).astype(np.float32)
        cy, cx = rng.integers(0, 2048, (2, 1500))
        plane[cy, cx] += rng.lognormal(6, 0.8, cy.size).astype(np.float32)
        name = tmp_path / f"e{i:02d}.fits"
        fits.writeto(name, plane, header=fits.Header({"BUNIT": "electron"}))
        names.append(str(name))
    del sky, plane
    params = dict(gain=1, readnoise=3.4, seed=2, nsimulations=2)

    tracemalloc.start()
    try:
        builder = CRMaskBuilder(mem_limit=300e6, **params)
        combiner = CRCombiner(names, builder=builder)
        masks = combiner.masks
        meancr = combiner.combine("meancr")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= 1.2 * 300e6, peak / 1e6
    ref = CRMaskBuilder(**params).build(names)
    for name in ("mediancr", "meancrt", "crmask", "meancr"):
        assert np.array_equal(getattr(masks, name), getattr(ref, name)), name
    assert masks.crmask.sum() > 0.9 * 20 * 1500            # the single hits are found
    assert np.isfinite(meancr.data).all()


@pytest.fixture(scope="module")
def wide_stack():
    """Wide enough (nx = 2048) that the real simulation blocks (128 rows) make 5 tiles."""
    ccds, _ = make_cr_stack((600, 2048), 3, seed=8, star_density=1e-3)
    return ccds


def test_dask_local_cluster_gives_the_in_memory_result(tmp_path, wide_stack):
    pytest.importorskip("dask.array")
    distributed = pytest.importorskip("distributed")
    import dask.array as da
    params = dict(nsimulations=3, flux_factor="auto")
    ref_masks, ref = run(wide_stack, methods=("meancr", "mediancr"), **params)
    mem_limit = 200e6
    assert len(_tiles.plan_tiles(3, (600, 2048), mem_limit=mem_limit, halo=3,
                                 threads=2)) >= 3
    names = write_files(tmp_path, [c.data for c in wide_stack], gain=1.0, bias=0.0)
    # a dask array read from the files on the workers (the data never pass the client)
    import dask
    array = da.stack([da.from_delayed(dask.delayed(fits.getdata)(name), (600, 2048),
                                      dtype=np.float32) for name in names])
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        masks, results = run(array, methods=("meancr", "mediancr"), scheduler=client,
                             unit="adu", mem_limit=mem_limit, threads=1, **params)
        assert_same(masks, ref_masks, results, ref)
        builder = CRMaskBuilder(gain=1, readnoise=3.4, seed=4, scheduler=client,
                                mem_limit=mem_limit, threads=1, **params)
        from_files = builder.build(names)                   # files read on the workers
    for name in MASKS:
        assert np.array_equal(getattr(from_files, name), getattr(ref_masks, name)), name
    threaded, _ = run(wide_stack, methods=(), scheduler="threads", mem_limit=mem_limit,
                      **params)
    assert_same(threaded, ref_masks)


def test_builder_matches_the_whole_image_reference(star_stack):
    """The tiled, threaded builder gives what the straightforward whole-image code gives."""
    from reference import exposure_masks
    from crcombine._detection.simulate import diagram_values
    from reference import simulate_histograms
    ccds, _ = star_stack
    builder = CRMaskBuilder(gain=1, readnoise=3.4, seed=4, nbinom_shape=None, threads=2,
                            psf_matching=False, null_distribution="simulated")
    masks = builder.build(ccds)
    stack = builder.stack(ccds)
    nc = masks.parameters["cr_coincidences"]
    scaled = stack.data / masks.flux_factor.astype(np.float32)[:, None, None]
    x, y, st = diagram_values(scaled, nc)
    sim, data = simulate_histograms(scaled, st["median2d"], x, y, masks.flux_factor, 3.4,
                                    cr_coincidences=nc, nsimulations=10, seed=4, threads=1)
    for stat in ("median", "mean"):
        assert np.array_equal(sim.counts[stat], masks.diagram["simulated"].counts[stat])
        assert np.array_equal(data.counts[stat], masks.diagram["data"].counts[stat])
    # MEDIANCR: the boundary plus the derivative term of the minimum image
    from crcombine._core.images import dilate, structure
    from crcombine._core.noise import reference_noise
    scale = masks.parameters["mm_scale"]
    assert scale > 0
    noise = reference_noise(x, np.median(masks.flux_factor), 3.4)
    slack = scale * structure(x, noise)
    seeds = (y["median"] - masks.boundaries["median"](x) > slack) & (st["max2d"] > 5 * 3.4)
    from reference import seed_guards_reference
    guarded = seeds & seed_guards_reference(x, st["median2d"], noise)
    assert 0 < guarded.sum() < seeds.sum()          # the guards drop some candidates here
    seeds = guarded
    assert np.array_equal(dilate(seeds, 1), masks.mediancr)
    reference = np.where(masks.mediancr, st["minR"], st["median2d"])
    crmask = exposure_masks(scaled, reference, masks.flux_factor, 3.4, dilation=1)
    assert masks.crmask.any() and np.array_equal(crmask, masks.crmask)


def test_false_alarm_simulations_match_the_whole_image_reference(star_stack, small_blocks):
    """With ``false_alarm`` the denoised signal (a 7 x 7 window) is the same tiled or whole."""
    from crcombine._detection.simulate import diagram_values
    from reference import simulate_histograms
    ccds, _ = star_stack
    params = dict(nbinom_shape=None, false_alarm=20, psf_matching=False,
                  null_distribution="simulated")
    ref_masks, _ = run(ccds, methods=(), **params)
    masks, _ = run(ccds, methods=(), mem_limit=3.5e6, threads=2, **params)
    assert len(_tiles.plan_tiles(3, (200, 160), mem_limit=3.5e6, threads=2,
                                 halo=crmask_halo("noise", 1))) >= 3
    assert_same(masks, ref_masks)
    scaled = CRMaskBuilder(gain=1, readnoise=3.4).stack(ccds).data
    scaled = scaled / ref_masks.flux_factor.astype(np.float32)[:, None, None]
    nc = ref_masks.parameters["cr_coincidences"]
    x, y, st = diagram_values(scaled, nc)
    for denoise in (True, False):
        sim, _ = simulate_histograms(scaled, st["median2d"], x, y, ref_masks.flux_factor, 3.4,
                                     cr_coincidences=nc, nsimulations=10, seed=4, threads=1,
                                     denoise=denoise)
        same = np.array_equal(sim.counts["median"], ref_masks.diagram["simulated"].counts["median"])
        assert same == denoise


def test_matched_masks_match_the_whole_image_reference(star_stack):
    """PSF matching, tiled and threaded, gives what the whole-image code gives."""
    from crcombine._detection import matched as _matched
    from crcombine._detection import psfmatch as _psfmatch
    from crcombine._core.images import derivative, dilate
    from crcombine._core.noise import reference_noise
    from reference import exposure_masks
    from crcombine._core.images import flat_sky_fill
    from crcombine._detection.simulate import diagram_values
    ccds, _ = star_stack
    params = dict(gain=1, readnoise=3.4, seed=4, nbinom_shape=None)
    plain = CRMaskBuilder(psf_matching=False, **params).build(ccds)
    builder = CRMaskBuilder(threads=2, **params)
    masks = builder.build(ccds)
    assert np.array_equal(plain.mediancr, masks.mediancr)
    scaled = builder.stack(ccds).data / masks.flux_factor.astype(np.float32)[:, None, None]
    _, _, st = diagram_values(scaled, masks.parameters["cr_coincidences"])
    reference = np.where(masks.mediancr, st["minR"], st["median2d"]).astype(np.float32)
    # the kernels: fitted with the reference rule's masks, away from them and MEDIANCR, on
    # the structured pixels and every 16th of the others
    first = plain.crmask
    sigma = reference_noise(reference, np.median(masks.flux_factor), 3.4)
    others, count = _psfmatch.others_mean(scaled, first, reference)
    sparse = np.zeros(reference.size, dtype=bool)
    sparse[::16] = True
    use = (_psfmatch.interior(reference.shape, 5) & ~dilate(first.any(0) | masks.mediancr, 2)
           & ((derivative(reference) > 5 * sigma) | sparse.reshape(reference.shape)))
    equations = [_psfmatch.normal_equations(o, d, 1 / sigma ** 2, use, 5)
                 for o, d in zip(others, scaled)]
    kernels = _psfmatch.solve_kernels(*zip(*equations), 5)
    np.testing.assert_allclose(masks.parameters["psf_kernels"], kernels, rtol=1e-6, atol=1e-9)
    # the other way, from each exposure to the mean of the others
    equations = [_psfmatch.normal_equations(d, o, 1 / sigma ** 2, use, 5)
                 for o, d in zip(others, scaled)]
    reverse_kernels = _psfmatch.solve_kernels(*zip(*equations), 5)
    # and from each exposure to each other one, for pixels with one other exposure left
    pairs = np.zeros((3, 3, 26))
    for i, j in [(i, j) for i in range(3) for j in range(3) if i != j]:
        equations = _psfmatch.normal_equations(scaled[j], scaled[i], 1 / sigma ** 2, use, 5)
        pairs[i, j] = _psfmatch.solve_kernels(*[[e] for e in equations], 5)[0]
    np.testing.assert_allclose(masks.parameters["psf_pair_kernels"], pairs, rtol=1e-6,
                               atol=1e-9)
    # the masks: the reference rule's flags or the matched ones, dilated; the
    # predictions fall back on the reference, filled on flat sky where every
    # exposure is masked
    fallback = flat_sky_fill(reference, first.all(axis=0), sigma)[0]
    others, count = _psfmatch.others_mean(scaled, first, fallback)
    pred = np.stack([_psfmatch.predict(o, k, 5) for o, k in zip(others, kernels)])
    pred[:, ~_psfmatch.interior(reference.shape, 5)] = np.nan     # no padded windows
    for i, j in [(i, j) for i in range(3) for j in range(3) if i != j]:
        alone = (count[i] == 1) & ~first[j] & _psfmatch.interior(reference.shape, 5)
        pred[i][alone] = _psfmatch.predict(np.where(first[j], fallback, scaled[j]),
                                           pairs[i, j], 5)[alone]
    assert (count == 1).any()
    noise = np.stack([_psfmatch.prediction_noise(p, f, 3.4, k, c) for p, f, k, c
                      in zip(pred, masks.flux_factor, kernels, count)])
    # the other way: each exposure matched to the mean of the others by its reverse
    # kernel, or, with a single other exposure left, to that one by the pair kernel
    shape = (3,) + reference.shape
    difference, spread, target = (np.full(shape, np.nan, dtype=np.float32) for _ in range(3))
    inside = _psfmatch.interior(reference.shape, 5)
    for i in range(3):
        level = np.maximum(others[i], 0)
        two = (count[i] == 2) & inside
        k_i = reverse_kernels[i]
        difference[i][two] = (_psfmatch.predict(scaled[i], k_i, 5) - others[i])[two]
        spread[i][two] = np.sqrt(np.sum(k_i[:-1] ** 2) * (level + 3.4 ** 2)
                                 + (level + 3.4 ** 2) / 2)[two]
        target[i][two] = others[i][two]
        for j in [j for j in range(3) if j != i]:
            one = (count[i] == 1) & ~first[j] & inside
            k = pairs[j, i]
            difference[i][one] = (_psfmatch.predict(scaled[i], k, 5) - scaled[j])[one]
            spread[i][one] = np.sqrt(np.sum(k[:-1] ** 2) * (level + 3.4 ** 2)
                                     + level + 3.4 ** 2)[one]
            target[i][one] = scaled[j][one]
    matched = _matched.matched_flags(
        scaled, reference, pred, noise, masks.flux_factor, 3.4, snr=(5.0, 4.0),
        ratio=0.7 / 1.2, allowance=masks.parameters["psf_allowance"], threshold=0.0, size=5,
        reverse=(difference, spread, target),
        reverse_allowance=masks.parameters["psf_reverse_allowance"])
    without = _matched.matched_flags(
        scaled, reference, pred, noise, masks.flux_factor, 3.4, snr=(5.0, 4.0),
        ratio=0.7 / 1.2, allowance=masks.parameters["psf_allowance"], threshold=0.0, size=5,
        reverse=(difference, spread, target))
    assert (matched & ~without).any()          # the other way finds hits of its own
    # the reference rule's flags stand where the predictions confirm them (or cannot judge)
    flags = exposure_masks(scaled, reference, masks.flux_factor, 3.4, dilation=0)
    support = _matched.matched_support(scaled, reference, pred, noise, masks.flux_factor,
                                       3.4, snr=(5.0, 4.0), ratio=0.7 / 1.2,
                                       allowance=masks.parameters["psf_allowance"], size=5)
    assert (flags & ~support).any()          # some are not confirmed on this stack
    crmask = np.stack([dilate(f, 1) for f in (flags & support) | matched])
    assert (crmask & ~first).any()          # the matched comparison adds flags
    assert np.array_equal(crmask, masks.crmask)
