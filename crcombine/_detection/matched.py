# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""The comparison of each exposure with its PSF-matched prediction, and the fit of the kernels.

`fit_psf_matching` fits the kernels over the whole image (`kernel_step` on
every band) and measures the allowances of the matched comparison
(`psf_tails_step`); `matched_flags` and `matched_support` then flag and
confirm, band by band (:ref:`algorithm-differences`).
"""

import logging

import numpy as np
from scipy import ndimage

from .._core.images import EIGHT_CONNECTED, derivative, dilate
from .._core.noise import reference_noise
from .._core.statistics import robust_reference, scaled_stack, sorted_statistics
from .._core.tiles import sample_mask
from .comparison import first_masks, mismatch_scale, mismatch_tails
from .psfmatch import predictions as matched_predictions
from .psfmatch import (add_equations, fit_pixels, interior, normal_equations, others_mean,
                       prediction_noise, reverse_matching, sky_noise, solve_kernels)

log = logging.getLogger(__name__)

__all__ = []


#: PSF matching fits a kernel from every exposure to every other one (used where a
#: single other exposure is left, mostly hits shared by two of three exposures) up to
#: this many exposures; beyond, such pixels are rare and the fits many (N (N - 1)).
MAX_PAIR_EXPOSURES = 5


def psf_halo(dilation, size):
    """Rows of halo the PSF-matched steps need.

    The first masks (2 rows: derivative and growth; ``dilation``), the
    kernel's reach on the mean of the others, the derivative and growth of the
    matched flags (2), the final dilation, the kernel again for the fill and
    the neighbours of `crcombine._core.images.flat_sky_fill` (2 rows, twice: for
    the reference the predictions fall back on, and for the value).
    """
    return 2 * dilation + 2 * (size // 2) + 8


def kernel_step(rows, inner, first_row, mediancr, *, flux_factor, cr_coincidences, snr, scale,
                threshold, background, dilation, size, stride, pairs=False):
    """Summed `crcombine._detection.psfmatch.normal_equations` of each exposure over the tile.

    The source is the mean of the other exposures without their flagged
    pixels, the target the exposure; the pixels are those far (2 px) from
    any flag and from MEDIANCR, all the structured ones (``dB > 5 sigma``)
    and every 16th of the others, weighted by the inverse variance.  Then
    the fits the other way, from each exposure to the mean of the others
    (`crcombine._detection.psfmatch.reverse_matching`), and with ``pairs`` those of every
    exposure ``i`` from every other ``j`` (``i`` major).  Returns (A^T W A
    (M, K, K), A^T W b (M, K), counts (M,)), K = size^2 + 1, M = 2N or
    N (N + 1).
    """
    data, rn, _ = rows
    scaled = scaled_stack(data, flux_factor)
    ref = robust_reference(sorted_statistics(scaled, cr_coincidences), mediancr)
    masks = first_masks(scaled, ref, flux_factor, rn, snr=snr, scale=scale,
                        threshold=threshold, background=background, dilation=dilation)
    others, _ = others_mean(scaled, masks, ref)
    sigma = reference_noise(ref, float(np.median(flux_factor)), rn)
    use = interior(ref.shape, size) & ~dilate(masks.any(axis=0) | mediancr, 2)
    with np.errstate(invalid="ignore"):
        use &= np.isfinite(ref)
        structured = derivative(ref) > 5 * sigma
    use = fit_pixels(use, structured, inner, first_row, stride)
    weight = 1 / sigma ** 2
    n = scaled.shape[0]
    fits = [(others[i], scaled[i]) for i in range(n)]                # the predictions
    fits += [(np.where(np.isnan(scaled[i]), ref, scaled[i]), others[i])  # the other way
             for i in range(n)]
    if pairs:
        fits += [(scaled[j], scaled[i]) for i in range(n) for j in range(n) if j != i]
    out = [normal_equations(source, target, weight, use, size) for source, target in fits]
    return tuple(np.array(x) for x in zip(*out))


def predictions_and_noise(scaled, ref, masks, flux_factor, rn, psf):
    """Predictions of the exposures (N, rows, nx) and the noise of ``d_i - P_i``."""
    pred, count = matched_predictions(scaled, masks, ref, psf,
                                      sky_noise(ref, flux_factor, rn))
    sigma = np.stack([prediction_noise(p, f, rn, k, c) for p, f, k, c
                      in zip(pred, np.asarray(flux_factor, dtype=float), psf["kernels"],
                             count)])
    return pred, sigma


def psf_tails_step(rows, inner, first_row, mediancr, *, flux_factor, cr_coincidences, snr,
                   scale, threshold, background, dilation, size, psf, stride):
    """Samples of the allowances of the matched comparison, for each exposure.

    Away from the first masks and the image edges: the gradient tails
    ``(d_i - P_i - 3 sigma) / dP_i`` over ``dP_i > 20 sigma``
    (`crcombine._detection.comparison.mismatch_tails` with the prediction as reference,
    sampled every ``stride`` pixels) and the `relative_tails`; then the same
    for the exposure matched to the others (`reverse_matching`, against the
    others), empty without reverse kernels.  Returns four lists of N float32
    arrays.
    """
    data, rn, _ = rows
    scaled = scaled_stack(data, flux_factor)
    ref = robust_reference(sorted_statistics(scaled, cr_coincidences), mediancr)
    masks = first_masks(scaled, ref, flux_factor, rn, snr=snr, scale=scale,
                        threshold=threshold, background=background, dilation=dilation)
    pred, sigma = predictions_and_noise(scaled, ref, masks, flux_factor, rn, psf)
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


def _reverse_hits(reverse, i, allowance, k, scale):
    """``difference > k sigma + scale * (a dT + b T)`` of exposure ``i`` (`reverse_matching`)."""
    difference, sigma, target = (r[i] for r in reverse)
    extra = np.float32(scale) * (np.float32(allowance[i][0]) * derivative(target)
                                 + np.float32(allowance[i][1]) * np.maximum(target, 0))
    return difference > np.float32(k) * sigma + extra


def relative_tails(excess, prediction, sigma, use, *, noise=3.0, bright=100.0):
    """``(excess - noise * sigma) / prediction`` over bright pixels (``P > bright * sigma``).

    Where the noise is below 1 % of the level, what is left of the kernel's
    mismatch (largest at the cores of the brightest stars) is a fraction of
    the level; a cosmic ray of a few hundred electrons is not.  float32 (m,).
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        sel = use & (prediction > bright * sigma)
        return ((excess[sel] - noise * sigma[sel]) / prediction[sel]).astype(np.float32)


