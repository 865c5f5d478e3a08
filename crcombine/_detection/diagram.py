# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""The per-band steps of the MM diagram: range, histograms, seeds of MEDIANCR and MEANCRT.

Each ``*_step`` runs on one band of rows (`crcombine._core.tiles.run_tiles`);
the derivative term of the MM detection (``mm_scale``,
:ref:`algorithm-differences`) is measured here from the structure of the
minimum image.
"""

import warnings

import numpy as np

from .._core.images import NEIGHBOURS, RING, around, derivative, structure
from .._core.noise import reference_noise
from .._core.statistics import scaled_stack, sorted_statistics
from .._core.tiles import inner_rows, sample_mask
from .levels import overdispersion_samples
from .matching import matched_stack
from .null import level_counts
from .simulate import denoised_signal, expected_signal, simulate_tile

__all__ = []


def tolerance_scale(ratios, *, quantile=0.99, margin=2.5, min_pixels=20):
    """The scale of the derivative term added to the MM detection boundary.

    Exposures that are not equivalent near structure (seeing changes, drift)
    spread the median above the minimum by a fraction of the local gradient,
    beyond the noise the simulated boundary allows for.  Over structured
    pixels (`tolerance_from_samples` says which: well-exposed structure,
    where the mismatch rather than the noise sets the ratio), ``margin``
    times the ``quantile`` of ``(y - B(x)) / structure`` bounds that
    fraction.  A moderate quantile is used because coincident hits sit in the
    upper tail (a few per thousand of the structured pixels on long
    exposures); the margin covers the ratio's tail beyond it: its 0.9999
    quantile is 1.4-2.4 times the 0.99 quantile on the star fields of
    `crcombine.datasets.make_cr_stack` (3 and 5 exposures) and on the bundled
    LCO triplet.  With fewer than ``10 / (1 - quantile)`` structured pixels
    the quantile is lowered to ``1 - 10 / n``, so that 10 pixels lie above
    it.  When a fraction ``f`` of the ratios is positive, the quantile is at
    least ``1 - f / 10`` (the exposures of a slit spectrum differ along the
    trace by a few per cent of the level: several per cent of its pixels
    stand above the boundary).  0 for equivalent exposures (the ratios are
    then negative) or with fewer than ``min_pixels`` structured pixels.
    """
    n = ratios.size
    if n < min_pixels:
        return 0.0
    q = min(quantile, 1.0 - 10.0 / n)
    # when many structured pixels stand above the boundary (a few per cent:
    # far more than cosmic rays could be), the tail is the mismatch itself:
    # raise the quantile so that at most a tenth of them stays above it
    above = float(np.mean(ratios > 0))
    q = max(q, min(1.0 - above / 10.0, 1.0 - 10.0 / n))
    return max(margin * float(np.quantile(ratios, q)), 0.0)


def tolerance_from_samples(samples, nx, *, min_bright=1000):
    """``mm_scale='auto'`` from the samples of `crcombine._detection.diagram.structure_samples`.

    `tolerance_scale` over the well-exposed structure (all structure when
    there are fewer than ``min_bright`` such samples), measured a second time
    without the sharp seeds the first value gives and their 8 neighbours
    (frequent coincident hits on stars would otherwise set it).  ``nx`` is
    the image's width (the samples' ``index`` is ``row * nx + column``).
    """
    use = samples["bright"] if samples["bright"].sum() >= min_bright else \
        np.ones(samples["ratio"].size, dtype=bool)
    ratio, index = samples["ratio"][use], samples["index"][use]
    first = tolerance_scale(ratio)
    if first == 0:
        return 0.0
    seeds = index[(ratio > first) & samples["sharp"][use]]
    if seeds.size == 0:
        return first
    near = (seeds[:, None] + np.array([dy * nx + dx for dy in (-1, 0, 1)
                                       for dx in (-1, 0, 1)])[None]).ravel()
    return tolerance_scale(ratio[~np.isin(index, near)])


def _spans(scaled):
    """(lowest, highest) valid value of each exposure, shape (N, 2); NaN if none."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)      # all-NaN rows
        return np.c_[np.nanmin(scaled, axis=(1, 2)), np.nanmax(scaled, axis=(1, 2))]


def check_exposures(ranges):
    """Refuse exposures with no valid pixel, or with one value everywhere (dead, blank).

    ``ranges``: the `range_step` results of every tile.  A dead or blank
    exposure (all zero, or a constant) has no noise: MEDIANCR flagged every
    pixel of stacks holding one.

    Raises
    ------
    ValueError
        Naming the exposure (0-based, in the order given) and the fix.
    """
    valid = sum(r["valid_per_exposure"] for r in ranges)
    if not valid.all():
        raise ValueError(f"exposure {int(np.argmin(valid))} has no valid pixel (all masked "
                         "or not finite); remove it from the inputs.")
    spans = np.stack([r["span_per_exposure"] for r in ranges])
    low, high = np.nanmin(spans[..., 0], axis=0), np.nanmax(spans[..., 1], axis=0)
    for i in np.nonzero(high <= low)[0]:
        raise ValueError(f"exposure {int(i)} has the value {float(low[i]):g} at every valid "
                         "pixel (a dead or blank frame, not an exposure); remove it from the "
                         "inputs.")


