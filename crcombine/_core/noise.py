# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""The noise model of crcombine, in one place (:ref:`algorithm-noise`).

An exposure ``i`` of expected signal ``L >= 0`` electrons (above the bias),
scaled by its flux factor ``f_i`` (``d_i = D_i / f_i``), has the variance

    ``sigma_i^2 = (f_i L + sigma_r^2) / f_i^2 + L^2 / kappa``

(Poisson and read noise, and the over-dispersion of a negative binomial of
shape ``kappa`` when exposures are not exactly equivalent), evaluated at a
robust level, not at the suspect value (IRAF ``imcombine`` ``ccdclip``).  The
median of ``k`` such values has the variance ``v(k) sigma^2``
(`median_variance_factor`).  Detection and combination take their noise from
here; the callers pass ``sigma_r^2`` in the dtype they compute in.
"""

import functools
import math

import numpy as np

__all__ = []


@functools.lru_cache(maxsize=None)
def median_variance_factor(k):
    """Variance of the median of ``k`` unit-variance normal values.

    Exact (to ~1e-8) for any ``k``, from the order-statistic densities
    (David & Nagaraja, *Order Statistics*, 3rd ed., 2003, §2.1-§2.2)
    integrated on a fine grid over [-10, 10]; it tends to the asymptotic
    ``(pi/2)/k``.  For ``k = 3`` it is 0.4487, i.e. the median's noise is 1.16
    times the mean's.  For even ``k`` the median is the mean of the two middle
    values ``r = k/2`` and ``r + 1``, whose product moment is the 1-D integral
    ``c * int x F(x)^(r-1) f(x) G(x) dx`` with ``G(x) = int_x^inf y (1 -
    F(y))^(k-r-1) f(y) dy`` (a cumulative integral), so every ``k`` costs
    milliseconds.
    """
    if k <= 2:
        return 1.0 / k
    from scipy import integrate, special  # here: scipy.integrate is slow to import
    x = np.linspace(-10.0, 10.0, 20001)
    pdf = np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
    log_cdf, log_sf = special.log_ndtr(x), special.log_ndtr(-x)

    def log_coefficient(a, b):  # log(k! / (a! b!))
        return math.lgamma(k + 1) - math.lgamma(a + 1) - math.lgamma(b + 1)

    def second_moment(r):  # E[X_(r)^2], r 1-based
        density = np.exp(log_coefficient(r - 1, k - r) + (r - 1) * log_cdf
                         + (k - r) * log_sf) * pdf
        return integrate.trapezoid(x * x * density, x)

    if k % 2 == 1:
        return second_moment((k + 1) // 2)  # the mean is 0 by symmetry
    r = k // 2
    inner = x * np.exp((k - r - 1) * log_sf) * pdf
    tail = -integrate.cumulative_trapezoid(inner[::-1], x[::-1], initial=0)[::-1]
    product = np.exp(log_coefficient(r - 1, k - r - 1)) * integrate.trapezoid(
        x * np.exp((r - 1) * log_cdf) * pdf * tail, x)
    return (second_moment(r) + second_moment(r + 1) + 2 * product) / 4


def variance(level, readnoise_sq, *, flux_factor=None, kappa=None):
    """The variance of a flux-scaled exposure of expected signal ``level``: the noise model.

    ``sigma^2 = (f L + sigma_r^2) / f^2 + L^2 / kappa`` (electrons^2;
    ``L + sigma_r^2`` without a flux factor), Poisson and read noise plus the
    over-dispersion of a negative binomial of shape ``kappa`` (the variance
    of a count ``lambda`` is ``lambda + lambda^2 / kappa``).

    Parameters
    ----------
    level : `~numpy.ndarray` or float
        ``L``, the expected signal in electrons, already >= 0 (callers clip it).
    readnoise_sq : `~numpy.ndarray` or float
        ``sigma_r^2`` (electrons^2), scalar or broadcastable to ``level``; its
        dtype, with ``level``'s, sets the dtype of the result.
    flux_factor : float or `~numpy.ndarray`, optional
        ``f``, broadcastable to ``level``; None for an unscaled exposure.
    kappa : float, optional
        Negative binomial shape; None for Poisson.

    Returns
    -------
    `~numpy.ndarray`
        The variance, of the broadcast shape of the inputs.
    """
    if flux_factor is None:
        var = level + readnoise_sq
    else:
        var = (flux_factor * level + readnoise_sq) / flux_factor ** 2
    if kappa is not None:
        var = var + level ** 2 / kappa
    return var


def exposure_variance(centre, flux_factor, readnoise):
    """Noise model of each scaled exposure at a robust centre: `variance` for every ``f_i``.

    The signal is the robust centre ``c`` (the median), not the exposure's own
    value, so that a cosmic ray does not inflate its own variance (IRAF
    ``imcombine`` ``ccdclip``).  ``centre`` (ny, nx), ``flux_factor`` (N,),
    ``readnoise`` scalar or (ny, nx), electrons.  Returns shape (N, ny, nx),
    float32, electrons^2.
    """
    f = np.asarray(flux_factor, dtype=np.float32)[:, None, None]
    c = np.where(np.isfinite(centre), np.maximum(centre, 0), 0).astype(np.float32)
    return variance(c, np.asarray(readnoise, dtype=np.float32) ** 2, flux_factor=f)


def reference_noise(reference, flux_factor, readnoise, kappa=None, *, n_exposures=None):
    """``sigma_i(B)``: the noise of a scaled exposure whose expected value is the reference.

    `variance` at ``L = max(B, 0)`` (electrons), evaluated at the reference,
    not at the suspect value (IRAF ``imcombine`` ``ccdclip``).  With
    ``n_exposures``, the noise of the difference ``d_i - B`` with ``B`` the
    median of that many exposures: the variance times ``1 + v(N)``, ``v`` the
    variance factor of the median (`median_variance_factor`; 0.449 for N = 3).
    A median of few exposures is noisy: without it, the largest of three
    values exceeds their median by 5 sigma 60 times more often than a normal
    value exceeds 5 sigma; with it, at the normal rate.  Returns float32 of the
    reference's shape.
    """
    level = np.maximum(np.nan_to_num(reference), 0).astype(np.float32)
    rn2 = np.asarray(readnoise, dtype=np.float32) ** 2
    var = variance(level, rn2, flux_factor=np.float32(flux_factor),
                   kappa=None if kappa is None else np.float32(kappa))
    if n_exposures is not None:
        var = var * np.float32(1 + median_variance_factor(n_exposures))
    return np.sqrt(var)
