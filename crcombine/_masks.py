# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""CRMaskBuilder (the M.M.Cosmic detection) and CRMasks (its result)."""

import logging
import types
import uuid as uuid_module

import numpy as np
from astropy.stats import sigma_clipped_stats
from astropy.table import Table
from scipy import ndimage

from ._boundary import DetectionBoundary, boundary_points, quantile_points
from ._parameters import resolve_cr_coincidences, validate_parameters
from ._rules import combine_scaled
from ._simulate import STATISTICS, diagram_values, simulate_histograms
from ._stack import ExposureStack, read_exposures, sort_stack, stack_statistics

__all__ = ["CRMaskBuilder", "CRMasks"]

log = logging.getLogger(__name__)

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def dilate(mask, iterations):
    """Grow a mask with a 3x3 (8-connected) structuring element ``iterations`` times."""
    if iterations <= 0 or not mask.any():
        return mask.copy()
    return ndimage.binary_dilation(mask, structure=EIGHT_CONNECTED, iterations=iterations)


#: Iterations of the leave-one-out flux-factor refinement (it converges in a few).
MAX_FLUX_ITERATIONS = 20


def estimate_flux_factors(data, readnoise, *, snr_min=20.0):
    """Robust flux factors: each exposure's level relative to the others.

    Over well-exposed pixels (signal-to-noise ratio above ``snr_min`` in the
    median), a first estimate is the sigma-clipped median of ``d_i /
    median2d``.  Because the median of a few exposures often *is* exposure
    ``i``, that ratio is biased towards 1 and its scatter understated, so each
    factor is then re-estimated against the mean of the *other* exposures
    (each divided by its current factor), ``f_i = median(d_i / ref_i)``,
    until the factors stop changing.  They are normalised to a median of 1
    (the output keeps the level of the typical exposure).

    Parameters
    ----------
    data : `~numpy.ndarray`, shape (N, ny, nx), float32
        Electrons, NaN where not valid.
    readnoise : float or `~numpy.ndarray`
        Electrons.
    snr_min : float
        Signal-to-noise ratio of the pixels used.

    Returns
    -------
    factors, uncertainties : `~numpy.ndarray`, shape (N,)
        The factors and their standard errors ``1.2533 * std / sqrt(n)`` (of a
        median; ``std`` the 3-sigma-clipped scatter of the ratios).

    Raises
    ------
    ValueError
        Fewer than 10 well-exposed pixels.
    """
    s, count = sort_stack(data)
    med = stack_statistics(s, count, 2)["median2d"]
    noise = np.sqrt(np.maximum(med, 0) + np.asarray(readnoise) ** 2)
    with np.errstate(invalid="ignore"):
        well = np.isfinite(med) & (med > snr_min * noise)
    if well.sum() < 10:
        raise ValueError("flux_factor='auto' needs at least 10 well-exposed pixels (signal-to-"
                         f"noise > {snr_min:g} in the median); found {int(well.sum())}. Give "
                         "the flux factors explicitly.")
    values = data[:, well].astype(np.float64)
    factors = np.array([sigma_clipped_stats(v / med[well], sigma=3.0)[1] for v in values])
    n = values.shape[0]
    errors = np.empty(n)
    for _ in range(MAX_FLUX_ITERATIONS):  # leave-one-out refinement to a fixed point
        scaled = values / factors[:, None]
        previous = factors.copy()
        with np.errstate(invalid="ignore"):
            for i in range(n):
                ref = np.nanmean(np.delete(scaled, i, axis=0), axis=0)
                ratio = values[i] / ref
                ratio = ratio[np.isfinite(ratio)]
                _, r, std = sigma_clipped_stats(ratio, sigma=3.0)
                # r = f_i / (mean of the others' levels / their factors) = f_i here
                factors[i] = r
                errors[i] = 1.2533 * std / np.sqrt(ratio.size)
        norm = np.median(factors)
        factors /= norm
        errors /= norm
        if np.max(np.abs(factors - previous)) < 1e-7:
            break
    return factors, errors


