# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Whole-image reference implementations of steps the package runs band by band.

The tests compare the tiled steps of `crcombine.CRMaskBuilder` with these
straightforward versions (one band, the whole image, no sampling), so that a
change to the tiling cannot change a result unnoticed.
"""

import numpy as np

from crcombine._core.images import derivative, dilate
from crcombine._core.noise import reference_noise
from crcombine._core.tiles import rows_per_block
from crcombine._detection.comparison import (adaptive_scale, background_offsets,
                                             flat_differences, flat_hit_counts,
                                             hit_fraction_from_counts, mismatch_scale,
                                             mismatch_tails, outlier_flags)
from crcombine._detection.levels import (flux_factor_samples, flux_factors_from_samples,
                                         overdispersion_from_samples, overdispersion_samples)
from crcombine._detection.simulate import (denoised_signal, diagram_grid, expected_signal,
                                           simulate_tile)


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
    values, med, _ = flux_factor_samples(data, readnoise, snr_min=snr_min)
    return flux_factors_from_samples(values, med, snr_min=snr_min)


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


def exposure_masks(scaled, reference, flux_factor, readnoise, *, kappa=None, snr=(5.0, 4.0),
                   scale=(1.2, 0.7), threshold=0.0, dilation=1, adaptive=True):
    """Per-exposure CR masks from a noise-model comparison with a robust reference.

    Exposure ``i`` (flux-scaled, electrons) is compared with the reference
    ``B`` (the ``mediancr`` image): a pixel is an outlier when

        ``d_i - B > snr * sigma_i(B) + scale * dB``

    with ``sigma_i(B)`` from `reference_noise` (the noise of the difference
    with a median of N exposures) and ``dB`` the largest
    difference between a pixel of ``B`` and its 4 neighbours, which absorbs
    small misalignments and seeing changes near stars (JWST
    ``outlier_detection``, AstroDrizzle ``driz_cr``).  Two passes: seeds with
    ``snr[0], scale[0]`` and neighbours with ``snr[1], scale[1]``; the mask is
    the seeds plus the neighbours adjacent to them (``dilate(seeds) &
    neighbours``), then grown by ``dilation`` 3x3 dilations.  Only positive
    outliers are flagged.  With ``adaptive`` the seed scale of each exposure
    is its measured mismatch (`mismatch_scale`), at most ``scale[0]``, with
    the hit fraction measured on flat pixels with ``scale`` itself, and each
    exposure's background offset (`background_offsets`) is taken out.

    The builder runs the same steps band by band (`crcombine._detection.comparison`).

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
    applied = scale
    if adaptive:
        sigma = reference_noise(ref, float(np.median(flux_factor)), readnoise, kappa,
                                n_exposures=scaled.shape[0])
        flags = outlier_flags(scaled, ref, dB, flux_factor, readnoise, kappa=kappa, snr=snr,
                              scale=scale)
        hit_fraction = hit_fraction_from_counts(flat_hit_counts(flags, dB, sigma))
        applied = adaptive_scale(scale, mismatch_scale(mismatch_tails(scaled, ref, dB, sigma),
                                                       contamination=hit_fraction, spread=True))
        background = background_offsets(flat_differences(scaled, ref, dB, sigma))
    else:
        background = None
    flags = outlier_flags(scaled, ref, dB, flux_factor, readnoise, kappa=kappa, snr=snr,
                          scale=applied, threshold=threshold, background=background)
    return np.stack([dilate(m, dilation) for m in flags])


def simulate_histograms(scaled, median2d, x_data, y_data, flux_factor, readnoise, *,
                        cr_coincidences, nsimulations, seed, nbinom_shape=None, ydiag_max=None,
                        threads=None, progress=None, denoise=False):
    """Run the simulations of a whole stack; return (simulated, data) `DiagramHistograms`.

    The whole-image reference implementation (one tile, all statistics): the
    builder does the same tile by tile (`crcombine._tiles`), and the tests
    check that both agree.  Arguments as in `simulate_tile` and `diagram_grid`; ``y_data``
    is the data's ``y`` by statistic (from `diagram_values`), ``progress(done,
    total)`` is called after each block; with ``denoise`` the simulations draw
    at the `denoised_signal` (as ``false_alarm`` does).
    """
    finite = x_data[np.isfinite(x_data)]
    grid = diagram_grid(finite.min(), finite.max(), flux_factor, readnoise,
                        cr_coincidences=cr_coincidences, seed=seed, nbinom_shape=nbinom_shape,
                        ydiag_max=ydiag_max)
    data = grid.empty_like()
    data.add(x_data, y_data)
    n, ny, nx = scaled.shape
    total = nsimulations * -(-ny // rows_per_block(n, nx))
    done = [0]

    def tick():
        done[0] += 1
        if progress is not None:
            progress(done[0], total)

    expected = expected_signal(median2d, x_data, readnoise)
    if denoise:
        expected = denoised_signal(expected, flux_factor, readnoise, n)
    sim = simulate_tile(grid, scaled, expected, flux_factor, readnoise, first_row=0,
                        cr_coincidences=cr_coincidences, nsimulations=nsimulations, seed=seed,
                        nbinom_shape=nbinom_shape, threads=threads, progress=tick)
    return sim, data


def seed_guards_reference(x, statistic, noise):
    """Whole-image reference of `crcombine._detection.diagram.seed_guards`, for every pixel.

    The minimum image is a spike (above its highest 8-neighbour by more than
    0.8 of its height above the lowest and by 5 noise), or the statistic does
    not stand above the median of its ring of 16 pixels at distance 2 by half
    its excess over the minimum: not a cosmic ray.  Pixels beyond the image
    are left out (``scipy.ndimage`` filters with NaN / infinite fill values).
    """
    from scipy import ndimage
    ring = np.ones((5, 5), dtype=bool)
    ring[1:4, 1:4] = False
    eight = np.ones((3, 3), dtype=bool)
    eight[1, 1] = False
    xf = np.where(np.isfinite(x), x, np.nan)
    top = ndimage.generic_filter(xf, np.nanmax, footprint=eight, mode="constant", cval=np.nan)
    low = ndimage.generic_filter(xf, np.nanmin, footprint=eight, mode="constant", cval=np.nan)
    around = ndimage.generic_filter(np.asarray(statistic, dtype=float), np.nanmedian,
                                    footprint=ring, mode="constant", cval=np.nan)
    with np.errstate(invalid="ignore"):
        spike = ((x - top) > 0.8 * (x - low)) & ((x - top) > 5 * noise)
        raised = (statistic - around) >= 0.5 * (statistic - x)
    return ~spike & (raised | ~np.isfinite(around))
