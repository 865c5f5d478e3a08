# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Two exposures (CR-SPLIT pairs): each compared with its PSF-matched prediction from the other.

The Median-Minimum diagram needs three exposures: the median of two is their
mean, hit by any cosmic ray of either.  With two, the rule of STScI's
``acsrej``/``ocrreject`` and IRAF's ``crrej`` serves: each exposure is
compared with an estimate made without it, flagged where it stands above the
estimate by more than ``k`` times the noise model plus a term for structure,
the flags are grown to their neighbours with a lower threshold, and the
comparison is iterated with decreasing thresholds once the flagged values
have been replaced (:ref:`algorithm-pairs`).  The estimate of exposure ``i``
here is the other exposure ``j`` convolved with a kernel fitted from ``j`` to
``i`` (``P_i = K_i * s_j + c_i``; Alard & Lupton 1998, ApJ 503, 325; on the
kernel's pixels, Bramich 2008, MNRAS 386, L77), so that a change of seeing
or a drift between the two exposures is modelled rather than allowed for;
what the kernel leaves is allowed for by ``a_i |dP_i| + b_i P_i``, measured
on the data as `crcombine._detection.matched` measures it for N >= 3.

A pixel hit in both exposures stands above neither prediction: only a
single-frame detector finds it (``lacosmic=True``: L.A.Cosmic, van Dokkum
2001, PASP 113, 1420), whose flags join both masks; the combinations then
fill such pixels from their neighbours (exposure map 0).
"""

import logging

import numpy as np
from scipy import ndimage

from .._core.images import EIGHT_CONNECTED, NEIGHBOURS, around, derivative, dilate
from .._core.noise import variance
from .._core.statistics import scaled_stack
from .._core.tiles import sample_mask
from .._core.validation import scalar_or_none
from .comparison import mismatch_scale, mismatch_tails
from .matched import join_tails, level_allowance, relative_tails
from .matching import convolve
from .psfmatch import fit_in_passes, fit_pixels, interior, normal_equations, predict

__all__ = []

log = logging.getLogger(__name__)

#: Passes of the kernel fit: the first without sharp differences between the
#: exposures (cosmic rays of either), the second also without the pixels the
#: first kernel leaves more than `PAIR_CLIP` sigma plus 5 % of the model off.
PAIR_FIT_PASSES = 2
PAIR_CLIP = 5.0
#: The comparison runs at the seed threshold plus each of these (sigma), the last
#: being 0: a first pass finds the strong hits, whose values are replaced in the
#: source of the other exposure's prediction before the final pass (``crrej``'s
#: decreasing ``sigma`` list).
PAIR_STEPS = (2.0, 0.0)
#: A difference this many sigma above zero and `SPIKE_SHARPNESS` times above the
#: median difference of its 8 neighbours is a cosmic ray, not a seeing change.
SPIKE_SIGMA = 8.0
SPIKE_SHARPNESS = 3.0
#: A single-frame flag of both exposures is kept off sources only: where the median
#: of the ``SOURCE_WINDOW`` x ``SOURCE_WINDOW`` pixels around it in the lower
#: exposure stands less than `SOURCE_SIGMA` sigma above their minimum (a cosmic ray
#: covers few of them, a star's core and wings most).
SOURCE_WINDOW = 5
SOURCE_SIGMA = 4.0


def pair_halo(size, dilation):
    """Rows of halo of `pair_flags_step`: the kernel's reach (three times: the first
    prediction, the fill of the flagged values, the final prediction), the derivative
    and growth of each pass and the dilations, and the window of `off_sources`."""
    h = size // 2
    return 3 * h + len(PAIR_STEPS) * (2 + dilation) + dilation + 2 + SOURCE_WINDOW // 2


def _level(scaled):
    """The lower of the two values (NaN-aware): a level no single hit raises."""
    with np.errstate(invalid="ignore"):
        return np.fmin(scaled[0], scaled[1])


def spikes(difference, sigma):
    """Sharp positive or negative excursions of ``difference`` (a hit of either exposure)."""
    magnitude = np.abs(np.nan_to_num(difference))
    with np.errstate(invalid="ignore"):
        rows, cols = np.nonzero(magnitude > SPIKE_SIGMA * sigma)
    out = np.zeros(difference.shape, dtype=bool)
    if rows.size:
        near = np.median(around(magnitude, rows, cols, NEIGHBOURS), axis=0)
        sharp = magnitude[rows, cols] > SPIKE_SHARPNESS * near
        out[rows[sharp], cols[sharp]] = True
    return out


def pair_kernel_step(rows, inner, first_row, *, flux_factor, size, stride, kernels=None):
    """Normal equations of the kernels from exposure 2 to 1 and from 1 to 2, over one tile.

    Structured pixels (``d(level) > 5 sigma``, dilated by 2) and every 16th other
    one, without the sharp differences (`spikes`, dilated by 2) and, with the
    ``kernels`` of a previous pass, without the pixels they leave more than
    `PAIR_CLIP` sigma plus 5 % of the model off (dilated by 1).  Halo: ``size // 2 + 4``.
    Returns ``(ata (2, K, K), atb (2, K), counts (2,))``, K = size^2 + 1.
    """
    data, rn, _ = rows
    scaled = scaled_stack(data, flux_factor)
    rn2 = np.asarray(rn, dtype=np.float32) ** 2
    low = _level(scaled)
    var = variance(np.maximum(np.nan_to_num(low), 0), rn2)
    sigma = np.sqrt(var)
    with np.errstate(invalid="ignore"):
        structured = dilate(derivative(low) > 5 * sigma, 2)
    valid = np.isfinite(scaled).all(axis=0)
    sharp = dilate(spikes(scaled[0] - scaled[1], np.sqrt(2) * sigma), 2)
    use = fit_pixels(interior(low.shape, size) & valid & ~sharp, structured, inner,
                     first_row, stride)
    weight = 1 / np.maximum(var, 1e-6)
    out = []
    for i in (0, 1):
        source = np.where(np.isfinite(scaled[1 - i]), scaled[1 - i], np.nan_to_num(low))
        ok = use
        if kernels is not None:
            model = convolve(source, kernels[i], size)
            with np.errstate(invalid="ignore"):
                off = np.abs(scaled[i] - model) > PAIR_CLIP * np.sqrt(
                    2 * variance(np.maximum(model, 0), rn2)) + 0.05 * np.abs(model - kernels[i][-1])
            ok = use & ~dilate(off, 1)
        out.append(normal_equations(source, scaled[i], weight, ok, size))
    return tuple(np.array(x) for x in zip(*out))


def identity_kernels(size):
    """Two kernels (2, size^2 + 1) that change nothing (a flat pair needs no matching)."""
    k = np.zeros((2, size * size + 1))
    k[:, (size * size) // 2] = 1.0
    return k


def fit_pair_kernels(run, flux_factor, stride, size, *, progress=None):
    """The kernels (2, size^2 + 1) predicting exposure 1 from 2 and 2 from 1.

    `PAIR_FIT_PASSES` fits over every tile (`pair_kernel_step`); the identity
    when a fit has too few pixels or is singular (no structure to match).
    Returns ``(kernels, fitted)``.
    """
    kernels = fit_in_passes(run, pair_kernel_step, passes=PAIR_FIT_PASSES, size=size,
                            halo=size // 2 + 4, progress=progress, flux_factor=flux_factor,
                            stride=stride)
    return (identity_kernels(size), False) if kernels is None else (kernels, True)


def noise_level(model, readnoise):
    """The level the noise model is evaluated at: ``model`` raised towards the mean of
    its 3 x 3 neighbourhood, by at most 3 times its noise.

    The model is itself noisy (one exposure, or one smoothed by the kernel): a
    pixel of sky where it fluctuates low would be given a smaller noise exactly
    where the difference from it is large (on a sky of 40 e-, the predictions
    2.5 sigma low put 13 times too many differences above 4 sigma).  Next to a
    star's core the mean of the neighbours is far above the pixel: the cap keeps
    the noise of the wings from being inflated there.
    """
    model = np.nan_to_num(model).astype(np.float32)
    cap = model + 3 * np.sqrt(np.maximum(model, 0) + np.asarray(readnoise, np.float32) ** 2)
    return np.minimum(np.maximum(model, ndimage.uniform_filter(model, 3, mode="nearest")), cap)


def pair_noise(level, flux_factor, readnoise, kernel):
    """Noise of ``s_i - P_i`` (electrons, float32): exposure ``i``'s Poisson and read
    noise at ``level`` plus the prediction's, the kernel's sum of squares times
    exposure ``j``'s (``flux_factor``: ``(f_i, f_j)``)."""
    lv = np.maximum(np.nan_to_num(level), 0).astype(np.float32)
    rn2 = np.asarray(readnoise, dtype=np.float32) ** 2
    s2 = np.float32(np.sum(np.asarray(kernel[:-1]) ** 2))
    return np.sqrt(variance(lv, rn2, flux_factor=np.float32(flux_factor[0]))
                   + s2 * variance(lv, rn2, flux_factor=np.float32(flux_factor[1])))


