# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""CRMaskBuilder (the M.M.Cosmic detection) and CRMasks (its result)."""

import functools
import itertools
import logging
import os
import uuid as uuid_module

import numpy as np
from astropy.nddata import CCDData
from astropy.table import Table
from scipy import ndimage

from . import _tiles
from ._boundary import DetectionBoundary, boundary_points, quantile_points
from ._estimates import flux_factors_from_samples, overdispersion_from_samples
from ._outliers import (EIGHT_CONNECTED, adaptive_scale, background_offsets, dilate,
                        hit_fraction_from_counts, mismatch_scale, tolerance_from_samples)
from ._parameters import region_mask, resolve_cr_coincidences, validate_parameters
from ._psfmatch import level_allowance, solve_kernels
from ._premask import lacosmic_flags
from ._simulate import DENOISE_SIZE, STATISTICS, diagram_grid, rows_per_block
from ._stack import ExposureStack, collection_files, read_exposures

__all__ = ["CRMaskBuilder", "CRMasks"]

#: PSF matching fits a kernel from every exposure to every other one (used where a
#: single other exposure is left, mostly hits shared by two of three exposures) up to
#: this many exposures; beyond, such pixels are rare and the fits many (N (N - 1)).
MAX_PAIR_EXPOSURES = 5

log = logging.getLogger(__name__)


class CRMasks:
    """Cosmic-ray masks of N equivalent exposures (the result of `CRMaskBuilder.build`).

    All masks follow astropy: True = flagged.

    Attributes
    ----------
    mediancr : `~numpy.ndarray`, shape (ny, nx), bool
        Pixels whose median is CR-contaminated (MEDIANCR), dilated.
    meancrt : `~numpy.ndarray`, shape (ny, nx), bool
        Pixels whose mean is CR-contaminated (MEANCRT), dilated;
        ``mediancr`` is a subset.
    crmask : `~numpy.ndarray`, shape (N, ny, nx), bool
        Per-exposure masks CRMASK1..N.
    meancr : `~numpy.ndarray`, shape (ny, nx), bool
        CRs left in the ``meancr`` combination (MEANCR), not dilated.
    flux_factor : `~numpy.ndarray`, shape (N,), float
    flux_factor_uncertainty : `~numpy.ndarray` or None
        Standard errors when the flux factors were estimated (``'auto'``).
    boundaries : dict of `~crcombine.DetectionBoundary`
        By statistic: ``'median'``, ``'mean'`` and, with
        ``crmask_method='mm'``, ``'single'``.  Empty for masks
        read from a file.
    features : `~astropy.table.Table` or None
        The CR features of MEDIANCR, most certain first: ``label`` (in
        ``labels``), ``n_pixels``, ``n_seeds`` (pixels flagged before
        dilation), ``xcentroid``, ``ycentroid`` (0-based pixel
        coordinates), ``max_distance`` (largest ``y - B(x)`` of the feature,
        electrons).
    labels : `~numpy.ndarray` (ny, nx), int or None
        Feature labels of MEDIANCR (0 = none).
    parameters : dict
        Parameters used (including the seed and the resolved
        ``cr_coincidences``).
    uuid : str
        Identifier written in the mask file and in every combination made
        with these masks.
    diagram : dict or None
        ``'simulated'`` and ``'data'`` MM-diagram histograms, for plotting.
    """

    def __init__(self, *, mediancr, meancrt, crmask, meancr=None, flux_factor=None,
                 flux_factor_uncertainty=None, boundaries=None, features=None, labels=None,
                 parameters=None, uuid=None, diagram=None):
        self.mediancr = np.asarray(mediancr, dtype=bool)
        self.meancrt = np.asarray(meancrt, dtype=bool)
        self.crmask = np.asarray(crmask, dtype=bool)
        shape = self.mediancr.shape
        if self.crmask.ndim != 3 or self.crmask.shape[1:] != shape or \
                self.meancrt.shape != shape:
            raise ValueError(f"mask shapes do not agree: MEDIANCR {shape}, MEANCRT "
                             f"{self.meancrt.shape}, CRMASK stack {self.crmask.shape}.")
        self.meancr = (np.zeros(shape, dtype=bool) if meancr is None
                       else np.asarray(meancr, dtype=bool))
        n = self.crmask.shape[0]
        self.flux_factor = (np.ones(n) if flux_factor is None
                            else np.asarray(flux_factor, dtype=float))
        if self.flux_factor.shape != (n,):
            raise ValueError(f"{n} CRMASK planes but {self.flux_factor.size} flux factors.")
        self.flux_factor_uncertainty = flux_factor_uncertainty
        self.boundaries = dict(boundaries or {})
        self.features = features
        self.labels = labels
        self.parameters = dict(parameters or {})
        self.uuid = str(uuid) if uuid is not None else str(uuid_module.uuid4())
        self.diagram = diagram

    @property
    def n_exposures(self):
        return self.crmask.shape[0]

    @property
    def shape(self):
        return self.mediancr.shape

    @property
    def seed(self):
        return self.parameters.get("seed")

    def __repr__(self):
        return (f"<CRMasks {self.n_exposures} x {self.shape}: MEDIANCR "
                f"{int(self.mediancr.sum())} px, MEANCRT {int(self.meancrt.sum())} px, "
                f"CRMASK {[int(m.sum()) for m in self.crmask]} px, uuid {self.uuid}>")

    def summary(self):
        """Counts per mask: flagged pixels and CR features (8-connected groups).

        Returns
        -------
        dict
            ``{'MEDIANCR': (pixels, features), 'MEANCRT': ..., 'CRMASK1': ..., 'MEANCR': ...}``
        """
        out = {}
        planes = [("MEDIANCR", self.mediancr), ("MEANCRT", self.meancrt)]
        planes += [(f"CRMASK{i + 1}", m) for i, m in enumerate(self.crmask)]
        planes.append(("MEANCR", self.meancr))
        for name, mask in planes:
            out[name] = (int(mask.sum()), int(ndimage.label(mask, EIGHT_CONNECTED)[1]))
        return out

    def check_compatible(self, n_exposures, shape):
        """Raise ValueError unless these masks fit ``n_exposures`` images of ``shape``."""
        if self.n_exposures != n_exposures or self.shape != tuple(shape):
            raise ValueError(f"the masks are for {self.n_exposures} exposures of shape "
                             f"{self.shape}, but the inputs are {n_exposures} of shape "
                             f"{tuple(shape)}; use the masks computed for these inputs.")

    def write(self, path, *, overwrite=False):
        """Write the masks to a numina-compatible ``crmasks.fits``.

        See `crcombine.io.write_crmasks`.
        """
        from .io import write_crmasks
        write_crmasks(self, path, overwrite=overwrite)

    @classmethod
    def read(cls, path):
        """Read masks written by crcombine or by numina-crmasks.

        See `crcombine.io.read_crmasks`.
        """
        from .io import read_crmasks
        return read_crmasks(path)


