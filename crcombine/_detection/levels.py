# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Levels estimated from the data: flux factors and over-dispersion.

See :ref:`algorithm-flux-factors`.
"""

import numpy as np
from astropy.stats import sigma_clipped_stats

from .._core.images import derivative, region_mask
from .._core.noise import variance
from .._core.statistics import sort_stack, stack_statistics
from .._core.tiles import sample_mask, sample_stride

__all__ = []


#: Iterations of the leave-one-out flux-factor refinement (it converges in a few).
MAX_FLUX_ITERATIONS = 20


def flux_factor_samples(data, readnoise, *, snr_min=20.0, keep=None, inner=None):
    """The well-exposed pixels the flux factors are estimated from, in one tile of rows.

    Parameters
    ----------
    data : `~numpy.ndarray`, shape (N, ny, nx), float32
        Electrons, NaN where not valid.
    readnoise : float or `~numpy.ndarray` (ny, nx)
        Electrons.
    snr_min : float
        Signal-to-noise ratio of the pixels used.
    keep : `~numpy.ndarray` (rows, nx) of bool, optional
        A fixed subsample of the tile's own rows (see ``_tiles.sample_mask``).
    inner : slice, optional
        The tile's own rows within ``data`` (the others are a halo of 1 row,
        for the derivative); default all.

    Returns
    -------
    values : `~numpy.ndarray`, shape (N, m), float64
        The exposures at the ``m`` pixels with signal-to-noise above
        ``snr_min`` in the median.
    median : `~numpy.ndarray`, shape (m,), float64
        Their median.
    flat : `~numpy.ndarray`, shape (m,), bool
        Where the median is flat: its largest difference with a 4-neighbour
        (`crcombine._core.images.derivative`) at most 0.2 of its level (sky,
        flat fields, smooth nebulae; not stars or lines, whose ratios measure
        the PSF as much as the level).
    """
    s, count = sort_stack(data)
    med = stack_statistics(s, count, 2)["median2d"]
    del s
    inner = slice(0, med.shape[0]) if inner is None else inner
    noise = np.sqrt(variance(np.maximum(med, 0), np.asarray(readnoise) ** 2))
    with np.errstate(invalid="ignore"):
        well = np.isfinite(med) & (med > snr_min * noise)
        flat = derivative(np.where(np.isfinite(med), med, np.nan)) <= 0.2 * med
    well, flat, med = well[inner], flat[inner], med[inner]
    if keep is not None:
        well &= keep
    return (data[:, inner][:, well].astype(np.float64), med[well].astype(np.float64),
            flat[well])


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
    """Samples for ``flux_factor='auto'``: (values (N, m), median (m,), flat (m,)).

    ``region`` (rows, nx) bool: only the pixels inside it (``flux_factor_regions``).
    Run with a halo of 1 row (the flatness of the median).
    """
    data, rn, _ = rows
    keep = sample_mask(first_row, inner.stop - inner.start, data.shape[2], stride)
    if region is not None:
        keep = region[inner] if keep is None else keep & region[inner]
    return flux_factor_samples(data, rn, keep=keep, inner=inner)


#: Side of the blocks whose sums the flux factors are measured on (pixels); each
#: aperture is a block with its 8 neighbours, ``3 * APERTURE_BLOCK`` pixels wide.
APERTURE_BLOCK = 16
#: Signal-to-noise ratio an aperture needs (in the median's sum).
APERTURE_SNR = 50.0
#: Relative error the apertures leave under seeing changes of 10-40 % and drifts of
#: 0.2-0.6 px (flux crossing their edges, cosmic rays), measured (see
#: `aperture_flux_factors`); added in quadrature to the statistical error.
APERTURE_SYSTEMATIC = 0.003
#: Well-exposed flat pixels (signal-to-noise ratio above 20) that make the ratios of
#: pixel values the flux factors; with fewer, the sums over apertures.
MIN_FLAT_PIXELS = 1000
#: Apertures needed; with fewer (flat or empty images) the pixel ratios are used.
MIN_APERTURES = 10


def sky_step(rows, inner, first_row, region=None, *, stride):
    """A fixed subsample of each exposure's values (inside ``region``), for its sky: (N, m)."""
    data = rows[0][:, inner]
    keep = sample_mask(first_row, data.shape[1], data.shape[2], max(stride, 4))
    if keep is None:
        keep = np.ones(data.shape[1:], dtype=bool)
    if region is not None:
        keep = keep & region[inner]
    values = data[:, keep]
    return values[:, np.all(np.isfinite(values), axis=0)].astype(np.float64)