def range_step(rows, inner, first_row, *, flux_factor, cr_coincidences, stride, overdispersion,
               mm_scale_samples=False, matching=None):
    """Range and count of the minimum signal, and samples for the estimates asked.

    Run with a halo of 1 row (the derivative of the minimum image): the
    over-dispersion is sampled on flat pixels only (`flat_pixels`), the
    mismatch near structure being the derivative term's, whose samples
    (`structure_samples`) are taken here too when ``mm_scale_samples``.
    With ``matching`` (kernels, `crcombine._detection.matching`) on the
    matched stack, with `crcombine._detection.matching.MATCH_HALO` more rows of halo.
    """
    data, rn, _ = rows
    scaled = _scaled(data, flux_factor, matching, rn)
    st = sorted_statistics(scaled, cr_coincidences)
    x = st["min2d"][inner]
    finite = np.isfinite(x)
    out = {"n_valid": int(finite.sum()),
           "valid_per_exposure": np.count_nonzero(~np.isnan(scaled[:, inner]), axis=(1, 2)),
           "span_per_exposure": _spans(scaled[:, inner]),
           "x_min": float(x[finite].min()) if finite.any() else np.inf,
           "x_max": float(x[finite].max()) if finite.any() else -np.inf}
    if not (overdispersion or mm_scale_samples):
        return out
    noise, dx = _minimum_gradient(st["min2d"], flux_factor, rn)
    sampled = sample_mask(first_row, x.shape[0], x.shape[1], stride)
    if overdispersion:
        keep = flat_pixels(st["min2d"], noise, dx)[inner]
        if sampled is not None:
            keep &= sampled
        out["overdispersion"] = overdispersion_samples(
            scaled[:, inner], st["median2d"][inner], inner_rows(rn, inner), keep=keep)
    if mm_scale_samples:
        out["mm_scale"] = structure_samples(st, noise, dx, inner, first_row, sampled)
    return out


def _scaled(data, flux_factor, matching, readnoise):
    """The flux-scaled tile, matched (`crcombine._detection.matching.matched_stack`) if asked."""
    scaled = scaled_stack(data, flux_factor)
    return scaled if matching is None else matched_stack(scaled, matching, readnoise)


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
    boundary is known (`crcombine._detection.diagram.tolerance_from_samples`).
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


def histogram_step(rows, inner, first_row, *, grid, flux_factor, cr_coincidences, nsimulations,
                   seed, nbinom_shape, threads, tick=None, denoise=False, null_binning=None,
                   matching=None):
    """(simulated, data) histograms of the tile, on ``grid``'s bins.

    With ``denoise`` the simulations draw at the `denoised_signal` of the
    median, which needs a halo of ``DENOISE_SIZE // 2`` rows; without it the
    halo (if any) is not used.  With a ``null_binning``
    (`crcombine._detection.null.LevelBinning`) nothing is simulated: the first
    item is the tile's `crcombine._detection.null.level_counts`, from which
    `crcombine._detection.null.expected_histograms` makes the histograms the
    simulations would give on average.  With ``matching``, on the matched
    stack (`crcombine._detection.matching.MATCH_HALO` more rows of halo).
    """
    data, rn, _ = rows
    scaled = _scaled(data, flux_factor, matching, rn)
    st = sorted_statistics(scaled, cr_coincidences)
    expected = expected_signal(st["median2d"], st["min2d"], rn)
    if denoise:
        expected = denoised_signal(expected, flux_factor, rn, scaled.shape[0])
    scaled = scaled[:, inner]
    expected, rn = inner_rows(expected, inner), inner_rows(rn, inner)
    x = inner_rows(st["min2d"], inner)
    y = {"median": inner_rows(st["median2d"], inner) - x,
         "mean": inner_rows(st["mean2d"], inner) - x}
    scaled -= x  # now the single exposures' y (NaN where not valid, as the data)
    hist = grid.empty_like()
    hist.add(x, dict(y, single=scaled))
    if null_binning is not None:
        valid = np.count_nonzero(~np.isnan(scaled), axis=0)
        return level_counts(expected, rn, valid, grid, null_binning), hist
    sim = simulate_tile(grid, scaled, expected, flux_factor, rn, first_row=first_row,
                        cr_coincidences=cr_coincidences, nsimulations=nsimulations, seed=seed,
                        nbinom_shape=nbinom_shape, threads=threads, progress=tick)
    return sim, hist