def level_allowance(tails, *, quantile=0.99, margin=2.5, min_pixels=100):
    """The fraction of the predicted level allowed for each exposure, shape (N,).

    ``margin`` times the ``quantile`` of its `relative_tails`, as
    `crcombine._detection.comparison.mismatch_scale` does for the gradient; 0 with fewer
    than ``min_pixels`` bright pixels (the noise then dominates).
    """
    out = np.zeros(len(tails))
    for i, row in enumerate(tails):
        row = row[np.isfinite(row)]
        if row.size >= min_pixels:
            out[i] = max(margin * float(np.quantile(row, quantile)), 0.0)
    return out


def matched_support(scaled, ref, pred, sigma, flux_factor, rn, *, snr, ratio, allowance,
                    size):
    """Where the PSF-matched comparison lets a flag of the reference comparison stand.

    On structured pixels (``dB > 5 sigma``, where the derivative term of the
    comparison with the reference allows for the exposures' differences)
    the exposure must also stand above its prediction by the neighbour
    threshold of `matched_flags` (``snr[1]`` sigma plus ``ratio`` times the
    allowances).  The derivative term covers a fraction of the local
    gradient, which is not how a seeing change differs on the outskirts of
    a star (it grows with the distance from the core, in units of the
    gradient) nor how a drift of half a pixel or more does once the scale is
    capped: such flags, which the prediction (matched to the exposure's PSF
    and position) does not confirm, are dropped.  True elsewhere (flat
    pixels, the edges, no prediction).  Returns (N, rows, nx) bool.
    """
    out = np.ones(scaled.shape, dtype=bool)
    with np.errstate(invalid="ignore"):
        single = reference_noise(ref, float(np.median(flux_factor)), rn)
        where = interior(ref.shape, size) & (derivative(ref) > 5 * single)
        for i in range(scaled.shape[0]):
            extra = np.float32(ratio) * (np.float32(allowance[i][0]) * derivative(pred[i])
                                         + np.float32(allowance[i][1])
                                         * np.maximum(pred[i], 0))
            judged = where & np.isfinite(pred[i])
            out[i] = ~judged | (scaled[i] - pred[i] > snr[1] * sigma[i] + extra)
    return out


