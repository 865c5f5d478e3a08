# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Per-exposure CR masks: noise-model comparison with a robust reference (ALGORITHM.md §8)."""

import numpy as np
from scipy import ndimage

__all__ = []

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def dilate(mask, iterations):
    """Grow a mask with a 3x3 (8-connected) structuring element ``iterations`` times."""
    if iterations <= 0 or not mask.any():
        return mask.copy()
    return ndimage.binary_dilation(mask, structure=EIGHT_CONNECTED, iterations=iterations)


def derivative(reference):
    """Largest absolute difference between each pixel and its 4 neighbours.

    The ``dB`` of the derivative rule (JWST ``outlier_detection``, AstroDrizzle
    ``driz_cr``).  Non-finite neighbours are ignored; edges use the pixels
    that exist.  Returns float32, same shape.
    """
    ref = np.asarray(reference, dtype=np.float32)
    out = np.zeros(ref.shape, dtype=np.float32)
    for axis in (0, 1):
        d = np.abs(np.diff(ref, axis=axis))
        d = np.where(np.isfinite(d), d, 0)
        lo = [slice(None)] * 2
        hi = [slice(None)] * 2
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        np.maximum(out[tuple(lo)], d, out=out[tuple(lo)])
        np.maximum(out[tuple(hi)], d, out=out[tuple(hi)])
    return out


def structure(image, noise, *, allowance=2.0, gradient=None):
    """The local gradient of ``image`` in excess of its noise.

    ``max(dB - allowance * noise, 0)`` with ``dB`` from `derivative` (or
    ``gradient`` if already computed): on flat areas the differences between
    neighbours are noise (about 1.6 sigma for the minimum of three
    exposures, 3.2 sigma at the 99th percentile), which the detection
    boundary already allows for; near stars, lines and edges it is the
    gradient.  Returns float32, same shape.
    """
    dB = derivative(image) if gradient is None else gradient
    return np.maximum(dB - np.float32(allowance) * noise, 0)


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
    """``mm_scale='auto'`` from the samples of `crcombine._tiles.structure_samples`.

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


def mismatch_tails(scaled, reference, dB, sigma, *, noise=3.0, keep=None):
    """The values whose quantiles `mismatch_scale` takes, from one tile of rows.

    Over well-exposed structure (``dB > 20 sigma``, where the mismatch rather
    than the noise sets the ratio; within ``keep`` if given), for each
    exposure, ``(excess - noise * sigma) / dB`` with the excess
    ``scaled_i - reference``: how much of the local gradient the exposure
    stands above the reference, beyond the noise the rule allows for.
    Returns float32 of shape (N, m), NaN where an exposure is not valid.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        structured = dB > 20 * sigma
        if keep is not None:
            structured &= keep
        return ((scaled[:, structured] - reference[structured] - noise * sigma[structured])
                / dB[structured]).astype(np.float32)


def mismatch_scale(tails, *, contamination=None, quantile=0.99, margin=2.5, min_pixels=100,
                   spread=False):
    """How much of the local gradient each exposure stands above the reference by.

    A seeing change or a drift puts an exposure above the reference on one
    side of every star and below it on the other, by a fraction of the local
    gradient that is the same for all the stars of the exposure; an exposure
    with sharper seeing or better transparency is above it at every core.
    So the upper tail of the `mismatch_tails` of each exposure measures the
    derivative tolerance that exposure needs: ``margin`` times its
    ``quantile`` (the 0.999 quantile is 1.4-1.5 times the 0.99 quantile on
    the star fields of `crcombine.datasets.make_cr_stack`; 2.5 keeps the
    false flags on its fibre spectra, whose bright sky lines fill the tail,
    below 0.05 %).

    Cosmic rays fill the top of the tail.  They hit structured and flat
    pixels alike, so the fraction ``contamination[i]`` of the flat pixels
    the rule flags (`hit_fraction_from_counts`) is the fraction of hit
    pixels among the samples, all in the top: the quantile taken is
    ``quantile * (1 - contamination[i])``.

    With ``spread``, the tolerance is at least the quantile plus
    ``margin - 1`` times its distance from the median of the samples.  An
    exposure smoother than the reference (worse seeing, or resampled by
    ``align='interp'``) lies below it on most structured pixels, so its 0.99
    quantile is near 0 while its star wings still stand above the reference
    by more: ``margin`` times the quantile then flagged 0.24 % of the pixels
    (on star wings) of a 3 x 1024^2 stack with sub-pixel dithers resampled
    by ``'interp'``; the spread flags none there and leaves the ``meancr``
    results of ``benchmarks/quality.py`` on aligned stacks as they were (on
    the 200 x 160 star field of ``tests/test_combine.py`` it raised the
    tolerance of the exposure with the worst seeing from 0.93 to 1.04).
    Used for the comparison with the reference only: the tails of the
    matched comparison (`crcombine._psfmatch`) are narrow and their median
    is set by the ``3 sigma`` offset of `mismatch_tails` rather than by the
    exposure's shape, and the spread there raised the residual CRs of
    ``meancr`` (fibre scene 3 x 1024^2 seed 1: 14 to 19).

    Returns
    -------
    `~numpy.ndarray`, shape (N,)
        >= 0 (about 0 for equivalent exposures); +inf where there are fewer
        than ``min_pixels`` structured pixels (the caller's cap applies).
    """
    n = tails.shape[0]
    c = np.zeros(n) if contamination is None else np.clip(contamination, 0, 0.5)
    out = np.full(n, np.inf)
    for i, row in enumerate(tails):
        row = row[np.isfinite(row)]
        if row.size >= min_pixels:
            top, middle = np.quantile(row, [quantile * (1 - c[i]), 0.5])
            wide = top + (margin - 1) * (top - middle) if spread else 0.0
            out[i] = max(margin * top, wide, 0.0)
    return out


