# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Image operations of the method: derivative, structure, dilation and the fill of empty pixels."""

import numpy as np
from scipy import ndimage

__all__ = []


EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def dilate(mask, iterations):
    """Grow a mask with a 3x3 (8-connected) structuring element ``iterations`` times."""
    if iterations <= 0 or not mask.any():
        return mask.copy()
    return ndimage.binary_dilation(mask, structure=EIGHT_CONNECTED, iterations=iterations)


def derivative(reference):
    """Largest absolute difference between each pixel and its 4 neighbours.

    The ``dB`` of the derivative rule (JWST ``outlier_detection``, AstroDrizzle
    ``driz_cr``).  Non-finite neighbours are ignored; edges use the pixels
    that exist.  Returns float32, same shape.
    """
    ref = np.asarray(reference, dtype=np.float32)
    out = np.zeros(ref.shape, dtype=np.float32)
    for axis in (0, 1):
        d = np.abs(np.diff(ref, axis=axis))
        d = np.where(np.isfinite(d), d, 0)
        lo = [slice(None)] * 2
        hi = [slice(None)] * 2
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        np.maximum(out[tuple(lo)], d, out=out[tuple(lo)])
        np.maximum(out[tuple(hi)], d, out=out[tuple(hi)])
    return out


#: Offsets (dy, dx) of the 8 neighbours and of the ring of 16 pixels at distance 2.
NEIGHBOURS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]
RING = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if max(abs(dy), abs(dx)) == 2]


def around(image, rows, cols, offsets):
    """Values of ``image`` at ``(rows + dy, cols + dx)`` for each offset: (len(offsets), m).

    Positions outside the image are NaN (float images).  Used at a few
    candidate pixels, so that no shifted copy of the image is made.
    """
    ny, nx = image.shape
    out = []
    for dy, dx in offsets:
        r, c = rows + dy, cols + dx
        inside = (r >= 0) & (r < ny) & (c >= 0) & (c < nx)
        out.append(np.where(inside, image[np.clip(r, 0, ny - 1), np.clip(c, 0, nx - 1)], np.nan))
    return np.stack(out)


def structure(image, noise, *, allowance=2.0, gradient=None):
    """The local gradient of ``image`` in excess of its noise.

    ``max(dB - allowance * noise, 0)`` with ``dB`` from `derivative` (or
    ``gradient`` if already computed): on flat areas the differences between
    neighbours are noise (about 1.6 sigma for the minimum of three
    exposures, 3.2 sigma at the 99th percentile), which the detection
    boundary already allows for; near stars, lines and edges it is the
    gradient.  Returns float32, same shape.
    """
    dB = derivative(image) if gradient is None else gradient
    return np.maximum(dB - np.float32(allowance) * noise, 0)


#: The neighbourhoods whose median replaces, with PSF matching, a pixel masked in every
#: exposure on flat sky (L.A.Cosmic's replacement, van Dokkum 2001): ``FILL_SIZE`` rows
#: and the narrowest of ``FILL_WIDTHS`` columns that holds ``FILL_MIN_PIXELS`` pixels not
#: masked everywhere.  Wider rather than taller: the bands of rows of a large stack
#: (`crcombine._core.tiles`) then need no more halo than the 5 x 5 square.
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


def region_mask(regions, shape, *, name="flux_factor_regions"):
    """True inside any of the FITS-style ``regions`` ([xmin, xmax, ymin, ymax], 1-based).

    Raises
    ------
    ValueError
        A region that reaches outside an image of ``shape`` (ny, nx).
    """
    ny, nx = shape
    mask = np.zeros(shape, dtype=bool)
    for xmin, xmax, ymin, ymax in regions:
        if xmax > nx or ymax > ny:
            raise ValueError(f"{name}: region {[xmin, xmax, ymin, ymax]} reaches outside the "
                             f"exposures ({nx} x {ny} pixels; x up to {nx}, y up to {ny}).")
        mask[ymin - 1:ymax, xmin - 1:xmax] = True
    return mask
