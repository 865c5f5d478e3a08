# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Inputs to one float32 stack in electrons, and the per-pixel stack statistics.

This is where data enter crcombine: a list of `~astropy.nddata.CCDData`, FITS
file names or a `ccdproc.ImageFileCollection` becomes an `ExposureStack`,
``d_i = (D_i - bias) * gain`` in electrons with NaN where an input is masked
or not finite (ALGORITHM.md notation).  The statistics of ALGORITHM.md §2 are
computed from the stack sorted once along the exposure axis.
"""

import os
import warnings
from dataclasses import dataclass, field

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.nddata import (CCDData, InverseVariance, StdDevUncertainty,
                            VarianceUncertainty)
from astropy.utils.exceptions import AstropyUserWarning

from ._parameters import check_detector_value

__all__ = ["read_exposures"]

MIN_EXPOSURES = 3


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
    ccd.meta["CRCFILE"] = os.path.basename(name)
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
    """Check N >= 3 exposures of one shape and unit; return (shape, unit).

    Raises
    ------
    ValueError
        Fewer than three exposures, a non 2-D image, or shapes that differ.
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


def _as_array(name, value, shape, unit):
    """A detector value as a float scalar or float32 array of ``shape``, in ``unit``."""
    if isinstance(value, u.Quantity):
        try:
            value = value.to_value(unit)
        except u.UnitConversionError:
            raise u.UnitsError(f"{name} is in {value.unit}, which cannot be converted to "
                               f"{unit}.") from None
    arr = np.asarray(value, dtype=float)
    if arr.ndim == 0:
        return float(arr)
    if arr.shape != shape:
        raise ValueError(f"{name} must be a scalar or an array of the image shape {shape}; "
                         f"got shape {arr.shape}.")
    return arr.astype(np.float32)


def detector_arrays(gain, readnoise, bias, shape, unit):
    """Gain (e-/data unit), read noise (e-) and bias (data unit) for data in ``unit``.

    A plain-number gain is electrons per data unit; a Quantity gain must be
    convertible to ``electron / unit``.  A plain-number read noise is in
    electrons (as in `ccdproc.cosmicray_lacosmic`); a Quantity read noise may be
    in electrons or in the data unit (then multiplied by the gain).  A plain
    bias is in the data unit.  Each may be a scalar or an array of ``shape``.

    Raises
    ------
    astropy.units.UnitsError
        A Quantity in a unit that cannot be converted.
    ValueError
        Non-positive gain, negative read noise, an array of the wrong shape, or
        a gain other than 1 for data already in electrons.
    """
    check_detector_value("gain", gain, positive=True)
    check_detector_value("readnoise", readnoise, non_negative=True)
    check_detector_value("bias", bias)
    if unit == u.electron and isinstance(gain, u.Quantity) and (
            gain.unit.is_equivalent(u.electron / u.adu) or gain.unit == u.dimensionless_unscaled):
        gain = gain.value  # e-/ADU for data already in electrons: it must be 1
    g = _as_array("gain", gain, shape, u.electron / unit)
    if unit == u.electron and np.any(np.asarray(g) != 1):
        raise ValueError("the data are already in electrons, so gain must be 1 (or left out); "
                         f"got {np.asarray(g).ravel()[0]!r}. Applying it would count the gain "
                         "twice.")
    if isinstance(readnoise, u.Quantity) and not readnoise.unit.is_equivalent(u.electron):
        rn = _as_array("readnoise", readnoise, shape, unit) * g
    else:
        rn = _as_array("readnoise", readnoise, shape, u.electron)
    b = _as_array("bias", bias, shape, unit)
    return g, rn, b


class DetectorValues:
    """Gain, read noise and bias of a stack (attributes ``gain``, ``readnoise``, ``bias``)."""

    def detector_rows(self, start, stop):
        """(gain, readnoise, bias) of rows ``start:stop`` (floats or row slices)."""
        return tuple(rows_of(v, start, stop) for v in (self.gain, self.readnoise, self.bias))

    def to_data_unit(self, electrons, start=0, stop=None):
        """Electrons (signal above bias) of rows ``start:stop`` back to the input unit."""
        gain, _, bias = self.detector_rows(start, stop)
        return electrons / gain + bias


