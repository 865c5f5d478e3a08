# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Pre-masking of single exposures (:ref:`algorithm-differences`, after stdpipe's ``make_mask``)."""

import numpy as np
from astropy.nddata import CCDData
from scipy import ndimage

__all__ = ["make_mask"]


#: Fraction of the way from the median to the maximum taken as the automatic
#: saturation level (:ref:`algorithm-differences`).
AUTO_SATURATION_FRACTION = 0.95


def _section_mask(shape, section):
    """True outside a FITS section such as ``'[11:2058,1:4096]'`` (1-based, inclusive)."""
    from ccdproc.utils.slices import slice_from_string
    try:
        inside = slice_from_string(section, fits_convention=True)
    except (ValueError, TypeError):
        raise ValueError(f"cannot parse the section {section!r}; expected '[x1:x2,y1:y2]' "
                         "(1-based, inclusive).") from None
    out = np.ones(shape, dtype=bool)
    out[inside] = False
    return out


def make_mask(image, *, mask=None, saturation="header", grow=1, sections=True,
              lacosmic=False, gain=1.0, readnoise=0.0):
    """Pixels of one exposure that must not be used (True = excluded).

    Parameters
    ----------
    image : `~astropy.nddata.CCDData` or `~numpy.ndarray` (ny, nx)
        The exposure; a `~astropy.nddata.CCDData` contributes its ``mask``
        and its header (``SATURATE``, ``DATASEC``, ``TRIMSEC``).
    mask : `~numpy.ndarray` (ny, nx), optional
        An external bad-pixel mask (non-zero = bad), e.g. a ``BPM`` extension.
    saturation : ``'header'``, ``'auto'``, float or None
        ``'header'`` (default) uses the ``SATURATE`` keyword when present;
        ``'auto'`` estimates ``median + 0.95 * (max - median)``; a number is a
        level in the data unit; None masks no saturation.
    grow : int
        3x3 dilations of the saturated pixels (their bleeding neighbours).
    sections : bool
        Mask the pixels outside ``DATASEC`` and ``TRIMSEC`` when the header has
        them.
    lacosmic : bool
        Also mask what L.A.Cosmic finds in this single exposure
        (`ccdproc.cosmicray_lacosmic` with ``gain_apply=False``; only its mask
        is used).
    gain, readnoise : float
        For L.A.Cosmic: e-/data unit and electrons.

    Returns
    -------
    `~numpy.ndarray` (ny, nx), bool

    Raises
    ------
    ValueError
        ``mask`` of another shape, an unparsable section or an unknown
        ``saturation``.

    Notes
    -----
    Non-finite pixels are always masked.  The recipe follows stdpipe's
    ``make_mask`` (Karpov): non-finite pixels, pixels outside the data
    section, saturation (keyword or automatic estimate) grown around the
    saturated cores, an external mask and optionally L.A.Cosmic (van Dokkum
    2001, PASP 113, 1420).
    """
    header = image.meta if isinstance(image, CCDData) else {}
    data = np.asarray(image.data if isinstance(image, CCDData) else image)
    if data.ndim != 2:
        raise ValueError(f"image must be 2-D; got shape {data.shape}.")
    out = ~np.isfinite(data)
    if isinstance(image, CCDData) and image.mask is not None:
        out |= np.asarray(image.mask, dtype=bool)
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != data.shape:
            raise ValueError(f"mask has shape {mask.shape}, the image {data.shape}.")
        out |= mask.astype(bool)
    if sections:
        for key in ("DATASEC", "TRIMSEC"):
            if header.get(key):
                out |= _section_mask(data.shape, str(header[key]))
    level = _saturation_level(data, out, header, saturation)
    if level is not None:
        with np.errstate(invalid="ignore"):
            saturated = data >= level
        if grow > 0 and saturated.any():
            saturated = ndimage.binary_dilation(saturated, np.ones((3, 3), bool),
                                                iterations=grow)
        out |= saturated
    if lacosmic:
        from ccdproc import cosmicray_lacosmic
        ccd = CCDData(np.where(out, np.nanmedian(data[~out]), data).astype(np.float32),
                      unit="adu")
        cleaned = cosmicray_lacosmic(ccd, gain=gain, readnoise=readnoise, gain_apply=False,
                                     satlevel=np.inf if level is None else float(level))
        out |= np.asarray(cleaned.mask, dtype=bool)
    return out


def _saturation_level(data, excluded, header, saturation):
    if saturation is None:
        return None
    if isinstance(saturation, str):
        if saturation == "header":
            value = header.get("SATURATE")
            return float(value) if value is not None else None
        if saturation == "auto":
            good = data[~excluded]
            if good.size == 0:
                return None
            med, top = float(np.median(good)), float(np.max(good))
            return med + AUTO_SATURATION_FRACTION * (top - med)
        raise ValueError(f"saturation must be 'header', 'auto', a number or None; "
                         f"got {saturation!r}.")
    return float(saturation)