def _comparisons(raw, sources, kernels, size, flux_factor, rn, i):
    """Both comparisons of exposure ``i`` with the other one ``j``: ``(excess, sigma, model)``.

    ``raw``: the exposures (their invalid values filled), ``sources``: the
    same with the flagged values replaced.  Forward: ``s_i - P_i``, ``P_i =
    K_i * s_j`` (the model ``P_i``, from ``sources[j]``); reverse: ``K_j * s_i
    - s_j`` (the model ``sources[j]``, ``s_i`` from ``raw[i]``: its own flagged
    values are what is tested), exposure ``i`` matched to the other.
    A sharper exposure is predicted from a broader one by a kernel that must
    sharpen, which a small kernel does only roughly, while matching it to the
    broader one smooths it, which it does well; a cosmic ray keeps most of its
    charge in its pixel either way (`crcombine._detection.psfmatch.reverse_matching`).
    """
    j = 1 - i
    f = np.asarray(flux_factor, dtype=float)
    pred = predict(sources[j], kernels[i], size)
    # within half a kernel of the image's edges the window is padded: the other exposure
    # itself (scaled by the kernel's sum) is the prediction there, and no reverse test
    edge = ~interior(pred.shape, size)
    pred[edge] = (sources[j][edge] * np.float32(np.sum(kernels[i][:-1]))
                  + np.float32(kernels[i][-1]))
    forward = (raw[i] - pred, pair_noise(noise_level(pred, rn), (f[i], f[j]), rn, kernels[i]),
               pred)
    matched = predict(raw[i], kernels[j], size)
    target = sources[j]
    reverse = (np.where(edge, np.nan, matched - target),
               pair_noise(noise_level(target, rn), (f[j], f[i]), rn, kernels[j]), target)
    return forward, reverse


