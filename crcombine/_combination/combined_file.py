# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""The combined image file: `~astropy.nddata.CCDData`'s layout plus the exposure map."""

import numpy as np
from astropy.io import fits

from .._core.files import write_atomic

__all__ = []


def write_combined(ccd, path, *, overwrite=False):
    """Write a combined `~astropy.nddata.CCDData` with its exposure map.

    The layout is `~astropy.nddata.CCDData.write`'s (PRIMARY data, ``MASK``,
    ``UNCERT``) plus an ``EXPMAP`` uint8 (uint16 beyond 255) extension from ``ccd.flags`` when
    present.

    Raises
    ------
    FileExistsError, FileNotFoundError, PermissionError
        See ``check_output_path``.
    """
    hdul = ccd.to_hdu(as_image_hdu=False)
    if ccd.flags is not None:
        flags = np.asarray(ccd.flags)
        wide = flags.size and flags.max() > 255
        hdu = fits.ImageHDU(flags.astype(np.uint16 if wide else np.uint8), name="EXPMAP")
        hdu.header["COMMENT"] = "number of exposures contributing to each pixel"
        hdul.append(hdu)
    write_atomic(hdul, path, overwrite=overwrite, argument="output file")
