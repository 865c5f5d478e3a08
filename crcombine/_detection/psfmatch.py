# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""PSF-matched prediction of each exposure from the others (:ref:`algorithm-differences`).

Exposures of one night differ by their seeing and by sub-pixel drifts: near a
star, an exposure can stand 3x above or below the median of the stack, and a
cosmic ray there hides in that mismatch.  The prediction of exposure ``i`` is
the mean of the other exposures, without their flagged pixels, convolved with
a kernel fitted to exposure ``i`` by linear least squares over the whole image
(Alard & Lupton 1998, ApJ 503, 325; there on a basis of Gaussians, here on the
pixels of a small square kernel, as in Bramich 2008, MNRAS 386, L77, with a
constant for the difference of background).  The kernel takes the stack's
seeing changes and drift to the exposure's own, so that the prediction differs
from the exposure by its noise and by a residual the data measure (the
allowances of `matched_flags`, from `crcombine._detection.comparison.mismatch_scale` and
`level_allowance`), rather than by a fraction of the local gradient.
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage

from .._core.images import flat_sky_fill
from .._core.noise import reference_noise, variance
from .._core.tiles import sample_mask

__all__ = []


def others_mean(scaled, masks, fallback):
    """The mean of the other exposures' valid, unmasked values, for each exposure.

    Parameters
    ----------
    scaled : `~numpy.ndarray`, shape (N, ny, nx), float32
        Flux-scaled exposures (electrons), NaN where not valid.
    masks : `~numpy.ndarray`, shape (N, ny, nx), bool
        Flagged pixels (True = not used).
    fallback : `~numpy.ndarray`, shape (ny, nx)
        The value where no other exposure is left (the robust reference).

    Returns
    -------
    mean : `~numpy.ndarray`, shape (N, ny, nx), float32
    count : `~numpy.ndarray`, shape (N, ny, nx), int
        How many other exposures each mean has (0 where it is the fallback).
    """
    use = ~np.isnan(scaled) & ~masks
    values = np.where(use, scaled, np.float32(0))
    total, n_use = values.sum(axis=0), use.sum(axis=0)
    mean = np.empty(scaled.shape, dtype=np.float32)
    count = np.empty(scaled.shape, dtype=np.int16)
    for i in range(scaled.shape[0]):
        k = n_use - use[i]
        with np.errstate(invalid="ignore", divide="ignore"):
            mean[i] = np.where(k > 0, (total - values[i]) / np.maximum(k, 1), fallback)
        count[i] = k
    return mean, count


def interior(shape, size):
    """Pixels whose kernel window lies inside the array, shape ``shape``, bool.

    On a tile's rows read with a halo, the rows left out at the top and
    bottom are halo rows unless they are the image's edges.
    """
    h = size // 2
    out = np.zeros(shape, dtype=bool)
    out[h:shape[0] - h, h:shape[1] - h] = True
    return out


def fit_pixels(use, structured, inner, first_row, stride):
    """The pixels a kernel fit uses: ``use`` within the band's rows ``inner``, on
    ``structured`` pixels (thinned to every ``stride``-th) or every ``16 * stride``-th other.

    ``use`` and ``structured``: (ny, nx) bool over the band and its halo; the
    samples are `crcombine._core.tiles.sample_mask`'s, so the same whatever the tiles.
    """
    ny, nx = use.shape
    rows_in = inner.stop - inner.start
    inside = np.zeros((ny, nx), dtype=bool)
    inside[inner] = True
    sparse = np.zeros((ny, nx), dtype=bool)
    sparse[inner] = sample_mask(first_row, rows_in, nx, 16 * stride)
    if stride > 1:
        keep = np.zeros((ny, nx), dtype=bool)
        keep[inner] = sample_mask(first_row, rows_in, nx, stride)
        structured = structured & keep
    return use & inside & (structured | sparse)


