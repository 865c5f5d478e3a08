# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""The detection and the combinations tile by tile: bounded memory, and a dask path.

A tile is a band of whole rows.  Every step of the method is either per pixel
(the statistics, the seeds, the combinations), a sum over pixels (the
histograms of the data and of the simulations), a quantile of samples (the
flux factors, the over-dispersion, the mismatch scale), or a neighbourhood
operation (the derivative of the reference, the growth and dilation of the
per-exposure masks).  So the image is processed in bands of rows, each read
with a *halo* of rows above and below for the neighbourhood operations, and
the results are joined: per-pixel results are written into whole-image
boolean masks, histograms are added, samples are concatenated in image order.
The dilation of MEDIANCR/MEANCRT and the labelling of CR features are done
once on the joined boolean masks, so features that cross tile borders are
handled exactly.

Nothing depends on the tiling or on who runs the tiles:

* tile heights are whole numbers of simulation blocks and each block of
  each simulation draws from ``SeedSequence(seed, spawn_key=(simulation,
  block))`` with the block numbered in the whole image;
* the samples are a fixed subsample of the whole image (every
  ``stride``-th pixel in row-major order, `sample_mask`);
* the halo is at least as wide as the neighbourhood operations reach.

The tests compare the tiled results with the one-tile run, which is the
whole-image computation.

