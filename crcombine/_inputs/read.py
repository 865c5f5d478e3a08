# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Reading and checking the exposures: CCDData, FITS files or an image collection."""

import os
import warnings

from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData
from astropy.utils.exceptions import AstropyUserWarning

from .._core.validation import header_text

__all__ = ['read_exposures']


MIN_EXPOSURES = 2


def _inspect(name, hdul, hdu, hdu_mask):
    """(HDU to read, its BUNIT or None, whether the mask HDU exists) of an open file."""
    if hdu is None:
        # First HDU holding an image: the primary, or extension 1 of a MEF/.fz file.
        hdu = next((i for i, h in enumerate(hdul) if h.is_image and h.header.get("NAXIS")),
                   None)
        if hdu is None:
            raise ValueError(f"input file {name!r} has no image HDU; give hdu= "
                             f"(--extname/--extnum) to choose one.")
    else:
        try:
            hdul[hdu]
        except (KeyError, IndexError):
            names = [h.name for h in hdul]
            raise ValueError(f"input file {name!r} has no extension {hdu!r}; it has {names}; "
                             f"choose one with hdu= (--extname/--extnum).") from None
    return hdu, hdul[hdu].header.get("BUNIT"), hdu_mask is not None and hdu_mask in hdul


def _read_one(name, hdu, hdu_mask, unit):
    name = os.fspath(name)
    if not os.path.exists(name):
        raise FileNotFoundError(f"input file {name!r} does not exist; check the name and the "
                                f"current directory.")
    try:
        with open(name, "rb") as fh, warnings.catch_warnings():
            warnings.filterwarnings("error", message="File may have been truncated",
                                    category=AstropyUserWarning)
            with fits.open(fh) as hdul:
                hdu_used, header_unit, has_mask = _inspect(name, hdul, hdu, hdu_mask)
    except AstropyUserWarning as exc:
        raise OSError(f"input file {name!r} is truncated ({exc}).") from None
    except OSError as exc:
        raise OSError(f"input file {name!r} cannot be read as FITS ({exc}).") from exc
    if header_unit is None and unit is None:
        raise ValueError(f"input file {name!r} has no BUNIT keyword; give unit= "
                         f"(e.g. 'adu' or 'electron'; --unit on the command line).")
    kwargs = {"hdu": hdu_used, "hdu_mask": hdu_mask if has_mask else None,
              "hdu_uncertainty": None, "hdu_flags": None, "memmap": False}
    if header_unit is None:
        kwargs["unit"] = unit
    ccd = CCDData.read(name, **kwargs)
    ccd.meta["CRCFILE"] = header_text(os.path.basename(name))
    return ccd


def collection_files(inputs):
    """The file paths of a `ccdproc.ImageFileCollection`; other inputs as they are."""
    try:
        from ccdproc import ImageFileCollection
    except ImportError:  # pragma: no cover
        return inputs
    if isinstance(inputs, ImageFileCollection):
        return [os.path.join(inputs.location or "", f) for f in inputs.files]
    return inputs


def read_exposures(inputs, *, hdu=None, hdu_mask=None, unit=None):
    """Read equivalent exposures into a list of `~astropy.nddata.CCDData`.

    Parameters
    ----------
    inputs : list of `~astropy.nddata.CCDData`, str or path-like, or `ccdproc.ImageFileCollection`
        The exposures.  `~astropy.nddata.CCDData` objects are used as they are
        (not copied, never modified); file names are read with
        `~astropy.nddata.CCDData.read`.
    hdu : int or str, optional
        Extension (number or name) holding the image in each file.  Default is
        the first HDU with image data (the primary, or extension 1 of a
        compressed ``.fits.fz`` file).
    hdu_mask : str, optional
        Extension holding a bad-pixel mask (non-zero = bad), e.g. ``'BPM'``
        for Las Cumbres Observatory frames.  Ignored where a file lacks it.
    unit : str or `~astropy.units.Unit`, optional
        Unit of files that have no ``BUNIT`` keyword.

    Returns
    -------
    list of `~astropy.nddata.CCDData`

    Raises
    ------
    FileNotFoundError
        A file does not exist.
    OSError
        A file is not readable FITS.
    ValueError
        A requested extension is missing, or a file has no unit and ``unit``
        is not given.
    TypeError
        ``inputs`` is not a list of exposures.
    """
    inputs = collection_files(inputs)
    if isinstance(inputs, (str, os.PathLike, CCDData)) or not hasattr(inputs, "__iter__"):
        raise TypeError("inputs must be a list of CCDData objects or FITS file names, or an "
                        f"ImageFileCollection; got {type(inputs).__name__}.")
    ccds = []
    for item in inputs:
        if isinstance(item, CCDData):
            ccds.append(item)
        elif isinstance(item, (str, os.PathLike)):
            ccds.append(_read_one(item, hdu, hdu_mask, unit))
        else:
            raise TypeError(f"inputs must hold CCDData objects or file names; item "
                            f"{len(ccds)} is a {type(item).__name__}.")
    return ccds


def check_exposures(ccds):
    """Check N >= 2 exposures of one shape and unit; return (shape, unit).

    Raises
    ------
    ValueError
        Fewer than two exposures, a non 2-D image, or shapes that differ.
    astropy.units.UnitsError
        Units that differ.
    """
    if len(ccds) < MIN_EXPOSURES:
        raise ValueError(f"at least {MIN_EXPOSURES} equivalent exposures are needed to find "
                         f"cosmic rays; got {len(ccds)}.")
    shape, unit = ccds[0].shape, ccds[0].unit
    if len(shape) != 2:
        raise ValueError(f"exposures must be 2-D images; exposure 0 has shape {shape}.")
    for i, ccd in enumerate(ccds[1:], start=1):
        if ccd.shape != shape:
            raise ValueError(f"all exposures must have the same shape; exposure {i} has "
                             f"{ccd.shape}, exposure 0 has {shape}.")
        if ccd.unit != unit:
            raise u.UnitsError(f"all exposures must have the same unit; exposure {i} is in "
                               f"{ccd.unit}, exposure 0 in {unit}; convert them first.")
    return shape, unit
