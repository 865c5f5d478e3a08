# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""The whole stack in memory: `ExposureStack`, float32 in electrons."""

from dataclasses import dataclass, field

import numpy as np
from astropy import units as u

from .detector import DetectorValues, detector_arrays, input_variance, to_electrons
from .read import check_exposures
from .._core.tiles import rows_of

__all__ = []


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