def estimate_overdispersion(scaled, median2d, readnoise, *, snr_min=20.0, min_pixels=50):
    """Shape kappa of the negative binomial that matches the data's extra variance.

    Real exposures are never perfectly equivalent (seeing, transparency, slit
    losses, flat-field drifts), which adds a variance roughly proportional to
    the square of the signal: ``sigma^2 = lambda + sigma_r^2 + lambda^2 / kappa``.
    Over well-exposed pixels (signal-to-noise > ``snr_min`` in the median) the
    sample variance ``v`` of the N scaled exposures is compared with this model:
    kappa is chosen so that the median of ``v / sigma^2`` equals the median of
    ``chi^2_{N-1} / (N - 1)``, its value for normal noise.  A median is used so
    that the few CR-hit pixels do not count.

    Parameters
    ----------
    scaled : `~numpy.ndarray`, shape (N, ny, nx), float32
        Flux-scaled exposures in electrons, NaN where not valid.
    median2d : `~numpy.ndarray`, shape (ny, nx)
    readnoise : float or `~numpy.ndarray` (ny, nx)
        Electrons.

    Returns
    -------
    float or None
        kappa, or None when the extra variance is not significant (the median
        ratio is within 3 standard errors of its normal-noise value) or there
        are fewer than ``min_pixels`` well-exposed pixels (then Poisson draws
        are used).
    """
    from scipy import optimize
    from scipy import stats as sstats
    n = scaled.shape[0]
    with np.errstate(invalid="ignore"):
        base = np.maximum(median2d, 0) + np.asarray(readnoise, dtype=np.float32) ** 2
        bright = np.isfinite(median2d) & (median2d > snr_min * np.sqrt(base))
    values = scaled[:, bright]
    full = np.all(np.isfinite(values), axis=0)
    if full.sum() < min_pixels:
        return None
    values = values[:, full].astype(np.float64)
    var = values.var(axis=0, ddof=1)
    lam = np.maximum(median2d[bright][full], 0).astype(np.float64)
    base = base[bright][full] if np.ndim(base) else base
    df = n - 1
    target = sstats.chi2(df).median() / df
    # standard error of the median of chi2_df / df over var.size pixels
    error = 1.0 / (2 * df * sstats.chi2(df).pdf(target * df) * np.sqrt(var.size))

    def excess(a):
        return np.median(var / (base + a * lam ** 2)) - target

    if excess(0.0) <= 3 * error:  # no significant extra variance
        return None
    hi = 1e-8
    while excess(hi) > 0:
        hi *= 10
        if hi > 1e3:  # pragma: no cover - variance far beyond any signal
            return None
    a = optimize.brentq(excess, 0.0, hi, xtol=1e-12, rtol=1e-6)
    return 1.0 / a


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
        By statistic: ``'median'``, ``'mean'``, ``'single'``.  Empty for masks
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


def derivative(reference):
    """Largest absolute difference between each pixel and its 4 neighbours.

    The ``dB`` of the derivative rule (JWST ``outlier_detection``, AstroDrizzle
    ``driz_cr``).  Non-finite neighbours are ignored; edges use the pixels
    that exist.  Returns float32, same shape.
    """
    ref = np.asarray(reference, dtype=np.float32)
    out = np.zeros(ref.shape, dtype=np.float32)
    for axis in (0, 1):
        d = np.abs(np.diff(ref, axis=axis))
        d = np.where(np.isfinite(d), d, 0)
        lo = [slice(None)] * 2
        hi = [slice(None)] * 2
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        np.maximum(out[tuple(lo)], d, out=out[tuple(lo)])
        np.maximum(out[tuple(hi)], d, out=out[tuple(hi)])
    return out


def mismatch_scale(excess, dB, sigma, *, quantile=0.999, noise=3.0, min_pixels=100):
    """How much of the local gradient an exposure departs from the reference by.

    Over structured pixels (``dB > 5 sigma``), the ``quantile`` of
    ``(-excess - noise * sigma) / dB`` among *negative* excesses: cosmic rays
    only ever add charge, so the negative side measures the mismatch (seeing
    changes, drift) alone, and the ``noise * sigma`` already allowed for by the
    noise term is taken out.  0 for equivalent exposures; +inf when there are
    too few structured pixels (the caller's cap applies).
    """
    excess = np.atleast_3d(excess) if excess.ndim == 2 else excess
    with np.errstate(invalid="ignore", divide="ignore"):
        structured = dB > 5 * sigma
        tails = []
        for plane in excess.reshape((-1,) + dB.shape):
            use = structured & (plane < 0)
            tails.append((-plane[use] - noise * sigma[use]) / dB[use])
        tail = np.concatenate(tails)
        if tail.size < min_pixels:
            return np.inf
        return max(float(np.quantile(tail, quantile)), 0.0)


