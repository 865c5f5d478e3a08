# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""The stack sorted once along the exposure axis, and its per-pixel statistics.

The statistics of the method (:ref:`algorithm-statistics`): the minimum signal
(the mean of the ``N - n_c`` lowest values), the median, mean and maximum,
computed from one sort of the flux-scaled stack in electrons (NaN = not
valid); and the means without the masked values the combinations take.
"""

import numpy as np

__all__ = []


def scaled_stack(data, flux_factor):
    return data / np.asarray(flux_factor, dtype=np.float32)[:, None, None]


def sorted_statistics(scaled, cr_coincidences):
    s, count = sort_stack(scaled)
    st = stack_statistics(s, count, cr_coincidences)
    del s
    return st


#: Stacks of up to this many exposures are sorted with a compare-exchange network.
NETWORK_MAX = 8


def _network(n):
    """Compare-exchange pairs that sort ``n`` values (odd-even transposition)."""
    return [(i, i + 1) for rnd in range(n) for i in range(rnd % 2, n - 1, 2)]


def sort_stack(data):
    """Sort a (N, ...) stack along the exposure axis once; NaNs go last.

    For N <= `NETWORK_MAX` the sort is a network of elementwise
    ``minimum``/``maximum`` operations on whole planes (odd-even
    transposition sort, Knuth, TAOCP vol. 3, §5.3.4), much faster than
    `numpy.sort` along a short axis; NaN is sorted as +inf and restored.

    Returns
    -------
    sorted : `~numpy.ndarray`, same shape and dtype
    count : `~numpy.ndarray` of int, shape ``data.shape[1:]``
        Number of valid (non-NaN) values per pixel.
    """
    n = data.shape[0]
    invalid = np.isnan(data)
    count = n - np.count_nonzero(invalid, axis=0)
    if n > NETWORK_MAX:
        return np.sort(data, axis=0), count
    s = np.where(invalid, np.inf, data).astype(data.dtype, copy=False)
    for i, j in _network(n):
        lo = np.minimum(s[i], s[j])
        np.maximum(s[i], s[j], out=s[j])
        s[i] = lo
    if invalid.any():
        s[np.isinf(s)] = np.nan
    return s, count


def _take(sorted_stack, index):
    return np.take_along_axis(sorted_stack, index[np.newaxis], axis=0)[0]


def stack_statistics(sorted_stack, count, cr_coincidences):
    """Per-pixel statistics of :ref:`algorithm-statistics` from a sorted stack.

    Parameters
    ----------
    sorted_stack : `~numpy.ndarray`, shape (N, ...), float
        Values sorted along axis 0 with NaN (invalid) last, as from `sort_stack`.
    count : `~numpy.ndarray` of int
        Number of valid values per pixel.
    cr_coincidences : int
        ``n_c``: how many CR-hit exposures are sought.

    Returns
    -------
    dict of `~numpy.ndarray`
        ``min2d`` (the minimum signal: mean of the ``max(k - n_c, 1)`` lowest
        of the ``k`` valid values), ``minR`` (plain minimum), ``median2d``
        (mean of the two middle values for even ``k``), ``mean2d``,
        ``max2d``; all NaN where ``k = 0``.
    """
    n = sorted_stack.shape[0]
    dtype = sorted_stack.dtype
    if np.all(count == n):  # no invalid values: plain indexing
        k = n
        lo, hi = (n - 1) // 2, n // 2
        median = 0.5 * (sorted_stack[lo] + sorted_stack[hi])
        m = max(n - cr_coincidences, 1)
        mincr = sorted_stack[:m].mean(axis=0, dtype=dtype) if m > 1 else sorted_stack[0].copy()
        return {"min2d": mincr, "minR": sorted_stack[0].copy(), "median2d": median,
                "mean2d": sorted_stack.mean(axis=0, dtype=dtype),
                "max2d": sorted_stack[n - 1].copy()}
    k = count
    empty = k == 0
    kk = np.maximum(k, 1)
    median = 0.5 * (_take(sorted_stack, (kk - 1) // 2) + _take(sorted_stack, kk // 2))
    zeroed = np.where(np.isnan(sorted_stack), 0, sorted_stack)
    csum = np.cumsum(zeroed, axis=0, dtype=dtype)
    m = np.maximum(kk - cr_coincidences, 1)
    mincr = _take(csum, m - 1) / m.astype(dtype)
    mean = csum[-1] / kk.astype(dtype)
    maximum = _take(sorted_stack, kk - 1)
    minimum = sorted_stack[0].copy()
    for arr in (median, mincr, mean, maximum, minimum):
        arr[empty] = np.nan
    return {"min2d": mincr.astype(dtype, copy=False), "minR": minimum, "median2d": median,
            "mean2d": mean.astype(dtype, copy=False), "max2d": maximum}


def robust_reference(statistics, mediancr):
    """The ``mediancr`` image of a stack: the minimum where MEDIANCR, else the median.

    ``statistics`` from `crcombine._core.statistics.stack_statistics`; float32, NaN
    where no exposure is valid.
    """
    ref = np.where(mediancr, statistics["minR"], statistics["median2d"])
    return np.where(np.isfinite(ref), ref, np.nan).astype(np.float32)


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
    (`crcombine._detection.psfmatch`); where one is not finite the exposure is left
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
