# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Each exposure against the robust reference: the noise-model comparison of the per-exposure masks.

See :ref:`algorithm-differences`.
"""

import numpy as np
from scipy import ndimage

from .._core.images import EIGHT_CONNECTED, derivative, dilate
from .._core.noise import reference_noise
from .._core.statistics import robust_reference, scaled_stack, sorted_statistics
from .._core.tiles import inner_rows, sample_mask

__all__ = []


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
    matched comparison (`crcombine._detection.psfmatch`) are narrow and their median
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


def mismatch_step(rows, inner, first_row, mediancr, *, flux_factor, cr_coincidences, stride,
                  snr, scale):
    """Samples of `crcombine._detection.comparison.mismatch_tails`, the `flat_hit_counts` and the
    `flat_differences`.

    The hit counts use the rule with ``scale`` (the cap): a halo of 2 rows
    (derivative, growth).
    """
    data, rn, _ = rows
    scaled = scaled_stack(data, flux_factor)
    ref = robust_reference(sorted_statistics(scaled, cr_coincidences), mediancr)
    dB = derivative(ref)
    flags = outlier_flags(scaled, ref, dB, flux_factor, rn, snr=snr, scale=scale)
    flags = flags[:, inner]
    ref, dB = ref[inner], dB[inner]
    sigma = reference_noise(ref, float(np.median(flux_factor)), inner_rows(rn, inner),
                            n_exposures=scaled.shape[0])
    keep = sample_mask(first_row, ref.shape[0], ref.shape[1], stride)
    return (mismatch_tails(scaled[:, inner], ref, dB, sigma, keep=keep),
            flat_hit_counts(flags, dB, sigma),
            flat_differences(scaled[:, inner], ref, dB, sigma, keep=keep))


def first_masks(scaled, ref, flux_factor, rn, *, snr, scale, threshold, background,
                dilation):
    """The masks of the comparison with the reference, dilated: shape (N, rows, nx)."""
    flags = outlier_flags(scaled, ref, derivative(ref), flux_factor, rn, snr=snr, scale=scale,
                          threshold=threshold, background=background)
    return np.stack([dilate(f, dilation) for f in flags])