def hit_fraction_from_counts(counts, *, min_pixels=1000):
    """The fraction of pixels cosmic rays hit in each exposure, from `flat_hit_counts`.

    The smallest flagged fraction of flat pixels over the exposures: the
    exposures of one stack see the same cosmic-ray rate, while an exposure
    that disagrees with the others (in the valleys between fibres, say) has
    flags of its own there, which must not count as hits.  0 with fewer than
    ``min_pixels`` flat pixels.  Returns shape (N,).
    """
    counts = np.asarray(counts)
    if counts[0, 0] < min_pixels:
        return np.zeros(counts.shape[0])
    return np.full(counts.shape[0], float(counts[:, 1].min()) / counts[0, 0])


def flat_differences(scaled, reference, dB, sigma, *, keep=None):
    """``scaled_i - reference`` over flat pixels (``dB <= 5 sigma``), for `background_offsets`.

    Returns float32 of shape (N, m), NaN where an exposure is not valid.
    """
    with np.errstate(invalid="ignore"):
        flat = dB <= 5 * sigma
    if keep is not None:
        flat &= keep
    return (scaled[:, flat] - reference[flat]).astype(np.float32)


def background_offsets(differences):
    """The additive background difference of each exposure from the reference, shape (N,).

    The median of `flat_differences` (electrons): the ``backg`` of the JWST
    rule, non-zero when the sky changes between exposures (twilight,
    moonlight, scattered light) by more than the flux factors account for.
    0 where an exposure has no flat pixel.
    """
    out = np.zeros(differences.shape[0])
    for i, row in enumerate(differences):
        row = row[np.isfinite(row)]
        if row.size:
            out[i] = float(np.median(row))
    return out


def flat_hit_counts(flags, dB, sigma):
    """Flat pixels (``dB <= 5 sigma``) and how many of them are flagged, per exposure.

    ``flags`` (N, ny, nx) from `outlier_flags`.  Returns int64
    of shape (N, 2): (flat pixels, flagged flat pixels).
    """
    with np.errstate(invalid="ignore"):
        flat = dB <= 5 * sigma
    n_flat = int(flat.sum())
    return np.array([[n_flat, int((f & flat).sum())] for f in flags], dtype=np.int64)


def reference_noise(reference, flux_factor, readnoise, kappa=None, *, n_exposures=None):
    """``sigma_i(B)``: the noise of a scaled exposure whose expected value is the reference.

    ``sigma_i^2 = (f_i max(B, 0) + sigma_r^2) / f_i^2 + B^2 / kappa``
    (electrons), evaluated at the reference, not at the suspect value (IRAF
    ``imcombine`` ``ccdclip``).  With ``n_exposures``, the noise of the
    difference ``d_i - B`` with ``B`` the median of that many exposures: the
    variance times ``1 + v(N)``, ``v`` the variance factor of the median
    (`crcombine._rules.median_variance_factor`; 0.449 for N = 3).  A median
    of few exposures is noisy: without it, the largest of three values
    exceeds their median by 5 sigma 60 times more often than a normal value
    exceeds 5 sigma; with it, at the normal rate.  Returns float32 of the
    reference's shape.
    """
    level = np.maximum(np.nan_to_num(reference), 0).astype(np.float32)
    rn2 = np.asarray(readnoise, dtype=np.float32) ** 2
    f = np.float32(flux_factor)
    var = (f * level + rn2) / f ** 2
    if kappa is not None:
        var = var + level ** 2 / np.float32(kappa)
    if n_exposures is not None:
        from ._rules import median_variance_factor
        var = var * np.float32(1 + median_variance_factor(n_exposures))
    return np.sqrt(var)