@dataclass
class ExposureStack(DetectorValues):
    """N exposures as one float32 array in electrons (NaN = not valid).

    Attributes
    ----------
    data : `~numpy.ndarray`, shape (N, ny, nx), float32
        ``(D_i - bias) * gain`` in electrons, NaN where the input is masked or
        not finite.  Not scaled by flux factors.
    gain, readnoise, bias : float or `~numpy.ndarray` (ny, nx)
        Electrons per data unit, electrons, data unit.
    unit : `~astropy.units.Unit`
        Unit of the input data (and of the combined outputs).
    names : list of str
        A name per exposure (file name, or ``exposure{i}``).
    ccds : list of `~astropy.nddata.CCDData`
        The inputs (not copied, never modified).
    variance : `~numpy.ndarray`, shape (N, ny, nx), float32, or None
        Variance of each exposure in electrons^2 from the input uncertainties
        (NaN for exposures without one, which then use the noise model); None
        when no input has an uncertainty.
    """

    data: np.ndarray
    gain: object
    readnoise: object
    bias: object
    unit: u.UnitBase
    names: list = field(default_factory=list)
    ccds: list = field(default_factory=list)
    variance: np.ndarray = None

    @property
    def n_exposures(self):
        return self.data.shape[0]

    @property
    def shape(self):
        return self.data.shape[1:]

    @classmethod
    def from_ccds(cls, ccds, *, gain, readnoise, bias):
        """Build the stack from checked `~astropy.nddata.CCDData` exposures.

        The inputs are only read: the stack is a new float32 array.
        """
        shape, unit = check_exposures(ccds)
        g, rn, b = detector_arrays(gain, readnoise, bias, shape, unit)
        data = np.empty((len(ccds),) + shape, dtype=np.float32)
        for i, ccd in enumerate(ccds):
            if np.isnan(to_electrons(ccd.data, ccd.mask, g, b, out=data[i])).all():
                raise ValueError(f"exposure {i} has no valid pixel (all masked or not finite); "
                                 "remove it from the inputs.")
        names = [str(c.meta.get("CRCFILE", f"exposure{i}")) for i, c in enumerate(ccds)]
        return cls(data=data, gain=g, readnoise=rn, bias=b, unit=unit, names=names,
                   ccds=list(ccds), variance=input_variance(ccds, g))

    @property
    def meta(self):
        """Header of the first exposure (the template of the outputs)."""
        return self.ccds[0].meta if self.ccds else {}

    @property
    def wcs(self):
        """WCS of the first exposure, or None."""
        return self.ccds[0].wcs if self.ccds else None

    def read_rows(self, start, stop):
        """Rows ``start:stop`` of every exposure: ``(data, readnoise, variance)``.

        ``data`` is (N, rows, nx) float32 electrons (a view: do not modify),
        ``readnoise`` a float or (rows, nx), ``variance`` None or (N, rows, nx).
        """
        return (self.data[:, start:stop], rows_of(self.readnoise, start, stop),
                None if self.variance is None else self.variance[:, start:stop])

    def read_exposure(self, i):
        """Exposure ``i`` whole, (ny, nx) float32 electrons, NaN where not valid (a view)."""
        return self.data[i]


def rows_of(value, start, stop):
    """Rows ``start:stop`` of an image-shaped detector value; a scalar as it is."""
    return value[start:stop] if np.ndim(value) == 2 else value


def to_electrons(raw, mask, gain, bias, *, out=None):
    """``(raw - bias) * gain`` as float32 with NaN where masked or not finite.

    ``raw`` (ny, nx) in the data unit; ``mask`` None or (ny, nx), non-zero =
    bad; ``gain`` and ``bias`` floats or (ny, nx).  Writes into ``out`` when
    given.  Returns the array.
    """
    out = np.empty(np.shape(raw), dtype=np.float32) if out is None else out
    np.subtract(np.asarray(raw, dtype=np.float32), bias, out=out, casting="unsafe")
    out *= np.float32(gain) if np.isscalar(gain) else gain
    invalid = ~np.isfinite(out)
    if mask is not None:
        invalid |= np.asarray(mask, dtype=bool)
    out[invalid] = np.nan
    return out


#: Stacks of up to this many exposures are sorted with a compare-exchange network.
NETWORK_MAX = 8


def _network(n):
    """Compare-exchange pairs that sort ``n`` values (odd-even transposition)."""
    return [(i, i + 1) for rnd in range(n) for i in range(rnd % 2, n - 1, 2)]