With ``scheduler`` (or dask array inputs) each tile of each step is a
`dask.delayed` task computed with `dask.compute`, so the same code runs on the
threaded scheduler or on a `dask.distributed` cluster.
"""

import types

import numpy as np

from ._estimates import flux_factor_samples, overdispersion_samples
from ._outliers import (derivative, dilate, flat_differences, flat_hit_counts,
                        mismatch_tails, outlier_flags, reference_noise, structure)
from ._psfmatch import (interior, matched_flags, matched_support, normal_equations,
                        others_mean, prediction_noise, relative_tails, reverse_matching)
from ._psfmatch import predictions as matched_predictions
from ._rules import (combine_scaled, filled_mean, flat_sky_fill, robust_reference,
                     unmasked_mean)
from ._simulate import (denoised_signal, expected_signal, rows_per_block,
                        simulate_tile)
from ._stack import rows_of, sort_stack, stack_statistics

__all__ = []

#: Largest number of values (exposures x pixels) kept as samples for the
#: flux factors, the over-dispersion and the mismatch scale.
MAX_SAMPLE_VALUES = 4_000_000

# Memory model of `plan_tiles` (bytes), measured with tracemalloc per step on
# tiles of N = 3, 10 and 20 exposures of 2048 columns (the fit of bytes =
# per_value * N + per_pixel, rounded up): whole-image arrays kept throughout
# (the masks: N + 5 boolean planes, the distance, the labels, temporaries);
# per pixel of a tile, in the heaviest step; per pixel of a simulated block
# (one block per thread); per pixel of a combination tile.
FIXED_PER_PIXEL = 20
#: ``mem_limit='auto'``: this many bytes, or the least the stack needs if more.
AUTO_MEM_LIMIT = 400e6
TILE_PER_VALUE = 28
TILE_PER_PIXEL = 112
BLOCK_PER_VALUE = 9
BLOCK_PER_PIXEL = 76
COMBINE_PER_VALUE = 23
COMBINE_PER_PIXEL = 88


def sample_stride(n_exposures, shape):
    """Every how many pixels a sample is kept (1 for stacks of up to 4 million values)."""
    return max(1, -(-n_exposures * shape[0] * shape[1] // MAX_SAMPLE_VALUES))


def sample_mask(first_row, rows, nx, stride):
    """True at the sampled pixels of rows ``first_row:first_row + rows``; None for all."""
    if stride == 1:
        return None
    keep = np.zeros(rows * nx, dtype=bool)
    keep[(-first_row * nx) % stride::stride] = True
    return keep.reshape(rows, nx)


def plan_tiles(n_exposures, shape, *, mem_limit=None, halo=0, threads=1, combine=False):
    """Row bands ``[(start, stop), ...]`` whose processing fits in ``mem_limit`` bytes.

    ``threads`` tiles are processed at once (and, in the simulations,
    ``threads`` blocks), so each gets its share of the limit.  ``'auto'`` is
    `AUTO_MEM_LIMIT`, or the least the stack needs when that is more.  Without a
    limit the image is cut into about ``2 * threads`` bands (one band for
    ``threads=1``), for the threads.  Tile heights are multiples of the
    simulation block (`crcombine._simulate.rows_per_block`).

    Raises
    ------
    ValueError
        ``mem_limit`` below what the masks and one block need.
    """
    ny, nx = shape
    n = n_exposures
    step = rows_per_block(n, nx)
    if mem_limit is None:
        if threads <= 1:
            return [(0, ny)]
        rows = -(-ny // (2 * threads))            # ceil(ny / (2 threads))
        rows = -(-rows // step) * step            # a whole number of blocks
        return [(r0, min(r0 + rows, ny)) for r0 in range(0, ny, rows)]
    if combine:
        fixed = ny * nx * (n + 14)                # the masks and the outputs
        per_row = nx * (n * COMBINE_PER_VALUE + COMBINE_PER_PIXEL)
        blocks = 0
    else:
        fixed = ny * nx * (n + FIXED_PER_PIXEL)
        per_row = nx * (n * TILE_PER_VALUE + TILE_PER_PIXEL)
        blocks = threads * min(step, ny) * nx * (n * BLOCK_PER_VALUE + BLOCK_PER_PIXEL)

    def peak(rows):  # one tile and the simulated blocks, or `threads` tiles at once
        band = (rows + 2 * halo) * per_row
        return fixed + max(band + blocks, min(threads, -(-ny // rows)) * band)

    if mem_limit == "auto":
        mem_limit = max(AUTO_MEM_LIMIT, peak(min(step, ny)))
    if peak(ny) <= mem_limit:
        return [(0, ny)]
    rows = step
    if peak(min(rows, ny)) > mem_limit:
        raise ValueError(f"mem_limit={mem_limit:.4g} bytes is too small for {n} exposures of "
                         f"{ny} x {nx} pixels with {threads} thread(s): at least "
                         f"{peak(min(rows, ny)):.4g} bytes are needed (the masks alone take "
                         f"{fixed:.4g}); raise mem_limit, lower threads, or leave mem_limit "
                         "out (None).")
    while rows + step < ny and peak(rows + step) <= mem_limit:
        rows += step
    return [(r0, min(r0 + rows, ny)) for r0 in range(0, ny, rows)]


def uses_dask(stack, scheduler):
    from ._sources import DaskStack
    return scheduler is not None or isinstance(stack, DaskStack)


def run_tiles(stack, tiles, func, *, halo=0, planes=(), scheduler=None, progress=None,
              reduce=None, collect=None, workers=1, **kwargs):
    """``func(rows, inner, first_row, *plane_rows, **kwargs)`` for every tile.

    ``rows`` is ``stack.read_rows`` of the tile and its halo, ``inner`` the
    slice of those rows that belongs to the tile, ``first_row`` its first
    row in the image, ``plane_rows`` the same rows (with halo) of each
    whole-image array in ``planes``.  Locally up to ``workers`` tiles run at
    once in threads (numpy releases the GIL), the results handed over in
    tile order (``progress(done, total)`` after each); with dask, as one
    graph computed with ``scheduler``.

    Returns
    -------
    The results in tile order; or, with ``reduce(a, b)``, their reduction
    (folded as they come, or a tree in the dask graph), so that only one
    result is held at a time; or, with ``collect(index, result)``, None
    after handing each result over as it comes.
    """
    ny = stack.shape[0]
    bands = []
    for start, stop in tiles:
        lo, hi = max(start - halo, 0), min(stop + halo, ny)
        bands.append((lo, hi, slice(start - lo, stop - lo), start))
    if not uses_dask(stack, scheduler):
        def one(band):
            lo, hi, inner, start = band
            return func(stack.read_rows(lo, hi), inner, start,
                        *[p[..., lo:hi, :] for p in planes], **kwargs)

        out, total = [], None
        for index, result in enumerate(_ordered_map(one, bands, workers)):
            if reduce is not None:
                total = result if index == 0 else reduce(total, result)
            elif collect is not None:
                collect(index, result)
            else:
                out.append(result)
            del result
            if progress is not None:
                progress(index + 1, len(bands))
        return total if reduce is not None else (None if collect is not None else out)
    import dask
    tasks = [dask.delayed(func, pure=True)(stack.delayed_rows(lo, hi), inner, start,
                                           *[p[..., lo:hi, :] for p in planes], **kwargs)
             for lo, hi, inner, start in bands]
    if reduce is not None:
        while len(tasks) > 1:  # a binary tree of reductions, computed on the workers
            pairs = [dask.delayed(reduce, pure=True)(a, b)
                     for a, b in zip(tasks[::2], tasks[1::2])]
            tasks = pairs + ([tasks[-1]] if len(tasks) % 2 else [])
        return dask.compute(tasks[0], scheduler=scheduler)[0]
    out = list(dask.compute(*tasks, scheduler=scheduler))
    if collect is None:
        return out
    for index, result in enumerate(out):
        collect(index, result)
    return None


def _ordered_map(func, items, workers):
    """``map(func, items)`` on ``workers`` threads, in order, at most ``workers`` in flight."""
    if workers <= 1 or len(items) <= 1:
        yield from map(func, items)
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending = deque()
        for item in items:
            if len(pending) >= workers:
                yield pending.popleft().result()
            pending.append(pool.submit(func, item))
        while pending:
            yield pending.popleft().result()


def merge_histograms(a, b):
    """Add two (simulated, data) pairs of `crcombine._simulate.DiagramHistograms`."""
    return a[0].merge(b[0]), a[1].merge(b[1])


def _scaled(data, flux_factor):
    return data / np.asarray(flux_factor, dtype=np.float32)[:, None, None]


def _statistics(scaled, n_coincidences):
    s, count = sort_stack(scaled)
    st = stack_statistics(s, count, n_coincidences)
    del s
    return st


def _inner_rows(value, inner):
    return rows_of(value, inner.start, inner.stop)


# --- the steps of CRMaskBuilder.build, one tile each -------------------------------------

def levels_step(rows, inner, first_row, region=None, *, stride):
    """Samples for ``flux_factor='auto'``: (values (N, m), median (m,)).

    ``region`` (rows, nx) bool: only the pixels inside it (``flux_factor_regions``).
    """
    data, rn, _ = rows
    keep = sample_mask(first_row, data.shape[1], data.shape[2], stride)
    if region is not None:
        keep = region if keep is None else keep & region
    return flux_factor_samples(data, rn, keep=keep)


def range_step(rows, inner, first_row, *, flux_factor, n_coincidences, stride, overdispersion,
               tolerance=False):
    """Range and count of the minimum signal, and samples for the estimates asked.

    Run with a halo of 1 row (the derivative of the minimum image): the
    over-dispersion is sampled on flat pixels only (`flat_pixels`), the
    mismatch near structure being the derivative term's, whose samples
    (`structure_samples`) are taken here too when ``tolerance``.
    """
    data, rn, _ = rows
    scaled = _scaled(data, flux_factor)
    st = _statistics(scaled, n_coincidences)
    x = st["min2d"][inner]
    finite = np.isfinite(x)
    out = {"n_valid": int(finite.sum()),
           "valid_per_exposure": np.count_nonzero(~np.isnan(scaled[:, inner]), axis=(1, 2)),
           "x_min": float(x[finite].min()) if finite.any() else np.inf,
           "x_max": float(x[finite].max()) if finite.any() else -np.inf}
    if not (overdispersion or tolerance):
        return out
    noise, dx = _minimum_gradient(st["min2d"], flux_factor, rn)
    sampled = sample_mask(first_row, x.shape[0], x.shape[1], stride)
    if overdispersion:
        keep = flat_pixels(st["min2d"], noise, dx)[inner]
        if sampled is not None:
            keep &= sampled
        out["overdispersion"] = overdispersion_samples(
            scaled[:, inner], st["median2d"][inner], _inner_rows(rn, inner), keep=keep)
    if tolerance:
        out["tolerance"] = structure_samples(st, noise, dx, inner, first_row, sampled)
    return out


def _minimum_gradient(x, flux_factor, readnoise):
    """Noise of the minimum image ``x`` (one exposure's) and its `derivative`."""
    noise = reference_noise(x, float(np.median(flux_factor)), readnoise)
    return noise, derivative(np.where(np.isfinite(x), x, np.nan))


def _minimum_structure(x, flux_factor, readnoise):
    """Noise of the minimum image ``x`` and its `structure`."""
    noise, dx = _minimum_gradient(x, flux_factor, readnoise)
    return noise, structure(None, noise, gradient=dx)


def flat_pixels(x, noise, dx, *, snr_min=20.0, slope=0.2):
    """Well-exposed pixels where the minimum image ``x`` is flat.

    Flat: the largest difference ``dx`` with a 4-neighbour (`derivative`) is
    at most ``slope`` times the level, which excludes the pixels of stars,
    fibre profiles and sky lines down to a FWHM of several pixels (their
    sampled cores drop by 25-40 % to the next pixel) but keeps smooth areas
    with up to ~10 % of extra scatter; and ``x`` is above ``snr_min`` times
    its ``noise``.  The minimum image is used for both tests so that pixels
    bright only because of cosmic rays in the median do not count.
    """
    with np.errstate(invalid="ignore"):
        return (dx <= slope * x) & (x > snr_min * noise)


def structure_samples(st, noise, dx, inner, first_row, sampled=None):
    """Samples for the MM derivative term, from the statistics of a band with a halo of 1 row.

    Over the structured pixels of the band's rows ``inner`` (`structure`
    above 3 times the noise; within ``sampled`` if given), a dict of 1-D
    arrays: ``x``, ``y`` (median - minimum), ``structure``, ``index`` (``row
    * nx + column`` in the image), ``bright`` (structure above 20 times the
    noise) and ``sharp`` (``y`` more than twice the median ``y`` of its 3 x 3
    neighbourhood: a cosmic ray rather than a mismatch, which is as broad as
    the PSF).  The ratios ``(y - B(x)) / structure`` are taken once the
    boundary is known (`crcombine._outliers.tolerance_from_samples`).
    """
    x = st["min2d"]
    y = np.nan_to_num(st["median2d"] - x)
    struct = structure(None, noise, gradient=dx)[inner]
    a = inner.start
    with np.errstate(invalid="ignore"):
        use = (struct > 3 * noise[inner]) & np.isfinite(x[inner])
    if sampled is not None:
        use &= sampled
    ys, xs = np.nonzero(use)
    around = np.median([y[np.clip(ys + a + dy, 0, y.shape[0] - 1),
                          np.clip(xs + dx_, 0, y.shape[1] - 1)]
                        for dy in (-1, 0, 1) for dx_ in (-1, 0, 1)], axis=0)
    yv = y[ys + a, xs]
    return {"x": x[ys + a, xs].astype(np.float32), "y": yv.astype(np.float32),
            "structure": struct[ys, xs].astype(np.float32),
            "index": (ys + first_row).astype(np.int64) * x.shape[1] + xs,
            "bright": struct[ys, xs] > 20 * noise[ys + a, xs],
            "sharp": yv > 2 * np.maximum(around, 0)}


def histogram_step(rows, inner, first_row, *, grid, flux_factor, n_coincidences, nsimulations,
                   seed, nbinom_shape, threads, tick=None, denoise=False):
    """(simulated, data) histograms of the tile, on ``grid``'s bins.

    With ``denoise`` the simulations draw at the `denoised_signal` of the
    median, which needs a halo of ``DENOISE_SIZE // 2`` rows; without it the
    halo (if any) is not used.
    """
    data, rn, _ = rows
    scaled = _scaled(data, flux_factor)
    st = _statistics(scaled, n_coincidences)
    expected = expected_signal(st["median2d"], st["min2d"], rn)
    if denoise:
        expected = denoised_signal(expected, flux_factor, rn, scaled.shape[0])
    scaled = scaled[:, inner]
    expected, rn = _inner_rows(expected, inner), _inner_rows(rn, inner)
    x = _inner_rows(st["min2d"], inner)
    y = {"median": _inner_rows(st["median2d"], inner) - x,
         "mean": _inner_rows(st["mean2d"], inner) - x}
    scaled -= x  # now the single exposures' y (NaN where not valid, as the data)
    hist = grid.empty_like()
    hist.add(x, dict(y, single=scaled))
    sim = simulate_tile(grid, scaled, expected, flux_factor, rn, first_row=first_row,
                        n_coincidences=n_coincidences, nsimulations=nsimulations, seed=seed,
                        nbinom_shape=nbinom_shape, threads=threads, progress=tick)
    return sim, hist


def seeds_step(rows, inner, first_row, *, flux_factor, n_coincidences, boundaries, threshold,
               minimum_max2d_rnoise, tolerance):
    """Seeds of MEDIANCR and MEANCRT (before dilation) and ``y - B(x) - s dx`` of the median.

    ``s dx`` is the derivative term: ``tolerance`` times the `structure` of
    the minimum image (halo of 1 row).
    """
    data, rn, _ = rows
    st = _statistics(_scaled(data, flux_factor), n_coincidences)
    x = st["min2d"]
    slack = np.float32(tolerance) * _minimum_structure(x, flux_factor, rn)[1][inner] \
        if tolerance else np.float32(0)
    x = x[inner]
    with np.errstate(invalid="ignore"):
        guard = st["max2d"][inner] > minimum_max2d_rnoise * np.asarray(
            _inner_rows(rn, inner), dtype=np.float32)
        y_median = st["median2d"][inner] - x
        distance = (y_median - boundaries["median"](x) - slack).astype(np.float32)
        seeds_median = (distance > 0) & (y_median > threshold) & guard
        y_mean = st["mean2d"][inner] - x
        seeds_mean = ((y_mean > boundaries["mean"](x) + slack) & (y_mean > threshold)
                      & guard) | seeds_median
    return seeds_median, seeds_mean, distance


def mismatch_step(rows, inner, first_row, mediancr, *, flux_factor, n_coincidences, stride,
                  snr, scale):
    """Samples of `crcombine._outliers.mismatch_tails`, the `flat_hit_counts` and the
    `flat_differences`.

    The hit counts use the rule with ``scale`` (the cap): a halo of 2 rows
    (derivative, growth).
    """
    data, rn, _ = rows
    scaled = _scaled(data, flux_factor)
    ref = robust_reference(_statistics(scaled, n_coincidences), mediancr)
    dB = derivative(ref)
    flags = outlier_flags(scaled, ref, dB, flux_factor, rn, snr=snr, scale=scale)
    flags = flags[:, inner]
    ref, dB = ref[inner], dB[inner]
    sigma = reference_noise(ref, float(np.median(flux_factor)), _inner_rows(rn, inner),
                            n_exposures=scaled.shape[0])
    keep = sample_mask(first_row, ref.shape[0], ref.shape[1], stride)
    return (mismatch_tails(scaled[:, inner], ref, dB, sigma, keep=keep),
            flat_hit_counts(flags, dB, sigma),
            flat_differences(scaled[:, inner], ref, dB, sigma, keep=keep))


def crmask_halo(method, dilation, psf_size=None):
    """Rows of halo the per-exposure masks need (derivative and growth: 2, dilation).

    MEANCR's derivative term needs 1 row with either method; PSF matching
    (kernels of side ``psf_size``) needs `psf_halo`.
    """
    if method != "noise":
        return max(dilation, 1)
    return dilation + 2 if psf_size is None else psf_halo(dilation, psf_size)


# --- PSF matching (crcombine._psfmatch) ----------------------------------------------

def psf_halo(dilation, size):
    """Rows of halo the PSF-matched steps need.

    The first masks (2 rows: derivative and growth; ``dilation``), the
    kernel's reach on the mean of the others, the derivative and growth of the
    matched flags (2), the final dilation, the kernel again for the fill and
    the neighbours of `crcombine._rules.flat_sky_fill` (2 rows, twice: for
    the reference the predictions fall back on, and for the value).
    """
    return 2 * dilation + 2 * (size // 2) + 8


def _first_masks(scaled, ref, flux_factor, rn, *, snr, scale, threshold, background,
                 dilation):
    """The masks of the comparison with the reference, dilated: shape (N, rows, nx)."""
    flags = outlier_flags(scaled, ref, derivative(ref), flux_factor, rn, snr=snr, scale=scale,
                          threshold=threshold, background=background)
    return np.stack([dilate(f, dilation) for f in flags])


def kernel_step(rows, inner, first_row, mediancr, *, flux_factor, n_coincidences, snr, scale,
                threshold, background, dilation, size, stride, pairs=False):
    """Summed `crcombine._psfmatch.normal_equations` of each exposure over the tile.

    The source is the mean of the other exposures without their flagged
    pixels, the target the exposure; the pixels are those far (2 px) from
    any flag and from MEDIANCR, all the structured ones (``dB > 5 sigma``)
    and every 16th of the others, weighted by the inverse variance.  Then
    the fits the other way, from each exposure to the mean of the others
    (`crcombine._psfmatch.reverse_matching`), and with ``pairs`` those of every
    exposure ``i`` from every other ``j`` (``i`` major).  Returns (A^T W A
    (M, K, K), A^T W b (M, K), counts (M,)), K = size^2 + 1, M = 2N or
    N (N + 1).
    """
    data, rn, _ = rows
    scaled = _scaled(data, flux_factor)
    ref = robust_reference(_statistics(scaled, n_coincidences), mediancr)
    masks = _first_masks(scaled, ref, flux_factor, rn, snr=snr, scale=scale,
                         threshold=threshold, background=background, dilation=dilation)
    others, _ = others_mean(scaled, masks, ref)
    sigma = reference_noise(ref, float(np.median(flux_factor)), rn)
    ny, nx = ref.shape
    use = interior(ref.shape, size) & ~dilate(masks.any(axis=0) | mediancr, 2)
    with np.errstate(invalid="ignore"):
        use &= np.isfinite(ref)
        structured = derivative(ref) > 5 * sigma
    inner_rows = np.zeros(ny, dtype=bool)
    inner_rows[inner] = True
    use &= inner_rows[:, None]
    rows_in = inner.stop - inner.start
    sparse = np.zeros((ny, nx), dtype=bool)
    sparse[inner] = sample_mask(first_row, rows_in, nx, 16 * stride)
    if stride > 1:
        keep = np.zeros((ny, nx), dtype=bool)
        keep[inner] = sample_mask(first_row, rows_in, nx, stride)
        structured &= keep
    use &= structured | sparse
    weight = 1 / sigma ** 2
    n = scaled.shape[0]
    fits = [(others[i], scaled[i]) for i in range(n)]                # the predictions
    fits += [(np.where(np.isnan(scaled[i]), ref, scaled[i]), others[i])  # the other way
             for i in range(n)]
    if pairs:
        fits += [(scaled[j], scaled[i]) for i in range(n) for j in range(n) if j != i]
    out = [normal_equations(source, target, weight, use, size) for source, target in fits]
    return tuple(np.array(x) for x in zip(*out))


def add_equations(a, b):
    """Add two results of `kernel_step`."""
    return tuple(x + y for x, y in zip(a, b))


def _sky_noise(ref, flux_factor, rn):
    """One exposure's noise at the reference level, for `flat_sky_fill`."""
    return reference_noise(ref, float(np.median(flux_factor)), rn)


def _predictions(scaled, ref, masks, flux_factor, rn, psf):
    """Predictions of the exposures (N, rows, nx) and the noise of ``d_i - P_i``."""
    pred, count = matched_predictions(scaled, masks, ref, psf,
                                      _sky_noise(ref, flux_factor, rn))
    sigma = np.stack([prediction_noise(p, f, rn, k, c) for p, f, k, c
                      in zip(pred, np.asarray(flux_factor, dtype=float), psf["kernels"],
                             count)])
    return pred, sigma


def psf_tails_step(rows, inner, first_row, mediancr, *, flux_factor, n_coincidences, snr,
                   scale, threshold, background, dilation, size, psf, stride):
    """Samples of the allowances of the matched comparison, for each exposure.

    Away from the first masks and the image edges: the gradient tails
    ``(d_i - P_i - 3 sigma) / dP_i`` over ``dP_i > 20 sigma``
    (`crcombine._outliers.mismatch_tails` with the prediction as reference,
    sampled every ``stride`` pixels) and the `relative_tails`; then the same
    for the exposure matched to the others (`reverse_matching`, against the
    others), empty without reverse kernels.  Returns four lists of N float32
    arrays.
    """
    data, rn, _ = rows
    scaled = _scaled(data, flux_factor)
    ref = robust_reference(_statistics(scaled, n_coincidences), mediancr)
    masks = _first_masks(scaled, ref, flux_factor, rn, snr=snr, scale=scale,
                         threshold=threshold, background=background, dilation=dilation)
    pred, sigma = _predictions(scaled, ref, masks, flux_factor, rn, psf)
    reverse = (reverse_matching(scaled, masks, ref, psf, flux_factor, rn)
               if "reverse_kernels" in psf else None)
    use = interior(ref.shape, size)[inner]
    keep = sample_mask(first_row, use.shape[0], use.shape[1], stride)
    gradient, level, reverse_gradient, reverse_level = [], [], [], []
    for i in range(scaled.shape[0]):
        ok = use & ~masks[i][inner]
        comparisons = [(scaled[i], pred[i], sigma[i], gradient, level)]
        if reverse is not None:
            difference, s_r, target = (r[i] for r in reverse)
            comparisons.append((target + difference, target, s_r, reverse_gradient,
                                reverse_level))
        for d, p, s, to_gradient, to_level in comparisons:
            d, dP, p, s = d[inner], derivative(p)[inner], p[inner], s[inner]
            here = ok & np.isfinite(p)
            to_gradient.append(mismatch_tails(d[None], p, dP, s, keep=here if keep is None
                                              else here & keep)[0])
            to_level.append(relative_tails(d - p, p, s, here))
    return gradient, level, reverse_gradient, reverse_level


def join_tails(parts):
    """Per-exposure samples of all tiles as one (N, m) array padded with NaN."""
    rows = [np.concatenate(x) for x in zip(*parts)]
    m = max(r.size for r in rows)
    out = np.full((len(rows), m), np.nan, dtype=np.float32)
    for i, r in enumerate(rows):
        out[i, :r.size] = r
    return out


def crmask_step(rows, inner, first_row, mediancr, meancrt, auxiliary=None, *, flux_factor,
                n_coincidences, method, snr, scale, threshold, dilation, boundaries,
                minimum_max2d_rnoise, tolerance, background=None, psf=None):
    """CRMASK (N, rows, nx) and MEANCR (rows, nx) of the tile.

    The noise model of the comparison is Poisson + read noise, without the
    over-dispersion: near structure, where exposures differ by more than
    that, the derivative term (with the measured mismatch scale) allows for
    it, and on flat areas the over-dispersion is negligible.  With ``psf``
    (a dict: ``kernels``, ``size``, ``allowance`` and, from the builder,
    ``reverse_kernels``, ``reverse_allowance``) the flags against each
    exposure's PSF-matched prediction and the other way (`matched_flags`)
    are added, the flags of the comparison with the reference stand on
    structured pixels only where the prediction confirms them
    (`matched_support`), and the value MEANCR checks is the `filled_mean`.
    ``auxiliary`` (N, rows, nx), an auxiliary detector's flags (L.A.Cosmic),
    is OR-ed into each mask, dilated like it, before the predictions and
    MEANCR.
    """
    data, rn, _ = rows
    scaled = _scaled(data, flux_factor)
    st = _statistics(scaled, n_coincidences)
    x = st["min2d"]
    pred = None
    extra = (np.zeros(scaled.shape, dtype=bool) if auxiliary is None
             else np.stack([dilate(f, dilation) for f in auxiliary]))
    with np.errstate(invalid="ignore"):
        if method == "mm":
            b_single = boundaries["single"](x)
            flags = np.empty(scaled.shape, dtype=bool)
            for i, plane in enumerate(scaled):
                y = plane - x
                flags[i] = (y > b_single) & (y > threshold) & meancrt
            full = np.stack([dilate(f, dilation) for f in flags]) | extra
        else:
            ref = robust_reference(st, mediancr)
            flags = outlier_flags(scaled, ref, derivative(ref), flux_factor, rn, snr=snr,
                                  scale=scale, threshold=threshold, background=background)
            full = np.stack([dilate(f, dilation) for f in flags]) | extra
            if psf is not None:
                # the first masks make the predictions; the flags the predictions do not
                # confirm on structured pixels go, and the matched flags join, dilated
                pred, sigma = _predictions(scaled, ref, full, flux_factor, rn, psf)
                reverse = (reverse_matching(scaled, full, ref, psf, flux_factor, rn)
                           if "reverse_kernels" in psf else None)
                common = dict(snr=snr, ratio=psf["ratio"], allowance=psf["allowance"],
                              size=psf["size"])
                matched = matched_flags(scaled, ref, pred, sigma, flux_factor, rn,
                                        threshold=threshold, reverse=reverse,
                                        reverse_allowance=psf.get("reverse_allowance"),
                                        **common)
                flags &= matched_support(scaled, ref, pred, sigma, flux_factor, rn, **common)
                del reverse, common
                full = np.stack([dilate(f, dilation) for f in flags | matched]) | extra
                del matched, sigma
            del flags
    del extra
    crmask = full[:, inner]

    # MEANCR: CRs left in the meancr combination, found against the median
    # boundary (broader than the mean's: a masked mean has fewer values).
    # the value of ``meancr``: the mean of the unmasked values (with PSF
    # matching, the masked ones replaced by their predictions), the minimum
    # where none is left
    rn_inner = _inner_rows(rn, inner)
    if psf is not None:
        pred = matched_predictions(scaled, full, ref, psf, _sky_noise(ref, flux_factor, rn))[0]
        value, _, k = filled_mean(scaled, full, pred)
        none_left = k == 0
        value = np.where(none_left, st["minR"], value)
        noise = _sky_noise(st["median2d"], flux_factor, rn)
        value = flat_sky_fill(value, none_left & np.isfinite(st["minR"]), noise, ref)[0][inner]
    else:
        value, _, k = unmasked_mean(scaled[:, inner], crmask)
        value = np.where(k == 0, st["minR"][inner], value)
    del full, pred
    xi = x[inner]
    slack = np.float32(tolerance) * _minimum_structure(x, flux_factor, rn)[1][inner] \
        if tolerance else np.float32(0)
    with np.errstate(invalid="ignore"):
        guard = st["max2d"][inner] > minimum_max2d_rnoise * np.asarray(rn_inner,
                                                                       dtype=np.float32)
        y = value - xi
        meancr = (y > boundaries["median"](xi) + slack) & (y > threshold) & guard
    return crmask, meancr


# --- the combinations -----------------------------------------------------------------

def combine_step(rows, inner, first_row, *planes, method, flux_factor, n_coincidences,
                 psf=None):
    """One tile of a combination: value and variance (electrons) and the exposure map.

    With ``psf`` (``kernels``, ``size``) the ``meancr``/``meancr2`` values
    fill each masked value with the exposure's PSF-matched prediction (run
    with a halo of ``size // 2 + 4`` rows: the kernel and, twice, the
    neighbours of `crcombine._rules.flat_sky_fill`).
    """
    data, rn, variance = rows
    masks = None
    if planes:
        mediancr, meancrt, meancr, crmask = planes
        masks = types.SimpleNamespace(mediancr=mediancr, meancrt=meancrt, meancr=meancr,
                                      crmask=crmask)
    scaled = _scaled(data, flux_factor)
    predictions = statistics = None
    if psf is not None and method in ("meancr", "meancr2"):
        s, count = sort_stack(scaled)
        statistics = (stack_statistics(s, count, n_coincidences), count)
        del s
        ref = robust_reference(statistics[0], masks.mediancr)
        predictions = matched_predictions(scaled, masks.crmask, ref, psf,
                                          _sky_noise(ref, flux_factor, rn))[0]
    out = combine_scaled(scaled, method, flux_factor=flux_factor, readnoise=rn,
                         n_coincidences=n_coincidences, masks=masks, variance=variance,
                         predictions=predictions, statistics=statistics)
    return tuple(o[inner] for o in out)
