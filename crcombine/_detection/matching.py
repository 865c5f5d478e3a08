# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Exposures brought to a common PSF and level before the MM diagram (``matched_diagram``).

The MM method assumes equivalent exposures: near a star a change of seeing or
a drift makes the exposures' expected values differ by a fraction of the
local signal, which the null distribution of the diagram does not hold.
Each flux-scaled exposure ``s_i`` is modelled as ``k_i * R + b_i``, ``R`` the
median of the stack (the minimum where coincident hits raise it:
`reference`), ``k_i`` a ``size`` x ``size`` kernel and ``b_i`` a
constant fitted by linear least squares over the whole image (Alard & Lupton
1998, ApJ 503, 325; on the kernel's pixels, Bramich 2008, MNRAS 386, L77),
with the cosmic rays clipped in a second pass.  The diagram is then built on

    ``m_i = s_i - (k_i * R + b_i - R)``,

whose expected values are all ``R``'s: the exposures' own noise and cosmic
rays are untouched (only the median is convolved), and the correction's own
noise is that of ``(k_i - delta) * R``, a fraction of the median's where the
kernels are near the identity (:ref:`algorithm-matched-diagram`).  A
kernel constant over the image models a uniform seeing change, drift and
level change; what varies across the image (a PSF that changes over a wide
field, slit losses that change along a spectrum) is left to the derivative
term ``mm_scale``.
"""

import logging

import numpy as np

from .._core.images import NEIGHBOURS, around, derivative, dilate
from .._core.noise import variance
from .._core.statistics import scaled_stack, sort_stack, stack_statistics
from .psfmatch import fit_in_passes, fit_pixels, interior, normal_equations

__all__ = []

log = logging.getLogger(__name__)

#: Side of the matching kernels (pixels).
MATCH_KERNEL_SIZE = 5
#: Rows of halo the matched stack needs: the kernel's reach and the 8 neighbours
#: of `reference`.
MATCH_HALO = MATCH_KERNEL_SIZE // 2 + 1
#: Passes of the fit: the second without the pixels the first leaves more than
#: `MATCH_CLIP` sigma (plus 5 % of the model) off, dilated by 1: cosmic rays.
MATCH_PASSES = 2
MATCH_CLIP = 5.0


#: A median this far above the minimum (in sigma), and more than `HIT_SHARPNESS`
#: times the median of that excess over its 8 neighbours, is taken as hit.
HIT_SIGMA = 10.0
HIT_SHARPNESS = 3.0


def reference(scaled, readnoise):
    """``R``: the median of the tile, the minimum where the median is hit.

    The median is hit by coincident cosmic rays; convolved into the
    corrections it would raise every exposure, the clean ones too, and hide
    the hit.  A hit makes the excess of the median over the minimum sharp:
    above `HIT_SIGMA` times the noise and `HIT_SHARPNESS` times the median of
    the excess over the 8 neighbours (a track covers 2 of them).  A change of
    seeing or a drift makes the excess as broad as the PSF, on the cores and
    the wings of sources alike, where the median is kept.  (The sharpest
    exposure, cleaned of its cosmic rays, as the reference, so that every
    kernel is a blur, did worse on star fields with seeing changes of 25-40 %:
    more coincident hits left for the same false flags.)
    """
    s, count = sort_stack(scaled)
    st = stack_statistics(s, count, 2)
    del s
    med, low = st["median2d"], st["minR"]
    excess = med - low
    with np.errstate(invalid="ignore"):
        noise = np.sqrt(variance(np.maximum(low, 0), np.asarray(readnoise, dtype=np.float32) ** 2))
        rows, cols = np.nonzero(excess > HIT_SIGMA * noise)
    if rows.size:
        around_excess = np.nanmedian(around(excess, rows, cols, NEIGHBOURS), axis=0)
        with np.errstate(invalid="ignore"):
            hit = excess[rows, cols] > HIT_SHARPNESS * np.maximum(around_excess, 0)
        med = med.copy()
        med[rows[hit], cols[hit]] = low[rows[hit], cols[hit]]
    return med


def convolve(source, kernel, size):
    """``sum_q k(q) source(p + q) + c`` (the model of `normal_equations`), edges repeated.

    ``kernel``: (size^2 + 1,), the kernel row by row and the constant ``c``.
    Returns float32, the shape of ``source``.
    """
    h = size // 2
    k = np.asarray(kernel[:-1], dtype=np.float32).reshape(size, size)
    padded = np.pad(source.astype(np.float32), h, mode="edge")
    ny, nx = source.shape
    out = np.full(source.shape, np.float32(kernel[-1]), dtype=np.float32)
    for dy in range(size):
        for dx in range(size):
            if k[dy, dx]:
                out += k[dy, dx] * padded[dy:dy + ny, dx:dx + nx]
    return out


def match_step(rows, inner, first_row, *, flux_factor, size, stride, kernels=None):
    """Normal equations of each exposure's kernel from the median, over one tile.

    The pixels are those within 2 px of structure (``dR > 5`` sigma) and
    every 16th other one, weighted by the inverse variance; with the
    ``kernels`` of a previous pass, without those (dilated by 1) it leaves
    more than `MATCH_CLIP` sigma plus 5 % of the model off.  Needs a halo of
    ``size // 2 + 2`` rows (the kernel's reach on `reference`, whose hit test
    looks 1 row further, and the derivative and dilations of the selection).
    Returns ``(ata (N, K, K), atb (N, K), counts (N,))``.
    """
    data, rn, _ = rows
    scaled = scaled_stack(data, flux_factor)
    ref = reference(scaled, rn)
    rn2 = np.asarray(rn, dtype=np.float32) ** 2
    var = variance(np.maximum(ref, 0), rn2)
    with np.errstate(invalid="ignore"):
        structured = dilate(derivative(ref) > 5 * np.sqrt(var), 2)
    use = fit_pixels(interior(ref.shape, size) & np.isfinite(ref), structured, inner,
                     first_row, stride)
    source = np.where(np.isfinite(ref), ref, 0).astype(np.float32)
    weight = 1 / np.maximum(var, 1e-6)
    out = []
    for i in range(scaled.shape[0]):
        ok = use & np.isfinite(scaled[i])
        if kernels is not None:
            model = convolve(source, kernels[i], size)
            with np.errstate(invalid="ignore"):
                off = np.abs(scaled[i] - model) > MATCH_CLIP * np.sqrt(
                    2 * variance(np.maximum(model, 0), rn2)) + 0.05 * np.abs(model - kernels[i][-1])
            ok &= ~dilate(off, 1)
        out.append(normal_equations(source, scaled[i], weight, ok, size))
    return tuple(np.array(x) for x in zip(*out))


def fit_exposure_matching(run, flux_factor, stride, *, size=MATCH_KERNEL_SIZE, progress=None):
    """The kernels (N, size^2 + 1) matching the `reference` to each exposure, or None.

    `MATCH_PASSES` fits over every tile (`match_step`), the second with the
    cosmic rays clipped; None when a fit has too few pixels or is singular
    (an image without structure needs no matching).
    """
    kernels = fit_in_passes(run, match_step, passes=MATCH_PASSES, size=size, halo=size // 2 + 2,
                            progress=progress, flux_factor=flux_factor, stride=stride)
    if kernels is None:
        log.info("matched_diagram: no structure to fit kernels on; not matched")
        return None
    log.info("matching kernels: distance from the identity %s, constants %s e-",
             np.round(identity_distance(kernels, size), 3).tolist(),
             np.round(kernels[:, -1], 2).tolist())
    return kernels


def matched_stack(scaled, kernels, readnoise, size=MATCH_KERNEL_SIZE):
    """``m_i = s_i - (k_i * R + b_i - R)`` for a (N, rows, nx) flux-scaled tile (a new array).

    ``kernels`` from `fit_exposure_matching`; ``R`` the tile's `reference`
    (``readnoise`` in electrons); rows within
    `MATCH_HALO` of a tile edge that is not an image edge are halo
    rows, whose values are not exact.
    """
    ref = reference(scaled, readnoise)
    source = np.where(np.isfinite(ref), ref, 0).astype(np.float32)
    out = np.empty_like(scaled)
    for i in range(scaled.shape[0]):
        out[i] = scaled[i] - (convolve(source, kernels[i], size) - source)
    return out


def identity_distance(kernels, size=MATCH_KERNEL_SIZE):
    """``sqrt(sum (k_i - delta)^2)`` of each kernel (N,): how far it is from no change."""
    k = np.array(kernels, dtype=float)[:, :-1].copy()
    k[:, (size * size) // 2] -= 1.0
    return np.sqrt((k ** 2).sum(axis=1))