def input_variance(ccds, gain):
    """Variances (electrons^2) from the inputs' uncertainties, or None if none has one.

    `~astropy.nddata.StdDevUncertainty`, `~astropy.nddata.VarianceUncertainty`
    and `~astropy.nddata.InverseVariance` are accepted (converted with
    ``represent_as``); an uncertainty without a unit is in the data unit.

    Raises
    ------
    ValueError
        An uncertainty of another class, of the wrong shape, or negative.
    """
    if all(c.uncertainty is None for c in ccds):
        return None
    out = np.full((len(ccds),) + ccds[0].shape, np.nan, dtype=np.float32)
    g2 = np.asarray(gain, dtype=np.float32) ** 2
    for i, ccd in enumerate(ccds):
        unc = ccd.uncertainty
        if unc is None:
            continue
        if not isinstance(unc, (StdDevUncertainty, VarianceUncertainty, InverseVariance)):
            raise ValueError(f"exposure {i} has a {type(unc).__name__}; crcombine uses "
                             "StdDevUncertainty, VarianceUncertainty or InverseVariance.")
        if unc.array.shape != ccd.shape:
            raise ValueError(f"the uncertainty of exposure {i} has shape {unc.array.shape}, "
                             f"the data {ccd.shape}.")
        var = unc.represent_as(VarianceUncertainty)
        arr = var.array if var.unit is None else var.quantity.to_value(ccd.unit ** 2)
        if np.any(arr < 0):
            raise ValueError(f"the uncertainty of exposure {i} has negative variances.")
        out[i] = arr * g2
    return out


def sort_stack(data):
    """Sort a (N, ...) stack along the exposure axis once; NaNs go last.

    For N <= `NETWORK_MAX` the sort is a network of elementwise
    ``minimum``/``maximum`` operations on whole planes (odd-even
    transposition sort, Knuth, TAOCP vol. 3, §5.3.4), much faster than
    `numpy.sort` along a short axis; NaN is sorted as +inf and restored.

    Returns
    -------
    sorted : `~numpy.ndarray`, same shape and dtype
    count : `~numpy.ndarray` of int, shape ``data.shape[1:]``
        Number of valid (non-NaN) values per pixel.
    """
    n = data.shape[0]
    invalid = np.isnan(data)
    count = n - np.count_nonzero(invalid, axis=0)
    if n > NETWORK_MAX:
        return np.sort(data, axis=0), count
    s = np.where(invalid, np.inf, data).astype(data.dtype, copy=False)
    for i, j in _network(n):
        lo = np.minimum(s[i], s[j])
        np.maximum(s[i], s[j], out=s[j])
        s[i] = lo
    if invalid.any():
        s[np.isinf(s)] = np.nan
    return s, count


def _take(sorted_stack, index):
    return np.take_along_axis(sorted_stack, index[np.newaxis], axis=0)[0]


def stack_statistics(sorted_stack, count, n_coincidences):
    """Per-pixel statistics of ALGORITHM.md §2 from a sorted stack.

    Parameters
    ----------
    sorted_stack : `~numpy.ndarray`, shape (N, ...), float
        Values sorted along axis 0 with NaN (invalid) last, as from `sort_stack`.
    count : `~numpy.ndarray` of int
        Number of valid values per pixel.
    n_coincidences : int
        ``n_c``: how many CR-hit exposures are sought.

    Returns
    -------
    dict of `~numpy.ndarray`
        ``min2d`` (the minimum signal: mean of the ``max(k - n_c, 1)`` lowest
        of the ``k`` valid values), ``minR`` (plain minimum), ``median2d``
        (mean of the two middle values for even ``k``), ``mean2d``,
        ``max2d``; all NaN where ``k = 0``.
    """
    n = sorted_stack.shape[0]
    dtype = sorted_stack.dtype
    if np.all(count == n):  # no invalid values: plain indexing
        k = n
        lo, hi = (n - 1) // 2, n // 2
        median = 0.5 * (sorted_stack[lo] + sorted_stack[hi])
        m = max(n - n_coincidences, 1)
        mincr = sorted_stack[:m].mean(axis=0, dtype=dtype) if m > 1 else sorted_stack[0].copy()
        return {"min2d": mincr, "minR": sorted_stack[0].copy(), "median2d": median,
                "mean2d": sorted_stack.mean(axis=0, dtype=dtype),
                "max2d": sorted_stack[n - 1].copy()}
    k = count
    empty = k == 0
    kk = np.maximum(k, 1)
    median = 0.5 * (_take(sorted_stack, (kk - 1) // 2) + _take(sorted_stack, kk // 2))
    zeroed = np.where(np.isnan(sorted_stack), 0, sorted_stack)
    csum = np.cumsum(zeroed, axis=0, dtype=dtype)
    m = np.maximum(kk - n_coincidences, 1)
    mincr = _take(csum, m - 1) / m.astype(dtype)
    mean = csum[-1] / kk.astype(dtype)
    maximum = _take(sorted_stack, kk - 1)
    minimum = sorted_stack[0].copy()
    for arr in (median, mincr, mean, maximum, minimum):
        arr[empty] = np.nan
    return {"min2d": mincr.astype(dtype, copy=False), "minR": minimum, "median2d": median,
            "mean2d": mean.astype(dtype, copy=False), "max2d": maximum}
