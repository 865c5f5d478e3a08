# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Plots of the MM diagram, the flagged pixels on it and the flux factors."""

import numpy as np

from ._axes import new_axes as _new_axes

__all__ = ["plot_flagged_pixels", "plot_flux_factors", "plot_mm_diagram"]

STATISTIC_LABELS = {"median": "median - minimum", "mean": "mean - minimum",
                    "single": "exposure - minimum"}


def _noise_scale(ax, scale, lo, hi, nticks=6):
    """x axis in electrons with the diagram's sqrt(x + s^2) scale and round ticks."""
    from matplotlib.ticker import FixedLocator

    from .._detection.simulate import electron_axis, noise_axis

    def forward(x):
        return noise_axis(x, scale)

    def inverse(xp):
        return electron_axis(np.maximum(xp, 0), scale)

    ax.set_xscale("function", functions=(forward, inverse))
    ticks = electron_axis(np.linspace(forward(lo), forward(hi), nticks), scale)
    rounded = []
    for t in ticks:
        digits = max(int(np.floor(np.log10(abs(t)))) if t else 0, 0)
        r = float(np.round(t, -digits)) if digits else float(np.round(t))
        if lo <= r <= hi and r not in rounded:
            rounded.append(r)
    ax.xaxis.set_major_locator(FixedLocator(rounded))
    ax.set_xlim(lo, hi)


def _check_diagram(masks):
    if masks.parameters.get("crmask_method") == "pairs":
        raise ValueError("two exposures have no MM diagram (their masks come from the pair "
                         "comparison); plot_flagged_pixels shows them.")
    if not masks.diagram:
        raise ValueError("these masks have no diagram histograms (masks read from a file keep "
                         "none); plot the CRMasks returned by CRMaskBuilder.build.")