def exposure_masks(scaled, reference, flux_factor, readnoise, *, kappa=None, snr=(5.0, 4.0),
                   scale=(1.2, 0.7), threshold=0.0, dilation=1, adaptive=True):
    """Per-exposure CR masks from a noise-model comparison with a robust reference.

    Exposure ``i`` (flux-scaled, electrons) is compared with the reference
    ``B`` (the ``mediancr`` image): a pixel is an outlier when

        ``d_i - B > snr * sigma_i(B) + scale * dB``

    with ``sigma_i^2(B) = (f_i max(B, 0) + sigma_r^2) / f_i^2 + B^2 / kappa``
    evaluated at the reference, not at the suspect value (IRAF ``imcombine``
    ``crreject``/``ccdclip``), and ``dB`` the largest difference between a
    pixel of ``B`` and its 4 neighbours, which absorbs small misalignments and
    seeing changes near stars (JWST ``outlier_detection``, AstroDrizzle
    ``driz_cr``).  Two passes: seeds with ``snr[0], scale[0]`` and neighbours
    with ``snr[1], scale[1]``; the mask is the seeds plus the neighbours
    adjacent to them (``dilate(seeds) & neighbours``), then grown by
    ``dilation`` 3x3 dilations.  Only positive outliers are flagged.

    Parameters
    ----------
    scaled : `~numpy.ndarray`, shape (N, ny, nx), float32
    reference : `~numpy.ndarray`, shape (ny, nx)
    flux_factor : `~numpy.ndarray`, shape (N,)
    readnoise : float or `~numpy.ndarray` (ny, nx)
        Electrons.
    kappa : float, optional
        Over-dispersion (negative binomial shape); None for none.
    snr, scale : pair of float
        Seed and neighbour thresholds (JWST defaults 5.0, 4.0 and 1.2, 0.7).
    threshold : float
        Minimum excess (electrons) of a flagged pixel.
    dilation : int

    Returns
    -------
    `~numpy.ndarray`, shape (N, ny, nx), bool
    """
    ref = np.where(np.isfinite(reference), reference, np.nan).astype(np.float32)
    dB = derivative(ref)
    level = np.maximum(np.nan_to_num(ref), 0)
    rn2 = np.asarray(readnoise, dtype=np.float32) ** 2
    factors = np.asarray(flux_factor, dtype=np.float32)
    out = np.zeros(scaled.shape, dtype=bool)

    def noise(f):
        var = (f * level + rn2) / f ** 2
        return np.sqrt(var + level ** 2 / np.float32(kappa) if kappa is not None else var)

    s0, s1 = scale
    if adaptive:  # one scale for all: a seeing change shows as + in one exposure, - in another
        s0 = min(s0, mismatch_scale(scaled - ref, dB, noise(np.median(factors))))
        s1 = s0 * scale[1] / scale[0] if scale[0] else 0.0
    with np.errstate(invalid="ignore"):
        for i, f in enumerate(factors):
            sigma = noise(f)
            excess = scaled[i] - ref
            seeds = (excess > snr[0] * sigma + s0 * dB) & (excess > threshold)
            if not seeds.any():
                continue
            neighbours = (excess > snr[1] * sigma + s1 * dB) & (excess > threshold)
            grown = ndimage.binary_dilation(seeds, EIGHT_CONNECTED) & neighbours
            out[i] = dilate(seeds | grown, dilation)
    return out


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
    if n:
        npix = ndimage.sum_labels(np.ones_like(mask, dtype=np.int32), labels, index)
        nseed = ndimage.sum_labels(seeds, labels, index)
        centroids = np.array(ndimage.center_of_mass(mask, labels, index)).reshape(n, 2)
        dist = ndimage.maximum(np.nan_to_num(distance, nan=-np.inf), labels, index)
    else:
        npix, nseed, centroids, dist = np.zeros(0), np.zeros(0), np.zeros((0, 2)), np.zeros(0)
    order = np.argsort(-np.asarray(dist, dtype=float), kind="stable")
    table = Table({"label": index[order].astype(np.int32),
                   "n_pixels": np.asarray(npix, dtype=np.int64)[order],
                   "n_seeds": np.asarray(nseed, dtype=np.int64)[order],
                   "xcentroid": centroids[order, 1], "ycentroid": centroids[order, 0],
                   "max_distance": np.asarray(dist, dtype=float)[order]})
    table["max_distance"].unit = "electron"
    return labels.astype(np.int32), table


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
        equivalent.  ``'auto'`` measures it from the data (see
        ``estimate_overdispersion``; default); None draws Poisson values
        (numina's default).
    ydiag_max : float, optional
        Upper limit of the diagram's ``y`` in units of the noise at ``x``;
        default from simulations over the range of levels.
    min_column_count : int, optional
        Simulated pixels a diagram column needs to give a boundary point.
        Default is 100.
    threads : int, optional
        Threads running the simulations; default the number of CPUs.  The
        masks do not depend on it.
    false_alarm : float, optional
        Expected number of false seeds per image (a per-pixel probability
        ``p`` is ``false_alarm = p * npix``).  When given, each boundary is the
        ``1 - false_alarm / npix`` quantile of its simulated null distribution
        in every column (the tail extrapolated where the simulations are too
        few), drawn as straight lines through those points without the spline
        fit or the upward extension, so that the count of false seeds on
        CR-free data matches it.  Default None: numina's implicit criterion
        (about one false seed per occupied column per ``nsimulations``, then
        made more conservative by the extension).  The boundary is then a step
        function, one step per diagram column.

    Raises
    ------
    TypeError
        Unknown parameter or wrong type.
    ValueError
        A value outside its range (gain <= 0, read noise < 0, ...).

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

    def __init__(self, *, gain, readnoise, bias=0.0, **params):
        from ._parameters import check_detector_value
        self.gain = check_detector_value("gain", gain, positive=True)
        self.readnoise = check_detector_value("readnoise", readnoise, non_negative=True)
        self.bias = check_detector_value("bias", bias)
        self.params = validate_parameters(**params)

    @classmethod
    def for_masks(cls, masks):
        """A builder with the gain, read noise and bias recorded in ``masks``.

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
        return cls(gain=p["gain"], readnoise=p["readnoise"], bias=p.get("bias") or 0.0)

    def __repr__(self):
        shown = {k: v for k, v in self.params.items() if v is not None}
        return f"CRMaskBuilder(gain={self.gain!r}, readnoise={self.readnoise!r}, " \
               f"bias={self.bias!r}, {', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    def stack(self, ccds, *, hdu=None, hdu_mask=None, unit=None):
        """Read and check the inputs; return the stack in electrons."""
        ccds = read_exposures(ccds, hdu=hdu, hdu_mask=hdu_mask, unit=unit)
        return ExposureStack.from_ccds(ccds, gain=self.gain, readnoise=self.readnoise,
                                       bias=self.bias)

    def build(self, ccds, *, hdu=None, hdu_mask=None, unit=None):
        """Compute the cosmic-ray masks of a list of equivalent exposures.

        Parameters
        ----------
        ccds : list of `~astropy.nddata.CCDData` or file names, or `ccdproc.ImageFileCollection`
            N >= 3 exposures of one shape and unit.  Their masks and
            non-finite pixels never contribute.  They are not modified.
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

    def resolve_flux_factor(self, stack):
        """Flux factors (N,) and their uncertainties (or None) for this stack."""
        n = stack.n_exposures
        ff = self.params["flux_factor"]
        if ff is None:
            return np.ones(n), None
        if isinstance(ff, str):  # 'auto'
            return estimate_flux_factors(stack.data, stack.readnoise)
        ff = np.asarray(ff, dtype=float)
        if ff.ndim == 0:
            return np.full(n, float(ff)), None
        if ff.size != n:
            raise ValueError(f"flux_factor has {ff.size} values but there are {n} exposures; "
                             "give one per exposure, a single number, None or 'auto'.")
        return ff, None

    def build_from_stack(self, stack):
        """As `build`, for an `~crcombine._stack.ExposureStack` already in electrons."""
        p = self.params
        n = stack.n_exposures
        nc = resolve_cr_coincidences(p["cr_coincidences"], n)
        seed = p["seed"] if p["seed"] is not None else int(np.random.SeedSequence().entropy)
        flux_factor, flux_err = self.resolve_flux_factor(stack)
        rn = stack.readnoise
        log.info("%d exposures of %s; n_c = %d; flux factors %s; seed %d", n, stack.shape, nc,
                 np.round(flux_factor, 5).tolist(), seed)

        scaled = stack.data / flux_factor.astype(np.float32)[:, None, None]
        x, y, st = diagram_values(scaled, nc)
        kappa = p["nbinom_shape"]
        if kappa == "auto":
            kappa = estimate_overdispersion(scaled, st["median2d"], rn)
            log.info("over-dispersion: %s", "none measured (Poisson)" if kappa is None else
                     f"negative binomial shape {kappa:.4g} (extra rms {kappa ** -0.5:.2%})")
        sim, data_hist = simulate_histograms(
            scaled, st["median2d"], x, flux_factor, rn, n_coincidences=nc,
            nsimulations=p["nsimulations"], seed=seed, nbinom_shape=kappa,
            ydiag_max=p["ydiag_max"], threads=p["threads"])

        boundaries = {}
        n_valid = int(np.isfinite(x).sum())
        for stat in STATISTICS:
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

        with np.errstate(invalid="ignore"):
            guard = st["max2d"] > p["minimum_max2d_rnoise"] * np.asarray(rn, dtype=np.float32)
            dist_median = y["median"] - boundaries["median"](x)
            seeds_median = (dist_median > 0) & (y["median"] > p["threshold"]) & guard
            seeds_mean = ((y["mean"] > boundaries["mean"](x)) & (y["mean"] > p["threshold"])
                          & guard) | seeds_median
            mediancr = dilate(seeds_median, p["dilation"])
            meancrt = dilate(seeds_mean, p["dilation"])
            if p["crmask_method"] == "mm":
                b_single = boundaries["single"](x)
                crmask = np.empty(stack.data.shape, dtype=bool)
                for i in range(n):
                    seeds = ((y["single"][i] > b_single) & (y["single"][i] > p["threshold"])
                             & meancrt)
                    crmask[i] = dilate(seeds, p["dilation"])
            else:
                reference = np.where(mediancr, st["minR"], st["median2d"])
                crmask = exposure_masks(scaled, reference, flux_factor, rn,
                                        snr=p["crmask_snr"], scale=p["crmask_scale"],
                                        threshold=p["threshold"], dilation=p["dilation"])
        labels, features = label_features(mediancr, dist_median, seeds_median)

        # MEANCR: CRs left in the meancr combination, found against the median
        # boundary (broader than the mean's: a masked mean has fewer values).
        partial = types.SimpleNamespace(crmask=crmask)
        meancr_value, _, _ = combine_scaled(scaled, "meancr", flux_factor=flux_factor,
                                            readnoise=rn, n_coincidences=nc, masks=partial)
        with np.errstate(invalid="ignore"):
            y_meancr = meancr_value - x
            meancr = ((y_meancr > boundaries["median"](x)) & (y_meancr > p["threshold"])
                      & guard)

        params = dict(p)
        params.update(seed=seed, cr_coincidences=nc, nbinom_shape=kappa,
                      gain=_scalar_or_none(stack.gain), readnoise=_scalar_or_none(rn),
                      bias=_scalar_or_none(stack.bias), unit=stack.unit.to_string())
        masks = CRMasks(mediancr=mediancr, meancrt=meancrt, crmask=crmask, meancr=meancr,
                        flux_factor=flux_factor, flux_factor_uncertainty=flux_err,
                        boundaries=boundaries, features=features, labels=labels,
                        parameters=params, diagram={"simulated": sim, "data": data_hist})
        log.info("MEDIANCR: %d seeds, %d px after dilation; MEANCRT %d px; CRMASK %s px",
                 int(seeds_median.sum()), int(mediancr.sum()), int(meancrt.sum()),
                 [int(m.sum()) for m in crmask])
        return masks


def _scalar_or_none(value):
    return float(value) if np.ndim(value) == 0 else None
