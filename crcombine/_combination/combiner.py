# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""CRCombiner and combine(): CR-aware combination of CCDData exposures."""

import logging
import os

import numpy as np
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty

from .._core import tiles
from .._core.files import check_output_path
from .._core.images import FILL_SIZE
from .._core.validation import header_text
from .._core.methods import CR_METHODS, METHODS, check_method
from .._detection.builder import CRMaskBuilder
from .._detection.options import resolve_cr_coincidences
from .combined_file import write_combined
from .rules import combine_step, exposure_map_dtype

__all__ = ["COMBINATION_METHODS", "CRCombiner", "combine"]

log = logging.getLogger(__name__)

#: The combination methods `CRCombiner.combine` and `combine` accept.
COMBINATION_METHODS = METHODS


def _version():
    from .. import __version__
    return __version__


#: Header keywords of the first exposure that do not describe the combination.
_NOT_CARRIED = ("SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "BZERO", "BSCALE",
                "BLANK", "BUNIT", "CHECKSUM", "DATASUM", "CRCFILE", "XTENSION", "PCOUNT", "GCOUNT",
                "EXTNAME", "NCOMBINE")

#: Detection parameters copied into the header of every CR-aware combination.
_PARAMETER_CARDS = (("cr_coincidences", "NCOINC", "cr_coincidences used"),
                    ("nsimulations", "CRNSIM", "simulations of the null distribution"),
                    ("dilation", "CRDILAT", "3x3 dilations of the masks"),
                    ("nbinom_shape", "CRNBINOM", "negative binomial shape (None: Poisson)"),
                    ("seed", "CRSEED", "seed of the simulations"))


def provenance_header(method, *, names, flux_factor, masks=None, cr_coincidences=None,
                      template=None):
    """The output header: the first exposure's keywords plus how it was combined.

    Records ``NCOMBINE``, ``CRMETHOD``, ``CRCVERS`` (crcombine version),
    ``CRMUUID`` (the masks' UUID), ``FLUXFi``, ``IMCMBnnn`` (input names) and
    the key detection parameters (``NCOINC``, ``CRNSIM``, ``CRDILAT``,
    ``CRNBINOM``, ``CRSEED``), with a ``HISTORY`` line.
    """
    hdr = fits.Header()
    if template is not None:
        for card in fits.Header(template).cards:
            if card.keyword not in _NOT_CARRIED and card.keyword not in ("HISTORY", "COMMENT",
                                                                         ""):
                hdr.append(card)
    hdr["NCOMBINE"] = (len(names), "number of exposures combined")
    hdr["CRMETHOD"] = (method, "crcombine combination method")
    hdr["CRCVERS"] = (_version(), "crcombine version")
    if masks is not None:
        hdr["CRMUUID"] = (masks.uuid, "UUID of the CR masks used")
        params = dict(masks.parameters, cr_coincidences=cr_coincidences)
        for name, key, comment in _PARAMETER_CARDS:
            value = params.get(name)
            if value is not None:
                hdr[key] = (str(value) if name == "seed" else value, comment)
    elif cr_coincidences is not None:
        hdr["NCOINC"] = (cr_coincidences, "cr_coincidences used")
    for i, f in enumerate(flux_factor, start=1):
        hdr[f"FLUXF{i}"] = (float(f), f"flux factor of exposure {i}")
    for i, name in enumerate(names, start=1):
        hdr[f"IMCMB{i:03d}"] = header_text(name)
    hdr["HISTORY"] = f"{method} combination of {len(names)} exposures by crcombine {_version()}"
    return hdr


