# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""A drop-in `ccdproc.Combiner` with the cosmic-ray-aware combinations."""

import numpy as np
from astropy.nddata import CCDData, StdDevUncertainty
from ccdproc import Combiner as _CCDProcCombiner

from .._detection.builder import CRMaskBuilder
from .._detection.options import resolve_cr_coincidences
from .combiner import combine_stack

__all__ = ["Combiner"]


class Combiner(_CCDProcCombiner):
    """`ccdproc.Combiner` plus ``mediancr``, ``meancrt``, ``meancr`` and ``meancr2``.

    Everything `ccdproc.Combiner` does (average, median and sum combination,
    sigma and min/max clipping, ``clip_extrema``, weights, scaling) is
    inherited unchanged; the test suite runs ccdproc's own Combiner tests
    against this class.  The new methods read the stack (values, masks from
    the inputs and from any clipping done so far, and ``scaling``) at call
    time, so they see every change made before they are called.

    Parameters
    ----------
    ccd_iter : list or generator of `~astropy.nddata.CCDData`
        As in `ccdproc.Combiner`.
    dtype : str or `numpy.dtype`, optional
        As in `ccdproc.Combiner`.
    crmasks : `~crcombine.CRMasks`, optional
        Masks for these exposures.  If None they are built with ``builder``
        when a CR method is called (and not kept: each call builds anew, so
        that later clipping is taken into account).
    builder : `~crcombine.CRMaskBuilder`, optional
        Gain, read noise, bias and detection parameters.  Needed by the CR
        methods (for the noise model) unless ``crmasks`` records scalar gain
        and read noise.
    **kwargs
        Passed to `ccdproc.Combiner` (e.g. ``xp`` on ccdproc >= 2.6).

    Notes
    -----
    Weights are ignored by the CR methods, as by `ccdproc.Combiner.median_combine`.
    The uncertainty of the CR methods is that of the combined value from the
    noise model (see `~crcombine.CRCombiner`), not the scatter of the stack.

    Examples
    --------
    >>> import numpy as np
    >>> from astropy.nddata import CCDData
    >>> from crcombine import Combiner, CRMaskBuilder
    >>> rng = np.random.default_rng(0)
    >>> ccds = [CCDData(rng.poisson(200, (64, 64)).astype(float), unit="electron")
    ...         for _ in range(3)]
    >>> ccds[0].data[10, 10] += 5000; ccds[1].data[10, 10] += 4000
    >>> c = Combiner(ccds, builder=CRMaskBuilder(gain=1, readnoise=5, seed=1))
    >>> bool(c.median_combine().data[10, 10] > 4000), bool(c.mediancr_combine().data[10, 10] < 300)
    (True, True)
    """

    def __init__(self, ccd_iter, dtype=None, *, crmasks=None, builder=None, **kwargs):
        super().__init__(ccd_iter, dtype=dtype, **kwargs)
        self.crmasks = crmasks
        self.builder = builder

    def _stack_arrays(self):
        """(values, mask) of the stack, whichever ccdproc storage layout is in use."""
        if hasattr(self, "_data_arr_mask"):  # ccdproc >= 2.6
            return np.asarray(self._data_arr), np.asarray(self._data_arr_mask, dtype=bool)
        return self.data_arr.data, np.ma.getmaskarray(self.data_arr)  # ccdproc 2.5

    def _cr_combine(self, method, crmasks, builder):
        crmasks = crmasks if crmasks is not None else self.crmasks
        builder = builder if builder is not None else self.builder
        if builder is None:
            if crmasks is None:
                raise ValueError(f"{method}_combine needs builder=CRMaskBuilder(gain=..., "
                                 "readnoise=...) (in the call or in Combiner(...)), or crmasks "
                                 "that record a scalar gain and read noise.")
            builder = CRMaskBuilder.for_masks(crmasks)
        values, mask = self._stack_arrays()
        if self.scaling is not None:
            values = values * np.asarray(self.scaling)
        ccds = [CCDData(values[i], mask=mask[i], unit=self.unit) for i in range(len(values))]
        stack = builder.stack(ccds)
        if crmasks is None:
            crmasks = builder.build_from_stack(stack)
        crmasks.check_compatible(stack.n_exposures, stack.shape)
        cr_coincidences = crmasks.parameters.get("cr_coincidences") or resolve_cr_coincidences(
            builder.params["cr_coincidences"], stack.n_exposures)
        data, sigma, expmap = combine_stack(stack, method, masks=crmasks,
                                            flux_factor=crmasks.flux_factor,
                                            cr_coincidences=cr_coincidences)
        return CCDData(data.astype(self.dtype), mask=expmap == 0, unit=self.unit, flags=expmap,
                       uncertainty=StdDevUncertainty(sigma.astype(self.dtype)),
                       meta={"NCOMBINE": len(values), "CRMETHOD": method,
                             "CRMUUID": crmasks.uuid})

    def mediancr_combine(self, *, crmasks=None, builder=None):
        """Median, with the minimum where the median is CR-contaminated (MEDIANCR).

        Parameters
        ----------
        crmasks : `~crcombine.CRMasks`, optional
            Overrides the masks given to the constructor.
        builder : `~crcombine.CRMaskBuilder`, optional
            Overrides the builder given to the constructor.

        Returns
        -------
        `~astropy.nddata.CCDData`
            In ``self.unit`` and ``self.dtype``, with a
            `~astropy.nddata.StdDevUncertainty`, a mask (True where every
            input was masked), ``meta['NCOMBINE']`` and the exposure map in
            ``flags``.

        Raises
        ------
        ValueError
            No builder and no usable masks, or masks that do not fit.
        """
        return self._cr_combine("mediancr", crmasks, builder)

    def meancrt_combine(self, *, crmasks=None, builder=None):
        """Mean, with the ``mediancr`` value where the mean is CR-contaminated (MEANCRT).

        Parameters and return value as `mediancr_combine`.
        """
        return self._cr_combine("meancrt", crmasks, builder)

    def meancr_combine(self, *, crmasks=None, builder=None):
        """Mean of the exposures not masked in their CRMASKi; minimum where all are.

        Parameters and return value as `mediancr_combine`.
        """
        return self._cr_combine("meancr", crmasks, builder)

    def meancr2_combine(self, *, crmasks=None, builder=None):
        """``meancr``, then the minimum where CRs remain (MEANCR).

        Parameters and return value as `mediancr_combine`.
        """
        return self._cr_combine("meancr2", crmasks, builder)