def label_features(mask, distance, seeds):
    """Label the 8-connected CR features of ``mask`` and rank them.

    Parameters
    ----------
    mask : `~numpy.ndarray` (ny, nx), bool
    seeds : `~numpy.ndarray` (ny, nx), bool
        The pixels flagged before dilation (counted per feature).
    distance : `~numpy.ndarray` (ny, nx), float
        ``y - B(x)`` (electrons); its maximum over a feature ranks it.

    Returns
    -------
    labels : `~numpy.ndarray` (ny, nx), int32
    table : `~astropy.table.Table`
        One row per feature, sorted by decreasing ``max_distance``.
    """
    labels, n = ndimage.label(mask, EIGHT_CONNECTED)
    index = np.arange(1, n + 1)
    # reductions over the flagged pixels only (ndimage's label reductions scan the image)
    ys, xs = np.nonzero(labels)
    lab = labels[ys, xs]
    npix = np.bincount(lab, minlength=n + 1)[1:]
    nseed = np.bincount(lab, weights=seeds[ys, xs], minlength=n + 1)[1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        centroids = np.c_[np.bincount(lab, weights=ys, minlength=n + 1)[1:] / npix,
                          np.bincount(lab, weights=xs, minlength=n + 1)[1:] / npix]
    dist = np.full(n + 1, -np.inf)
    np.maximum.at(dist, lab, np.nan_to_num(distance[ys, xs], nan=-np.inf))
    dist = dist[1:]
    order = np.argsort(-np.asarray(dist, dtype=float), kind="stable")
    table = Table({"label": index[order].astype(np.int32),
                   "n_pixels": np.asarray(npix, dtype=np.int64)[order],
                   "n_seeds": np.asarray(nseed, dtype=np.int64)[order],
                   "xcentroid": centroids[order, 1], "ycentroid": centroids[order, 0],
                   "max_distance": np.asarray(dist, dtype=float)[order]})
    table["max_distance"].unit = "electron"
    return labels.astype(np.int32, copy=False), table


class CRMaskBuilder:
    """Find cosmic rays in N >= 3 equivalent exposures with the M.M.Cosmic method.

    The Median-Minimum diagram plots, for every pixel, the minimum signal
    ``x`` against ``y = median - x``.  A detection boundary ``B(x)`` derived
    from simulations of the same stack without cosmic rays separates pixels
    whose median is contaminated (coincident hits) from the rest; the same is
    done for the mean and for each single exposure (ALGORITHM.md §2-§3).

    Parameters
    ----------
    gain : float, `~numpy.ndarray` or `~astropy.units.Quantity`
        Electrons per data unit (e-/ADU).  A plain number is in electrons per
        data unit; an array must have the image shape.  Must be 1 for data
        in electrons.
    readnoise : float, `~numpy.ndarray` or `~astropy.units.Quantity`
        Read noise per pixel.  **A plain number is in electrons** (as in
        `ccdproc.cosmicray_lacosmic`); a Quantity may be in electrons or in the
        data unit (then multiplied by the gain).  Scalar or image-shaped.
    bias : float, `~numpy.ndarray` or `~astropy.units.Quantity`, optional
        Level subtracted before the gain is applied, in the data unit.
        Default is 0.
    flux_factor : None, float, list of float or ``'auto'``, optional
        Relative level ``f_i`` of each exposure; the statistics use
        ``d_i / f_i``.  None means all 1; a number is used for every exposure;
        a list needs one value per exposure; ``'auto'`` estimates them (the
        sigma-clipped median of ``d_i / median2d`` over pixels with a
        signal-to-noise ratio above 20).
    flux_factor_regions : list of [xmin, xmax, ymin, ymax], optional
        With ``flux_factor='auto'``: estimate the factors from the pixels
        inside these regions only (FITS pixels: 1-based, inclusive, as
        numina's ``flux_factor_regions``), e.g. to leave out a variable
        source or a part of the detector with another illumination.
        Default None: the whole image.
    cr_coincidences : int, optional
        ``n_c``, the number of hit exposures sought: the minimum signal is
        the mean of the ``N - n_c`` lowest values.  Default
        ``max(2, ceil(N/2))``.
    nsimulations : int, optional
        Simulated stacks. Default is 10.  About ``1 / nsimulations`` false
        seeds per occupied diagram column are expected.
    boundary : {'spline', 'piecewise'}, optional
        How the median boundary is made.  Default is ``'spline'``.
    knots : int, optional
        Total spline knots (ends included).  Default is 3.
    niter_boundary_extension : int, optional
        Upward-extension iterations.  Default is 3.
    weight_boundary_extension : float, optional
        Base ``W`` of the extension weights.  Default is 10.
    fixed_points : list of [x, y] or [x, y, w], optional
        Points (electrons) the median boundary must pass near.
    piecewise_points : list of [x, y], optional
        With ``boundary='piecewise'``: the median boundary (electrons).
    threshold : float or `~astropy.units.Quantity`, optional
        Minimum ``y`` (electrons) to flag. Default is 0.
    minimum_max2d_rnoise : float, optional
        Flag only where the maximum exceeds this many times the read noise.
        Default is 5.
    dilation : int, optional
        3x3 binary dilations of each mask.  Default is 1.
    seed : int, optional
        Seed of the simulations; None draws one, which is recorded.
    nbinom_shape : float or ``'auto'``, optional
        Shape kappa of a negative binomial (variance ``lambda + lambda^2 /
        kappa``) instead of Poisson draws, for exposures that are not exactly
        equivalent.  ``'auto'`` measures it from the data (the fit of
        ``estimate_overdispersion``; default) over well-exposed pixels where
        the minimum image is flat (500 of them and 0.1 % at least), where the
        exposures differ by a fraction of the level (flat-field drifts, sky
        changes); near structure they differ by a fraction of the gradient,
        which ``mm_scale`` allows for.  None draws Poisson values (numina's
        default).
    ydiag_max : float, optional
        Upper limit of the diagram's ``y`` in units of the noise at ``x``;
        default from simulations over the range of levels.
    min_column_count : int, optional
        Simulated pixels a diagram column needs to give a boundary point.
        Default is 100.
    premask : bool, optional
        Exclude, in each exposure, the pixels `~crcombine.make_mask` finds
        (non-finite, outside ``DATASEC``/``TRIMSEC``, saturated and their
        neighbours).  Default is False (the input masks and non-finite pixels
        are always excluded).
    saturation : ``'header'``, ``'auto'``, float or None, optional
        Saturation level for ``premask`` (see `~crcombine.make_mask`).
        Default is ``'header'`` (the ``SATURATE`` keyword).
    threads : int, optional
        Threads running the simulations and the bands of rows; default the
        number of CPUs.  The masks do not depend on it.
    mem_limit : float or ``'auto'``, optional
        Bytes crcombine may allocate in every step (the inputs you hold and
        the interpreter are not counted).  The image is then processed in
        bands of rows, file inputs are opened once and read in sections, and
        the combinations of `~crcombine.CRCombiner` are bounded too.
        ``'auto'`` is 400 MB, or the least the stack needs.  Default None:
        the stack is read whole into memory.  The masks do not depend on it.
        See :doc:`/large_stacks`.
    align : {None, 'shift', 'interp', 'adaptive', 'exact'}, optional
        Bring drifting or dithered exposures onto the first exposure's grid
        before the detection (see `~crcombine.align_exposures`): whole-pixel
        shifts, or resampling onto its WCS with `reproject`.  The masks and
        combinations are then on that grid.  Default None (the exposures are
        already aligned).
    offsets : array (N, 2), ``'xcorr'`` or ``'wcs'``, optional
        With ``align='shift'``: the ``(dy, dx)`` of each exposure, or how to
        measure them: by cross-correlation of the sources (``'xcorr'``, the
        default) or from the WCS (``'wcs'``).  The offsets used are recorded
        in the masks.
    grid : {'reference', 'union'}, optional
        With ``align``: the first exposure's grid (default; what falls
        outside it is dropped) or that grid extended to hold every pixel of
        every exposure (``'union'``), with the first exposure's WCS moved to
        its origin.  The masks and combinations are on it.  Needs a scalar
        gain, read noise and bias when the grid differs from the exposures'
        shape.
    scheduler : str or ``dask.distributed.Client``, optional
        Run the bands of rows as dask tasks with this scheduler
        (``'threads'``, ``'processes'``, ``'synchronous'`` or a client of a
        cluster).  Default None: locally, on ``threads`` threads (dask array
        inputs use dask's default scheduler).  Not a detection parameter: it
        is not recorded in the masks.
    false_alarm : float, optional
        Expected number of false seeds per image (a per-pixel probability
        ``p`` is ``false_alarm = p * npix``).  When given, each boundary is the
        ``1 - false_alarm / npix`` quantile of its simulated null distribution
        in every column (the tail extrapolated where the simulations are too
        few), a step function without the spline fit or the upward extension,
        and the simulations draw each pixel at the median with its own noise
        filtered out (``crcombine._simulate.denoised_signal``: a local Wiener
        filter, Lee 1980), so that the count of false seeds of MEDIANCR on
        CR-free data follows it: measured 0.82 of the setting in total over
        six stacks (``benchmarks/false_alarm.py``; drawn at the noisy
        median, 0.10-0.27), never above it beyond Poisson error.  A faint
        sky loses seeds to ``minimum_max2d_rnoise``, and the few steps of a
        bright flat sky's boundary carry a large Monte Carlo scatter.
        MEANCRT has its own boundary at the same rate.  Default None: numina's
        implicit criterion (about one false seed per occupied column per
        ``nsimulations``, then made more conservative by the extension).
    mm_scale : float or ``'auto'``, optional
        Derivative term of the MM detection: a pixel is a seed of MEDIANCR
        (MEANCRT, MEANCR) when ``y - B(x) > mm_scale * dx``, ``dx`` being the
        largest difference between a pixel of the minimum image and its 4
        neighbours in excess of twice its noise (zero on flat areas).  It
        absorbs the seeing changes and drifts that make exposures disagree
        near stars and lines, as the derivative rule of JWST
        ``outlier_detection`` and AstroDrizzle ``driz_cr`` (ALGORITHM.md §8)
        does for single exposures.  ``'auto'`` (default) measures it: 2.5
        times the 0.99 quantile of ``(y - B(x)) / dx`` over well-exposed
        structure (``dx`` above 20 times the noise), measured again without
        the sharp seeds the first value gives (coincident hits on stars), the
        quantile raised to ``1 - f / 10`` when a fraction ``f`` of those
        pixels lies above the boundary (slit spectra); 0 for equivalent
        exposures.  0 is numina's rule (the boundary alone).  The value used
        is recorded in the masks.
    crmask_method : {'noise', 'mm'}, optional
        How the per-exposure masks CRMASK1..N are made.  ``'noise'``
        (default): each flux-scaled exposure ``d_i`` is compared with the
        ``mediancr`` image ``B``, flagged where ``d_i - B > snr * sigma +
        scale_i * dB`` (seeds; then their neighbours with the second pair of
        values), ``sigma`` the noise of ``d_i - B`` (Poisson and read noise at
        ``B``, and the median's own noise) and ``dB`` the largest difference
        between a pixel of ``B`` and its 4 neighbours (JWST
        ``outlier_detection``, IRAF ``crreject``; ALGORITHM.md §8), then
        dilated.  ``'mm'``: the simulated single-exposure boundary, within
        MEANCRT (numina).
    crmask_snr : pair of float, optional
        Seed and neighbour thresholds of ``'noise'``, in sigma.  Default is
        (5.0, 4.0) (JWST).
    crmask_scale : pair of float, optional
        Largest seed and neighbour derivative scales of ``'noise'``.  Default
        (1.2, 0.7) (JWST).  Each exposure's seed scale ``scale_i`` is
        measured: 2.5 times the 0.99 quantile of ``(d_i - B - 3 sigma) / dB``
        over well-exposed structure (``dB > 20 sigma``), the quantile lowered
        by the fraction of flat pixels flagged (the cosmic rays in the tail),
        at most ``crmask_scale[0]``; the neighbour scale keeps the ratio.
        Equivalent exposures get about 0, so every CR near a star is found;
        an exposure with sharper seeing stands above ``B`` at every star
        core and gets a larger scale than the others.
    psf_matching : bool, optional
        With ``crmask_method='noise'`` (default True): each exposure is also
        compared with its PSF-matched prediction ``P_i``, the mean of the
        other exposures without their flagged pixels convolved with a
        ``psf_kernel_size`` square kernel fitted to exposure ``i`` over the
        whole image (linear least squares, Alard & Lupton 1998; Bramich 2008;
        a constant for the background).  Seeing changes and drifts make the
        exposures differ by up to 3x on star wings, which the derivative
        term must allow for, hiding the CRs there; the prediction takes them
        out.  A pixel is also flagged where ``d_i - P_i > snr[0] * sigma_P +
        a_i * dP + b_i * P`` and ``d_i - B > snr[1] * sigma`` on structured
        pixels (``dB > 5`` sigma), ``sigma_P`` the noise of the difference
        (the prediction's included) and ``a_i``, ``b_i`` measured as
        ``crmask_scale`` is (2.5 x the 0.99 quantile of what is left, over
        the gradient and, on pixels brighter than 100 sigma, over the
        level).  ``meancr``/``meancr2`` then replace each masked value with
        its prediction instead of leaving the exposure out, so that masking
        an exposure of another seeing biases nothing.  The kernels are
        recorded (``psf_kernels``: (N, K^2 + 1), the kernel row by row and
        the constant; ``psf_allowance``: (N, 2), ``a_i, b_i``) and used
        again by the combinations.
    psf_kernel_size : int, optional
        Side of the kernels, odd, 3 to 15 pixels.  Default 5: enough for
        seeing changes of 10-20 % and drifts of a fraction of a pixel on a
        PSF of 2-5 pixels FWHM; use about the FWHM for broader PSFs.
    lacosmic : bool or dict, optional
        Auxiliary single-exposure detector, as numina's ``mm_lacosmic``:
        what L.A.Cosmic (van Dokkum 2001, PASP 113, 1420) finds in each
        exposure is OR-ed into its CRMASK, dilated like it, before MEANCR and
        the PSF-matched predictions.  It runs
        `ccdproc.cosmicray_lacosmic` (astroscrappy) on the exposure in
        electrons with ``gain=1``, the read noise **in electrons**
        (``readnoise``; an image's median), ``gain_apply=False`` and no
        saturation level, and uses only its mask.  A dict gives its other
        keyword arguments (``{'sigclip': 5.0, 'objlim': 5.0}``).  Each
        exposure is searched whole, one at a time, whatever ``mem_limit``.
        Default False.  It finds hits the stack comparison cannot (where
        the other exposures are masked or the stack is short) at the cost of
        its own false flags on sharp stars; MEDIANCR and MEANCRT do not
        change.

    Raises
    ------
    TypeError
        Unknown parameter or wrong type.
    ValueError
        A value outside its range (gain <= 0, read noise < 0, ...), or a
        ``mem_limit`` too small for the stack (raised by `build`, with the
        least workable value).

    Examples
    --------
    >>> import numpy as np
    >>> from astropy.nddata import CCDData
    >>> from crcombine import CRMaskBuilder
    >>> rng = np.random.default_rng(0)
    >>> ccds = [CCDData(rng.poisson(200, (64, 64)).astype(float), unit="electron")
    ...         for _ in range(3)]
    >>> ccds[0].data[10, 10] += 5000; ccds[1].data[10, 10] += 4000  # a coincident hit
    >>> masks = CRMaskBuilder(gain=1, readnoise=5, seed=1).build(ccds)
    >>> bool(masks.mediancr[10, 10]), masks.crmask[:, 10, 10].tolist()
    (True, [True, True, False])
    """

    def __init__(self, *, gain, readnoise, bias=0.0, scheduler=None, **params):
        from ._parameters import check_detector_value
        self.gain = check_detector_value("gain", gain, positive=True)
        self.readnoise = check_detector_value("readnoise", readnoise, non_negative=True)
        self.bias = check_detector_value("bias", bias)
        self.params = validate_parameters(**params)
        #: The dask scheduler of the tiles (see the class docstring), or None.
        self.scheduler = scheduler
        #: ``progress(step, done, total)`` called as the work advances, or None
        #: (``step`` is ``'simulations'``, ``'statistics'``, ``'masks'``, ...).
        self.progress = None

    @classmethod
    def for_masks(cls, masks, **params):
        """A builder with the gain, read noise and bias recorded in ``masks``.

        ``params`` (e.g. ``mem_limit``, ``scheduler``) are passed to the builder.

        Raises
        ------
        ValueError
            The masks record no scalar gain and read noise (e.g. a file
            written by numina): pass a builder explicitly.
        """
        p = masks.parameters
        if p.get("gain") is None or p.get("readnoise") is None:
            raise ValueError("these masks do not record a scalar gain and read noise (e.g. a "
                             "file written by numina); give builder=CRMaskBuilder(gain=..., "
                             "readnoise=..., bias=...).")
        if p.get("align") is not None:  # the same alignment, with the offsets recorded
            params = {"align": p["align"], "offsets": p.get("offsets"),
                      "grid": p.get("grid") or "reference", **params}
            if params["align"] is None:
                params.pop("offsets")
                params.pop("grid")
        return cls(gain=p["gain"], readnoise=p["readnoise"], bias=p.get("bias") or 0.0,
                   **params)

    def __repr__(self):
        shown = {k: v for k, v in self.params.items() if v is not None}
        return f"CRMaskBuilder(gain={self.gain!r}, readnoise={self.readnoise!r}, " \
               f"bias={self.bias!r}, {', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    def stack(self, ccds, *, hdu=None, hdu_mask=None, unit=None):
        """Read and check the inputs (pre-masked with ``premask``); the stack in electrons.

        Without ``mem_limit`` the stack is read whole into memory
        (`~crcombine._stack.ExposureStack`); with it, file inputs are opened
        once and read in row bands (`~crcombine._sources.FileStack`) and
        `~astropy.nddata.CCDData` inputs are converted band by band
        (`~crcombine._sources.CCDStack`); with ``align`` too, the exposures
        are aligned one at a time into temporary files read in bands.  A dask
        array (N, ny, nx) becomes a `~crcombine._sources.DaskStack` (``unit``
        is then required).
        """
        from . import _sources
        detector = {"gain": self.gain, "readnoise": self.readnoise, "bias": self.bias}
        if type(ccds).__module__.split(".")[0] == "dask":
            if self.params["premask"]:
                raise ValueError("premask=True is not available for dask array inputs; apply "
                                 "crcombine.make_mask to each exposure and set the masked "
                                 "pixels to NaN.")
            return _sources.DaskStack(ccds, unit=unit, **detector)
        lazy = self.params["mem_limit"] is not None
        align = self.params["align"]
        if lazy and align is not None:  # aligned one exposure at a time, through files
            if _are_file_names(ccds):
                exposures = _sources.LazyExposures(
                    _file_names(ccds), hdu=hdu, hdu_mask=hdu_mask, unit=unit,
                    premask=self.params["premask"], saturation=self.params["saturation"])
                names = [os.path.basename(p) for p in exposures.paths]
            else:
                exposures = self._premasked(read_exposures(ccds, hdu=hdu, hdu_mask=hdu_mask,
                                                           unit=unit))
                names = [str(c.meta.get("CRCFILE", f"exposure{i}"))
                         for i, c in enumerate(exposures)]
            return _sources.aligned_file_stack(exposures, align=align,
                                               offsets=self.params["offsets"],
                                               grid=self.params["grid"], names=names,
                                               **detector)
        if lazy and _are_file_names(ccds):
            return _sources.FileStack(_file_names(ccds), hdu=hdu, hdu_mask=hdu_mask, unit=unit,
                                      premask=self.params["premask"],
                                      saturation=self.params["saturation"], **detector)
        ccds = self._premasked(read_exposures(ccds, hdu=hdu, hdu_mask=hdu_mask, unit=unit))
        offsets = None
        if align is not None:
            from ._align import align_exposures
            ccds, offsets = align_exposures(ccds, method=align, offsets=self.params["offsets"],
                                            grid=self.params["grid"])
            log.info("aligned (%s) with offsets (dy, dx) %s", align,
                     np.round(np.c_[offsets["dy"], offsets["dx"]], 2).tolist())
        stack = (_sources.CCDStack(ccds, **detector) if lazy
                 else ExposureStack.from_ccds(ccds, **detector))
        stack.offsets = offsets
        return stack

    def _premasked(self, ccds):
        """The exposures with `~crcombine.make_mask` as their masks when ``premask``."""
        if not self.params["premask"]:
            return ccds
        from ._premask import make_mask
        return [CCDData(c.data, unit=c.unit, meta=c.meta, wcs=c.wcs, uncertainty=c.uncertainty,
                        mask=make_mask(c, saturation=self.params["saturation"])) for c in ccds]

    def build(self, ccds, *, hdu=None, hdu_mask=None, unit=None):
        """Compute the cosmic-ray masks of a list of equivalent exposures.

        Parameters
        ----------
        ccds : list of `~astropy.nddata.CCDData` or file names, or an image collection or dask array
            N >= 3 exposures of one shape and unit.  Their masks and
            non-finite pixels never contribute.  They are not modified.  A
            `ccdproc.ImageFileCollection` gives its files; a dask array has
            shape (N, ny, nx), NaN where not valid, and needs ``unit``.
        hdu, hdu_mask, unit
            For file inputs, as in `~crcombine.read_exposures`.

        Returns
        -------
        CRMasks

        Raises
        ------
        ValueError, TypeError, astropy.units.UnitsError, FileNotFoundError
            Bad inputs; see `~crcombine.read_exposures` and the class docstring.
        """
        return self.build_from_stack(self.stack(ccds, hdu=hdu, hdu_mask=hdu_mask, unit=unit))

    def build_from_stack(self, stack):
        """As `build`, for a stack already read (`stack`): the detection, tile by tile.

        The steps (ALGORITHM.md §2-§4) run over bands of rows planned from
        ``mem_limit`` (one band without it), locally or as dask tasks (see
        `crcombine._tiles`); the result does not depend on the bands.
        """
        p = self.params
        n, shape = stack.n_exposures, stack.shape
        nc = resolve_cr_coincidences(p["cr_coincidences"], n)
        seed = p["seed"] if p["seed"] is not None else int(np.random.SeedSequence().entropy)
        threads = p["threads"] or os.cpu_count() or 1
        stride = _tiles.sample_stride(n, shape)
        halo = _tiles.crmask_halo(p["crmask_method"], p["dilation"],
                                  p["psf_kernel_size"] if p["psf_matching"] else None)
        if p["false_alarm"] is not None:          # the denoised signal of the simulations
            halo = max(halo, DENOISE_SIZE // 2)
        tiles = _tiles.plan_tiles(n, shape, mem_limit=p["mem_limit"], halo=halo,
                                  threads=threads)
        dask_path = _tiles.uses_dask(stack, self.scheduler)
        run = functools.partial(_tiles.run_tiles, stack, tiles, scheduler=self.scheduler,
                                workers=threads)
        log.info("%d exposures of %s in %d tile(s) of up to %d rows%s", n, shape, len(tiles),
                 tiles[0][1] - tiles[0][0], " (dask)" if dask_path else "")

        # 1. flux factors
        flux_factor, flux_err = self._flux_factor(stack, run, stride)
        log.info("n_c = %d; flux factors %s; seed %d", nc, np.round(flux_factor, 5).tolist(),
                 seed)

        # 2. the range of the diagram and the over-dispersion
        kappa = p["nbinom_shape"]
        ranges = run(_tiles.range_step, halo=1, flux_factor=flux_factor, n_coincidences=nc,
                     stride=stride, overdispersion=kappa == "auto",
                     tolerance=p["mm_scale"] == "auto",
                     progress=self._stage("statistics"))
        valid = sum(r["valid_per_exposure"] for r in ranges)
        if not valid.all():
            raise ValueError(f"exposure {int(np.argmin(valid))} has no valid pixel (all masked "
                             "or not finite); remove it from the inputs.")
        if kappa == "auto":
            joined = [np.concatenate(a) for a in zip(*(r["overdispersion"] for r in ranges))]
            kappa = overdispersion_from_samples(*joined, n_exposures=n)
            log.info("over-dispersion: %s", "none measured (Poisson)" if kappa is None else
                     f"negative binomial shape {kappa:.4g} (extra rms {kappa ** -0.5:.2%})")
        n_valid = sum(r["n_valid"] for r in ranges)
        rn_all = stack.readnoise
        grid = diagram_grid(min(r["x_min"] for r in ranges), max(r["x_max"] for r in ranges),
                            flux_factor, rn_all, n_coincidences=nc, seed=seed,
                            nbinom_shape=kappa, ydiag_max=p["ydiag_max"],
                            statistics=STATISTICS if p["crmask_method"] == "mm"
                            else ("median", "mean"))

        # 3. simulations and histograms
        tick = None
        if self.progress is not None and not dask_path:
            total = p["nsimulations"] * sum(-(-(b - a) // rows_per_block(n, shape[1]))
                                            for a, b in tiles)
            tick = functools.partial(_tick, self.progress, itertools.count(1), total)
        denoise = p["false_alarm"] is not None
        sim, data_hist = run(_tiles.histogram_step, grid=grid, flux_factor=flux_factor,
                             n_coincidences=nc, nsimulations=p["nsimulations"], seed=seed,
                             nbinom_shape=kappa, threads=threads, tick=tick,
                             reduce=_tiles.merge_histograms, workers=1, denoise=denoise,
                             halo=DENOISE_SIZE // 2 if denoise else 0)

        # 4. the detection boundaries
        boundaries = self._boundaries(sim, n, n_valid, kappa)

        # 5. MEDIANCR and MEANCRT: seeds per tile, dilated on the whole image
        tolerance = p["mm_scale"]
        if tolerance == "auto":
            samples = {k: np.concatenate([r["tolerance"][k] for r in ranges])
                       for k in ranges[0]["tolerance"]}
            with np.errstate(invalid="ignore"):
                samples["ratio"] = ((samples["y"] - boundaries["median"](samples["x"]))
                                    / samples["structure"])
            tolerance = tolerance_from_samples(samples, shape[1])
            log.info("derivative term of the MM boundary: %.3g x the structure of the "
                     "minimum image", tolerance)
        seeds_median = np.empty(shape, dtype=bool)
        seeds_mean = np.empty(shape, dtype=bool)
        distance = np.empty(shape, dtype=np.float32)

        def put_seeds(index, result):
            a, b = tiles[index]
            seeds_median[a:b], seeds_mean[a:b], distance[a:b] = result

        run(_tiles.seeds_step, halo=1, flux_factor=flux_factor, n_coincidences=nc,
            boundaries=boundaries, threshold=p["threshold"], tolerance=tolerance,
            minimum_max2d_rnoise=p["minimum_max2d_rnoise"], progress=self._stage("seeds"),
            collect=put_seeds)
        mediancr = dilate(seeds_median, p["dilation"])
        meancrt = dilate(seeds_mean, p["dilation"])

        # 6. the per-exposure masks and MEANCR
        scale = p["crmask_scale"]
        background = None
        if p["crmask_method"] == "noise":
            results = run(_tiles.mismatch_step, halo=2, planes=(mediancr,),
                          flux_factor=flux_factor, n_coincidences=nc, stride=stride,
                          snr=p["crmask_snr"], scale=scale, progress=self._stage("mismatch"))
            tails, counts, differences = zip(*results)
            hit_fraction = hit_fraction_from_counts(sum(counts))
            scale = adaptive_scale(scale, mismatch_scale(np.concatenate(tails, axis=1),
                                                         contamination=hit_fraction,
                                                         spread=True))
            background = background_offsets(np.concatenate(differences, axis=1))
            log.info("derivative scales of the exposures (seed, neighbour): %s; background "
                     "offsets %s e-", np.round(scale, 3).tolist(),
                     np.round(background, 2).tolist())
        psf = None
        if p["crmask_method"] == "noise" and p["psf_matching"]:
            psf = self._psf_matching(run, mediancr, flux_factor=flux_factor,
                                     n_coincidences=nc, scale=scale, background=background,
                                     stride=stride, hit_fraction=hit_fraction)
        auxiliary = self._lacosmic(stack) if p["lacosmic"] is not False else None
        crmask = np.empty((n,) + shape, dtype=bool)
        meancr = np.empty(shape, dtype=bool)

        def put_masks(index, result):
            a, b = tiles[index]
            crmask[:, a:b], meancr[a:b] = result

        planes = (mediancr, meancrt) + (() if auxiliary is None else (auxiliary,))
        run(_tiles.crmask_step, halo=halo, planes=planes, flux_factor=flux_factor,
            n_coincidences=nc, method=p["crmask_method"], snr=p["crmask_snr"], scale=scale,
            threshold=p["threshold"], dilation=p["dilation"], boundaries=boundaries,
            minimum_max2d_rnoise=p["minimum_max2d_rnoise"], tolerance=tolerance,
            background=background, psf=psf, progress=self._stage("masks"),
            collect=put_masks)

        labels, features = label_features(mediancr, distance, seeds_median)
        params = dict(p)
        offsets = getattr(stack, "offsets", None)
        if offsets is not None:
            params["offsets"] = np.c_[offsets["dy"], offsets["dx"]].tolist()
        if psf is not None:
            params.update(psf_kernels=psf["kernels"].tolist(),
                          psf_allowance=np.asarray(psf["allowance"]).tolist(),
                          psf_reverse_allowance=np.asarray(psf["reverse_allowance"]).tolist())
            if "pair_kernels" in psf:
                params["psf_pair_kernels"] = psf["pair_kernels"].tolist()
        params.update(seed=seed, cr_coincidences=nc, nbinom_shape=kappa, mm_scale=tolerance,
                      gain=_scalar_or_none(stack.gain), readnoise=_scalar_or_none(rn_all),
                      bias=_scalar_or_none(stack.bias), unit=stack.unit.to_string())
        masks = CRMasks(mediancr=mediancr, meancrt=meancrt, crmask=crmask, meancr=meancr,
                        flux_factor=flux_factor, flux_factor_uncertainty=flux_err,
                        boundaries=boundaries, features=features, labels=labels,
                        parameters=params, diagram={"simulated": sim, "data": data_hist})
        log.info("MEDIANCR: %d seeds, %d px after dilation; MEANCRT %d px; CRMASK %s px",
                 int(seeds_median.sum()), int(mediancr.sum()), int(meancrt.sum()),
                 [int(m.sum()) for m in crmask])
        return masks

    def _lacosmic(self, stack):
        """L.A.Cosmic's flags of every exposure, (N, ny, nx) bool (``lacosmic``).

        Each exposure is read and searched whole, one at a time (L.A.Cosmic's
        iterations reach further than a halo): besides the masks, one
        exposure and astroscrappy's work arrays (about ten times an exposure
        in float32) are held.  An image-shaped read noise is represented by
        its median.
        """
        kwargs = {} if self.params["lacosmic"] is True else self.params["lacosmic"]
        n, shape = stack.n_exposures, stack.shape
        readnoise = float(np.median(stack.readnoise))
        flags = np.empty((n,) + shape, dtype=bool)
        for i in range(n):
            flags[i] = lacosmic_flags(stack.read_exposure(i), readnoise, **kwargs)
            if self.progress is not None:
                self.progress("lacosmic", i + 1, n)
        log.info("L.A.Cosmic (auxiliary): %s px flagged", [int(f.sum()) for f in flags])
        return flags

    def _psf_matching(self, run, mediancr, *, flux_factor, n_coincidences, scale, background,
                      stride, hit_fraction):
        """The kernels and allowances of the PSF-matched comparison (`crcombine._psfmatch`).

        Returns a dict (``kernels`` (N, K), ``size``, ``allowance`` (N, 2) and
        ``ratio``) for `crcombine._tiles.crmask_step`, or None when the
        stack has too few pixels to fit the kernels.
        """
        p = self.params
        size = p["psf_kernel_size"]
        common = dict(flux_factor=flux_factor, n_coincidences=n_coincidences,
                      snr=p["crmask_snr"], scale=scale, threshold=p["threshold"],
                      background=background, dilation=p["dilation"], size=size, stride=stride)
        halo = _tiles.psf_halo(p["dilation"], size)
        n = len(flux_factor)
        pairs = n <= MAX_PAIR_EXPOSURES
        ata, atb, counts = run(_tiles.kernel_step, halo=halo, planes=(mediancr,),
                               reduce=_tiles.add_equations, progress=self._stage("kernels"),
                               pairs=pairs, **common)
        kernels = solve_kernels(ata, atb, counts, size)
        if kernels is None:
            log.info("PSF matching: too few pixels to fit %d x %d kernels (%s); the "
                     "comparison with the reference alone is used", size, size,
                     counts.tolist())
            return None
        psf = {"kernels": kernels[:n], "reverse_kernels": kernels[n:2 * n], "size": size}
        if pairs:
            pair_kernels = np.zeros((n, n, kernels.shape[1]))
            rest = iter(kernels[2 * n:])
            for i in range(n):
                for j in range(n):
                    if j != i:
                        pair_kernels[i, j] = next(rest)
            psf["pair_kernels"] = pair_kernels
        parts = run(_tiles.psf_tails_step, halo=halo, planes=(mediancr,), psf=psf,
                    progress=self._stage("matched tails"), **common)
        cap = p["crmask_scale"][0]

        def allowances(gradient_parts, level_parts):
            gradient = _tiles.join_tails(gradient_parts)
            level = [np.concatenate(x) for x in zip(*level_parts)]
            return np.c_[np.minimum(mismatch_scale(gradient, contamination=hit_fraction), cap),
                         level_allowance(level)]

        allowance = allowances([x[0] for x in parts], [x[1] for x in parts])
        psf["reverse_allowance"] = allowances([x[2] for x in parts], [x[3] for x in parts])
        log.info("PSF matching: %d x %d kernels (sum %s); allowances (gradient, level) %s; "
                 "the other way %s", size, size,
                 np.round(kernels[:n, :-1].sum(axis=1), 4).tolist(),
                 np.round(allowance, 4).tolist(), np.round(psf["reverse_allowance"], 4).tolist())
        # a kernel that cannot match (a drift beyond its reach, a PSF broader than it)
        # predicts no better than the reference does: then it is not used at all
        if np.any(allowance[:, 0] >= cap) or np.any(allowance[:, 0] > np.asarray(scale)[:, 0]):
            log.info("PSF matching not used: the predictions of some exposure stand further "
                     "from it than the reference does (gradient allowances %s, reference "
                     "scales %s); a larger psf_kernel_size or align= may help",
                     np.round(allowance[:, 0], 3).tolist(),
                     np.round(np.asarray(scale)[:, 0], 3).tolist())
            return None
        psf.update(allowance=allowance, ratio=p["crmask_scale"][1] / cap if cap else 0.0)
        return psf

    def _stage(self, name):
        """A ``progress(done, total)`` for one step, or None."""
        if self.progress is None:
            return None
        return functools.partial(self.progress, name)

    def _flux_factor(self, stack, run, stride):
        """Flux factors (N,) and their uncertainties (or None) for this stack."""
        n = stack.n_exposures
        ff = self.params["flux_factor"]
        if ff is None:
            return np.ones(n), None
        if isinstance(ff, str):  # 'auto'
            planes = ()
            if self.params["flux_factor_regions"] is not None:
                region = region_mask(self.params["flux_factor_regions"], stack.shape)
                planes = (region,)
                stride = _tiles.sample_stride(n, (1, int(region.sum())))
            samples = run(_tiles.levels_step, planes=planes, stride=stride,
                          progress=self._stage("levels"))
            values = np.concatenate([v for v, _ in samples], axis=1)
            median = np.concatenate([m for _, m in samples])
            return flux_factors_from_samples(values, median)
        ff = np.asarray(ff, dtype=float)
        if ff.ndim == 0:
            return np.full(n, float(ff)), None
        if ff.size != n:
            raise ValueError(f"flux_factor has {ff.size} values but there are {n} exposures; "
                             "give one per exposure, a single number, None or 'auto'.")
        return ff, None

    def resolve_flux_factor(self, stack):
        """Flux factors (N,) and their uncertainties (or None) for this stack."""
        n, shape = stack.n_exposures, stack.shape
        threads = self.params["threads"] or os.cpu_count() or 1
        tiles = _tiles.plan_tiles(n, shape, mem_limit=self.params["mem_limit"], threads=threads)
        run = functools.partial(_tiles.run_tiles, stack, tiles, scheduler=self.scheduler,
                                workers=threads)
        return self._flux_factor(stack, run, _tiles.sample_stride(n, shape))

    def _boundaries(self, sim, n, n_valid, kappa):
        """The median, mean and single-exposure `DetectionBoundary` from the simulations."""
        p = self.params
        boundaries = {}
        for stat in sim.counts:
            if stat == "median" and p["boundary"] == "piecewise":
                boundaries[stat] = DetectionBoundary.piecewise(p["piecewise_points"])
                continue
            if p["false_alarm"] is not None:
                per = n_valid * (n if stat == "single" else 1)
                edges, by, _ = quantile_points(sim.counts[stat], sim.x_edges, sim.ymax[stat],
                                               min_count=p["min_column_count"],
                                               probability=p["false_alarm"] / max(per, 1))
                boundaries[stat] = DetectionBoundary.steps(edges, by, noise_scale=sim.noise_scale,
                                                           kappa=kappa)
                continue
            bx, by, counts = boundary_points(sim.counts[stat], sim.x_edges, sim.ymax[stat],
                                             min_count=p["min_column_count"])
            boundaries[stat] = DetectionBoundary.fit(
                bx, by, knots=p["knots"], niter=p["niter_boundary_extension"],
                weight=p["weight_boundary_extension"],
                fixed_points=p["fixed_points"] if stat == "median" else None,
                noise_scale=sim.noise_scale, kappa=kappa,
                monotone_from=bx[np.argmax(counts)] if counts.size else None)
        return boundaries


def _tick(progress, counter, total):
    progress("simulations", next(counter), total)


def _file_names(inputs):
    return list(collection_files(inputs))


def _are_file_names(inputs):
    """Whether the inputs are all file names (or an ImageFileCollection)."""
    if isinstance(inputs, (str, os.PathLike)) or not hasattr(inputs, "__iter__"):
        return False
    names = _file_names(inputs)
    return bool(names) and all(isinstance(i, (str, os.PathLike)) for i in names)


def _scalar_or_none(value):
    return float(value) if np.ndim(value) == 0 else None