def matched_kernels(masks):
    """The PSF-matching kernels recorded with ``masks`` (``psf_kernels``), or None.

    Returns a dict (``kernels`` (N, K^2 + 1), ``size`` K and, when recorded,
    ``pair_kernels`` (N, N, K^2 + 1)) for `crcombine._combination.rules.combine_step`.
    """
    if masks is None or masks.parameters.get("psf_kernels") is None:
        return None
    kernels = np.asarray(masks.parameters["psf_kernels"], dtype=float)
    size = int(round(np.sqrt(kernels.shape[1] - 1)))
    if kernels.shape != (masks.n_exposures, size * size + 1):
        raise ValueError(f"the masks record psf_kernels of shape {kernels.shape}, not "
                         f"({masks.n_exposures}, K*K + 1); recompute the masks.")
    psf = {"kernels": kernels, "size": size}
    if masks.parameters.get("psf_pair_kernels") is not None:
        psf["pair_kernels"] = np.asarray(masks.parameters["psf_pair_kernels"], dtype=float)
    return psf


def combine_stack(stack, method, *, masks, flux_factor, cr_coincidences, mem_limit=None,
                  scheduler=None, threads=None):
    """Combine a stack (`~crcombine._inputs.stack.ExposureStack` or a row-band stack); data unit.

    The combination runs in bands of rows planned from ``mem_limit`` (bytes;
    bands for ``threads`` otherwise), on ``threads`` threads (default: the
    number of CPUs) or as dask tasks with ``scheduler`` (see `crcombine._core.tiles`).
    ``method`` may be a tuple of methods: each band is then read and sorted
    once for all of them.

    Returns
    -------
    data, sigma : `~numpy.ndarray` (ny, nx), float32
        Combined value (bias added back) and its standard deviation, in the
        stack's unit.
    exposure_map : `~numpy.ndarray` (ny, nx), uint8 (uint16 from 256 exposures)
        Or, for a tuple of methods, a list of such triples in its order.
    """
    methods = (method,) if isinstance(method, str) else tuple(method)
    flux_factor = np.asarray(flux_factor, dtype=float)
    shape = stack.shape
    threads = threads or os.cpu_count() or 1
    filled = bool({"meancr", "meancr2"} & set(methods))
    psf = matched_kernels(masks) if filled else None
    halo = 0 if psf is None else psf["size"] // 2 + 2 * (FILL_SIZE // 2)
    if stack.n_exposures == 2 and filled:  # the fill of the pixels masked in both
        halo = max(halo, 2 * (FILL_SIZE // 2))
    bands = tiles.plan_tiles(stack.n_exposures, shape, mem_limit=mem_limit, combine=True,
                             threads=threads, halo=halo, outputs=len(methods))
    planes = () if masks is None else (masks.mediancr, masks.meancrt, masks.meancr,
                                       masks.crmask)
    out = [(np.empty(shape, dtype=np.float32), np.empty(shape, dtype=np.float32),
            np.empty(shape, dtype=exposure_map_dtype(stack.n_exposures))) for _ in methods]

    def put(index, results):
        a, b = bands[index]
        gain = stack.detector_rows(a, b)[0]
        for (data, sigma, expmap), (value, var, emap) in zip(out, results):
            data[a:b] = stack.to_data_unit(value, a, b)
            sigma[a:b] = np.sqrt(var) / gain
            expmap[a:b] = emap

    tiles.run_tiles(stack, bands, combine_step, planes=planes, scheduler=scheduler,
                    collect=put, workers=threads, method=methods, flux_factor=flux_factor,
                    cr_coincidences=cr_coincidences, halo=halo, psf=psf)
    return out[0] if isinstance(method, str) else out


class CRCombiner:
    """Combine N >= 2 equivalent exposures, optionally without their cosmic rays.

    Parameters
    ----------
    ccds : list of `~astropy.nddata.CCDData` or file names, or `ccdproc.ImageFileCollection`
        The exposures (never modified).
    masks : `~crcombine.CRMasks`, optional
        Masks for these exposures (from `~crcombine.CRMaskBuilder.build` or
        `~crcombine.CRMasks.read`).  If None they are built with ``builder``
        the first time a CR method is asked for.
    builder : `~crcombine.CRMaskBuilder`, optional
        Gives the gain, read noise and bias (needed for the noise model) and
        builds the masks when ``masks`` is None.  May be left out when
        ``masks`` records scalar ``gain``, ``readnoise`` and ``bias`` (masks
        written by crcombine).
    hdu, hdu_mask, unit
        For file inputs, as in `~crcombine.read_exposures`.

    Raises
    ------
    TypeError
        Neither ``masks`` nor ``builder`` given.
    ValueError
        ``masks`` do not match the inputs, or no gain/read noise is known.

    Notes
    -----
    The combination rules are those of :ref:`algorithm-combinations` (Cardiel et al.,
    M.M.Cosmic).  The uncertainty is that *of the combined value*, always a
    `~astropy.nddata.StdDevUncertainty` in the data unit, whatever class the
    inputs carry.  Each exposure's variance ``sigma_i^2`` is its input
    uncertainty when it has one (`~astropy.nddata.StdDevUncertainty`,
    `~astropy.nddata.VarianceUncertainty` or `~astropy.nddata.InverseVariance`),
    otherwise the noise model ``max(f_i c, 0) + sigma_r^2`` (electrons, ``c``
    the median), divided by ``f_i^2``: ``sum sigma_i^2 / k^2`` for a mean of ``k``
    values, ``v(k) * mean(sigma_i^2)`` for a median (``v(k)`` the exact
    variance of the median of ``k`` unit normal values: 0.4487 for ``k = 3``),
    a single exposure's variance where the minimum is used.  With masks that
    record PSF-matching kernels (``psf_matching``, the default), ``meancr``
    and ``meancr2`` replace each masked value with the exposure's prediction
    from the others (the variance stays that of the mean of the ``k``
    unmasked values the prediction is made of), and a pixel masked in every
    exposure on flat sky gets the median of its 5 x 5 neighbours (exposure
    map 0, a single exposure's variance).

    Examples
    --------
    >>> import numpy as np
    >>> from astropy.nddata import CCDData
    >>> from crcombine import CRCombiner, CRMaskBuilder
    >>> rng = np.random.default_rng(0)
    >>> ccds = [CCDData(rng.poisson(200, (64, 64)).astype(float), unit="electron")
    ...         for _ in range(3)]
    >>> ccds[0].data[10, 10] += 5000; ccds[1].data[10, 10] += 4000
    >>> combiner = CRCombiner(ccds, builder=CRMaskBuilder(gain=1, readnoise=5, seed=1))
    >>> result = combiner.combine("mediancr")
    >>> bool(result.data[10, 10] < 300), result.meta["NCOMBINE"], int(result.flags[10, 10])
    (True, 3, 1)
    """

    def __init__(self, ccds, masks=None, *, builder=None, hdu=None, hdu_mask=None, unit=None):
        if builder is None:
            if masks is None:
                raise TypeError("CRCombiner needs builder= (a CRMaskBuilder with the gain and "
                                "read noise) or masks= (CRMasks for these inputs).")
            builder = CRMaskBuilder.for_masks(masks)
        self.builder = builder
        self.stack = builder.stack(ccds, hdu=hdu, hdu_mask=hdu_mask, unit=unit)
        if masks is not None:
            masks.check_compatible(self.stack.n_exposures, self.stack.shape)
        self._masks = masks

    @property
    def masks(self):
        """The `~crcombine.CRMasks` (built with ``builder`` on first use)."""
        if self._masks is None:
            self._masks = self.builder.build_from_stack(self.stack)
        return self._masks

    def combine(self, method="mediancr"):
        """Combine the exposures.

        Parameters
        ----------
        method : str or sequence of str
            One of ``median``, ``mean``, ``min`` (no CR handling),
            ``mediancr``, ``meancrt``, ``meancr``, ``meancr2``
            (:ref:`algorithm-combinations`).  Default is ``'mediancr'``.  A
            list of them gives a list of results, the stack read and sorted
            once for all.

        Returns
        -------
        `~astropy.nddata.CCDData` (a list of them for a list of methods)
            ``data`` (float32, the inputs' unit, bias added back),
            ``uncertainty`` (`~astropy.nddata.StdDevUncertainty` of the
            combined value), ``mask`` (True where no exposure was valid),
            ``flags`` (the exposure map: uint8 count of contributing
            exposures, uint16 from 256), ``meta`` (the first input's header with
            ``NCOMBINE``, ``CRMETHOD``, ``CRMUUID``, ``FLUXFi``, ``IMCMBnnn``,
            ``CRCVERS`` and the key parameters; see ``provenance_header``) and the
            first input's WCS.

        Raises
        ------
        ValueError
            Unknown method.
        """
        methods = [method] if isinstance(method, str) else list(method)
        if not methods:
            raise ValueError("method: give at least one combination method.")
        for m in methods:
            check_method(m)
        stack = self.stack
        if set(methods) & set(CR_METHODS) or self._masks is not None:
            masks = self.masks
            flux_factor = masks.flux_factor
            cr_coincidences = masks.parameters.get("cr_coincidences") or resolve_cr_coincidences(
                self.builder.params["cr_coincidences"], stack.n_exposures)
        else:
            masks = None
            flux_factor, _ = self.builder.resolve_flux_factor(stack)
            cr_coincidences = resolve_cr_coincidences(self.builder.params["cr_coincidences"],
                                                      stack.n_exposures)
        outputs = combine_stack(stack, tuple(methods), masks=masks, flux_factor=flux_factor,
                                cr_coincidences=cr_coincidences,
                                mem_limit=self.builder.params["mem_limit"],
                                scheduler=self.builder.scheduler,
                                threads=self.builder.params["threads"])
        results = []
        for m, (data, sigma, expmap) in zip(methods, outputs):
            meta = provenance_header(m, names=stack.names, flux_factor=flux_factor, masks=masks,
                                     cr_coincidences=cr_coincidences, template=stack.meta)
            results.append(CCDData(data, unit=stack.unit, uncertainty=StdDevUncertainty(sigma),
                                   mask=expmap == 0, flags=expmap, meta=meta, wcs=stack.wcs))
        return results[0] if isinstance(method, str) else results


def combine(inputs, method="mediancr", *, output_file=None, overwrite=False, masks=None,
            hdu=None, hdu_mask=None, unit=None, **params):
    """Combine equivalent exposures in one call, like `ccdproc.combine`.

    Parameters
    ----------
    inputs : list of `~astropy.nddata.CCDData` or file names, or `ccdproc.ImageFileCollection`
    method : str
        One of ``COMBINATION_METHODS``.  Default is ``'mediancr'``.
    output_file : str or path-like, optional
        Write the result there (with an ``EXPMAP`` extension), atomically.
    overwrite : bool
        Replace an existing ``output_file``.  Default is False.
    masks : `~crcombine.CRMasks`, optional
        Precomputed masks; otherwise they are built from ``params``.
    hdu, hdu_mask, unit
        For file inputs, as in `~crcombine.read_exposures`.
    **params
        ``gain``, ``readnoise`` (required unless ``masks`` records them) and
        the other parameters of `~crcombine.CRMaskBuilder`.

    Returns
    -------
    `~astropy.nddata.CCDData`
        As `CRCombiner.combine`.

    Raises
    ------
    ValueError, TypeError
        Bad method, parameters or inputs.
    FileExistsError
        ``output_file`` exists and ``overwrite`` is False (checked before any
        work is done).
    """
    check_method(method)
    if output_file is not None:
        check_output_path(output_file, overwrite=overwrite, argument="output_file")
    builder = CRMaskBuilder(**params) if params or masks is None else None
    result = CRCombiner(inputs, masks, builder=builder, hdu=hdu, hdu_mask=hdu_mask,
                        unit=unit).combine(method)
    if output_file is not None:
        write_combined(result, output_file, overwrite=overwrite)
    return result