def plot_mm_diagram(masks, statistic="median", *, axes=None, cmap="viridis",
                    show_iterations=True):
    """The Median-Minimum diagram: simulated (left) and real (right) histograms.

    With the exact null distribution (the default) the left panel is the
    histogram the simulations give on average, per simulation, drawn where it
    holds 0.01 pixels or more.

    Each panel is a 2-D histogram (log colour scale) of ``y`` (e.g. median -
    minimum) against the minimum signal ``x`` (electrons), with the boundary
    points (dots), every upward-extension iteration (thin dashed lines), the
    final detection boundary (thick line) and any fixed points (stars).  As
    the method histograms it, ``y`` is shown in units of the noise at ``x``,
    ``sqrt(max(x, 0) + readnoise^2 + max(x, 0)^2 / kappa)``, which keeps the
    diagram readable from the sky to the brightest stars.

    Parameters
    ----------
    masks : `~crcombine.CRMasks`
        As returned by `~crcombine.CRMaskBuilder.build`.
    statistic : {'median', 'mean', 'single'}
        The diagram for MEDIANCR, MEANCRT or the single exposures (CRMASKi;
        only for masks built with ``crmask_method='mm'``).
    axes : sequence of two `~matplotlib.axes.Axes`, optional
        Where to draw; by default a new (unregistered) figure.
    cmap : str
        Colour map of the histograms.
    show_iterations : bool
        Draw the boundary of every extension iteration.

    Returns
    -------
    dict
        ``'simulated'`` and ``'data'`` (`~matplotlib.collections.QuadMesh`),
        ``'boundary'`` (list of `~matplotlib.lines.Line2D`, one per panel),
        ``'points'``, ``'iterations'`` and ``'fixed'`` (lists of artists).

    Raises
    ------
    ValueError
        Unknown statistic, or masks without diagram histograms.

    Examples
    --------
    .. plot::
        :include-source:

        import matplotlib.pyplot as plt
        from astropy.nddata import CCDData
        import numpy as np
        from crcombine import CRMaskBuilder
        from crcombine.visualization import plot_mm_diagram

        rng = np.random.default_rng(0)
        sky = rng.uniform(50, 2000, (200, 200))
        ccds = [CCDData(rng.poisson(sky) + rng.normal(0, 5, sky.shape), unit="electron")
                for _ in range(3)]
        for ccd in ccds[:2]:
            ccd.data[50:53, 60] += 3000.0             # a coincident hit
        masks = CRMaskBuilder(gain=1, readnoise=5, seed=1).build(ccds)
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), layout="constrained")
        plot_mm_diagram(masks, axes=axes)
    """
    from matplotlib.colors import LogNorm

    if statistic not in STATISTIC_LABELS:
        raise ValueError(f"statistic must be one of {'/'.join(STATISTIC_LABELS)}; "
                         f"got {statistic!r}.")
    _check_diagram(masks)
    sim, data = masks.diagram["simulated"], masks.diagram["data"]
    if statistic not in sim.counts:
        raise ValueError(f"these masks have no {statistic!r} diagram: it is simulated only with "
                         "crmask_method='mm' (the default 'noise' compares each exposure with "
                         "the mediancr image instead).")
    axes = list(axes) if axes is not None else _new_axes(2, figsize=(11, 4.5))
    from .._detection.simulate import diagram_noise, electron_axis
    xe = electron_axis(sim.x_edges, sim.noise_scale)
    ye = sim.y_edges(statistic, nbins=sim.display(statistic).shape[1])
    counts = {"simulated": sim.display(statistic) / max(masks.parameters.get("nsimulations", 1),
                                                        1),
              "data": data.display(statistic)}
    vmax = max(c.max() for c in counts.values()) or 1
    boundary = masks.boundaries.get(statistic)
    grid = np.linspace(xe[0], xe[-1], 400)
    out = {"boundary": [], "points": [], "iterations": [], "fixed": []}
    if getattr(sim, "expected", False):
        # expected counts (the exact null) are never 0: show what one pixel in a hundred
        # simulations would reach, as a histogram of draws would
        counts["simulated"] = np.where(counts["simulated"] < 0.01, 0, counts["simulated"])
    for ax, key in zip(axes, ("simulated", "data")):
        c = np.ma.masked_equal(counts[key], 0).T
        out[key] = ax.pcolormesh(xe, ye, c, cmap=cmap, norm=LogNorm(vmin=0.1, vmax=vmax),
                                 shading="flat")
        _noise_scale(ax, sim.noise_scale, xe[0], xe[-1])
        if boundary is not None:
            if show_iterations:
                for spline in boundary.iterations[:-1]:
                    xs = np.clip(_to_fit_axis(boundary, grid), *boundary.x_range)
                    out["iterations"] += ax.plot(grid, spline(xs), "--", lw=0.8, color="0.4")
            px = _from_fit_axis(boundary, boundary.x_points)
            out["points"] += ax.plot(px, boundary.y_points, ".", ms=3, color="tab:orange",
                                     label="boundary points")
            if boundary.noise_scale is not None:
                curve = boundary.normalised(grid)
            else:  # a boundary given in electrons (piecewise points)
                curve = boundary(grid) / diagram_noise(grid, sim.noise_scale, sim.kappa)
            out["boundary"] += ax.plot(grid, curve, "-", lw=2, color="tab:red",
                                       label=f"boundary ({boundary.kind})")
            if boundary.fixed_points is not None:
                fx = _from_fit_axis(boundary, boundary.fixed_points[:, 0])
                out["fixed"] += ax.plot(fx, boundary.fixed_points[:, 1], "*", ms=10,
                                        color="tab:pink", label="fixed points")
        ax.set_ylim(ye[0], ye[-1])
        ax.set_xlabel("minimum signal x [electron]")
        ax.set_ylabel(f"({STATISTIC_LABELS[statistic]}) / noise(x)")
        ax.set_title(f"{'simulated (per simulation)' if key == 'simulated' else 'data'}: "
                     f"{statistic}")
    axes[-1].figure.colorbar(out["data"], ax=axes, label="pixels per bin", shrink=0.9)
    if out["boundary"]:
        axes[0].legend(loc="upper left", fontsize="small")
    return out


def _to_fit_axis(boundary, x):
    from .._detection.simulate import noise_axis
    return x if boundary.noise_scale is None else noise_axis(x, boundary.noise_scale)


def _from_fit_axis(boundary, xp):
    from .._detection.simulate import electron_axis
    return xp if boundary.noise_scale is None else electron_axis(xp, boundary.noise_scale)


def _pixel_diagram_values(combiner):
    """Per-pixel diagram values of a `~crcombine.CRCombiner`'s stack.

    With ``matched_diagram``, those of the matched stack (the kernels recorded
    in the masks).

    Returns
    -------
    x : `~numpy.ndarray` (ny, nx)
        Minimum signal (electrons).
    y : dict
        ``'median'``, ``'mean'`` (ny, nx) and ``'single'`` (N, ny, nx).
    """
    from .._detection.matching import matched_stack
    from .._detection.simulate import diagram_values as _values
    masks = combiner.masks
    scaled = combiner.stack.data / masks.flux_factor.astype(np.float32)[:, None, None]
    kernels = masks.parameters.get("matching_kernels")
    if kernels is not None:        # matched_diagram: the diagram of the matched stack
        scaled = matched_stack(scaled, np.asarray(kernels), combiner.stack.readnoise)
    x, y, _ = _values(scaled, masks.parameters["cr_coincidences"])
    return x, y


