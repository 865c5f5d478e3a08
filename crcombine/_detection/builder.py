# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""`~crcombine.CRMaskBuilder`: the M.M.Cosmic detection, step by step over bands of rows."""

import functools
import itertools
import logging
import os

import numpy as np

from .._core import tiles as tiling
from .._core.images import dilate
from .._core.validation import check_detector_value, scalar_or_none
from .._inputs.open import open_stack
from . import diagram
from .boundary import detection_boundaries
from .comparison import (adaptive_scale, background_offsets, hit_fraction_from_counts,
                         mismatch_scale, mismatch_step)
from .crmasks import crmask_halo, crmask_step
from .diagram import tolerance_from_samples
from .lacosmic import lacosmic_masks
from .levels import flux_factors, overdispersion_from_samples
from .masks import CRMasks, label_features
from .matched import fit_psf_matching
from .matching import MATCH_HALO, fit_exposure_matching
from .null import exact_null, expected_histograms
from .options import DetectionOptions, resolve_cr_coincidences
from .pairs import build_pair_masks, pair_halo
from .simulate import DENOISE_SIZE, STATISTICS, diagram_grid

log = logging.getLogger(__name__)

_OPTIONS = DetectionOptions
_OPTION_NAMES = frozenset(DetectionOptions.names())

__all__ = ['CRMaskBuilder']