def normal_equations(source, target, weight, use, size):
    """Least-squares sums of the kernel fit, ``(A^T W A, A^T W b, m)``.

    The model is ``target(p) = sum_q k(q) source(p + q) + c`` over the
    ``size x size`` offsets ``q``, fitted over the pixels ``use`` (whose
    windows must lie inside the arrays) with weights ``weight``.  Returns
    float64 arrays of shape (size^2 + 1, size^2 + 1) and (size^2 + 1,) and
    the number of pixels used; sums over tiles add.
    """
    h = size // 2
    windows = sliding_window_view(np.pad(source, h, mode="edge"), (size, size))
    a = windows[use].reshape(-1, size * size).astype(np.float64)
    b = target[use].astype(np.float64)
    w = weight[use].astype(np.float64)
    good = np.isfinite(a).all(axis=1) & np.isfinite(b) & np.isfinite(w)
    a = np.c_[a[good], np.ones(int(good.sum()))]
    b, w = b[good], w[good]
    aw = a * w[:, None]
    return aw.T @ a, aw.T @ b, int(good.sum())


def solve_kernels(ata, atb, counts, size, *, min_per_term=20):
    """The kernel of each exposure from summed `normal_equations`.

    Parameters
    ----------
    ata, atb : `~numpy.ndarray`, shapes (N, K, K) and (N, K), K = size^2 + 1
    counts : sequence of int, shape (N,)
        Pixels in each fit.

    Returns
    -------
    `~numpy.ndarray`, shape (N, size^2 + 1), float64, or None
        The ``size x size`` kernel (row by row) and the constant of each
        exposure; None when an exposure has fewer than ``min_per_term``
        pixels per unknown or its equations are singular (no PSF matching).
    """
    k = size * size + 1
    out = np.empty((len(counts), k))
    for i, (a, b, m) in enumerate(zip(ata, atb, counts)):
        if m < min_per_term * k:
            return None
        # a tiny ridge keeps flat images (no structure to fit) solvable
        ridge = 1e-9 * np.trace(a) / k
        try:
            out[i] = np.linalg.solve(a + ridge * np.eye(k), b)
        except np.linalg.LinAlgError:
            return None
        if not np.all(np.isfinite(out[i])):
            return None
    return out


def add_equations(a, b):
    """Add two tiles' ``(A^T W A, A^T W b, counts)`` (a ``reduce`` of ``run_tiles``)."""
    return tuple(x + y for x, y in zip(a, b))


def fit_in_passes(run, step, *, passes, size, halo, progress=None, **kwargs):
    """Kernels from ``passes`` fits of ``step`` over every tile, or None.

    ``step(rows, inner, first_row, *, size, kernels, **kwargs)`` returns the
    summed `normal_equations` of its tile; each pass after the first is given
    the previous pass's kernels (to clip what they leave far off).  None when
    a fit has too few pixels or is singular (`solve_kernels`).
    """
    kernels = None
    for _ in range(passes):
        ata, atb, counts = run(step, halo=halo, reduce=add_equations, size=size,
                               kernels=kernels, progress=progress, **kwargs)
        kernels = solve_kernels(ata, atb, counts, size)
        if kernels is None:
            return None
    return kernels


def predict(source, kernel, size):
    """``source`` convolved with one exposure's kernel (`solve_kernels` row), float32.

    Edges use the nearest pixel (see `interior` for where that is exact).
    The result is kept at or above the faintest value of ``source`` within
    the kernel's window times the kernel's sum (plus its constant): a scene
    convolved with a non-negative kernel cannot fall below that, while a
    fitted kernel's negative lobes (sharpening, or a sub-pixel shift of an
    undersampled star) take it below the sky two or three pixels from a
    bright core, by many sigma.
    """
    k = np.asarray(kernel[:-1], dtype=np.float32).reshape(size, size)
    source = np.asarray(source, dtype=np.float32)
    out = ndimage.correlate(source, k, mode="nearest")
    floor = ndimage.minimum_filter(source, size=size, mode="nearest") * np.float32(k.sum())
    return np.maximum(out, floor) + np.float32(kernel[-1])


def _window_prediction(values, kernel):
    """`predict` at a few pixels: their windows ``values`` (m, size^2) and a kernel row.

    Summed row by row in float64, as `scipy.ndimage.correlate` does (a matrix
    product rounds differently with the number of rows, i.e. with the
    tiling), with `predict`'s floor.
    """
    k = np.asarray(kernel, dtype=np.float64)
    floor = values.min(axis=1) * k[:-1].sum()
    return np.maximum((values * k[:-1]).sum(axis=1), floor) + k[-1]


