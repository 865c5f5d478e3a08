# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Gain, read noise and bias of a stack, and the conversion of inputs to electrons.

``d_i = (D_i - bias) * gain`` in electrons with NaN where an input is masked
or not finite (:ref:`algorithm-notation`).
"""


import numpy as np
from astropy import units as u
from astropy.nddata import (InverseVariance, StdDevUncertainty, VarianceUncertainty)

from .._core.tiles import rows_of
from .._core.validation import check_detector_value

__all__ = []


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