class CRMaskBuilder:
    """Find cosmic rays in N >= 2 equivalent exposures with the M.M.Cosmic method (N >= 3).

    The Median-Minimum diagram plots, for every pixel, the minimum signal
    ``x`` against ``y = median - x``.  A detection boundary ``B(x)`` derived
    from simulations of the same stack without cosmic rays separates pixels
    whose median is contaminated (coincident hits) from the rest; the same is
    done for the mean and for each single exposure (:ref:`algorithm-mm-diagram`).
    Two exposures have no MM diagram: each is compared with its PSF-matched
    prediction from the other (:ref:`algorithm-pairs`).

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
        Simulated stacks. Default is 10.  The boundary is where one of the
        ``nsimulations`` x (pixels of a diagram column) simulated pixels lies
        above it (numina's criterion): about ``1 / nsimulations`` false seeds
        per occupied diagram column are expected.
    null_distribution : {'exact', 'simulated'}, optional
        ``'exact'`` (default): the histogram the simulations give on average,
        from the order statistics of the noise model (:ref:`algorithm-null`):
        the masks do not depend on ``seed``.  ``'simulated'``: numina's
        random draws.  The simulations are also used where the median lies
        among the ``N - n_c`` lowest values; ``NULLDIST`` records which.
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
        Seed of the simulations (``null_distribution='simulated'`` only); None
        draws one, which is recorded.
    nbinom_shape : float or ``'auto'``, optional
        Shape kappa of a negative binomial (variance ``lambda + lambda^2 /
        kappa``) instead of Poisson draws, for exposures that are not exactly
        equivalent.  ``'auto'`` measures it from the data (the fit of
        ``overdispersion_from_samples``; default) over well-exposed pixels where
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
        filtered out (``crcombine._detection.simulate.denoised_signal``: a local Wiener
        filter, Lee 1980), so that the count of false seeds of MEDIANCR on
        CR-free data follows it, never above it beyond Poisson error:
        0.82-0.87 of the setting above the boundary over six stacks, 0.56-0.60
        once the seed guards drop the seeds of single low values
        (``benchmarks/false_alarm.py``; drawn at the noisy median, 0.10-0.27).  A faint
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
        ``outlier_detection`` and AstroDrizzle ``driz_cr`` (:ref:`algorithm-differences`)
        does for single exposures.  ``'auto'`` (default) measures it: 2.5
        times the 0.99 quantile of ``(y - B(x)) / dx`` over well-exposed
        structure (``dx`` above 20 times the noise), measured again without
        the sharp seeds the first value gives (coincident hits on stars), the
        quantile raised to ``1 - f / 10`` when a fraction ``f`` of those
        pixels lies above the boundary (slit spectra); 0 for equivalent
        exposures.  0 is numina's rule (the boundary alone).  The value used
        is recorded in the masks.
    matched_diagram : bool, optional
        Build the MM diagram on the exposures matched to the median's PSF and
        level by a 5 x 5 kernel and a constant fitted over the image
        (:ref:`algorithm-matched-diagram`), so that uniform seeing, drift and
        level changes do not open it near sources.  Default False.  The
        kernels are recorded (``matching_kernels``).
    crmask_method : {'noise', 'mm'}, optional
        How the per-exposure masks CRMASK1..N are made.  ``'noise'``
        (default): each flux-scaled exposure ``d_i`` is compared with the
        ``mediancr`` image ``B``, flagged where ``d_i - B > snr * sigma +
        scale_i * dB`` (seeds; then their neighbours with the second pair of
        values), ``sigma`` the noise of ``d_i - B`` (Poisson and read noise at
        ``B``, and the median's own noise) and ``dB`` the largest difference
        between a pixel of ``B`` and its 4 neighbours (JWST
        ``outlier_detection``, IRAF ``crreject``; :ref:`algorithm-differences`), then
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

    def __init__(self, *, gain, readnoise, bias=0.0, flux_factor=_OPTIONS.flux_factor,
                 flux_factor_regions=_OPTIONS.flux_factor_regions,
                 cr_coincidences=_OPTIONS.cr_coincidences, nsimulations=_OPTIONS.nsimulations,
                 null_distribution=_OPTIONS.null_distribution,
                 boundary=_OPTIONS.boundary, knots=_OPTIONS.knots,
                 niter_boundary_extension=_OPTIONS.niter_boundary_extension,
                 weight_boundary_extension=_OPTIONS.weight_boundary_extension,
                 fixed_points=_OPTIONS.fixed_points, piecewise_points=_OPTIONS.piecewise_points,
                 threshold=_OPTIONS.threshold, minimum_max2d_rnoise=_OPTIONS.minimum_max2d_rnoise,
                 dilation=_OPTIONS.dilation, seed=_OPTIONS.seed,
                 nbinom_shape=_OPTIONS.nbinom_shape, ydiag_max=_OPTIONS.ydiag_max,
                 min_column_count=_OPTIONS.min_column_count, false_alarm=_OPTIONS.false_alarm,
                 mm_scale=_OPTIONS.mm_scale, matched_diagram=_OPTIONS.matched_diagram,
                 premask=_OPTIONS.premask,
                 saturation=_OPTIONS.saturation, threads=_OPTIONS.threads,
                 mem_limit=_OPTIONS.mem_limit, align=_OPTIONS.align, offsets=_OPTIONS.offsets,
                 grid=_OPTIONS.grid, crmask_method=_OPTIONS.crmask_method,
                 crmask_snr=_OPTIONS.crmask_snr, crmask_scale=_OPTIONS.crmask_scale,
                 psf_matching=_OPTIONS.psf_matching, psf_kernel_size=_OPTIONS.psf_kernel_size,
                 lacosmic=_OPTIONS.lacosmic, scheduler=None, **unknown):
        self.gain = check_detector_value("gain", gain, positive=True)
        self.readnoise = check_detector_value("readnoise", readnoise, non_negative=True)
        self.bias = check_detector_value("bias", bias)
        given = {name: value for name, value in locals().items() if name in _OPTION_NAMES}
        #: The validated detection options (`~crcombine._detection.options.DetectionOptions`).
        self.options = DetectionOptions.validated(**given, **unknown)
        #: The dask scheduler of the tiles (see the class docstring), or None.
        self.scheduler = scheduler
        #: ``progress(step, done, total)`` called as the work advances, or None
        #: (``step`` is ``'simulations'``, ``'statistics'``, ``'masks'``, ...).
        self.progress = None

    @property
    def params(self):
        """The detection options as a dict (a copy; see `options`)."""
        return self.options.as_dict()

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

        See `crcombine._inputs.open.open_stack`: in memory without
        ``mem_limit``, in bands of rows with it, a dask array as dask tasks.
        """
        o = self.options
        return open_stack(ccds, gain=self.gain, readnoise=self.readnoise, bias=self.bias,
                          premask=o.premask, saturation=o.saturation, mem_limit=o.mem_limit,
                          align=o.align, offsets=o.offsets, grid=o.grid, hdu=hdu,
                          hdu_mask=hdu_mask, unit=unit)

    def build(self, ccds, *, hdu=None, hdu_mask=None, unit=None):
        """Compute the cosmic-ray masks of a list of equivalent exposures.

        Parameters
        ----------
        ccds : list of `~astropy.nddata.CCDData` or file names, or an image collection or dask array
            N >= 2 exposures of one shape and unit.  Their masks and
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

        The steps (:ref:`algorithm`) run over bands of rows planned from
        ``mem_limit`` (one band without it), locally or as dask tasks (see
        ``crcombine._core.tiles``); the result does not depend on the bands.
        """
        p = self.options
        n, shape = stack.n_exposures, stack.shape
        cr_coincidences = resolve_cr_coincidences(p.cr_coincidences, n)
        seed = p.seed if p.seed is not None else int(np.random.SeedSequence().entropy)
        threads = p.threads or os.cpu_count() or 1
        stride = tiling.sample_stride(n, shape)
        halo = crmask_halo(p.crmask_method, p.dilation,
                           p.psf_kernel_size if p.psf_matching else None)
        if p.false_alarm is not None:          # the denoised signal of the simulations
            halo = max(halo, DENOISE_SIZE // 2)
        halo = pair_halo(p.psf_kernel_size, p.dilation) if n == 2 else halo
        tiles = tiling.plan_tiles(n, shape, mem_limit=p.mem_limit,
                                  halo=halo + (MATCH_HALO if p.matched_diagram else 0),
                                  threads=threads)
        dask_path = tiling.uses_dask(stack, self.scheduler)
        run = functools.partial(tiling.run_tiles, stack, tiles, scheduler=self.scheduler,
                                workers=threads)
        log.info("%d exposures of %s in %d tile(s) of up to %d rows%s", n, shape, len(tiles),
                 tiles[0][1] - tiles[0][0], " (dask)" if dask_path else "")

        # 1. flux factors
        flux_factor, flux_err = flux_factors(stack, run, stride, self.options,
                                             progress=self._stage("levels"))
        log.info("n_c = %d; flux factors %s; seed %d", cr_coincidences,
                 np.round(flux_factor, 5).tolist(), seed)
        if n == 2:  # no MM diagram: the pair comparison
            return build_pair_masks(stack, run, p, tiles=tiles, flux_factor=flux_factor,
                                    flux_uncertainty=flux_err, stride=stride,
                                    stage=self._stage, progress=self.progress)

        # 1b. the kernels bringing the exposures to the median's PSF and level
        matching = (fit_exposure_matching(run, flux_factor, stride,
                                          progress=self._stage("matching"))
                    if p.matched_diagram else None)
        extra = 0 if matching is None else MATCH_HALO

        # 2. the range of the diagram and the over-dispersion
        kappa = p.nbinom_shape
        ranges = run(diagram.range_step, halo=1 + extra, flux_factor=flux_factor,
                     matching=matching, cr_coincidences=cr_coincidences,
                     stride=stride, overdispersion=kappa == "auto",
                     mm_scale_samples=p.mm_scale == "auto",
                     progress=self._stage("statistics"))
        diagram.check_exposures(ranges)
        if kappa == "auto":
            joined = [np.concatenate(a) for a in zip(*(r["overdispersion"] for r in ranges))]
            kappa = overdispersion_from_samples(*joined, n_exposures=n)
            log.info("over-dispersion: %s", "none measured (Poisson)" if kappa is None else
                     f"negative binomial shape {kappa:.4g} (extra rms {kappa ** -0.5:.2%})")
        n_valid = sum(r["n_valid"] for r in ranges)
        rn_all = stack.readnoise
        x_min, x_max = min(r["x_min"] for r in ranges), max(r["x_max"] for r in ranges)
        statistics = STATISTICS if p.crmask_method == "mm" else ("median", "mean")
        null_model, grid = exact_null(p.null_distribution, x_min, x_max, flux_factor, rn_all,
                                      kappa, cr_coincidences, statistics, ydiag_max=p.ydiag_max)
        if null_model is None:
            grid = diagram_grid(x_min, x_max, flux_factor, rn_all,
                                cr_coincidences=cr_coincidences, seed=seed, nbinom_shape=kappa,
                                ydiag_max=p.ydiag_max, statistics=statistics)

        # 3. simulations (or the exact null distribution) and histograms
        tick = None
        if self.progress is not None and not dask_path and null_model is None:
            total = p.nsimulations * sum(-(-(b - a) // tiling.rows_per_block(n, shape[1]))
                                         for a, b in tiles)
            counter, progress = itertools.count(1), self.progress
            tick = lambda: progress("simulations", next(counter), total)  # noqa: E731
        denoise = p.false_alarm is not None
        sim, data_hist = run(diagram.histogram_step, grid=grid, flux_factor=flux_factor,
                             cr_coincidences=cr_coincidences, nsimulations=p.nsimulations,
                             seed=seed, nbinom_shape=kappa, threads=threads, tick=tick,
                             reduce=diagram.merge_histograms, workers=1, denoise=denoise,
                             halo=(DENOISE_SIZE // 2 if denoise else 0) + extra,
                             matching=matching,
                             null_binning=None if null_model is None else null_model.bins)
        if null_model is not None:
            sim = expected_histograms(grid, sim, null_model, p.nsimulations)

        # 4. the detection boundaries
        boundaries = detection_boundaries(sim, n, n_valid, kappa, self.options)

        # 5. MEDIANCR and MEANCRT: seeds per tile, dilated on the whole image
        mm_scale = p.mm_scale
        if mm_scale == "auto":
            samples = {k: np.concatenate([r["mm_scale"][k] for r in ranges])
                       for k in ranges[0]["mm_scale"]}
            with np.errstate(invalid="ignore"):
                samples["ratio"] = ((samples["y"] - boundaries["median"](samples["x"]))
                                    / samples["structure"])
            mm_scale = tolerance_from_samples(samples, shape[1])
            log.info("derivative term of the MM boundary: %.3g x the structure of the "
                     "minimum image", mm_scale)
        seeds_median = np.empty(shape, dtype=bool)
        seeds_mean = np.empty(shape, dtype=bool)
        distance = np.empty(shape, dtype=np.float32)

        def put_seeds(index, result):
            a, b = tiles[index]
            seeds_median[a:b], seeds_mean[a:b], distance[a:b] = result

        run(diagram.seeds_step, halo=2 + extra, flux_factor=flux_factor, matching=matching,
            cr_coincidences=cr_coincidences,
            boundaries=boundaries, threshold=p.threshold, mm_scale=mm_scale,
            minimum_max2d_rnoise=p.minimum_max2d_rnoise, progress=self._stage("seeds"),
            collect=put_seeds)
        mediancr = dilate(seeds_median, p.dilation)
        meancrt = dilate(seeds_mean, p.dilation)

        # 6. the per-exposure masks and MEANCR
        scale = p.crmask_scale
        background = None
        if p.crmask_method == "noise":
            results = run(mismatch_step, halo=2, planes=(mediancr,),
                          flux_factor=flux_factor, cr_coincidences=cr_coincidences, stride=stride,
                          snr=p.crmask_snr, scale=scale, progress=self._stage("mismatch"))
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
        if p.crmask_method == "noise" and p.psf_matching:
            psf = fit_psf_matching(run, mediancr, p, flux_factor=flux_factor, stage=self._stage,
                                   cr_coincidences=cr_coincidences, scale=scale,
                                   background=background,
                                   stride=stride, hit_fraction=hit_fraction)
        auxiliary = (lacosmic_masks(stack, p.lacosmic, progress=self.progress)
                     if p.lacosmic is not False else None)
        crmask = np.empty((n,) + shape, dtype=bool)
        meancr = np.empty(shape, dtype=bool)

        def put_masks(index, result):
            a, b = tiles[index]
            crmask[:, a:b], meancr[a:b] = result

        planes = (mediancr, meancrt) + (() if auxiliary is None else (auxiliary,))
        run(crmask_step, halo=halo + extra, planes=planes, flux_factor=flux_factor,
            matching=matching, cr_coincidences=cr_coincidences, method=p.crmask_method,
            snr=p.crmask_snr, scale=scale, threshold=p.threshold, dilation=p.dilation,
            boundaries=boundaries, minimum_max2d_rnoise=p.minimum_max2d_rnoise,
            mm_scale=mm_scale, background=background, psf=psf,
            progress=self._stage("masks"), collect=put_masks)

        labels, features = label_features(mediancr, distance, seeds_median)
        params = p.as_dict()
        offsets = getattr(stack, "offsets", None)
        if offsets is not None:
            params["offsets"] = np.c_[offsets["dy"], offsets["dx"]].tolist()
        if matching is not None:
            params["matching_kernels"] = matching.tolist()
        if psf is not None:
            params.update(psf_kernels=psf["kernels"].tolist(),
                          psf_allowance=np.asarray(psf["allowance"]).tolist(),
                          psf_reverse_allowance=np.asarray(psf["reverse_allowance"]).tolist())
            if "pair_kernels" in psf:
                params["psf_pair_kernels"] = psf["pair_kernels"].tolist()
        params.update(seed=seed, cr_coincidences=cr_coincidences, nbinom_shape=kappa,
                      null_distribution="simulated" if null_model is None else "exact",
                      mm_scale=mm_scale,
                      gain=scalar_or_none(stack.gain), readnoise=scalar_or_none(rn_all),
                      bias=scalar_or_none(stack.bias), unit=stack.unit.to_string())
        masks = CRMasks(mediancr=mediancr, meancrt=meancrt, crmask=crmask, meancr=meancr,
                        flux_factor=flux_factor, flux_factor_uncertainty=flux_err,
                        boundaries=boundaries, features=features, labels=labels,
                        parameters=params, diagram={"simulated": sim, "data": data_hist})
        log.info("MEDIANCR: %d seeds, %d px after dilation; MEANCRT %d px; CRMASK %s px",
                 int(seeds_median.sum()), int(mediancr.sum()), int(meancrt.sum()),
                 [int(m.sum()) for m in crmask])
        return masks

    def _stage(self, name):
        """A ``progress(done, total)`` for one step, or None."""
        if self.progress is None:
            return None
        return functools.partial(self.progress, name)

    def resolve_flux_factor(self, stack):
        """Flux factors (N,) and their uncertainties (or None) for this stack."""
        n, shape = stack.n_exposures, stack.shape
        threads = self.options.threads or os.cpu_count() or 1
        tiles = tiling.plan_tiles(n, shape, mem_limit=self.options.mem_limit, threads=threads)
        run = functools.partial(tiling.run_tiles, stack, tiles, scheduler=self.scheduler,
                                workers=threads)
        return flux_factors(stack, run, tiling.sample_stride(n, shape), self.options)
