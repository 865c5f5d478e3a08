# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""CRMASK1..N and MEANCR of a band.

The comparison with the reference, confirmed and completed by PSF matching,
and the CRs left in the mean (:ref:`algorithm-differences`).
"""

import numpy as np

from .._core.images import derivative, dilate, flat_sky_fill
from .._core.statistics import (filled_mean, robust_reference, scaled_stack, sorted_statistics,
                                unmasked_mean)
from .._core.tiles import inner_rows
from .comparison import outlier_flags
from .diagram import _minimum_structure
from .matched import matched_flags, matched_support, predictions_and_noise, psf_halo
from .matching import matched_stack
from .psfmatch import predictions as matched_predictions
from .psfmatch import reverse_matching, sky_noise

__all__ = []


def crmask_halo(method, dilation, psf_size=None):
    """Rows of halo the per-exposure masks need (derivative and growth: 2, dilation).

    MEANCR's derivative term needs 1 row with either method; PSF matching
    (kernels of side ``psf_size``) needs `psf_halo`.
    """
    if method != "noise":
        return max(dilation, 1)
    return dilation + 2 if psf_size is None else psf_halo(dilation, psf_size)


def crmask_step(rows, inner, first_row, mediancr, meancrt, auxiliary=None, *, flux_factor,
                cr_coincidences, method, snr, scale, threshold, dilation, boundaries,
                minimum_max2d_rnoise, mm_scale, background=None, psf=None, matching=None):
    """CRMASK (N, rows, nx) and MEANCR (rows, nx) of the tile.

    The noise model of the comparison is Poisson + read noise, without the
    over-dispersion: near structure, where exposures differ by more than
    that, the derivative term (with the measured mismatch scale) allows for
    it, and on flat areas the over-dispersion is negligible.  With ``psf``
    (a dict: ``kernels``, ``size``, ``allowance`` and, from the builder,
    ``reverse_kernels``, ``reverse_allowance``) the flags against each
    exposure's PSF-matched prediction and the other way (`matched_flags`)
    are added, the flags of the comparison with the reference stand on
    structured pixels only where the prediction confirms them
    (`matched_support`), and the value MEANCR checks is the `filled_mean`.
    ``auxiliary`` (N, rows, nx), an auxiliary detector's flags (L.A.Cosmic),
    is OR-ed into each mask, dilated like it, before the predictions and
    MEANCR.  With ``matching`` (``matched_diagram``) the single-exposure
    diagram of ``method='mm'`` and MEANCR's minimum signal are those of the
    matched stack (`crcombine._detection.matching.matched_stack`).
    """
    data, rn, _ = rows
    scaled = scaled_stack(data, flux_factor)
    st = sorted_statistics(scaled, cr_coincidences)
    x = st["min2d"]
    diagram_planes = scaled
    if matching is not None:
        diagram_planes = matched_stack(scaled, matching, rn)
        x = sorted_statistics(diagram_planes, cr_coincidences)["min2d"]
    pred = None
    extra = (np.zeros(scaled.shape, dtype=bool) if auxiliary is None
             else np.stack([dilate(f, dilation) for f in auxiliary]))
    with np.errstate(invalid="ignore"):
        if method == "mm":
            b_single = boundaries["single"](x)
            flags = np.empty(scaled.shape, dtype=bool)
            for i, plane in enumerate(diagram_planes):
                y = plane - x
                flags[i] = (y > b_single) & (y > threshold) & meancrt
            full = np.stack([dilate(f, dilation) for f in flags]) | extra
        else:
            ref = robust_reference(st, mediancr)
            flags = outlier_flags(scaled, ref, derivative(ref), flux_factor, rn, snr=snr,
                                  scale=scale, threshold=threshold, background=background)
            full = np.stack([dilate(f, dilation) for f in flags]) | extra
            if psf is not None:
                # the first masks make the predictions; the flags the predictions do not
                # confirm on structured pixels go, and the matched flags join, dilated
                pred, sigma = predictions_and_noise(scaled, ref, full, flux_factor, rn, psf)
                reverse = (reverse_matching(scaled, full, ref, psf, flux_factor, rn)
                           if "reverse_kernels" in psf else None)
                common = dict(snr=snr, ratio=psf["ratio"], allowance=psf["allowance"],
                              size=psf["size"])
                matched = matched_flags(scaled, ref, pred, sigma, flux_factor, rn,
                                        threshold=threshold, reverse=reverse,
                                        reverse_allowance=psf.get("reverse_allowance"),
                                        **common)
                flags &= matched_support(scaled, ref, pred, sigma, flux_factor, rn, **common)
                del reverse, common
                full = np.stack([dilate(f, dilation) for f in flags | matched]) | extra
                del matched, sigma
            del flags
    del extra, diagram_planes
    crmask = full[:, inner]

    # MEANCR: CRs left in the meancr combination, found against the median
    # boundary (broader than the mean's: a masked mean has fewer values).
    # the value of ``meancr``: the mean of the unmasked values (with PSF
    # matching, the masked ones replaced by their predictions), the minimum
    # where none is left
    rn_inner = inner_rows(rn, inner)
    if psf is not None:
        pred = matched_predictions(scaled, full, ref, psf, sky_noise(ref, flux_factor, rn))[0]
        value, _, k = filled_mean(scaled, full, pred)
        none_left = k == 0
        value = np.where(none_left, st["minR"], value)
        noise = sky_noise(st["median2d"], flux_factor, rn)
        value = flat_sky_fill(value, none_left & np.isfinite(st["minR"]), noise, ref)[0][inner]
    else:
        value, _, k = unmasked_mean(scaled[:, inner], crmask)
        value = np.where(k == 0, st["minR"][inner], value)
    del full, pred
    xi = x[inner]
    slack = np.float32(mm_scale) * _minimum_structure(x, flux_factor, rn)[1][inner] \
        if mm_scale else np.float32(0)
    with np.errstate(invalid="ignore"):
        guard = st["max2d"][inner] > minimum_max2d_rnoise * np.asarray(rn_inner,
                                                                       dtype=np.float32)
        y = value - xi
        meancr = (y > boundaries["median"](xi) + slack) & (y > threshold) & guard
    return crmask, meancr