def aperture_step(rows, inner, first_row, region=None, *, sky, block=APERTURE_BLOCK):
    """Sums over blocks of ``block`` x ``block`` pixels of the tile's rows (no halo).

    Blocks are those of the whole image (rows ``[j * block, (j + 1) * block)``),
    so a block cut by a tile border gets two partial sums, which add up.  The
    exposures have their ``sky`` (N,) subtracted; the median is that of the
    sky-subtracted stack; a pixel counts only where every exposure is valid
    (and inside ``region``).  Returns ``(first block row, sums (N + 2, rows,
    cols))``: the exposures, the median and the pixel count.
    """
    data = rows[0][:, inner] - np.asarray(sky, dtype=np.float32)[:, None, None]
    n, ny, nx = data.shape
    s, count = sort_stack(data)
    med = stack_statistics(s, count, 2)["median2d"]
    del s
    ok = count == n
    if region is not None:
        ok &= region[inner]
    planes = np.concatenate([data, med[None], np.ones((1, ny, nx), dtype=np.float32)])
    planes = np.where(ok[None], planes, 0).astype(np.float64)
    top = first_row // block
    r0 = top * block - first_row                 # the first block starts above the tile
    nby = -(-(first_row + ny) // block) - top
    nbx = -(-nx // block)
    padded = np.zeros((n + 2, nby * block, nbx * block))
    padded[:, -r0:-r0 + ny, :nx] = planes
    sums = padded.reshape(n + 2, nby, block, nbx, block).sum(axis=(2, 4))
    return top, sums


def aperture_flux_factors(blocks, readnoise, *, snr_min=APERTURE_SNR):
    """Flux factors (N,) and their errors from the block sums of `aperture_step` (joined).

    Each aperture is a block and its 8 neighbours (48 x 48 pixels), the
    exposures' sky (the sigma-clipped median of each, over the regions if
    given) subtracted.  A change of seeing or a drift of a fraction of the
    aperture moves the flux of a source within it, and sums over it keep the
    flux (the photometric scale a convolution conserves, as the sum of an
    Alard & Lupton 1998 kernel).  The factor of exposure ``i`` is the
    sigma-clipped median over the apertures with a signal-to-noise ratio
    above ``snr_min`` of ``S_i / S``, ``S`` the sum of the median of the
    stack, normalised to a median of 1; its error ``1.2533 std / sqrt(n)``
    (the standard error of a median) and `APERTURE_SYSTEMATIC` in
    quadrature.  Cosmic rays add to a few apertures, which the clipping and
    the median leave out.  Measured on 3 x 1024^2 star fields with FWHM
    3.0/2.2/2.8, 3.0/2.6/3.6 and 2.7/2.9/3.0 px and drifts up to 0.6 px:
    within 0.3 % of the true relative levels (``benchmarks/quality.py``
    prints both); a local background from a ring of blocks around each
    aperture did worse (0.6-1.1 %: the ring of a crowded field holds other
    stars).  Returns None with fewer than `MIN_APERTURES` such apertures, or
    a factor that is not positive (a sky that is not one level over the
    image: use ``flux_factor_regions``).
    """
    n = blocks.shape[0] - 2
    padded = np.pad(blocks, ((0, 0), (1, 1), (1, 1)))
    nby, nbx = blocks.shape[1:]
    apertures = sum(padded[:, dy:dy + nby, dx:dx + nbx] for dy in range(3) for dx in range(3))
    values, ref, npix = apertures[:n], apertures[n], apertures[n + 1]
    rn2 = float(np.median(np.asarray(readnoise, dtype=float))) ** 2
    with np.errstate(invalid="ignore"):
        noise = np.sqrt(np.maximum(ref, 0) + npix * rn2)
        use = (ref > snr_min * noise) & (npix > 0)
    if int(use.sum()) < MIN_APERTURES:
        return None
    factors, errors = np.empty(n), np.empty(n)
    for i in range(n):
        ratio = values[i][use] / ref[use]
        _, factors[i], std = sigma_clipped_stats(ratio, sigma=3.0)
        errors[i] = np.hypot(1.2533 * std / np.sqrt(ratio.size), APERTURE_SYSTEMATIC)
    if not np.all(factors > 0):
        return None
    norm = np.median(factors)
    return factors / norm, errors / norm


def _aperture_sums(stack, run, stride, planes, progress):
    """The whole image's block sums: sky per exposure first, then `aperture_step`."""
    samples = np.concatenate(run(sky_step, planes=planes, stride=stride), axis=1)
    sky = np.array([sigma_clipped_stats(v, sigma=3.0)[1] for v in samples])
    parts = run(aperture_step, planes=planes, sky=sky, progress=progress)
    nby = -(-stack.shape[0] // APERTURE_BLOCK)
    total = np.zeros((stack.n_exposures + 2, nby, parts[0][1].shape[2]))
    for top, sums in parts:
        total[:, top:top + sums.shape[1]] += sums
    return total


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
        # the ratios of pixel values on a well-exposed flat sky; else sums over apertures
        # (seeing-invariant); else the ratios over every well-exposed pixel
        samples = run(levels_step, halo=1, planes=planes, stride=stride, progress=progress)
        values = np.concatenate([v for v, _, _ in samples], axis=1)
        median = np.concatenate([m for _, m, _ in samples])
        flat = np.concatenate([f for _, _, f in samples])
        if flat.sum() >= MIN_FLAT_PIXELS:
            return flux_factors_from_samples(values[:, flat], median[flat])
        matched = aperture_flux_factors(_aperture_sums(stack, run, stride, planes, progress),
                                        stack.readnoise)
        if matched is not None:
            return matched
        return flux_factors_from_samples(values, median)
    ff = np.asarray(ff, dtype=float)
    if ff.ndim == 0:
        return np.full(n, float(ff)), None
    if ff.size != n:
        raise ValueError(f"flux_factor has {ff.size} values but there are {n} exposures; "
                         "give one per exposure, a single number, None or 'auto'.")
    return ff, None