def plot_flagged_pixels(combiner, mask="MEDIANCR", *, axes=None, image=None, cmap="gray"):
    """Flagged pixels on the MM diagram (left) and on the image (right).

    Pixels flagged before dilation are drawn on the diagram over the
    detection boundary, coloured by their CR feature (numbered at the most
    certain pixel of each of the first 20 features), and at their positions
    over the median image.  Every pixel found here comes from the M.M.Cosmic
    test (category "MM"); auxiliary detectors are not available yet.

    Parameters
    ----------
    combiner : `~crcombine.CRCombiner`
    mask : {'MEDIANCR', 'MEANCRT'} or 'CRMASK{i}'
        Which mask's pixels to show (``CRMASK1`` is the first exposure).
    axes : sequence of two `~matplotlib.axes.Axes`, optional
    image : `~numpy.ndarray` (ny, nx), optional
        Background image; default the median combination.
    cmap : str
        Colour map of the image.

    Returns
    -------
    dict
        ``'diagram'`` and ``'positions'`` (`~matplotlib.collections.PathCollection`),
        ``'boundary'`` (`~matplotlib.lines.Line2D`), ``'image'``
        (`~matplotlib.image.AxesImage`) and ``'labels'`` (list of
        `~matplotlib.text.Text`).

    Raises
    ------
    ValueError
        Unknown mask name.

    Examples
    --------
    .. plot::
        :include-source:

        import matplotlib.pyplot as plt
        import numpy as np
        from astropy.nddata import CCDData
        from crcombine import CRCombiner, CRMaskBuilder
        from crcombine.visualization import plot_flagged_pixels

        rng = np.random.default_rng(1)
        ccds = [CCDData(rng.poisson(300, (120, 160)) + rng.normal(0, 5, (120, 160)),
                        unit="electron") for _ in range(3)]
        for ccd in ccds[:2]:
            ccd.data[40, 30:34] += 2500.0
            ccd.data[90:92, 120] += 4000.0
        combiner = CRCombiner(ccds, builder=CRMaskBuilder(gain=1, readnoise=5, seed=2))
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), layout="constrained")
        plot_flagged_pixels(combiner, axes=axes)
    """
    from astropy.visualization import ImageNormalize, ZScaleInterval
    from scipy import ndimage

    masks = combiner.masks
    x, y = _pixel_diagram_values(combiner)
    name = mask.upper()
    if name == "MEDIANCR":
        stat, flagged, yv = "median", masks.mediancr, y["median"]
    elif name == "MEANCRT":
        stat, flagged, yv = "mean", masks.meancrt, y["mean"]
    elif name.startswith("CRMASK") and name[6:].isdigit() and \
            1 <= int(name[6:]) <= masks.n_exposures:
        i = int(name[6:]) - 1
        stat, flagged, yv = "single", masks.crmask[i], y["single"][i]
    else:
        raise ValueError(f"mask must be MEDIANCR, MEANCRT or CRMASK1..{masks.n_exposures}; "
                         f"got {mask!r}.")
    boundary = masks.boundaries.get(stat)
    with np.errstate(invalid="ignore"):
        above = flagged & (yv > (boundary(x) if boundary is not None else -np.inf))
    labels, nlab = ndimage.label(flagged, np.ones((3, 3), bool))
    ys, xs = np.nonzero(above)
    axes = list(axes) if axes is not None else _new_axes(2, figsize=(11, 4.5))
    out = {"labels": []}
    out["diagram"] = axes[0].scatter(x[ys, xs], yv[ys, xs], c=labels[ys, xs], s=8,
                                     cmap="tab20", vmin=0.5, vmax=20.5, label="flagged (MM)")
    finite = np.isfinite(x)
    xg = np.linspace(np.nanmin(x[finite]), np.nanmax(x[finite]), 400)
    if boundary is not None:
        out["boundary"], = axes[0].plot(xg, boundary(xg), "-", color="tab:red", lw=2,
                                        label="boundary")
    _noise_scale(axes[0], float(np.median(combiner.stack.readnoise)), xg[0], xg[-1])
    axes[0].set_xlabel("minimum signal x [electron]")
    axes[0].set_ylabel(f"{STATISTIC_LABELS[stat]} [electron]")
    axes[0].set_title(f"{name}: {int(flagged.sum())} px, {nlab} features")
    if image is None:
        image = combiner.combine("median").data
    norm = ImageNormalize(image, interval=ZScaleInterval())
    out["image"] = axes[1].imshow(image, origin="lower", cmap=cmap, norm=norm,
                                  interpolation="nearest")
    out["positions"] = axes[1].scatter(xs, ys, s=30, facecolors="none", edgecolors="tab:red",
                                       linewidths=0.8)
    if nlab:
        peak = ndimage.maximum_position(np.where(above, yv, -np.inf), labels,
                                        np.arange(1, min(nlab, 20) + 1))
        for k, (py, px) in enumerate(peak, start=1):
            out["labels"].append(axes[0].annotate(str(k), (x[py, px], yv[py, px]),
                                                  fontsize=7, xytext=(3, 3),
                                                  textcoords="offset points"))
            out["labels"].append(axes[1].annotate(str(k), (px, py), fontsize=7, color="yellow",
                                                  xytext=(4, 4), textcoords="offset points"))
    axes[1].set_xlabel("x [pixel]")
    axes[1].set_ylabel("y [pixel]")
    axes[1].set_title("positions over the median")
    return out


