# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Stacks read row band by row band: from CCDData, from FITS files, from dask arrays.

`~crcombine._inputs.stack.ExposureStack` holds the whole stack in memory.  When a
memory limit is set (``mem_limit``) or the inputs are dask arrays, the stacks
here give the same rows on demand (``read_rows``) without ever holding more
than the rows asked for: `CCDStack` converts rows of in-memory
`~astropy.nddata.CCDData`, `FileStack` reads sections of FITS files it opens
once, `DaskStack` computes slices of a dask array.  All have the interface of
`~crcombine._inputs.stack.ExposureStack` (``n_exposures``, ``shape``, ``unit``,
``names``, ``meta``, ``wcs``, ``gain``, ``readnoise``, ``bias``,
``read_rows``, ``detector_rows``, ``data``).
"""

import os
import threading
import types
import warnings

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData
from astropy.utils.exceptions import AstropyUserWarning

from .._core.tiles import rows_of
from .._core.validation import header_text
from .detector import DetectorValues, detector_arrays, input_variance, to_electrons
from .read import MIN_EXPOSURES, _inspect, _read_one, check_exposures

__all__ = []


class _RowStack(DetectorValues):
    """What every row-band stack shares."""

    variance = None

    @property
    def n_exposures(self):
        return len(self.names)

    @property
    def data(self):
        """The whole stack in electrons, (N, ny, nx) float32 (for plots: it is all read)."""
        return self.read_rows(0, self.shape[0])[0]

    def delayed_rows(self, start, stop):
        """``read_rows(start, stop)`` as a `dask.delayed` object (for the dask path)."""
        import dask
        return dask.delayed(type(self).read_rows, pure=True)(self, start, stop)


class CCDStack(_RowStack):
    """In-memory `~astropy.nddata.CCDData` exposures converted to electrons row band by row band."""

    def __init__(self, ccds, *, gain, readnoise, bias):
        self.shape, self.unit = check_exposures(ccds)
        self.gain, self.readnoise, self.bias = detector_arrays(gain, readnoise, bias,
                                                               self.shape, self.unit)
        for i, ccd in enumerate(ccds):
            valid = np.isfinite(ccd.data)
            if ccd.mask is not None:
                valid &= ~np.asarray(ccd.mask, dtype=bool)
            if not valid.any():
                raise ValueError(f"exposure {i} has no valid pixel (all masked or not finite); "
                                 "remove it from the inputs.")
        self.ccds = list(ccds)
        self._variance_rows(0, 1)  # checks the uncertainties' class now
        self.names = [str(c.meta.get("CRCFILE", f"exposure{i}")) for i, c in enumerate(ccds)]

    @property
    def meta(self):
        return self.ccds[0].meta

    @property
    def wcs(self):
        return self.ccds[0].wcs

    def read_rows(self, start, stop):
        g, rn, b = self.detector_rows(start, stop)
        data = np.empty((self.n_exposures, stop - start, self.shape[1]), dtype=np.float32)
        for i, ccd in enumerate(self.ccds):
            to_electrons(ccd.data[start:stop], None if ccd.mask is None else
                         ccd.mask[start:stop], g, b, out=data[i])
        return data, rn, self._variance_rows(start, stop)

    def read_exposure(self, i):
        """Exposure ``i`` whole, (ny, nx) float32 electrons, NaN where not valid."""
        g, _, b = self.detector_rows(0, self.shape[0])
        ccd = self.ccds[i]
        out = np.empty(self.shape, dtype=np.float32)
        return to_electrons(ccd.data, None if ccd.mask is None else ccd.mask, g, b, out=out)

    def _variance_rows(self, start, stop):
        if not any(c.uncertainty is not None for c in self.ccds):
            return None
        rows = [CCDData(c.data[start:stop], unit=c.unit, uncertainty=None if
                        c.uncertainty is None else c.uncertainty[start:stop])
                for c in self.ccds]
        return input_variance(rows, rows_of(self.gain, start, stop))


class FileStack(_RowStack):
    """FITS files opened once and read in sections (`astropy.io.fits` ``section``).

    Each file stays open (one handle per file, not one per tile, unlike
    `ccdproc.combine`'s memory-limited path) until `close` or until the
    object is pickled for a dask worker, which reopens it.

    Parameters
    ----------
    paths : list of str
    hdu, hdu_mask, unit
        As in `~crcombine.read_exposures`.
    gain, readnoise, bias
        As in `~crcombine.CRMaskBuilder`.
    premask : bool
        Apply `~crcombine.make_mask` to each exposure (each is read whole once,
        one at a time, and its mask kept as a boolean plane).
    saturation
        As in `~crcombine.make_mask`.

    Raises
    ------
    FileNotFoundError, OSError, ValueError, astropy.units.UnitsError
        As `~crcombine.read_exposures` and `~crcombine._inputs.read.check_exposures`.
    """

    def __init__(self, paths, *, gain, readnoise, bias, hdu=None, hdu_mask=None, unit=None,
                 premask=False, saturation="header"):
        self.paths = [os.fspath(p) for p in paths]
        if len(self.paths) < MIN_EXPOSURES:
            raise ValueError(f"at least {MIN_EXPOSURES} equivalent exposures are needed to "
                             f"find cosmic rays; got {len(self.paths)}.")
        self._hdul = [None] * len(self.paths)
        self._lock = threading.Lock()   # one reader at a time per file handle
        self.hdus, self.mask_hdus, shapes, units, headers = [], [], [], [], []
        for i, path in enumerate(self.paths):
            hdul = self._open(i, check=True)
            used, bunit, has_mask = _inspect(path, hdul, hdu, hdu_mask)
            if bunit is None and unit is None:
                raise ValueError(f"input file {path!r} has no BUNIT keyword; give unit= "
                                 "(e.g. 'adu' or 'electron'; --unit on the command line).")
            try:
                units.append(u.Unit(unit if bunit is None else bunit))
            except ValueError:
                raise ValueError(f"input file {path!r} has BUNIT = {bunit!r}, which is not a "
                                 "unit astropy knows; give unit= instead.") from None
            self.hdus.append(used)
            self.mask_hdus.append(hdu_mask if has_mask else None)
            shapes.append(tuple(hdul[used].shape))
            headers.append(hdul[used].header)
        self.shape, self.unit = check_exposures(
            [types.SimpleNamespace(shape=s, unit=un) for s, un in zip(shapes, units)])
        self.gain, self.readnoise, self.bias = detector_arrays(gain, readnoise, bias,
                                                               self.shape, self.unit)
        self.names = [os.path.basename(p) for p in self.paths]
        self.meta = fits.Header(headers[0])
        self.meta["CRCFILE"] = header_text(self.names[0])
        self.premasks = None
        if premask:
            from .premask import make_mask
            self.premasks = np.zeros((len(self.paths),) + self.shape, dtype=bool)
            for i in range(len(self.paths)):
                raw, mask = self._read_raw(i, 0, self.shape[0])
                ccd = CCDData(raw, unit=self.unit, mask=mask, meta=headers[i])
                self.premasks[i] = make_mask(ccd, saturation=saturation)

    @property
    def wcs(self):
        from astropy.wcs import WCS, FITSFixedWarning
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(self.meta)
        return wcs if wcs.has_celestial else None

    def _open(self, i, check=False):
        if self._hdul[i] is None:
            path = self.paths[i]
            if not os.path.exists(path):
                raise FileNotFoundError(f"input file {path!r} does not exist; check the name "
                                        "and the current directory.")
            try:
                self._hdul[i] = _open_fits(path, check)
            except AstropyUserWarning as exc:
                raise OSError(f"input file {path!r} is truncated ({exc}).") from None
            except OSError as exc:
                raise OSError(f"input file {path!r} cannot be read as FITS ({exc}).") from exc
        return self._hdul[i]

    def _read_raw(self, i, start, stop):
        with self._lock:
            hdul = self._open(i)
            raw = hdul[self.hdus[i]].section[start:stop, :]
            mask = None
            if self.mask_hdus[i] is not None:
                mask = hdul[self.mask_hdus[i]].section[start:stop, :] != 0
        return raw, mask

    def read_rows(self, start, stop):
        g, rn, b = self.detector_rows(start, stop)
        data = np.empty((self.n_exposures, stop - start, self.shape[1]), dtype=np.float32)
        for i in range(self.n_exposures):
            raw, mask = self._read_raw(i, start, stop)
            if self.premasks is not None:
                pre = self.premasks[i, start:stop]
                mask = pre if mask is None else (mask | pre)
            to_electrons(raw, mask, g, b, out=data[i])
        return data, rn, None

    def read_exposure(self, i):
        """Exposure ``i`` whole, (ny, nx) float32 electrons, NaN where not valid."""
        g, _, b = self.detector_rows(0, self.shape[0])
        raw, mask = self._read_raw(i, 0, self.shape[0])
        if self.premasks is not None:
            mask = self.premasks[i] if mask is None else (mask | self.premasks[i])
        out = np.empty(self.shape, dtype=np.float32)
        return to_electrons(raw, mask, g, b, out=out)

    def close(self):
        """Close the files (they are reopened if rows are read again)."""
        for i, hdul in enumerate(self._hdul):
            if hdul is not None:
                hdul.close()
                self._hdul[i] = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_hdul"] = [None] * len(self.paths)
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __del__(self):
        try:
            self.close()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass


def _open_fits(path, check):
    """Open a FITS file; raise AstropyUserWarning (file closed) if it is truncated."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AstropyUserWarning)
        hdul = fits.open(path, memmap=False)
        try:
            if check:
                len(hdul)  # reads every header now, to find truncation
        except BaseException:
            hdul.close()
            raise
    for w in caught:
        if "truncated" in str(w.message):
            hdul.close()
            raise AstropyUserWarning(str(w.message))
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return hdul


class LazyExposures:
    """A sequence of exposures read from their files on access (nothing is kept).

    Used to align file inputs one exposure at a time.  ``premask`` applies
    `~crcombine.make_mask` to each exposure as it is read.
    """

    def __init__(self, paths, *, hdu=None, hdu_mask=None, unit=None, premask=False,
                 saturation="header"):
        self.paths = [os.fspath(p) for p in paths]
        self.kwargs = (hdu, hdu_mask, unit)
        self.premask, self.saturation = premask, saturation

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        ccd = _read_one(self.paths[i], *self.kwargs)
        if self.premask:
            from .premask import make_mask
            ccd.mask = make_mask(ccd, saturation=self.saturation)
        return ccd

    def __iter__(self):
        return (self[i] for i in range(len(self)))


def aligned_file_stack(exposures, *, align, offsets, names, gain, readnoise, bias,
                       grid="reference"):
    """Align exposures one at a time into a temporary directory; a `FileStack` on them.

    The aligned exposures (data and mask) are written as FITS files in a
    temporary directory that lives as long as the stack, then read back in
    bands of rows, so that neither the inputs nor their aligned copies are
    all held in memory (JWST ``outlier_detection``'s ``in_memory=False``).
    Input uncertainties are not carried: the noise model is used.
    """
    import shutil
    import tempfile
    import weakref

    from .align import align_exposures
    directory = tempfile.mkdtemp(prefix="crcombine-aligned-")
    paths = []

    def sink(i, ccd):
        path = os.path.join(directory, f"aligned{i:04d}.fits")
        ccd.uncertainty = None
        ccd.write(path, hdu_mask="MASK", hdu_uncertainty=None)
        paths.append(path)

    try:
        _, table = align_exposures(exposures, method=align, offsets=offsets, sink=sink,
                                   grid=grid)
        stack = FileStack(paths, gain=gain, readnoise=readnoise, bias=bias, hdu_mask="MASK")
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    stack.temporary_directory = directory
    weakref.finalize(stack, shutil.rmtree, directory, ignore_errors=True)
    stack.names = list(names)
    stack.meta["CRCFILE"] = header_text(stack.names[0])
    stack.offsets = table
    return stack


class DaskStack(_RowStack):
    """A dask array (N, ny, nx) of exposures in the data unit (NaN = not valid).

    Parameters
    ----------
    array : `dask.array.Array`, shape (N, ny, nx)
    unit : str or `~astropy.units.Unit`
    gain, readnoise, bias
        As in `~crcombine.CRMaskBuilder`.
    names : list of str, optional
    meta : dict-like, optional
        Header used as the template of the outputs.

    Raises
    ------
    ValueError
        Not a 3-D array of at least two exposures, or no unit.
    """

    #: The tiles of a dask array run as dask tasks (`crcombine._core.tiles.uses_dask`).
    is_dask = True

    def __init__(self, array, *, unit, gain, readnoise, bias, names=None, meta=None):
        if array.ndim != 3 or array.shape[0] < MIN_EXPOSURES:
            raise ValueError("a dask array input must be (N, ny, nx) with N >= "
                             f"{MIN_EXPOSURES} exposures; got shape {array.shape}.")
        if unit is None:
            raise ValueError("a dask array input needs unit= (e.g. 'adu' or 'electron').")
        self.array = array
        self.shape = tuple(int(v) for v in array.shape[1:])
        self.unit = u.Unit(unit)
        self.gain, self.readnoise, self.bias = detector_arrays(gain, readnoise, bias,
                                                               self.shape, self.unit)
        self.names = list(names) if names is not None else [
            f"exposure{i}" for i in range(array.shape[0])]
        self.meta = fits.Header(meta) if meta is not None else fits.Header()
        self.wcs = None

    def read_rows(self, start, stop):
        return self.convert(np.asarray(self.array[:, start:stop]), start, stop)

    def read_exposure(self, i):
        """Exposure ``i`` whole, (ny, nx) float32 electrons, NaN where not valid."""
        return self.convert(np.asarray(self.array[i:i + 1]), 0, self.shape[0])[0][0]

    def convert(self, raw, start, stop):
        """Rows of raw values (N, rows, nx) to ``read_rows``' (data, readnoise, variance)."""
        g, rn, b = self.detector_rows(start, stop)
        data = np.empty(raw.shape, dtype=np.float32)
        for i in range(raw.shape[0]):
            to_electrons(raw[i], None, g, b, out=data[i])
        return data, rn, None

    def delayed_rows(self, start, stop):
        import dask
        return dask.delayed(self.convert, pure=True)(self.array[:, start:stop], start, stop)
