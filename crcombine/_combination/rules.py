# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Per-pixel combination rules, their variance and the exposure map (ALGORITHM.md §4).

Everything here works on a flux-scaled stack in electrons with NaN where an
exposure is not valid; the callers convert to and from the data unit.
"""

import functools
import math

import numpy as np

from ._methods import METHODS
from ._stack import sort_stack, stack_statistics

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


def exposure_variance(centre, flux_factor, readnoise):
    """Noise model of each scaled exposure, ``(max(f_i c, 0) + sigma_r^2) / f_i^2``.

    The signal is the robust centre ``c`` (the median), not the exposure's own
    value, so that a cosmic ray does not inflate its own variance (IRAF
    ``imcombine`` ``ccdclip``).  Returns shape (N, ny, nx), float32, electrons^2.
    """
    f = np.asarray(flux_factor, dtype=np.float32)[:, None, None]
    c = np.where(np.isfinite(centre), np.maximum(centre, 0), 0).astype(np.float32)
    return (f * c + np.asarray(readnoise, dtype=np.float32) ** 2) / f ** 2


def unmasked_mean(scaled, crmask):
    """The mean of the valid values not in ``crmask``, per pixel (the ``meancr`` value).

    Returns ``(mean, use, k)``: float32 (0 where nothing is left), the bool
    (N, ny, nx) values used and their number per pixel.
    """
    use = ~np.isnan(scaled) & ~crmask
    k = use.sum(axis=0)
    mean = np.where(use, scaled, 0).sum(axis=0) / np.maximum(k, 1).astype(np.float32)
    return mean, use, k


def filled_mean(scaled, crmask, pred):
    """`unmasked_mean` with each masked value replaced by its prediction.

    ``pred`` (N, ny, nx): the PSF-matched predictions of the exposures
    (`crcombine._psfmatch`); where one is not finite the exposure is left
    out.  Returns ``(mean, use, k)`` as `unmasked_mean` (``use`` and ``k``:
    the unmasked values, not the predictions).
    """
    valid = ~np.isnan(scaled)
    use = valid & ~crmask
    fill = valid & crmask & np.isfinite(pred)
    total = np.where(use, scaled, 0).sum(axis=0) + np.where(fill, pred, 0).sum(axis=0)
    n = use.sum(axis=0) + fill.sum(axis=0)
    mean = (total / np.maximum(n, 1)).astype(np.float32)
    return mean, use, use.sum(axis=0)


#: The neighbourhoods whose median replaces, with PSF matching, a pixel masked in every
#: exposure on flat sky (L.A.Cosmic's replacement, van Dokkum 2001): ``FILL_SIZE`` rows
#: and the narrowest of ``FILL_WIDTHS`` columns that holds ``FILL_MIN_PIXELS`` pixels not
#: masked everywhere.  Wider rather than taller: the bands of rows of a large stack
#: (`crcombine._tiles`) then need no more halo than the 5 x 5 square.
FILL_SIZE = 5
FILL_WIDTHS = (5, 7, 9)
FILL_MIN_PIXELS = 8


def flat_sky_fill(value, none_left, noise, reference=None):
    """Replace the pixels masked in every exposure on flat sky by the median of their neighbours.

    A pixel hit in every exposure has no clean value in any of them: the
    minimum the combinations substitute there is itself a cosmic ray.  Its
    neighbours are the narrowest window of 5 rows and 5, 7 or 9 columns
    (`FILL_WIDTHS`) centred on it that holds at least ``FILL_MIN_PIXELS``
    (8) pixels not masked everywhere: 5 x 5 at the edge of a group of such
    pixels, wider inside one (where tracks cross in every exposure, or in a
    dilated hit of every exposure).  On flat sky, where those neighbours
    span at most 5 ``noise`` in ``reference`` (``value`` itself if None),
    the median of their values replaces it; near stars, whose profile that
    median would flatten, the minimum stays.

    Parameters
    ----------
    value : `~numpy.ndarray`, shape (ny, nx), float32
        Combined values (electrons), NaN where no exposure is valid.
    none_left : `~numpy.ndarray`, shape (ny, nx), bool
        Pixels masked in every valid exposure.
    noise : `~numpy.ndarray`, shape (ny, nx)
        The noise of one exposure at each pixel (electrons).
    reference : `~numpy.ndarray`, shape (ny, nx), optional
        The image whose neighbours must be flat.

    Returns
    -------
    value : `~numpy.ndarray`, shape (ny, nx), float32
    replaced : `~numpy.ndarray`, shape (ny, nx), bool
    """
    replaced = np.zeros(value.shape, dtype=bool)
    todo = np.nonzero(none_left)
    if todo[0].size == 0:
        return value, replaced
    out = value.copy()
    noise = np.broadcast_to(np.asarray(noise, dtype=np.float32), value.shape)

    def windows_of(image, width, where):
        pad = ((FILL_SIZE // 2,) * 2, (width // 2,) * 2)
        padded = np.pad(np.where(none_left, np.nan, image).astype(np.float32), pad,
                        constant_values=np.nan)
        view = np.lib.stride_tricks.sliding_window_view(padded, (FILL_SIZE, width))
        return view[where].reshape(where[0].size, -1)

    for width in FILL_WIDTHS:
        if todo[0].size == 0:
            break
        windows = windows_of(value, width, todo)
        shape = windows if reference is None else windows_of(reference, width, todo)
        enough = ((np.isfinite(windows).sum(axis=1) >= FILL_MIN_PIXELS)
                  & (np.isfinite(shape).sum(axis=1) >= FILL_MIN_PIXELS))
        windows, shape = windows[enough], shape[enough]
        rows, cols = todo[0][enough], todo[1][enough]
        todo = (todo[0][~enough], todo[1][~enough])
        if rows.size == 0:
            continue
        with np.errstate(invalid="ignore"):
            span = np.nanmax(shape, axis=1) - np.nanmin(shape, axis=1)
            flat = span <= 5 * noise[rows, cols]
        out[rows[flat], cols[flat]] = np.nanmedian(windows[flat], axis=1)
        replaced[rows[flat], cols[flat]] = True
    return out, replaced


def robust_reference(statistics, mediancr):
    """The ``mediancr`` image of a stack: the minimum where MEDIANCR, else the median.

    ``statistics`` from `crcombine._stack.stack_statistics`; float32, NaN
    where no exposure is valid.
    """
    ref = np.where(mediancr, statistics["minR"], statistics["median2d"])
    return np.where(np.isfinite(ref), ref, np.nan).astype(np.float32)


def combine_scaled(scaled, method, *, flux_factor, readnoise, n_coincidences, masks=None,
                   variance=None, predictions=None, statistics=None):
    """Combine a flux-scaled stack (electrons) with one of `METHODS`.

    Parameters
    ----------
    scaled : `~numpy.ndarray`, shape (N, ny, nx), float32
        ``d_i / f_i`` in electrons, NaN where not valid.
    method : str
        One of `METHODS`.
    flux_factor : `~numpy.ndarray`, shape (N,)
    readnoise : float or `~numpy.ndarray` (ny, nx)
        Electrons.
    n_coincidences : int
    masks : `~crcombine.CRMasks`, optional
        Needed for the CR methods.
    variance : `~numpy.ndarray`, shape (N, ny, nx), optional
        Input variances (electrons^2, unscaled); where finite they replace the
        noise model.
    predictions : `~numpy.ndarray`, shape (N, ny, nx), optional
        PSF-matched predictions of the exposures: ``meancr``/``meancr2``
        replace each masked value with its prediction (`filled_mean`); the
        variance stays that of the mean of the unmasked values (the
        predictions are made of them); pixels masked in every exposure on
        flat sky get the median of their neighbours (`flat_sky_fill`; the
        array then needs 2 rows of halo).
    statistics : tuple, optional
        ``(stack_statistics(...), count)`` of ``scaled`` if already computed
        (the stack is not sorted again).

    Returns
    -------
    value, variance : `~numpy.ndarray` (ny, nx), float32
        Combined value and the variance of the combined value (electrons,
        electrons^2); NaN where no exposure is valid.
    exposure_map : `~numpy.ndarray` (ny, nx), uint8
        Number of exposures that contributed: ``k`` valid values for
        ``median``/``mean``, the unmasked count for ``meancr``, 1 wherever
        the minimum was substituted and 0 where the median of the neighbours
        was (`flat_sky_fill`).
    """
    if statistics is None:
        s, count = sort_stack(scaled)
        st = stack_statistics(s, count, n_coincidences)
        del s
    else:
        st, count = statistics
    var_i = exposure_variance(st["median2d"], flux_factor, readnoise)
    if variance is not None:
        f2 = np.asarray(flux_factor, dtype=np.float32)[:, None, None] ** 2
        var_i = np.where(np.isfinite(variance), variance / f2, var_i)
    valid = ~np.isnan(scaled)
    kf = np.maximum(count, 1).astype(np.float32)
    var_mean_each = np.where(valid, var_i, 0).sum(axis=0) / kf  # average single variance
    factors = np.array([median_variance_factor(k) if k else np.nan
                        for k in range(scaled.shape[0] + 1)], dtype=np.float32)

    # the variance of the exposure that gives the minimum
    lowest = np.argmin(np.where(valid, scaled, np.inf), axis=0)
    min_value = st["minR"]
    min_var = np.take_along_axis(var_i, lowest[np.newaxis], axis=0)[0]
    median_value, median_var = st["median2d"], factors[count] * var_mean_each
    mean_value, mean_var = st["mean2d"], var_mean_each / kf
    expmap = count.astype(np.uint8)

    if method == "median":
        value, var = median_value, median_var
    elif method == "mean":
        value, var = mean_value, mean_var
    elif method == "min":
        value, var = min_value, min_var
        expmap = np.minimum(expmap, 1)
    elif method in ("mediancr", "meancrt"):
        cr = masks.mediancr
        value = np.where(cr, min_value, median_value)
        var = np.where(cr, min_var, median_var)
        expmap = np.where(cr, np.minimum(expmap, 1), expmap)
        if method == "meancrt":
            t = masks.meancrt
            value = np.where(t, value, mean_value)
            var = np.where(t, var, mean_var)
            expmap = np.where(t, expmap, count.astype(np.uint8))
    elif method in ("meancr", "meancr2"):
        mean_use, use, k = (unmasked_mean(scaled, masks.crmask) if predictions is None
                            else filled_mean(scaled, masks.crmask, predictions))
        kk = np.maximum(k, 1).astype(np.float32)
        var_use = np.where(use, var_i, 0).sum(axis=0) / kk ** 2
        none_left = k == 0
        value = np.where(none_left, min_value, mean_use)
        var = np.where(none_left, min_var, var_use)
        expmap = np.where(none_left, np.minimum(count, 1), k).astype(np.uint8)
        if predictions is not None:
            from ._outliers import reference_noise
            noise = reference_noise(st["median2d"], float(np.median(flux_factor)), readnoise)
            value, sky = flat_sky_fill(value, none_left & (count > 0), noise,
                                       robust_reference(st, masks.mediancr))
            expmap = np.where(sky, 0, expmap).astype(np.uint8)
        if method == "meancr2":
            c2 = masks.meancr & (count > 0)
            value = np.where(c2, min_value, value)
            var = np.where(c2, min_var, var)
            expmap = np.where(c2, 1, expmap).astype(np.uint8)
    else:  # validated by the callers
        raise ValueError(f"method must be one of {'/'.join(METHODS)}; got {method!r}.")

    empty = count == 0
    value = np.where(empty, np.nan, value).astype(np.float32, copy=False)
    var = np.where(empty, np.nan, var).astype(np.float32, copy=False)
    return value, var, expmap.astype(np.uint8, copy=False)


def check_method(method):
    if method not in METHODS:
        raise ValueError(f"method must be one of {'/'.join(METHODS)}; got {method!r}.")
    return method
