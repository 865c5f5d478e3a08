# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Levels estimated from the data: flux factors and over-dispersion.

See :ref:`algorithm-flux-factors`.
"""

import numpy as np
from astropy.stats import sigma_clipped_stats

from .._core.images import region_mask
from .._core.noise import variance
from .._core.statistics import sort_stack, stack_statistics
from .._core.tiles import sample_mask, sample_stride

__all__ = []


#: Iterations of the leave-one-out flux-factor refinement (it converges in a few).
MAX_FLUX_ITERATIONS = 20


def flux_factor_samples(data, readnoise, *, snr_min=20.0, keep=None):
    """The well-exposed pixels the flux factors are estimated from, in one tile of rows.

    Parameters
    ----------
    data : `~numpy.ndarray`, shape (N, ny, nx), float32
        Electrons, NaN where not valid.
    readnoise : float or `~numpy.ndarray` (ny, nx)
        Electrons.
    snr_min : float
        Signal-to-noise ratio of the pixels used.
    keep : `~numpy.ndarray` (ny, nx) of bool, optional
        A fixed subsample of the pixels (see ``_tiles.sample_mask``).

    Returns
    -------
    values : `~numpy.ndarray`, shape (N, m), float64
        The exposures at the ``m`` pixels with signal-to-noise above
        ``snr_min`` in the median.
    median : `~numpy.ndarray`, shape (m,), float64
        Their median.
    """
    s, count = sort_stack(data)
    med = stack_statistics(s, count, 2)["median2d"]
    noise = np.sqrt(variance(np.maximum(med, 0), np.asarray(readnoise) ** 2))
    with np.errstate(invalid="ignore"):
        well = np.isfinite(med) & (med > snr_min * noise)
    if keep is not None:
        well &= keep
    return data[:, well].astype(np.float64), med[well].astype(np.float64)


def flux_factors_from_samples(values, med, *, snr_min=20.0):
    """Flux factors and their standard errors from `flux_factor_samples` (all tiles joined).

    The sigma-clipped median of ``d_i / median``, then refined to a fixed point
    against the mean of the other exposures and normalised to a median of 1
    (:ref:`algorithm-flux-factors`).  ``values`` (N, m) and ``med`` (m,) are the
    samples; returns ``(factors, errors)``, both (N,).

    Raises
    ------
    ValueError
        Fewer than 10 well-exposed pixels.
    """
    if med.size < 10:
        raise ValueError("flux_factor='auto' needs at least 10 well-exposed pixels (signal-to-"
                         f"noise > {snr_min:g} in the median); found {int(med.size)}. Give "
                         "the flux factors explicitly.")
    factors = np.array([sigma_clipped_stats(v / med, sigma=3.0)[1] for v in values])
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


def overdispersion_samples(scaled, median2d, readnoise, *, snr_min=20.0, keep=None):
    """The per-pixel values the over-dispersion is estimated from, in one tile of rows.

    Returns
    -------
    var, lam, base : `~numpy.ndarray` (m,), float64
        Sample variance of the N values, signal ``max(median, 0)`` and
        ``signal + sigma_r^2`` at the ``m`` well-exposed pixels valid in every
        exposure (within ``keep`` if given).
    """
    with np.errstate(invalid="ignore"):
        base = variance(np.maximum(median2d, 0), np.asarray(readnoise, dtype=np.float32) ** 2)
        bright = np.isfinite(median2d) & (median2d > snr_min * np.sqrt(base))
    if keep is not None:
        bright &= keep
    values = scaled[:, bright]
    full = np.all(np.isfinite(values), axis=0)
    values = values[:, full].astype(np.float64)
    var = values.var(axis=0, ddof=1)
    lam = np.maximum(median2d[bright][full], 0).astype(np.float64)
    base = base[bright][full] if np.ndim(base) else np.full(lam.shape, float(base))
    return var, lam, base.astype(np.float64)


def overdispersion_from_samples(var, lam, base, *, n_exposures, min_pixels=50):
    """The over-dispersion ``kappa`` (or None) from `overdispersion_samples` (all tiles joined)."""
    from scipy import optimize
    from scipy import stats as sstats
    if var.size < min_pixels:
        return None
    df = n_exposures - 1
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


def levels_step(rows, inner, first_row, region=None, *, stride):
    """Samples for ``flux_factor='auto'``: (values (N, m), median (m,)).

    ``region`` (rows, nx) bool: only the pixels inside it (``flux_factor_regions``).
    """
    data, rn, _ = rows
    keep = sample_mask(first_row, data.shape[1], data.shape[2], stride)
    if region is not None:
        keep = region if keep is None else keep & region
    return flux_factor_samples(data, rn, keep=keep)


def flux_factors(stack, run, stride, options, *, progress=None):
    """Flux factors (N,) and their uncertainties (or None) for this stack.

    ``options``: the `~crcombine._detection.options.DetectionOptions`
    (``flux_factor``, ``flux_factor_regions``); ``run`` and ``stride`` as in
    `crcombine._core.tiles`.

    Raises
    ------
    ValueError
        A list of flux factors of another length than the stack.
    """
    n = stack.n_exposures
    ff = options.flux_factor
    if ff is None:
        return np.ones(n), None
    if isinstance(ff, str):  # 'auto'
        planes = ()
        if options.flux_factor_regions is not None:
            region = region_mask(options.flux_factor_regions, stack.shape)
            planes = (region,)
            stride = sample_stride(n, (1, int(region.sum())))
        samples = run(levels_step, planes=planes, stride=stride,
                      progress=progress)
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
