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


def structure(image, noise, *, allowance=2.0):
    """The local gradient of ``image`` in excess of its noise.

    ``max(dB - allowance * noise, 0)`` with ``dB`` from `derivative`: on flat
    areas the differences between neighbours are noise (about 1.6 sigma for
    the minimum of three exposures, 3.2 sigma at the 99th percentile), which
    the detection boundary already allows for; near stars, lines and edges
    it is the gradient.  Returns float32, same shape.
    """
    return np.maximum(derivative(image) - np.float32(allowance) * noise, 0)


def tolerance_ratios(excess, struct, noise, *, keep=None):
    """The values whose quantile `tolerance_scale` takes, from one tile of rows.

    ``excess / struct`` over structured pixels (``struct > 3 noise``, within
    ``keep`` if given), where ``excess`` is ``y - B(x)`` of the MM diagram.
    Returns a 1-D float32 array.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        use = struct > 3 * noise
        if keep is not None:
            use &= keep
        ratio = excess[use] / struct[use]
    return ratio[np.isfinite(ratio)].astype(np.float32)


def tolerance_scale(ratios, *, quantile=0.99, margin=2.5, min_pixels=20):
    """The scale of the derivative term added to the MM detection boundary.

    Exposures that are not equivalent near structure (seeing changes, drift)
    spread the median above the minimum by a fraction of the local gradient,
    beyond the noise the simulated boundary allows for.  Over structured
    pixels, ``margin`` times the ``quantile`` of ``(y - B(x)) / structure``
    (`tolerance_ratios`) bounds that fraction.  A moderate quantile is used
    because coincident hits sit in the upper tail (they are a few per
    thousand of the structured pixels on long exposures); the margin covers
    the ratio's tail beyond it: its 0.9999 quantile is 1.4-2.4 times the 0.99
    quantile on the star fields of `crcombine.datasets.make_cr_stack` (3 and 5
    exposures) and on the bundled LCO triplet.  With fewer than ``100 /
    (1 - quantile)`` structured pixels the quantile is lowered to ``1 - 10 /
    n``, so that at least 10 pixels lie above it.  0 for equivalent exposures
    (the ratios are then negative) or with fewer than ``min_pixels``
    structured pixels.
    """
    n = ratios.size
    if n < min_pixels:
        return 0.0
    q = min(quantile, 1.0 - 10.0 / n)
    return max(margin * float(np.quantile(ratios, q)), 0.0)


def mismatch_tails(scaled, reference, dB, sigma, *, noise=3.0, keep=None):
    """The values whose quantile `mismatch_scale` takes, from one tile of rows.

    Over structured pixels (``dB > 5 sigma``, within ``keep`` if given) of each
    exposure, ``(-excess - noise * sigma) / dB`` where the excess
    ``scaled_i - reference`` is negative.  Returns a 1-D float32 array.
    """
    tails = []
    with np.errstate(invalid="ignore", divide="ignore"):
        structured = dB > 5 * sigma
        if keep is not None:
            structured &= keep
        for plane in scaled:
            excess = plane - reference
            use = structured & (excess < 0)
            tails.append((-excess[use] - noise * sigma[use]) / dB[use])
    return np.concatenate(tails) if tails else np.zeros(0, dtype=np.float32)


def mismatch_scale(tails, *, quantile=0.999, min_pixels=100):
    """How much of the local gradient the exposures depart from the reference by.

    Cosmic rays only ever add charge, so the *negative* excesses over
    structured pixels measure the mismatch (seeing changes, drift) alone: the
    ``quantile`` of the `mismatch_tails`, the ``noise * sigma`` already allowed
    for by the noise term taken out.  0 for equivalent exposures; +inf when
    there are too few structured pixels (the caller's cap applies).
    """
    if tails.size < min_pixels:
        return np.inf
    return max(float(np.quantile(tails, quantile)), 0.0)


def reference_noise(reference, flux_factor, readnoise, kappa=None):
    """``sigma_i(B)``: the noise of a scaled exposure whose expected value is the reference.

    ``sigma_i^2 = (f_i max(B, 0) + sigma_r^2) / f_i^2 + B^2 / kappa``
    (electrons), evaluated at the reference, not at the suspect value (IRAF
    ``imcombine`` ``ccdclip``).  Returns float32 of the reference's shape.
    """
    level = np.maximum(np.nan_to_num(reference), 0).astype(np.float32)
    rn2 = np.asarray(readnoise, dtype=np.float32) ** 2
    f = np.float32(flux_factor)
    var = (f * level + rn2) / f ** 2
    if kappa is not None:
        var = var + level ** 2 / np.float32(kappa)
    return np.sqrt(var)


def outlier_flags(scaled, reference, dB, flux_factor, readnoise, *, kappa=None,
                  snr=(5.0, 4.0), scale=(1.2, 0.7), threshold=0.0):
    """Seeds and their grown neighbours of each exposure, before dilation.

    ``scale`` is the pair actually applied (after the adaptive cap).  Returns
    (N, ny, nx) bool.  The flags of the first and last rows are wrong unless
    they are the image's edges (the neighbour growth needs the row beyond),
    which is why tiles read two rows more than they keep.
    """
    out = np.zeros(scaled.shape, dtype=bool)
    with np.errstate(invalid="ignore"):
        for i, f in enumerate(np.asarray(flux_factor, dtype=float)):
            sigma = reference_noise(reference, f, readnoise, kappa)
            excess = scaled[i] - reference
            seeds = (excess > snr[0] * sigma + scale[0] * dB) & (excess > threshold)
            if not seeds.any():
                continue
            neighbours = (excess > snr[1] * sigma + scale[1] * dB) & (excess > threshold)
            out[i] = seeds | (ndimage.binary_dilation(seeds, EIGHT_CONNECTED) & neighbours)
    return out


def adaptive_scale(scale, mismatch):
    """The (seed, neighbour) scales applied: the seed scale capped by the measured mismatch."""
    s0 = min(scale[0], mismatch)
    return s0, (s0 * scale[1] / scale[0] if scale[0] else 0.0)


def exposure_masks(scaled, reference, flux_factor, readnoise, *, kappa=None, snr=(5.0, 4.0),
                   scale=(1.2, 0.7), threshold=0.0, dilation=1, adaptive=True):
    """Per-exposure CR masks from a noise-model comparison with a robust reference.

    Exposure ``i`` (flux-scaled, electrons) is compared with the reference
    ``B`` (the ``mediancr`` image): a pixel is an outlier when

        ``d_i - B > snr * sigma_i(B) + scale * dB``

    with ``sigma_i(B)`` from `reference_noise` and ``dB`` the largest
    difference between a pixel of ``B`` and its 4 neighbours, which absorbs
    small misalignments and seeing changes near stars (JWST
    ``outlier_detection``, AstroDrizzle ``driz_cr``).  Two passes: seeds with
    ``snr[0], scale[0]`` and neighbours with ``snr[1], scale[1]``; the mask is
    the seeds plus the neighbours adjacent to them (``dilate(seeds) &
    neighbours``), then grown by ``dilation`` 3x3 dilations.  Only positive
    outliers are flagged.  With ``adaptive`` the seed scale is capped by the
    measured mismatch (`mismatch_scale`): a seeing change shows as + in one
    exposure and - in another, so the negative side bounds it.

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
        sigma = reference_noise(ref, float(np.median(flux_factor)), readnoise, kappa)
        applied = adaptive_scale(scale, mismatch_scale(mismatch_tails(scaled, ref, dB, sigma)))
    flags = outlier_flags(scaled, ref, dB, flux_factor, readnoise, kappa=kappa, snr=snr,
                          scale=applied, threshold=threshold)
    return np.stack([dilate(m, dilation) for m in flags])
