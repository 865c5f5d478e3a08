# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""The stack that fits the inputs and the memory limit (`open_stack`).

Without ``mem_limit`` the stack is read whole into memory
(`~crcombine._inputs.stack.ExposureStack`); with it, file inputs are opened
once and read in row bands (`~crcombine._inputs.sources.FileStack`) and
`~astropy.nddata.CCDData` inputs are converted band by band
(`~crcombine._inputs.sources.CCDStack`); with ``align`` too, the exposures are
aligned one at a time into temporary files read in bands.  A dask array
(N, ny, nx) becomes a `~crcombine._inputs.sources.DaskStack`.
"""

import logging
import os

import numpy as np
from astropy.nddata import CCDData

from . import sources
from .premask import make_mask
from .read import collection_files, read_exposures
from .align import align_exposures
from .stack import ExposureStack

log = logging.getLogger(__name__)

__all__ = []


def _file_names(inputs):
    return list(collection_files(inputs))


def _are_file_names(inputs):
    """Whether the inputs are all file names (or an ImageFileCollection)."""
    if isinstance(inputs, (str, os.PathLike)) or not hasattr(inputs, "__iter__"):
        return False
    names = _file_names(inputs)
    return bool(names) and all(isinstance(i, (str, os.PathLike)) for i in names)


def open_stack(ccds, *, gain, readnoise, bias, premask=False, saturation="header",
               mem_limit=None, align=None, offsets=None, grid="reference", hdu=None,
               hdu_mask=None, unit=None):
    """Read and check the inputs (pre-masked with ``premask``); the stack in electrons.

    ``gain``, ``readnoise``, ``bias``, ``premask``, ``saturation``,
    ``mem_limit``, ``align``, ``offsets`` and ``grid`` as in
    `~crcombine.CRMaskBuilder`; ``hdu``, ``hdu_mask``, ``unit`` as in
    `~crcombine.read_exposures`.

    Without ``mem_limit`` the stack is read whole into memory
    (`~crcombine._inputs.stack.ExposureStack`); with it, file inputs are opened
    once and read in row bands (`~crcombine.sources.FileStack`) and
    `~astropy.nddata.CCDData` inputs are converted band by band
    (`~crcombine.sources.CCDStack`); with ``align`` too, the exposures
    are aligned one at a time into temporary files read in bands.  A dask
    array (N, ny, nx) becomes a `~crcombine.sources.DaskStack` (``unit``
    is then required).
    """
    detector = {"gain": gain, "readnoise": readnoise, "bias": bias}
    if type(ccds).__module__.split(".")[0] == "dask":
        if premask:
            raise ValueError("premask=True is not available for dask array inputs; apply "
                             "crcombine.make_mask to each exposure and set the masked "
                             "pixels to NaN.")
        return sources.DaskStack(ccds, unit=unit, **detector)
    lazy = mem_limit is not None
    if lazy and align is not None:  # aligned one exposure at a time, through files
        if _are_file_names(ccds):
            exposures = sources.LazyExposures(
                _file_names(ccds), hdu=hdu, hdu_mask=hdu_mask, unit=unit,
                premask=premask, saturation=saturation)
            names = [os.path.basename(p) for p in exposures.paths]
        else:
            exposures = _premasked(saturation if premask else None,
                                   read_exposures(ccds, hdu=hdu, hdu_mask=hdu_mask, unit=unit))
            names = [str(c.meta.get("CRCFILE", f"exposure{i}"))
                     for i, c in enumerate(exposures)]
        return sources.aligned_file_stack(exposures, align=align,
                                          offsets=offsets,
                                          grid=grid, names=names,
                                          **detector)
    if lazy and _are_file_names(ccds):
        return sources.FileStack(_file_names(ccds), hdu=hdu, hdu_mask=hdu_mask, unit=unit,
                                 premask=premask,
                                 saturation=saturation, **detector)
    ccds = _premasked(saturation if premask else None, read_exposures(
        ccds, hdu=hdu, hdu_mask=hdu_mask, unit=unit))
    measured = None
    if align is not None:
        ccds, measured = align_exposures(ccds, method=align, offsets=offsets,
                                         grid=grid)
        log.info("aligned (%s) with offsets (dy, dx) %s", align,
                 np.round(np.c_[measured["dy"], measured["dx"]], 2).tolist())
    stack = (sources.CCDStack(ccds, **detector) if lazy
             else ExposureStack.from_ccds(ccds, **detector))
    stack.offsets = measured
    return stack


def _premasked(saturation, ccds):
    """The exposures with `~crcombine.make_mask` as their masks (``saturation`` None: as given)."""
    if saturation is None:
        return ccds
    return [CCDData(c.data, unit=c.unit, meta=c.meta, wcs=c.wcs, uncertainty=c.uncertainty,
                    mask=make_mask(c, saturation=saturation)) for c in ccds]