def pair_tails_step(rows, inner, first_row, *, flux_factor, size, kernels, snr, stride):
    """Samples of the allowances of the pair comparisons, and the flat pixels' hit counts.

    For each exposure and each comparison of `_comparisons`, away from sharp
    differences: the gradient tails ``(excess - 3 sigma) / d(model)`` over
    ``d(model) > 20 sigma`` (`crcombine._detection.comparison.mismatch_tails`),
    the level tails (`crcombine._detection.matched.relative_tails`) and, for
    the forward comparison, (flat pixels, flat pixels above ``snr[0]`` sigma).
    Halo: ``size // 2 + 2``.  Returns ``(tails, counts)``: ``tails[c][t]`` the
    list over the exposures of comparison ``c`` (forward, reverse), ``t``
    (gradient, level).
    """
    data, rn, _ = rows
    scaled = scaled_stack(data, flux_factor)
    low = np.nan_to_num(_level(scaled))
    sources = [np.where(np.isfinite(s), s, low) for s in scaled]
    keep = interior(low.shape, size)
    tails = [([], []), ([], [])]
    counts = []
    for i in (0, 1):
        for c, (excess, sigma, model) in enumerate(
                _comparisons(sources, sources, kernels, size, flux_factor, rn, i)):
            sharp = dilate(spikes(excess, sigma), 2)
            here = (keep & np.isfinite(excess) & ~sharp)[inner]
            dm = derivative(model)[inner]
            e_in, m_in, s_in = excess[inner], model[inner], sigma[inner]
            sample = sample_mask(first_row, here.shape[0], here.shape[1], stride)
            tails[c][0].append(mismatch_tails((m_in + e_in)[None], m_in, dm, s_in,
                                              keep=here if sample is None else here & sample)[0])
            tails[c][1].append(relative_tails(e_in, m_in, s_in, here))
            if c == 0:
                with np.errstate(invalid="ignore"):
                    flat = (keep & np.isfinite(excess))[inner] & (dm <= 5 * s_in)
                    counts.append([int(flat.sum()), int((flat & (e_in > snr[0] * s_in)).sum())])
    return tails, np.array(counts, dtype=np.int64)