def predictions(scaled, masks, fallback, psf, noise):
    """The PSF-matched prediction of every exposure, shape (N, ny, nx), float32.

    ``psf``: ``kernels`` (N, size^2 + 1), ``size`` and optionally
    ``pair_kernels`` (N, N, size^2 + 1), the kernel from exposure ``j`` to
    exposure ``i`` at ``[i, j]``.  The prediction of ``i`` is its kernel on
    the mean of the other exposures without their ``masks`` (`others_mean`);
    where a single other exposure is left (a hit shared by two of three
    exposures), the pair kernel on that exposure, since the kernel of the
    mean expects the mean's PSF.  The fallback is first given the median of
    its neighbours where every exposure is masked on flat sky
    (`crcombine._core.images.flat_sky_fill`, with ``noise`` one exposure's at each
    pixel), so that a pixel hit in every exposure does not leak into the
    predictions of its neighbours.  Returns the predictions (NaN within
    ``size // 2`` pixels of the array's edges, where the kernel's window
    would be padded: a masked value there is left out of ``meancr`` rather
    than replaced) and the number of exposures each is made of.
    """
    size = psf["size"]
    valid = ~np.isnan(scaled)
    everywhere = valid.any(axis=0) & ~(valid & ~masks).any(axis=0)
    fallback = flat_sky_fill(fallback, everywhere, noise)[0]
    others, count = others_mean(scaled, masks, fallback)
    pred = np.stack([predict(o, k, size) for o, k in zip(others, psf["kernels"])])
    # within half a kernel of the edges the windows are padded: no prediction there
    pred[:, ~interior(pred.shape[1:], size)] = np.nan
    pairs = psf.get("pair_kernels")
    if pairs is None:
        return pred, count
    use = ~np.isnan(scaled) & ~masks
    h = size // 2
    for j in range(scaled.shape[0]):
        windows = None
        for i in range(scaled.shape[0]):
            if j == i:
                continue
            where = np.nonzero((count[i] == 1) & use[j] & np.isfinite(pred[i]))
            if where[0].size == 0:
                continue
            if windows is None:  # only the few pixels concerned are computed
                source = np.where(use[j], scaled[j], fallback).astype(np.float32)
                windows = sliding_window_view(np.pad(source, h, mode="edge"), (size, size))
            pred[i][where] = _window_prediction(windows[where].reshape(-1, size * size),
                                                pairs[i][j])
    return pred, count


