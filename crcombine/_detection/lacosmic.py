# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""The auxiliary single-exposure detector: L.A.Cosmic through ccdproc (numina's ``mm_lacosmic``)."""

import logging

import numpy as np
from astropy.nddata import CCDData

log = logging.getLogger(__name__)

__all__ = []


#: Keyword arguments of `ccdproc.cosmicray_lacosmic` that the auxiliary detector
#: of `~crcombine.CRMaskBuilder` sets itself (electrons, gain 1, its read noise).
LACOSMIC_FIXED = ("gain", "readnoise", "gain_apply", "satlevel", "inbkg", "invar", "verbose")


def check_lacosmic(value):
    """``lacosmic`` of `~crcombine.CRMaskBuilder`: False, True or a dict of keywords.

    Raises
    ------
    TypeError
        Not a bool or a dict.
    ValueError
        A keyword that `ccdproc.cosmicray_lacosmic` does not take, or one in
        `LACOSMIC_FIXED`.
    """
    if isinstance(value, bool):
        return value
    if not isinstance(value, dict):
        raise TypeError("lacosmic must be True, False or a dict of keyword arguments of "
                        f"ccdproc.cosmicray_lacosmic (e.g. {{'sigclip': 5.0}}); got {value!r}.")
    import inspect
    from ccdproc import cosmicray_lacosmic
    fixed = sorted(set(value) & set(LACOSMIC_FIXED))
    if fixed:
        raise ValueError(f"lacosmic: {', '.join(fixed)} are set by crcombine (the exposures in "
                         "electrons, gain 1, the builder's read noise); remove them.")
    known = inspect.signature(cosmicray_lacosmic).parameters
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise ValueError(f"lacosmic: {', '.join(unknown)} not keyword(s) of "
                         "ccdproc.cosmicray_lacosmic; see its documentation.")
    return dict(value)


def lacosmic_flags(electrons, readnoise, **kwargs):
    """What L.A.Cosmic finds in one exposure (True = a cosmic-ray pixel).

    `ccdproc.cosmicray_lacosmic` (astroscrappy; van Dokkum 2001, PASP 113,
    1420) on the exposure in electrons, with ``gain=1``, the read noise in
    electrons, ``gain_apply=False`` and no saturation level (saturation is
    ``premask``'s); only its mask is used, so that the ccdproc version cannot
    change the units or the data (CONVENTIONS: ccdproc #729, #958).  Pixels
    that are not valid are given to it as masked (filled with the median)
    and are never flagged.

    Parameters
    ----------
    electrons : `~numpy.ndarray`, shape (ny, nx), float
        The exposure, bias-subtracted, in electrons; NaN where not valid.
    readnoise : float
        Electrons.
    **kwargs
        Other keyword arguments of `ccdproc.cosmicray_lacosmic` (``sigclip``,
        ``sigfrac``, ``objlim``, ``niter``, ...).

    Returns
    -------
    `~numpy.ndarray`, shape (ny, nx), bool
    """
    from ccdproc import cosmicray_lacosmic
    valid = np.isfinite(electrons)
    fill = float(np.median(electrons[valid])) if valid.any() else 0.0
    ccd = CCDData(np.where(valid, electrons, fill).astype(np.float32), unit="electron",
                  mask=~valid)
    cleaned = cosmicray_lacosmic(ccd, gain=1.0, readnoise=float(readnoise), gain_apply=False,
                                 satlevel=np.inf, **kwargs)
    return np.asarray(cleaned.mask, dtype=bool) & valid


def lacosmic_masks(stack, options, progress=None):
    """L.A.Cosmic's flags of every exposure, (N, ny, nx) bool.

    ``options``: the ``lacosmic`` option, True or a dict of keywords.

    Each exposure is read and searched whole, one at a time (L.A.Cosmic's
    iterations reach further than a halo): besides the masks, one
    exposure and astroscrappy's work arrays (about ten times an exposure
    in float32) are held.  An image-shaped read noise is represented by
    its median.
    """
    kwargs = {} if options is True else options
    n, shape = stack.n_exposures, stack.shape
    readnoise = float(np.median(stack.readnoise))
    flags = np.empty((n,) + shape, dtype=bool)
    for i in range(n):
        flags[i] = lacosmic_flags(stack.read_exposure(i), readnoise, **kwargs)
        if progress is not None:
            progress("lacosmic", i + 1, n)
    log.info("L.A.Cosmic (auxiliary): %s px flagged", [int(f.sum()) for f in flags])
    return flags