def pair_allowances(run, flux_factor, stride, size, kernels, snr, cap, *, progress=None):
    """The allowances ``(a_i, b_i)`` of both comparisons (2, 2, 2), and the hit fraction.

    ``allowance[c, i]`` for comparison ``c`` (forward, reverse) of exposure ``i``:
    ``a``, `crcombine._detection.comparison.mismatch_scale` of the gradient
    tails (the quantile lowered by the fraction of flat pixels flagged, the
    cosmic rays in the tail), at most ``cap``; ``b``,
    `crcombine._detection.matched.level_allowance`.
    """
    parts = run(pair_tails_step, halo=size // 2 + 2, flux_factor=flux_factor, size=size,
                kernels=kernels, snr=snr, stride=stride, progress=progress)
    counts = sum(p[1] for p in parts)
    hit = np.array([c[1] / c[0] if c[0] >= 1000 else 0.0 for c in counts])
    out = np.zeros((2, 2, 2))
    for c in (0, 1):
        gradient = join_tails([p[0][c][0] for p in parts])
        level = [np.concatenate(x) for x in zip(*(p[0][c][1] for p in parts))]
        out[c, :, 0] = np.minimum(mismatch_scale(gradient, contamination=np.full(2, hit.min())),
                                  cap)
        out[c, :, 1] = level_allowance(level)
    return out, hit


def pair_flags_step(rows, inner, first_row, auxiliary=None, *, flux_factor, size, kernels,
                    allowance, ratio, snr, threshold, dilation, edge_scale):
    """CRMASK1, CRMASK2 (2, rows, nx), the seeds and their distance of one tile.

    Each pass of `PAIR_STEPS` predicts each exposure from the other with its
    flagged values replaced by their own prediction, and flags, in exposure
    ``i``, the seeds where ``s_i - P_i > k sigma + a_i dP_i + b_i P_i`` (``k`` =
    ``snr[0]`` plus the step; ``sigma`` from `pair_noise` at ``P_i``), the
    exposure also stands above the other by ``snr[1]`` sigma (where that one is
    not flagged: so that an artefact of the prediction alone is not flagged) and
    above ``threshold``; their 8 neighbours above ``snr[1]`` sigma (plus the
    step) and ``ratio`` times the allowances.  The flags are dilated
    ``dilation`` times and joined by the ``auxiliary`` (L.A.Cosmic) flags,
    dilated alike.  ``distance`` is the largest excess over the seed threshold
    (electrons) at the seeds, 0 elsewhere.  Within ``size // 2`` pixels of
    the image's edges the prediction is the other exposure and the gradient
    allowance at least ``edge_scale`` (``crmask_scale[0]``, the rule of the
    comparison with the reference).
    """
    data, rn, _ = rows
    scaled = scaled_stack(data, flux_factor)
    f = np.asarray(flux_factor, dtype=float)
    valid = np.isfinite(scaled)
    low = np.nan_to_num(_level(scaled))
    raw = [np.where(valid[i], scaled[i], low) for i in (0, 1)]
    first = [predict(raw[1 - i], kernels[i], size) for i in (0, 1)]
    edge = ~interior(low.shape, size)
    rn2 = np.asarray(rn, dtype=np.float32) ** 2
    extra_masks = np.zeros(scaled.shape, dtype=bool)
    if auxiliary is not None:
        keep = off_sources(auxiliary.any(axis=0), low, rn)
        extra_masks = np.stack([dilate(a & keep, dilation) for a in auxiliary])
    masks = extra_masks.copy()
    for step in PAIR_STEPS:
        # a flagged value is replaced by its prediction from the other exposure,
        # unless that is higher (a hit of the other exposure there: its own cosmic ray
        # would then predict itself)
        sources = [np.where(masks[i], np.fmin(first[i], raw[i]), raw[i]) for i in (0, 1)]
        k0, k1 = np.float32(snr[0] + step), np.float32(snr[1] + step)
        flags = np.zeros(scaled.shape, dtype=bool)
        seeds = np.zeros(scaled.shape, dtype=bool)
        distance = np.zeros(scaled.shape[1:], dtype=np.float32)
        for i in (0, 1):
            j = 1 - i
            tests = _comparisons(raw, sources, kernels, size, flux_factor, rn, i)
            (excess, sigma, pred), (r_excess, r_sigma, target) = tests
            level = np.maximum(noise_level(pred, rn), 0)
            raw_sigma = np.sqrt(variance(level, rn2, flux_factor=np.float32(f[i]))
                                + variance(level, rn2, flux_factor=np.float32(f[j])))
            a, b = np.float32(allowance[0][i][0]), np.float32(allowance[0][i][1])
            extra = a * derivative(pred) + b * np.maximum(pred, 0)
            extra[edge] = (np.float32(max(edge_scale, allowance[0][i][0])) * derivative(pred)[edge]
                           + b * np.maximum(pred[edge], 0))
            ra, rb = np.float32(allowance[1][i][0]), np.float32(allowance[1][i][1])
            r_extra = ra * derivative(target) + rb * np.maximum(target, 0)
            with np.errstate(invalid="ignore"):
                above = (masks[j] | (scaled[i] - raw[j] > k1 * raw_sigma)
                         | (r_excess > k1 * r_sigma))
                margin = excess - k0 * sigma - extra
                r_margin = r_excess - k0 * r_sigma - r_extra
                seed = (((margin > 0) & above) | ((r_margin > 0) & (excess > k1 * sigma)))
                seed &= (excess > threshold) & valid[i]
                # (not the other way: the kernel spreads a hit's charge to its neighbours)
                grow = ((excess > k1 * sigma + np.float32(ratio) * extra)
                        & (excess > threshold) & valid[i])
            seeds[i] = seed
            flags[i] = seed | (ndimage.binary_dilation(seed, EIGHT_CONNECTED) & grow)
            distance = np.maximum(distance, np.where(seed, np.fmax(margin, r_margin), 0))
        masks = np.stack([dilate(m, dilation) for m in flags]) | extra_masks
    return masks[:, inner], seeds.any(axis=0)[inner], distance[inner]


