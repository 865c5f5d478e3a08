# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Writing the mask file and every combination to one folder (demo and ``run``)."""

import os

from .._core.files import check_output_path
from .._core.methods import METHODS as COMBINATION_METHODS
from .combined_file import write_combined

__all__ = []


def product_paths(folder):
    """``{'masks': .../crmasks.fits, method: .../combined_<method>.fits, ...}``."""
    out = {"masks": os.path.join(folder, "crmasks.fits")}
    out.update({m: os.path.join(folder, f"combined_{m}.fits") for m in COMBINATION_METHODS})
    return out


def check_products(folder, *, overwrite):
    """Raise FileExistsError before any work if an output exists (and not ``overwrite``)."""
    if os.path.isdir(folder):
        for path in product_paths(folder).values():
            check_output_path(path, overwrite=overwrite)


def write_products(combiner, folder, *, overwrite=False, write_masks=True):
    """Write the masks (unless ``write_masks`` is False) and every combination.

    Each file is written atomically, one after the other, so a failure leaves
    the files written before it complete and valid.

    Returns
    -------
    dict
        The paths written, as `product_paths`.
    """
    paths = product_paths(folder)
    os.makedirs(folder, exist_ok=True)
    if write_masks:
        combiner.masks.write(paths["masks"], overwrite=overwrite)
    for method in COMBINATION_METHODS:
        write_combined(combiner.combine(method), paths[method], overwrite=overwrite)
    return paths