def matched_flags(scaled, ref, pred, sigma, flux_factor, rn, *, snr, ratio, allowance,
                  threshold, size, reverse=None, reverse_allowance=None):
    """Outliers of each exposure against its PSF-matched prediction, before dilation.

    A seed stands above its prediction by ``snr[0]`` times the noise of the
    difference plus the allowances of the exposure (``allowance[i] = (a, b)``:
    ``a`` times the prediction's gradient, ``b`` times its level), and above
    the robust reference by ``snr[1]`` times the reference's noise, or,
    given the `reverse_matching` ``(difference, sigma, target)``, matched to
    the others above them by ``snr[1]`` sigma: so that an artefact of the
    prediction alone is not flagged (the kernel's lobes next to another
    exposure's unflagged hit; a sharper exposure predicted from broader ones
    on the outskirts of stars), while a hit that lifts a fainter exposure
    only to the median of the stack still is.  With ``reverse_allowance``
    (N, 2), the other way is also a test of its own: a seed stands, matched
    to the others, above them by ``snr[0]`` sigma plus its allowances (``a``
    times the target's gradient, ``b`` times its level, measured as those of
    the prediction), and above its prediction by ``snr[1]`` sigma.  Where an
    exposure is sharper than the others its prediction sharpens them, with
    residuals that give it large allowances (a tenth of the level under a
    drift of 0.4 px), while matching it to them smooths it: the hits the
    allowances hide are found that way.  Seeds lie where the reference has
    structure (``dB > 5 sigma``: elsewhere the reference rule is as good) and
    away from the image edges.  Neighbours adjacent to a seed need
    ``snr[1]`` and the allowances times ``ratio`` (``crmask_scale[1] /
    crmask_scale[0]``) against the prediction.  Returns (N, rows, nx) bool.
    """
    n = scaled.shape[0]
    out = np.zeros(scaled.shape, dtype=bool)
    with np.errstate(invalid="ignore"):
        single = reference_noise(ref, float(np.median(flux_factor)), rn)
        where = interior(ref.shape, size) & (derivative(ref) > 5 * single)
        for i, f in enumerate(np.asarray(flux_factor, dtype=float)):
            above_ref = scaled[i] - ref > snr[1] * reference_noise(ref, f, rn, n_exposures=n)
            excess = scaled[i] - pred[i]
            extra = (np.float32(allowance[i][0]) * derivative(pred[i])
                     + np.float32(allowance[i][1]) * np.maximum(pred[i], 0))
            grow = excess > snr[1] * sigma[i] + np.float32(ratio) * extra
            guard = above_ref
            if reverse is not None:
                guard = guard | (reverse[0][i] > snr[1] * reverse[1][i])
            seeds = (excess > snr[0] * sigma[i] + extra) & guard
            if reverse_allowance is not None:   # and the other way, guarded by this one
                seeds |= (_reverse_hits(reverse, i, reverse_allowance, snr[0], 1.0)
                          & (excess > snr[1] * sigma[i]))
            seeds &= (excess > threshold) & where
            if not seeds.any():
                continue
            grow &= excess > threshold
            out[i] = seeds | (ndimage.binary_dilation(seeds, EIGHT_CONNECTED) & grow)
    return out


