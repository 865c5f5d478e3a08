# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Levels estimated from the data: flux factors and over-dispersion (ALGORITHM.md §3.1, §6)."""

import numpy as np
from astropy.stats import sigma_clipped_stats

from ._stack import sort_stack, stack_statistics

__all__ = []


#: Iterations of the leave-one-out flux-factor refinement (it converges in a few).
MAX_FLUX_ITERATIONS = 20


def flux_factor_samples(data, readnoise, *, snr_min=20.0, keep=None):
    """The well-exposed pixels `estimate_flux_factors` uses, from one tile of rows.

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
    noise = np.sqrt(np.maximum(med, 0) + np.asarray(readnoise) ** 2)
    with np.errstate(invalid="ignore"):
        well = np.isfinite(med) & (med > snr_min * noise)
    if keep is not None:
        well &= keep
    return data[:, well].astype(np.float64), med[well].astype(np.float64)


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
    values, med = flux_factor_samples(data, readnoise, snr_min=snr_min)
    return flux_factors_from_samples(values, med, snr_min=snr_min)


def flux_factors_from_samples(values, med, *, snr_min=20.0):
    """`estimate_flux_factors` from the samples of `flux_factor_samples` (all tiles joined)."""
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
    samples = overdispersion_samples(scaled, median2d, readnoise, snr_min=snr_min)
    return overdispersion_from_samples(*samples, n_exposures=scaled.shape[0],
                                       min_pixels=min_pixels)


def overdispersion_samples(scaled, median2d, readnoise, *, snr_min=20.0, keep=None):
    """The per-pixel values `estimate_overdispersion` uses, from one tile of rows.

    Returns
    -------
    var, lam, base : `~numpy.ndarray` (m,), float64
        Sample variance of the N values, signal ``max(median, 0)`` and
        ``signal + sigma_r^2`` at the ``m`` well-exposed pixels valid in every
        exposure (within ``keep`` if given).
    """
    with np.errstate(invalid="ignore"):
        base = np.maximum(median2d, 0) + np.asarray(readnoise, dtype=np.float32) ** 2
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
    """`estimate_overdispersion` from `overdispersion_samples` (all tiles joined)."""
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
