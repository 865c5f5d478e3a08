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


def mismatch_scale(excess, dB, sigma, *, quantile=0.999, noise=3.0, min_pixels=100):
    """How much of the local gradient an exposure departs from the reference by.

    Over structured pixels (``dB > 5 sigma``), the ``quantile`` of
    ``(-excess - noise * sigma) / dB`` among *negative* excesses: cosmic rays
    only ever add charge, so the negative side measures the mismatch (seeing
    changes, drift) alone, and the ``noise * sigma`` already allowed for by the
    noise term is taken out.  0 for equivalent exposures; +inf when there are
    too few structured pixels (the caller's cap applies).
    """
    excess = np.atleast_3d(excess) if excess.ndim == 2 else excess
    with np.errstate(invalid="ignore", divide="ignore"):
        structured = dB > 5 * sigma
        tails = []
        for plane in excess.reshape((-1,) + dB.shape):
            use = structured & (plane < 0)
            tails.append((-plane[use] - noise * sigma[use]) / dB[use])
        tail = np.concatenate(tails)
        if tail.size < min_pixels:
            return np.inf
        return max(float(np.quantile(tail, quantile)), 0.0)


def exposure_masks(scaled, reference, flux_factor, readnoise, *, kappa=None, snr=(5.0, 4.0),
                   scale=(1.2, 0.7), threshold=0.0, dilation=1, adaptive=True):
    """Per-exposure CR masks from a noise-model comparison with a robust reference.

    Exposure ``i`` (flux-scaled, electrons) is compared with the reference
    ``B`` (the ``mediancr`` image): a pixel is an outlier when

        ``d_i - B > snr * sigma_i(B) + scale * dB``

    with ``sigma_i^2(B) = (f_i max(B, 0) + sigma_r^2) / f_i^2 + B^2 / kappa``
    evaluated at the reference, not at the suspect value (IRAF ``imcombine``
    ``crreject``/``ccdclip``), and ``dB`` the largest difference between a
    pixel of ``B`` and its 4 neighbours, which absorbs small misalignments and
    seeing changes near stars (JWST ``outlier_detection``, AstroDrizzle
    ``driz_cr``).  Two passes: seeds with ``snr[0], scale[0]`` and neighbours
    with ``snr[1], scale[1]``; the mask is the seeds plus the neighbours
    adjacent to them (``dilate(seeds) & neighbours``), then grown by
    ``dilation`` 3x3 dilations.  Only positive outliers are flagged.

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
    level = np.maximum(np.nan_to_num(ref), 0)
    rn2 = np.asarray(readnoise, dtype=np.float32) ** 2
    factors = np.asarray(flux_factor, dtype=np.float32)
    out = np.zeros(scaled.shape, dtype=bool)

    def noise(f):
        var = (f * level + rn2) / f ** 2
        return np.sqrt(var + level ** 2 / np.float32(kappa) if kappa is not None else var)

    s0, s1 = scale
    if adaptive:  # one scale for all: a seeing change shows as + in one exposure, - in another
        s0 = min(s0, mismatch_scale(scaled - ref, dB, noise(np.median(factors))))
        s1 = s0 * scale[1] / scale[0] if scale[0] else 0.0
    with np.errstate(invalid="ignore"):
        for i, f in enumerate(factors):
            sigma = noise(f)
            excess = scaled[i] - ref
            seeds = (excess > snr[0] * sigma + s0 * dB) & (excess > threshold)
            if not seeds.any():
                continue
            neighbours = (excess > snr[1] * sigma + s1 * dB) & (excess > threshold)
            grown = ndimage.binary_dilation(seeds, EIGHT_CONNECTED) & neighbours
            out[i] = dilate(seeds | grown, dilation)
    return out
