# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Offsets between exposures and their alignment on a common grid (:ref:`algorithm-differences`).

Drifting (guiding) and dithered exposures are brought onto the grid of a
reference exposure before the M.M.Cosmic detection, so that the simulations
and the comparison of exposures see the same sky in the same pixel:

* ``'shift'``: whole-pixel shifts, measured from the data or the WCS.  No
  resampling, so every pixel keeps its own noise (the method's noise model
  holds exactly); the sub-pixel remainder (at most half a pixel) is absorbed
  by the derivative tolerance of the per-exposure masks.
* ``'interp'``, ``'adaptive'``, ``'exact'``: resampling onto the reference
  WCS with `reproject` (bilinear interpolation, the DeForest adaptive
  anti-aliased resampling, or exact spherical-polygon flux-conserving
  overlap), for dithers with rotation or distortion.  Resampling correlates
  the noise of neighbouring pixels and lowers the per-pixel variance.

Pixels outside an exposure's footprint are masked in the aligned exposure.
"""

import numpy as np
from astropy.nddata import CCDData, StdDevUncertainty, VarianceUncertainty
from astropy.table import Table
from scipy import ndimage

__all__ = ["align_exposures", "blot_mask", "measure_offsets", "union_grid"]

ALIGN_METHODS = ("shift", "interp", "adaptive", "exact")
#: Output grids of `align_exposures`.
GRIDS = ("reference", "union")


def _prepared(image, region):
    """Background-subtracted image for the cross-correlation; hot pixels and CRs removed.

    A 3x3 median filter removes single hot pixels and most CR hits (which
    would otherwise tie every exposure to zero shift or add noise), then the
    sigma-clipped median is subtracted and values below it set to 0, so that
    the correlation is that of the sources.
    """
    from astropy.stats import sigma_clipped_stats
    data = np.asarray(image, dtype=np.float64)
    if region is not None:
        data = data[region]
    data = np.where(np.isfinite(data), data, np.nanmedian(data))
    data = ndimage.median_filter(data, size=3)
    _, median, std = sigma_clipped_stats(data, sigma=3.0)
    return np.clip(data - median - 2 * std, 0, None)


def _peak(corr):
    """Sub-pixel position (y, x) of the maximum of a 2-D array (parabolic interpolation)."""
    iy, ix = np.unravel_index(np.argmax(corr), corr.shape)
    out = []
    for axis, i in ((0, iy), (1, ix)):
        if 0 < i < corr.shape[axis] - 1:
            line = corr[iy - 1:iy + 2, ix] if axis == 0 else corr[iy, ix - 1:ix + 2]
            denom = line[0] - 2 * line[1] + line[2]
            out.append(i + (0.5 * (line[0] - line[2]) / denom if denom < 0 else 0.0))
        else:
            out.append(float(i))
    return tuple(out)


def measure_offsets(ccds, *, method="xcorr", reference=0, region=None, max_shift=None):
    """Offsets of each exposure relative to a reference, in pixels.

    The offset ``(dy, dx)`` of exposure ``i`` is where a source at pixel
    ``(y, x)`` of the reference lies in exposure ``i``: ``(y + dy, x + dx)``.

    Parameters
    ----------
    ccds : list of `~astropy.nddata.CCDData` or `~numpy.ndarray` (ny, nx)
        The exposures.
    method : {'xcorr', 'wcs'}
        ``'xcorr'``: the peak of the cross-correlation of the sources (after
        a 3x3 median filter, which removes hot pixels and CRs), interpolated
        to a fraction of a pixel by a parabola through its neighbours.
        ``'wcs'``: where the reference's central pixel falls in each
        exposure's celestial WCS.
    reference : int
        Index of the reference exposure.  Default 0.
    region : tuple of slice, optional
        With ``'xcorr'``: the part of the images correlated (e.g. a field of
        stars away from a bright galaxy), as ``numpy`` slices.
    max_shift : float, optional
        With ``'xcorr'``: largest offset searched (pixels).  Default a quarter
        of the smaller image side.

    Returns
    -------
    `~astropy.table.Table`
        One row per exposure: ``dy``, ``dx`` (pixels, float) and ``peak``
        (correlation at the peak relative to the reference's
        autocorrelation; NaN for ``'wcs'``).

    Raises
    ------
    ValueError
        Unknown method, exposures of different shapes, no celestial WCS for
        ``'wcs'``, or no sources to correlate.
    """
    def array(c):
        return np.asarray(c.data if isinstance(c, CCDData) else c)

    shape = array(ccds[reference]).shape
    if method == "wcs":
        return _wcs_offsets(ccds, reference, shape)
    if method != "xcorr":
        raise ValueError(f"method must be 'xcorr' or 'wcs'; got {method!r}.")
    ref = _prepared(array(ccds[reference]), region)
    if not ref.any():
        raise ValueError("no sources above the background to cross-correlate; give "
                         "offsets explicitly or use method='wcs'.")
    limit = max_shift if max_shift is not None else min(ref.shape) / 4
    auto = float(np.sum(ref * ref))
    rows = []
    for i in range(len(ccds)):          # one exposure at a time (they may be read lazily)
        a = array(ccds[i])
        if a.shape != shape:
            raise ValueError("measure_offsets needs exposures of one shape; align them with "
                             "method='wcs' and align_exposures(..., method='interp') "
                             "instead.")
        img = _prepared(a, region)
        del a
        from scipy import signal   # only when aligning: ~1 s of import otherwise
        corr = signal.fftconvolve(img, ref[::-1, ::-1], mode="full")
        centre = np.array(ref.shape) - 1          # zero shift in the 'full' output
        lo = np.maximum(centre - int(np.ceil(limit)), 0)
        hi = np.minimum(centre + int(np.ceil(limit)) + 1, corr.shape)
        window = corr[lo[0]:hi[0], lo[1]:hi[1]]
        py, px = _peak(window)
        rows.append((py + lo[0] - centre[0], px + lo[1] - centre[1],
                     float(window.max()) / auto if auto else np.nan))
    return Table(rows=rows, names=("dy", "dx", "peak"))


def _wcs_offsets(ccds, reference, shape):
    wcss = [getattr(c, "wcs", None) for c in ccds]
    if any(w is None or not w.has_celestial for w in wcss):
        raise ValueError("method='wcs' needs a celestial WCS in every exposure; use "
                         "method='xcorr' to measure the offsets from the data.")
    yc, xc = (shape[0] - 1) / 2, (shape[1] - 1) / 2
    sky = wcss[reference].celestial.pixel_to_world(xc, yc)
    rows = []
    for w in wcss:
        x, y = w.celestial.world_to_pixel(sky)
        rows.append((float(y) - yc, float(x) - xc, np.nan))
    return Table(rows=rows, names=("dy", "dx", "peak"))


def _shift(array, dy, dx, fill, shape=None):
    """``out[y, x] = array[y + dy, x + dx]`` for integers dy, dx; ``fill`` outside.

    ``out`` has ``shape`` (default: the array's).
    """
    ny, nx = array.shape
    oy, ox = shape if shape is not None else array.shape
    out = np.full((oy, ox), fill, dtype=array.dtype)
    y0, y1 = max(0, -dy), min(oy, ny - dy)
    x0, x1 = max(0, -dx), min(ox, nx - dx)
    if y1 > y0 and x1 > x0:
        out[y0:y1, x0:x1] = array[y0 + dy:y1 + dy, x0 + dx:x1 + dx]
    return out


def _moved_wcs(wcs, lo_y, lo_x):
    """``wcs`` for a grid whose pixel (0, 0) is pixel (lo_y, lo_x) of the original."""
    if wcs is None:
        return None
    out = wcs.deepcopy()
    out.wcs.crpix = [out.wcs.crpix[0] - lo_x, out.wcs.crpix[1] - lo_y] + list(
        out.wcs.crpix[2:])
    return out


def union_grid(ccds, reference=0):
    """The grid holding every exposure: the reference's WCS, extended.

    Each exposure's outer pixel corners are mapped through the WCS onto the
    reference's pixels; the grid spans every pixel they touch, with the
    reference's orientation and pixel scale (so the reference's own pixels
    are whole pixels of it).

    Returns
    -------
    origin : (int, int)
        The reference pixel ``(y, x)`` of the grid's pixel (0, 0).
    shape : (int, int)
    wcs : `~astropy.wcs.WCS`
        The reference's WCS moved to the new origin.
    """
    ref = ccds[reference]
    target = ref.wcs.celestial
    ys, xs = [], []
    for i in range(len(ccds)):
        ccd = ccds[i]
        ny, nx = ccd.shape
        cx = np.array([-0.5, nx - 0.5, nx - 0.5, -0.5])
        cy = np.array([-0.5, -0.5, ny - 0.5, ny - 0.5])
        x, y = target.world_to_pixel(ccd.wcs.celestial.pixel_to_world(cx, cy))
        xs.extend(np.atleast_1d(x))
        ys.extend(np.atleast_1d(y))
    lo_y, lo_x = (int(np.floor(min(v) + 0.5 + 1e-6)) for v in (ys, xs))
    hi_y, hi_x = (int(np.ceil(max(v) - 0.5 - 1e-6)) for v in (ys, xs))
    return (lo_y, lo_x), (hi_y - lo_y + 1, hi_x - lo_x + 1), _moved_wcs(ref.wcs, lo_y, lo_x)


def align_exposures(ccds, *, method="shift", offsets=None, reference=0, region=None,
                    sink=None, grid="reference"):
    """Bring exposures onto the grid of a reference exposure, or the union of all.

    Parameters
    ----------
    ccds : list of `~astropy.nddata.CCDData`
        The exposures (never modified).
    method : {'shift', 'interp', 'adaptive', 'exact'}
        ``'shift'`` moves each exposure by whole pixels (its offset rounded);
        the others resample onto the reference's WCS with
        `reproject.reproject_interp`, `reproject.reproject_adaptive` or
        `reproject.reproject_exact` (each exposure needs a celestial WCS).
    offsets : `~astropy.table.Table`, array (N, 2), ``'xcorr'`` or ``'wcs'``, optional
        With ``'shift'``: the ``(dy, dx)`` of each exposure (see
        `measure_offsets`), or how to measure them: ``'xcorr'`` (default,
        from the data) or ``'wcs'`` (from the headers: pointing WCS are often
        not accurate to a pixel -- the bundled LCO triplet has three identical
        WCS but drifts by 3.6 pixels).
    reference : int
        The exposure whose grid (shape and WCS) is used.  Default 0.
    region : tuple of slice, optional
        Passed to `measure_offsets`.
    sink : callable, optional
        ``sink(i, aligned_exposure)`` receives each aligned exposure as it is
        made, and the returned list holds None instead: the inputs are read
        (``ccds`` may be a lazy sequence) and the aligned exposures kept one
        at a time (JWST's ``in_memory=False``).
    grid : {'reference', 'union'}
        ``'reference'`` (default): the reference exposure's pixels; parts of
        the other exposures outside it are dropped.  ``'union'``: the
        reference's grid extended to hold every pixel of every exposure
        (`union_grid`; with ``'shift'``, by the whole-pixel shifts), so that
        nothing is lost; pixels an exposure does not cover are masked in it.

    Returns
    -------
    aligned : list of `~astropy.nddata.CCDData`
        On the common grid, with its WCS (the reference's, moved to the
        grid's origin); ``mask`` True
        outside each exposure's footprint (and where it was masked);
        uncertainties moved (``'shift'``) or resampled as variances.
    offsets : `~astropy.table.Table`
        ``dy``, ``dx`` used (for ``'shift'``: also ``shift_y``, ``shift_x``,
        the whole pixels applied).

    Raises
    ------
    ValueError
        Unknown method or grid, wrong offsets, or missing WCS.
    ImportError
        A resampling method without `reproject` installed.
    """
    if method not in ALIGN_METHODS:
        raise ValueError(f"align must be one of {'/'.join(ALIGN_METHODS)}; got {method!r}.")
    if grid not in GRIDS:
        raise ValueError(f"grid must be one of {'/'.join(GRIDS)}; got {grid!r}.")
    if method != "shift":
        return _reproject(ccds, method, reference, sink, grid)
    if offsets is None or isinstance(offsets, str):
        offsets = measure_offsets(ccds, method=offsets or "xcorr", reference=reference,
                                  region=region)
    elif not isinstance(offsets, Table):
        arr = np.asarray(offsets, dtype=float)
        if arr.shape != (len(ccds), 2):
            raise ValueError(f"offsets must have shape ({len(ccds)}, 2) (dy, dx per exposure); "
                             f"got {arr.shape}.")
        offsets = Table(arr, names=("dy", "dx"))
    offsets = offsets.copy()
    offsets["shift_y"] = np.rint(offsets["dy"]).astype(int)
    offsets["shift_x"] = np.rint(offsets["dx"]).astype(int)
    # exposure i's pixel (y, x) lands on the reference's pixel (y - sy, x - sx)
    shape = ccds[reference].shape
    lo_y, lo_x = 0, 0
    if grid == "union":
        shapes = [ccds[i].shape for i in range(len(ccds))]
        lo_y = min(0, *(-sy for sy in offsets["shift_y"]))
        lo_x = min(0, *(-sx for sx in offsets["shift_x"]))
        hi_y = max(s[0] - 1 - sy for s, sy in zip(shapes, offsets["shift_y"]))
        hi_x = max(s[1] - 1 - sx for s, sx in zip(shapes, offsets["shift_x"]))
        shape = (max(hi_y, shape[0] - 1) - lo_y + 1, max(hi_x, shape[1] - 1) - lo_x + 1)
    ref_wcs = _moved_wcs(ccds[reference].wcs, lo_y, lo_x)
    aligned = []
    for i, (sy, sx) in enumerate(zip(offsets["shift_y"], offsets["shift_x"])):
        ccd = ccds[i]
        dy, dx = int(sy) + lo_y, int(sx) + lo_x
        data = _shift(np.asarray(ccd.data, dtype=np.float32), dy, dx, np.nan, shape)
        mask = _shift(np.zeros(ccd.shape, dtype=bool) if ccd.mask is None
                      else np.asarray(ccd.mask, dtype=bool), dy, dx, True, shape)
        mask |= ~np.isfinite(data)
        unc = None
        if ccd.uncertainty is not None:
            var = ccd.uncertainty.represent_as(VarianceUncertainty)
            unc = VarianceUncertainty(_shift(np.asarray(var.array, dtype=np.float32), dy, dx,
                                             np.nan, shape), unit=var.unit)
        out = CCDData(data, unit=ccd.unit, mask=mask, uncertainty=unc, meta=ccd.meta.copy(),
                      wcs=ref_wcs)
        aligned.append(out if sink is None else sink(i, out))
    return aligned, offsets


def _reproject(ccds, method, reference, sink=None, grid="reference"):
    try:
        import reproject
    except ImportError:
        raise ImportError(f"align={method!r} resamples with reproject: pip install "
                          "reproject") from None
    func = {"interp": reproject.reproject_interp, "adaptive": reproject.reproject_adaptive,
            "exact": reproject.reproject_exact}[method]
    ref = ccds[reference]
    for i in range(len(ccds)):
        ccd = ccds[i]
        if getattr(ccd, "wcs", None) is None or not ccd.wcs.has_celestial:
            raise ValueError(f"align={method!r} needs a celestial WCS in every exposure; use "
                             "align='shift' for offsets measured from the data.")
    shape_out, wcs_out = ref.shape, ref.wcs
    if grid == "union":
        _, shape_out, wcs_out = union_grid(ccds, reference)
    target = wcs_out.celestial
    aligned, rows = [], []
    for i in range(len(ccds)):
        ccd = ccds[i]
        data = np.where(ccd.mask, np.nan, ccd.data) if ccd.mask is not None else ccd.data
        values, footprint = func((np.asarray(data, dtype=np.float64), ccd.wcs.celestial),
                                 target, shape_out=shape_out)
        unc = None
        if ccd.uncertainty is not None:
            var = ccd.uncertainty.represent_as(VarianceUncertainty)
            v, _ = func((np.asarray(var.array, dtype=np.float64), ccd.wcs.celestial), target,
                        shape_out=shape_out)
            unc = StdDevUncertainty(np.sqrt(np.clip(v, 0, None)).astype(np.float32),
                                    unit=ccd.unit)
        mask = (footprint < 0.999) | ~np.isfinite(values)
        out = CCDData(values.astype(np.float32), unit=ccd.unit, mask=mask, uncertainty=unc,
                      meta=ccd.meta.copy(), wcs=wcs_out)
        aligned.append(out if sink is None else sink(i, out))
        yc, xc = (ref.shape[0] - 1) / 2, (ref.shape[1] - 1) / 2
        x, y = ccd.wcs.celestial.world_to_pixel(ref.wcs.celestial.pixel_to_world(xc, yc))
        rows.append((float(y) - yc, float(x) - xc))
    return aligned, Table(rows=rows, names=("dy", "dx"))


def blot_mask(mask, *, offset=None, reference_wcs=None, exposure=None):
    """Map a mask on the common grid back onto an exposure's own pixels ("blot").

    Parameters
    ----------
    mask : `~numpy.ndarray` (ny, nx), bool
        A mask on the reference grid, e.g. ``masks.crmask[i]``.
    offset : pair of float, optional
        For ``align='shift'``: the exposure's ``(dy, dx)`` (e.g.
        ``masks.parameters['offsets'][i]``); the mask is moved back by the
        same whole pixels.
    reference_wcs : `~astropy.wcs.WCS`, optional
        For the resampling alignments: the WCS of the common grid.
    exposure : `~astropy.nddata.CCDData`, optional
        For the resampling alignments: the exposure (its WCS and shape); a
        pixel is flagged when any part of it falls on a flagged pixel of the
        common grid.

    Returns
    -------
    `~numpy.ndarray`, bool
        The mask in the exposure's pixels.

    Raises
    ------
    ValueError
        Neither ``offset`` nor ``reference_wcs`` and ``exposure`` given.
    """
    mask = np.asarray(mask, dtype=bool)
    if offset is not None:
        dy, dx = (int(round(v)) for v in offset)
        return _shift(mask, -dy, -dx, False)
    if reference_wcs is None or exposure is None:
        raise ValueError("blot_mask needs offset= (align='shift') or reference_wcs= and "
                         "exposure= (the resampling alignments).")
    from reproject import reproject_interp
    grown = ndimage.binary_dilation(mask, np.ones((3, 3), dtype=bool))
    values, footprint = reproject_interp((grown.astype(np.float32), reference_wcs.celestial),
                                         exposure.wcs.celestial, shape_out=exposure.shape,
                                         order="nearest-neighbor")
    return (np.nan_to_num(values) > 0) & (footprint > 0)