def outlier_flags(scaled, reference, dB, flux_factor, readnoise, *, kappa=None,
                  snr=(5.0, 4.0), scale=(1.2, 0.7), threshold=0.0, background=None):
    """Seeds and their grown neighbours of each exposure, before dilation.

    ``scale`` is the pair actually applied (after the adaptive cap), or one
    pair per exposure, shape (N, 2).  ``background`` (N,), electrons, is
    taken from each exposure's excess (`background_offsets`).  Returns
    (N, ny, nx) bool.  The flags of the first and last rows are wrong unless
    they are the image's edges (the neighbour growth needs the row beyond),
    which is why tiles read two rows more than they keep.
    """
    out = np.zeros(scaled.shape, dtype=bool)
    scales = np.broadcast_to(np.asarray(scale, dtype=np.float32), (scaled.shape[0], 2))
    with np.errstate(invalid="ignore"):
        for i, f in enumerate(np.asarray(flux_factor, dtype=float)):
            sigma = reference_noise(reference, f, readnoise, kappa,
                                    n_exposures=scaled.shape[0])
            excess = scaled[i] - reference
            if background is not None and background[i]:
                excess = excess - np.float32(background[i])
            s0, s1 = scales[i]
            seeds = (excess > snr[0] * sigma + s0 * dB) & (excess > threshold)
            if not seeds.any():
                continue
            neighbours = (excess > snr[1] * sigma + s1 * dB) & (excess > threshold)
            out[i] = seeds | (ndimage.binary_dilation(seeds, EIGHT_CONNECTED) & neighbours)
    return out


def adaptive_scale(scale, mismatch):
    """The (seed, neighbour) scales applied to each exposure, shape (N, 2).

    The seed scale is the measured mismatch of the exposure, capped by
    ``scale[0]``; the neighbour scale keeps the ratio ``scale[1] / scale[0]``.
    """
    s0 = np.minimum(scale[0], np.asarray(mismatch, dtype=float))
    return np.c_[s0, s0 * scale[1] / scale[0] if scale[0] else np.zeros_like(s0)]


def exposure_masks(scaled, reference, flux_factor, readnoise, *, kappa=None, snr=(5.0, 4.0),
                   scale=(1.2, 0.7), threshold=0.0, dilation=1, adaptive=True):
    """Per-exposure CR masks from a noise-model comparison with a robust reference.

    Exposure ``i`` (flux-scaled, electrons) is compared with the reference
    ``B`` (the ``mediancr`` image): a pixel is an outlier when

        ``d_i - B > snr * sigma_i(B) + scale * dB``

    with ``sigma_i(B)`` from `reference_noise` (the noise of the difference
    with a median of N exposures) and ``dB`` the largest
    difference between a pixel of ``B`` and its 4 neighbours, which absorbs
    small misalignments and seeing changes near stars (JWST
    ``outlier_detection``, AstroDrizzle ``driz_cr``).  Two passes: seeds with
    ``snr[0], scale[0]`` and neighbours with ``snr[1], scale[1]``; the mask is
    the seeds plus the neighbours adjacent to them (``dilate(seeds) &
    neighbours``), then grown by ``dilation`` 3x3 dilations.  Only positive
    outliers are flagged.  With ``adaptive`` the seed scale of each exposure
    is its measured mismatch (`mismatch_scale`), at most ``scale[0]``, with
    the hit fraction measured on flat pixels with ``scale`` itself, and each
    exposure's background offset (`background_offsets`) is taken out.

    This is the whole-image reference implementation; the builder runs the
    same steps tile by tile (`crcombine._tiles`).

    Parameters
    ----------
    scaled : `~numpy.ndarray`, shape (N, ny, nx), float32
    reference : `~numpy.ndarray`, shape (ny, nx)
    flux_factor : `~numpy.ndarray`, shape (N,)
    readnoise : float or `~numpy.ndarray` (ny, nx)
        Electrons.
    kappa : float, optional
        Over-dispersion (negative binomial shape); None for none.
    snr, scale : pair of float
        Seed and neighbour thresholds (JWST defaults 5.0, 4.0 and 1.2, 0.7).
    threshold : float
        Minimum excess (electrons) of a flagged pixel.
    dilation : int

    Returns
    -------
    `~numpy.ndarray`, shape (N, ny, nx), bool
    """
    ref = np.where(np.isfinite(reference), reference, np.nan).astype(np.float32)
    dB = derivative(ref)
    applied = scale
    if adaptive:
        sigma = reference_noise(ref, float(np.median(flux_factor)), readnoise, kappa,
                                n_exposures=scaled.shape[0])
        flags = outlier_flags(scaled, ref, dB, flux_factor, readnoise, kappa=kappa, snr=snr,
                              scale=scale)
        hit_fraction = hit_fraction_from_counts(flat_hit_counts(flags, dB, sigma))
        applied = adaptive_scale(scale, mismatch_scale(mismatch_tails(scaled, ref, dB, sigma),
                                                       contamination=hit_fraction, spread=True))
        background = background_offsets(flat_differences(scaled, ref, dB, sigma))
    else:
        background = None
    flags = outlier_flags(scaled, ref, dB, flux_factor, readnoise, kappa=kappa, snr=snr,
                          scale=applied, threshold=threshold, background=background)
    return np.stack([dilate(m, dilation) for m in flags])
