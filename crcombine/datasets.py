# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""The real exposures bundled with crcombine (see ``crcombine/data/README.rst``)."""

import os

from astropy import units as u

__all__ = ["DATASETS", "get_dataset"]

_DATA = os.path.join(os.path.dirname(__file__), "data")

#: Bundled data sets: files and the detector values to use with them.
DATASETS = {
    "lt_sprat": {
        "description": "Liverpool Telescope SPRAT, LHS 6328, 5 x 120 s raw long-slit spectra",
        "files": [f"v_e_20180810_12_{i}_0_0.fits.gz" for i in range(1, 6)],
        "hdu": 0, "hdu_mask": None, "unit": u.adu,
        "gain": 2.45 * u.electron / u.adu, "readnoise": 2.1 * u.adu, "bias": 916.0 * u.adu,
    },
    "lco_triplet": {
        "description": "Las Cumbres Observatory 0.4 m, PDS 110, 3 x 30 s u' (BANZAI, e-)",
        "files": [f"coj0m403-kb98-20170816-{n:04d}-e91.fits.fz" for n in (389, 390, 391)],
        "hdu": "SCI", "hdu_mask": "BPM", "unit": u.electron,
        "gain": 1.0, "readnoise": 16.4 * u.electron, "bias": 0.0,
    },
}


def get_dataset(name):
    """Paths and detector values of a bundled data set.

    Parameters
    ----------
    name : {'lt_sprat', 'lco_triplet'}

    Returns
    -------
    dict
        ``files`` (absolute paths), ``hdu``, ``hdu_mask``, ``unit``, ``gain``,
        ``readnoise``, ``bias`` and ``description``: ``hdu``, ``hdu_mask`` and
        ``unit`` go to `~crcombine.read_exposures`, the detector values to
        `~crcombine.CRMaskBuilder`.

    Raises
    ------
    ValueError
        Unknown name.
    """
    if name not in DATASETS:
        raise ValueError(f"name must be one of {'/'.join(DATASETS)}; got {name!r}.")
    info = dict(DATASETS[name])
    info["files"] = [os.path.join(_DATA, f) for f in info["files"]]
    return info