def off_sources(flagged, low, readnoise):
    """Which ``flagged`` pixels lie off sources (`SOURCE_WINDOW`, `SOURCE_SIGMA`).

    L.A.Cosmic flags the cores of sharp, bright stars in both exposures alike
    (its ``objlim`` test does not hold for undersampled stars), where no
    comparison can tell them from a hit of both; so its flags of both are
    kept only where the lower exposure ``low`` shows no source around them.
    Returns (ny, nx) bool, False where not flagged.
    """
    out = np.zeros(flagged.shape, dtype=bool)
    rows, cols = np.nonzero(flagged)
    if rows.size == 0:
        return out
    h = SOURCE_WINDOW // 2
    padded = np.pad(np.asarray(low, dtype=np.float32), h, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, (SOURCE_WINDOW,) * 2)
    values = windows[rows, cols].reshape(rows.size, -1)
    med, low_v = np.median(values, axis=1), values.min(axis=1)
    rn2 = np.broadcast_to(np.asarray(readnoise, dtype=np.float32) ** 2, flagged.shape)[rows, cols]
    sigma = np.sqrt(np.maximum(med, 0) + rn2)
    out[rows, cols] = med - low_v < SOURCE_SIGMA * sigma
    return out


def double_hits(flags):
    """The single-frame flags (2, ny, nx) kept for the pair comparison: those of both exposures.

    What L.A.Cosmic flags in one exposure only, the comparison with the other
    finds or rejects better (its own false flags lie on sharp stars); where
    it flags both exposures within a pixel of each other, no comparison can
    tell: a hit of both (or a star sharp in both).  Returns (2, ny, nx) bool.
    """
    both = dilate(flags[0], 1) & dilate(flags[1], 1)
    return np.stack([f & both for f in flags])