def plot_flux_factors(combiner, *, exposures=None, axes=None, max_points=20000, seed=0):
    """Ratio of each exposure to the median against the signal, with the flux factor.

    For each exposure, ``d_i / median`` over pixels whose median has a
    signal-to-noise ratio above 5 (a random subset of at most
    ``max_points``), with the flux factor used (line) and, when it was
    estimated (``flux_factor='auto'``), its uncertainty (band).

    Parameters
    ----------
    combiner : `~crcombine.CRCombiner`
    exposures : list of int, optional
        0-based indices of the exposures to plot; default all.
    axes : sequence of `~matplotlib.axes.Axes`, optional
        One per plotted exposure.
    max_points : int
        Points drawn per exposure.
    seed : int
        Seed of the random subset.

    Returns
    -------
    list of dict
        Per exposure: ``'points'`` (`~matplotlib.collections.PathCollection`),
        ``'factor'`` (`~matplotlib.lines.Line2D`) and ``'band'``
        (`~matplotlib.collections.PolyCollection` or None).

    Examples
    --------
    .. plot::
        :include-source:

        import matplotlib.pyplot as plt
        import numpy as np
        from astropy.nddata import CCDData
        from crcombine import CRCombiner, CRMaskBuilder
        from crcombine.visualization import plot_flux_factors

        rng = np.random.default_rng(2)
        scene = rng.uniform(100, 20000, (150, 150))
        ccds = [CCDData(rng.poisson(scene * f) + rng.normal(0, 5, scene.shape),
                        unit="electron") for f in (1.0, 0.95, 1.05)]
        builder = CRMaskBuilder(gain=1, readnoise=5, flux_factor="auto", seed=3)
        fig, axes = plt.subplots(1, 3, figsize=(12, 3.8), layout="constrained")
        plot_flux_factors(CRCombiner(ccds, builder=builder), axes=axes)
    """
    masks = combiner.masks
    data = combiner.stack.data
    exposures = list(range(data.shape[0])) if exposures is None else list(exposures)
    n = len(exposures)
    axes = list(axes) if axes is not None else _new_axes(n, figsize=(4.2 * n, 3.8))
    from .._core.statistics import sort_stack, stack_statistics
    s, count = sort_stack(data)
    med = stack_statistics(s, count, 2)["median2d"]
    noise = np.sqrt(np.maximum(med, 0) + np.asarray(combiner.stack.readnoise) ** 2)
    with np.errstate(invalid="ignore"):
        use = np.flatnonzero((med > 5 * noise).ravel())
    rng = np.random.default_rng(seed)
    if use.size > max_points:
        use = rng.choice(use, max_points, replace=False)
    err = masks.flux_factor_uncertainty
    out = []
    for i, ax in zip(exposures, axes):
        m = med.ravel()[use]
        ratio = data[i].ravel()[use] / m
        pts = ax.scatter(m, ratio, s=2, alpha=0.3, color="tab:blue", rasterized=True)
        f = masks.flux_factor[i]
        line = ax.axhline(f, color="tab:red", lw=1.5, label=f"flux factor {f:.4f}")
        band = None
        if err is not None:
            band = ax.axhspan(f - err[i], f + err[i], color="tab:red", alpha=0.2,
                              label=f"+/- {err[i]:.4f}")
        ax.set_xscale("log")
        ax.set_xlabel("median [electron]")
        ax.set_ylabel(f"exposure {i + 1} / median")
        if m.size:
            lo, hi = np.nanpercentile(ratio, [1, 99])
            ax.set_ylim(min(lo, f) - 0.02, max(hi, f) + 0.02)
        ax.legend(loc="best", fontsize="small")
        out.append({"points": pts, "factor": line, "band": band})
    return out