def fit_psf_matching(run, mediancr, options, *, flux_factor, cr_coincidences, scale,
                     background, stride, hit_fraction, stage=lambda name: None):
    """The kernels and allowances of the PSF-matched comparison.

    ``run`` runs a step on every band (`crcombine._core.tiles.run_tiles`),
    ``options`` the `~crcombine._detection.options.DetectionOptions`,
    ``stage(name)`` the progress callback of a step (or None).

    Returns a dict (``kernels`` (N, K), ``size``, ``allowance`` (N, 2) and
    ``ratio``) for `crcombine._detection.crmasks.crmask_step`, or None when the
    stack has too few pixels to fit the kernels.
    """
    p = options
    size = p.psf_kernel_size
    common = dict(flux_factor=flux_factor, cr_coincidences=cr_coincidences,
                  snr=p.crmask_snr, scale=scale, threshold=p.threshold,
                  background=background, dilation=p.dilation, size=size, stride=stride)
    halo = psf_halo(p.dilation, size)
    n = len(flux_factor)
    pairs = n <= MAX_PAIR_EXPOSURES
    ata, atb, counts = run(kernel_step, halo=halo, planes=(mediancr,),
                           reduce=add_equations, progress=stage("kernels"),
                           pairs=pairs, **common)
    kernels = solve_kernels(ata, atb, counts, size)
    if kernels is None:
        log.info("PSF matching: too few pixels to fit %d x %d kernels (%s); the "
                 "comparison with the reference alone is used", size, size,
                 counts.tolist())
        return None
    psf = {"kernels": kernels[:n], "reverse_kernels": kernels[n:2 * n], "size": size}
    if pairs:
        pair_kernels = np.zeros((n, n, kernels.shape[1]))
        rest = iter(kernels[2 * n:])
        for i in range(n):
            for j in range(n):
                if j != i:
                    pair_kernels[i, j] = next(rest)
        psf["pair_kernels"] = pair_kernels
    parts = run(psf_tails_step, halo=halo, planes=(mediancr,), psf=psf,
                progress=stage("matched tails"), **common)
    cap = p.crmask_scale[0]

    def allowances(gradient_parts, level_parts):
        gradient = join_tails(gradient_parts)
        level = [np.concatenate(x) for x in zip(*level_parts)]
        return np.c_[np.minimum(mismatch_scale(gradient, contamination=hit_fraction), cap),
                     level_allowance(level)]

    allowance = allowances([x[0] for x in parts], [x[1] for x in parts])
    psf["reverse_allowance"] = allowances([x[2] for x in parts], [x[3] for x in parts])
    log.info("PSF matching: %d x %d kernels (sum %s); allowances (gradient, level) %s; "
             "the other way %s", size, size,
             np.round(kernels[:n, :-1].sum(axis=1), 4).tolist(),
             np.round(allowance, 4).tolist(), np.round(psf["reverse_allowance"], 4).tolist())
    # a kernel that cannot match (a drift beyond its reach, a PSF broader than it)
    # predicts no better than the reference does: then it is not used at all
    if np.any(allowance[:, 0] >= cap) or np.any(allowance[:, 0] > np.asarray(scale)[:, 0]):
        log.info("PSF matching not used: the predictions of some exposure stand further "
                 "from it than the reference does (gradient allowances %s, reference "
                 "scales %s); a larger psf_kernel_size or align= may help",
                 np.round(allowance[:, 0], 3).tolist(),
                 np.round(np.asarray(scale)[:, 0], 3).tolist())
        return None
    psf.update(allowance=allowance, ratio=p.crmask_scale[1] / cap if cap else 0.0)
    return psf
