# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Per-pixel combination rules, their variance and the exposure map (:ref:`algorithm-combinations`).

Everything here works on a flux-scaled stack in electrons with NaN where an
exposure is not valid; the callers convert to and from the data unit.
"""

import types

import numpy as np

from .._core.images import flat_sky_fill
from .._core.methods import METHODS
from .._core.noise import exposure_variance, median_variance_factor, reference_noise
from .._core.statistics import (filled_mean, robust_reference, scaled_stack, sort_stack,
                                stack_statistics, unmasked_mean)
from .._detection.psfmatch import predictions as matched_predictions
from .._detection.psfmatch import sky_noise

__all__ = []


def exposure_map_dtype(n_exposures):
    """The exposure map's dtype: uint8 up to 255 exposures, uint16 beyond."""
    return np.uint8 if n_exposures < 256 else np.uint16


def _pair_filled_variance(var_use, var_i, use, predictions, kernels):
    """The variance of ``(s_j + P_i) / 2`` where exposure ``i`` of two is masked.

    ``P_i = K_i * s_j``: ``Var = var_j (1 + 2 K_i(0) + sum K_i^2) / 4`` (the
    prediction shares ``K_i(0)`` of ``s_j``'s own noise; the noise of ``s_j``
    taken as independent between pixels, of equal variance over the kernel).
    """
    out = var_use.copy()
    for i in (0, 1):
        k = np.asarray(kernels[i][:-1], dtype=np.float64)
        factor = np.float32((1 + 2 * k[k.size // 2] + np.sum(k ** 2)) / 4)
        where = ~use[i] & use[1 - i] & np.isfinite(predictions[i])
        out = np.where(where, var_i[1 - i] * factor, out)
    return out


def combine_scaled(scaled, method, *, flux_factor, readnoise, cr_coincidences, masks=None,
                   variance=None, predictions=None, statistics=None, kernels=None):
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
    cr_coincidences : int
    masks : `~crcombine.CRMasks`, optional
        Needed for the CR methods.
    variance : `~numpy.ndarray`, shape (N, ny, nx), optional
        Input variances (electrons^2, unscaled); where finite they replace the
        noise model.
    predictions : `~numpy.ndarray`, shape (N, ny, nx), optional
        PSF-matched predictions of the exposures: ``meancr``/``meancr2``
        replace each masked value with its prediction (`filled_mean`); the
        variance stays that of the mean of the unmasked values (the
        predictions are made of them; with two exposures and ``kernels``, that
        of the value and its prediction); pixels masked in every exposure on
        flat sky get the median of their neighbours (`flat_sky_fill`; the
        array then needs 2 rows of halo).
    statistics : tuple, optional
        ``(stack_statistics(...), count)`` of ``scaled`` if already computed
        (the stack is not sorted again).
    kernels : `~numpy.ndarray`, shape (2, K^2 + 1), optional
        With two exposures and ``predictions``: the kernels that made them, for
        the variance of a value filled with its prediction
        (`_pair_filled_variance`).

    Returns
    -------
    value, variance : `~numpy.ndarray` (ny, nx), float32
        Combined value and the variance of the combined value (electrons,
        electrons^2); NaN where no exposure is valid.
    exposure_map : `~numpy.ndarray` (ny, nx), uint8 (uint16 from 256 exposures)
        Number of exposures that contributed: ``k`` valid values for
        ``median``/``mean``, the unmasked count for ``meancr``, 1 wherever
        the minimum was substituted and 0 where the median of the neighbours
        was (`flat_sky_fill`, on flat sky: with PSF matching, and always with two
        exposures; two exposures masked both keep the lower value off flat sky,
        with exposure map 0: the result's mask).
    """
    expmap_dtype = exposure_map_dtype(scaled.shape[0])
    if statistics is None:
        s, count = sort_stack(scaled)
        st = stack_statistics(s, count, cr_coincidences)
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
    expmap = count.astype(expmap_dtype)

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
            expmap = np.where(t, expmap, count.astype(expmap_dtype))
    elif method in ("meancr", "meancr2"):
        mean_use, use, k = (unmasked_mean(scaled, masks.crmask) if predictions is None
                            else filled_mean(scaled, masks.crmask, predictions))
        kk = np.maximum(k, 1).astype(np.float32)
        var_use = np.where(use, var_i, 0).sum(axis=0) / kk ** 2
        if predictions is not None and kernels is not None and scaled.shape[0] == 2:
            var_use = _pair_filled_variance(var_use, var_i, use, predictions, kernels)
        none_left = k == 0
        value = np.where(none_left, min_value, mean_use)
        var = np.where(none_left, min_var, var_use)
        expmap = np.where(none_left, np.minimum(count, 1), k).astype(expmap_dtype)
        if predictions is not None or scaled.shape[0] == 2:
            noise = reference_noise(st["median2d"], float(np.median(flux_factor)), readnoise)
            value, sky = flat_sky_fill(value, none_left & (count > 0), noise,
                                       robust_reference(st, masks.mediancr))
            expmap = np.where(sky, 0, expmap).astype(expmap_dtype)
            if scaled.shape[0] == 2:   # the lower of two masked values: no clean value
                expmap = np.where(none_left, 0, expmap).astype(expmap_dtype)
        if method == "meancr2":
            c2 = masks.meancr & (count > 0)
            value = np.where(c2, min_value, value)
            var = np.where(c2, min_var, var)
            expmap = np.where(c2, 1, expmap).astype(expmap_dtype)
    else:  # validated by the callers
        raise ValueError(f"method must be one of {'/'.join(METHODS)}; got {method!r}.")

    empty = count == 0
    value = np.where(empty, np.nan, value).astype(np.float32, copy=False)
    var = np.where(empty, np.nan, var).astype(np.float32, copy=False)
    return value, var, expmap.astype(expmap_dtype, copy=False)


def combine_step(rows, inner, first_row, *planes, method, flux_factor, cr_coincidences,
                 psf=None):
    """One tile of a combination: value and variance (electrons) and the exposure map.

    ``method`` is one of `METHODS`, or a tuple of them: the tile is then
    read, sorted and (with ``psf``) predicted once, and a tuple of results is
    returned, one per method.  With ``psf`` (``kernels``, ``size``) the
    ``meancr``/``meancr2`` values fill each masked value with the exposure's
    PSF-matched prediction (run with a halo of ``size // 2 + 4`` rows: the
    kernel and, twice, the neighbours of `crcombine._core.images.flat_sky_fill`).
    """
    data, rn, variance = rows
    masks = None
    if planes:
        mediancr, meancrt, meancr, crmask = planes
        masks = types.SimpleNamespace(mediancr=mediancr, meancrt=meancrt, meancr=meancr,
                                      crmask=crmask)
    methods = (method,) if isinstance(method, str) else tuple(method)
    scaled = scaled_stack(data, flux_factor)
    s, count = sort_stack(scaled)
    statistics = (stack_statistics(s, count, cr_coincidences), count)
    del s
    predictions = None
    if psf is not None and {"meancr", "meancr2"} & set(methods):
        ref = robust_reference(statistics[0], masks.mediancr)
        predictions = matched_predictions(scaled, masks.crmask, ref, psf,
                                          sky_noise(ref, flux_factor, rn))[0]
    results = []
    for m in methods:
        out = combine_scaled(scaled, m, flux_factor=flux_factor, readnoise=rn,
                             cr_coincidences=cr_coincidences, masks=masks, variance=variance,
                             predictions=predictions if m in ("meancr", "meancr2") else None,
                             statistics=statistics,
                             kernels=None if psf is None else psf["kernels"])
        results.append(tuple(o[inner] for o in out))
    return results[0] if isinstance(method, str) else tuple(results)