def build_pair_masks(stack, run, options, *, tiles, flux_factor, flux_uncertainty, stride,
                     stage, progress=None):
    """The `~crcombine.CRMasks` of two exposures (`~crcombine.CRMaskBuilder.build` at N = 2).

    ``run`` runs a step on every band of ``tiles``; ``options`` are the
    builder's `~crcombine._detection.options.DetectionOptions` (the kernel
    side ``psf_kernel_size``, the thresholds ``crmask_snr``, the largest
    gradient allowance ``crmask_scale[0]`` and the neighbours' ratio
    ``crmask_scale[1] / crmask_scale[0]``, ``threshold``, ``dilation``,
    ``lacosmic``); ``stage(name)`` the progress callback of a step.

    MEDIANCR and MEANCRT (the median of two is their mean) are the pixels
    flagged in either mask: where ``mediancr`` takes the lower value.
    MEANCR is empty: ``meancr`` fills the pixels flagged in both masks from
    their neighbours (`crcombine._combination.rules.combine_scaled`), no hit
    is left in it.
    """
    from .lacosmic import lacosmic_masks
    from .masks import CRMasks, label_features

    from .diagram import check_exposures, range_step

    p = options
    size = p.psf_kernel_size
    shape = stack.shape
    check_exposures(run(range_step, halo=0, flux_factor=flux_factor, matching=None,
                        cr_coincidences=1, stride=stride, overdispersion=False,
                        mm_scale_samples=False))
    kernels, fitted = fit_pair_kernels(run, flux_factor, stride, size,
                                       progress=stage("kernels"))
    cap = p.crmask_scale[0]
    allowance, hit = pair_allowances(run, flux_factor, stride, size, kernels, p.crmask_snr,
                                     cap, progress=stage("matched tails"))
    log.info("pair comparison: %d x %d kernels %s (sum %s); allowances (gradient, level) %s; "
             "flat pixels flagged %s", size, size, "fitted" if fitted else "not fitted (identity)",
             np.round(kernels[:, :-1].sum(axis=1), 4).tolist(), np.round(allowance, 4).tolist(),
             np.round(hit, 5).tolist())
    auxiliary = None
    if p.lacosmic is not False:
        auxiliary = double_hits(lacosmic_masks(stack, p.lacosmic, progress=progress))
    crmask = np.empty((2,) + shape, dtype=bool)
    seeds = np.empty(shape, dtype=bool)
    distance = np.empty(shape, dtype=np.float32)

    def put(index, result):
        a, b = tiles[index]
        crmask[:, a:b], seeds[a:b], distance[a:b] = result

    run(pair_flags_step, halo=pair_halo(size, p.dilation),
        planes=() if auxiliary is None else (auxiliary,), flux_factor=flux_factor, size=size,
        kernels=kernels, allowance=allowance,
        ratio=p.crmask_scale[1] / cap if cap else 0.0, snr=p.crmask_snr,
        threshold=p.threshold, dilation=p.dilation, edge_scale=cap, progress=stage("masks"),
        collect=put)
    either = crmask.any(axis=0)
    labels, features = label_features(either, distance, seeds)
    params = p.as_dict()
    params.update(crmask_method="pairs", cr_coincidences=1, null_distribution=None,
                  nsimulations=None, mm_scale=None, seed=None, psf_matching=True,
                  psf_kernels=kernels.tolist(), psf_allowance=allowance[0].tolist(),
                  psf_reverse_allowance=allowance[1].tolist(),
                  gain=scalar_or_none(stack.gain), readnoise=scalar_or_none(stack.readnoise),
                  bias=scalar_or_none(stack.bias), unit=stack.unit.to_string())
    for name in ("boundary", "knots", "niter_boundary_extension",
                 "weight_boundary_extension", "nbinom_shape", "min_column_count"):
        params[name] = None   # M.M.Cosmic settings: not used with two exposures
    offsets = getattr(stack, "offsets", None)
    if offsets is not None:
        params["offsets"] = np.c_[offsets["dy"], offsets["dx"]].tolist()
    log.info("two exposures: CRMASK %s px, %d in both", [int(m.sum()) for m in crmask],
             int(crmask.all(axis=0).sum()))
    return CRMasks(mediancr=either, meancrt=either.copy(), crmask=crmask,
                   meancr=np.zeros(shape, dtype=bool), flux_factor=flux_factor,
                   flux_factor_uncertainty=flux_uncertainty, boundaries={}, features=features,
                   labels=labels, parameters=params, diagram=None)