def reverse_matching(scaled, masks, fallback, psf, flux_factor, readnoise):
    """Each exposure matched to the others, and what it is compared with.

    The other direction of `predictions`: exposure ``i`` (not its masks:
    its own flagged values are what is tested) convolved with the kernel
    fitted from it to the mean of the other exposures without their
    ``masks`` (``psf['reverse_kernels']``), compared with that mean; where a
    single other exposure ``j`` is left, the pair kernel from ``i`` to ``j``
    (``psf['pair_kernels'][j, i]``) on ``i``, compared with ``j``.  Not where
    some of the others are masked and more than one is left (N >= 4): their
    mean then has another PSF than the one the kernel was fitted to (a
    fraction of the level at star cores, where the exposures differ most).
    Matching a sharper exposure to broader ones smooths it, which a kernel
    does well, while predicting it from them sharpens them, which a small
    kernel does only roughly (its residuals, a few sigma on the outskirts of
    stars, are then no cosmic ray in this direction); a cosmic ray in
    exposure ``i`` keeps most of its charge in its pixel either way.

    Parameters
    ----------
    scaled : `~numpy.ndarray`, shape (N, ny, nx), float32
        Flux-scaled exposures (electrons), NaN where not valid.
    masks : `~numpy.ndarray`, shape (N, ny, nx), bool
    fallback : `~numpy.ndarray`, shape (ny, nx)
        Replaces the invalid values of the exposure convolved.
    psf : dict
        ``size``, ``reverse_kernels`` (N, size^2 + 1) and optionally
        ``pair_kernels`` (N, N, size^2 + 1).
    flux_factor : `~numpy.ndarray`, shape (N,)
    readnoise : float or `~numpy.ndarray` (ny, nx)
        Electrons.

    Returns
    -------
    difference, sigma, target : `~numpy.ndarray`, shape (N, ny, nx), float32
        ``K_i * d_i - target``, its noise (the Poisson and read noise of
        both terms at the target's level: the kernel's sum of squares times
        exposure ``i``'s variance, plus the target's), and the target (the
        mean of the others, or the single other exposure); NaN elsewhere
        (some of the others masked; without pair kernels, any) and within
        ``size // 2`` pixels of the array's edges.
    """
    size, h = psf["size"], psf["size"] // 2
    f = np.asarray(flux_factor, dtype=np.float32)
    rn2 = np.broadcast_to(np.asarray(readnoise, dtype=np.float32) ** 2, scaled.shape[1:])
    others, count = others_mean(scaled, masks, fallback)
    use = ~np.isnan(scaled) & ~masks
    pairs = psf.get("pair_kernels")
    difference = np.full(scaled.shape, np.nan, dtype=np.float32)
    sigma = np.full(scaled.shape, np.nan, dtype=np.float32)
    target = np.full(scaled.shape, np.nan, dtype=np.float32)
    edges = ~interior(scaled.shape[1:], size)
    with np.errstate(invalid="ignore", divide="ignore"):
        for i in range(scaled.shape[0]):
            source = np.where(np.isnan(scaled[i]), fallback, scaled[i]).astype(np.float32)
            kernel = np.asarray(psf["reverse_kernels"][i], dtype=np.float64)
            level = np.maximum(np.nan_to_num(others[i]), 0)
            var_i = variance(level, rn2, flux_factor=f[i])
            var_o = variance(level, rn2, flux_factor=np.median(f))
            full = (count[i] == scaled.shape[0] - 1) & ~edges
            difference[i] = np.where(full, predict(source, kernel, size) - others[i], np.nan)
            sigma[i] = np.where(full, np.sqrt(np.float32(np.sum(kernel[:-1] ** 2)) * var_i
                                              + var_o / np.maximum(count[i], 1)), np.nan)
            target[i] = np.where(full, others[i], np.nan)
            if pairs is None:
                continue
            windows = None
            for j in range(scaled.shape[0]):
                where = np.nonzero((count[i] == 1) & use[j] & ~edges) if j != i else ((), ())
                if j == i or where[0].size == 0:
                    continue
                if windows is None:
                    windows = sliding_window_view(np.pad(source, h, mode="edge"),
                                                  (size, size))
                k = np.asarray(pairs[j][i], dtype=np.float64)
                matched = _window_prediction(windows[where].reshape(-1, size * size), k)
                var_j = variance(level[where], rn2[where], flux_factor=f[j])
                var = np.sum(k[:-1] ** 2) * var_i[where] + var_j
                difference[i][where] = matched - scaled[j][where]
                sigma[i][where] = np.sqrt(var)
                target[i][where] = scaled[j][where]
    return difference, sigma, target


def prediction_noise(prediction, flux_factor, readnoise, kernel, count):
    """Noise of ``exposure - prediction`` (electrons), float32.

    The exposure's Poisson + read noise at the predicted level plus the
    prediction's own: the kernel's sum of squares times the variance of one
    exposure over the number of exposures averaged (``count``; the
    exposures' noise is taken as independent between pixels).
    """
    level = np.maximum(np.nan_to_num(prediction), 0)
    var = variance(level, np.asarray(readnoise, dtype=np.float32) ** 2,
                   flux_factor=np.float32(flux_factor))
    s2 = np.float32(np.sum(np.asarray(kernel[:-1]) ** 2))
    return np.sqrt(var * (1 + s2 / np.maximum(count, 1))).astype(np.float32)


def sky_noise(ref, flux_factor, rn):
    """One exposure's noise at the reference level, for `flat_sky_fill`."""
    return reference_noise(ref, float(np.median(flux_factor)), rn)