def merge_histograms(a, b):
    """Add two (simulated, data) pairs of `crcombine._detection.simulate.DiagramHistograms`.

    The simulated item may instead be a pair of level-count arrays
    (`crcombine._detection.null.level_counts`), which add up.
    """
    if isinstance(a[0], tuple):
        return (a[0][0] + b[0][0], a[0][1] + b[0][1]), a[1].merge(b[1])
    return a[0].merge(b[0]), a[1].merge(b[1])


def seeds_step(rows, inner, first_row, *, flux_factor, cr_coincidences, boundaries, threshold,
               minimum_max2d_rnoise, mm_scale, matching=None):
    """Seeds of MEDIANCR and MEANCRT (before dilation) and ``y - B(x) - s dx`` of the median.

    ``s dx`` is the derivative term: ``mm_scale`` times the `structure` of
    the minimum image.  Pixels above the boundary are then kept only where
    `seed_guards` says they are cosmic rays.  Needs a halo of 2 rows (and
    `crcombine._detection.matching.MATCH_HALO` more with ``matching``, the matched stack).
    """
    data, rn, _ = rows
    st = sorted_statistics(_scaled(data, flux_factor, matching, rn), cr_coincidences)
    x_full = st["min2d"]
    noise, dx = _minimum_gradient(x_full, flux_factor, rn)
    slack = np.float32(mm_scale) * structure(None, noise, gradient=dx)[inner] \
        if mm_scale else np.float32(0)
    x = x_full[inner]
    with np.errstate(invalid="ignore"):
        guard = st["max2d"][inner] > minimum_max2d_rnoise * np.asarray(
            inner_rows(rn, inner), dtype=np.float32)
        y_median = st["median2d"][inner] - x
        distance = (y_median - boundaries["median"](x) - slack).astype(np.float32)
        seeds_median = (distance > 0) & (y_median > threshold) & guard
        y_mean = st["mean2d"][inner] - x
        seeds_mean = (y_mean > boundaries["mean"](x) + slack) & (y_mean > threshold) & guard
    for seeds, stat in ((seeds_median, "median2d"), (seeds_mean, "mean2d")):
        ys, xs = np.nonzero(seeds)
        if ys.size:
            keep = seed_guards(x_full, st[stat], noise, ys + inner.start, xs)
            seeds[ys[~keep], xs[~keep]] = False
    return seeds_median, seeds_mean | seeds_median, distance


#: A minimum image this sharp is a detector defect, not a source: it exceeds its
#: highest 8-neighbour by more than this fraction of its height above the lowest
#: (0.5 for a Gaussian PSF of 2 px FWHM centred on the pixel, 0.8 at 1.3 px).
SPIKE_SHARPNESS = 0.8
#: The statistic must stand above its ring of 16 pixels at distance 2 by at least
#: this fraction of its excess over the minimum signal.
RAISED_FRACTION = 0.5


def seed_guards(x, statistic, noise, rows, cols):
    """Whether candidates above the boundary are cosmic rays (bool, one per candidate).

    Two things put a pixel above the MM boundary that are not coincident hits:

    * a **hot pixel** (or any defect) is high in every exposure, so the
      minimum signal ``x`` itself is a spike: above its highest 8-neighbour
      by more than `SPIKE_SHARPNESS` of its height above the lowest one, and
      by more than 5 times its noise.  Its ``y`` is the variation of the
      defect between exposures (a few per cent of a high level).  Hits cannot
      make the minimum a spike, as that needs more hit exposures than ``n_c``;
      a source can, only when undersampled to a FWHM below 1.3 px.
    * a **low value** (a trap, a read-noise outlier) pulls the minimum
      down: ``y`` is large, but the statistic (median or mean) is where its
      surroundings are.  A hit raises the statistic itself: it must stand
      above the median of its ring of 16 pixels at distance 2 (beyond a hit
      of up to 3 x 3 pixels) by at least `RAISED_FRACTION` of ``y``.

    Parameters
    ----------
    x, statistic, noise : `~numpy.ndarray` (ny, nx)
        The minimum signal, the median (or mean) and the noise of ``x``
        (electrons), over the band and its halo of 2 rows.
    rows, cols : `~numpy.ndarray` of int
        The candidates, in the band's array.
    """
    xc = x[rows, cols]
    nbr = around(x, rows, cols, NEIGHBOURS)
    with np.errstate(invalid="ignore"):
        top, low = np.nanmax(nbr, axis=0), np.nanmin(nbr, axis=0)
        spike = ((xc - top) > SPIKE_SHARPNESS * (xc - low)) & ((xc - top) > 5 * noise[rows, cols])
        value = statistic[rows, cols]
        ring = np.nanmedian(around(statistic, rows, cols, RING), axis=0)
        raised = (value - ring) >= RAISED_FRACTION * (value - xc)
    return ~spike & (raised | ~np.isfinite(ring))
