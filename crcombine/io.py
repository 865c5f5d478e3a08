# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Reading and writing mask files (numina's ``crmasks.fits`` layout) and combined images.

Every file is written atomically: to a temporary file in the target directory,
then renamed, so an interruption never leaves a partial file under the final
name; an existing file is replaced only with ``overwrite=True``.
"""

from ._combination.combined_file import write_combined
from ._core.files import atomic_file, check_output_path, write_atomic, write_text  # noqa: F401
from ._detection import mask_file
from ._detection.masks import CRMasks

__all__ = ["read_crmasks", "write_combined", "write_crmasks"]


def write_crmasks(masks, path, *, overwrite=False):
    """Write `~crcombine.CRMasks` in the numina-compatible ``crmasks.fits`` layout.

    PRIMARY has no data and records ``UUID``, ``NEXPOSE``, ``FLUXF1..N`` (and
    their uncertainties ``EFLUXFi`` when estimated), the seed (``SEED``, a
    string: it may exceed 64 bits), ``CRCVERS`` and the detection parameters.
    Extensions ``MEDIANCR``, ``MEANCRT``, ``CRMASK1..N`` and ``MEANCR`` are
    uint8 0/1 images with ``NPMASKED`` in their headers (:doc:`/mask_file`).

    Raises
    ------
    FileExistsError, FileNotFoundError, PermissionError
        See ``check_output_path``.
    """
    mask_file.write_crmasks(masks, path, overwrite=overwrite)


def read_crmasks(path):
    """Read a ``crmasks.fits`` written by crcombine or by numina-crmasks.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    `~crcombine.CRMasks`
        With ``boundaries`` empty and ``features`` None (not stored).  For a
        numina file the gain, read noise (ADU there, electrons here), bias,
        seed and main parameters are taken from its ``HISTORY`` lines.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        The file lacks ``MEDIANCR``, ``MEANCRT`` or ``CRMASK1..N``, or their
        shapes differ.
    """
    return CRMasks.read(path)
