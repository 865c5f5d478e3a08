# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Plots of the masks, the exposure map and the cut-outs of the CR features."""

import numpy as np

from ._axes import new_axes as _new_axes

__all__ = ["plot_cr_features", "plot_exposure_map", "plot_masks"]


def plot_masks(masks, *, ax=None):
    """Overview of the masks: MEDIANCR, MEANCRT only, and any CRMASKi only.

    Parameters
    ----------
    masks : `~crcombine.CRMasks`
    ax : `~matplotlib.axes.Axes`, optional

    Returns
    -------
    `~matplotlib.image.AxesImage`
        A discrete image: 0 none, 1 a CRMASKi only, 2 MEANCRT (not MEDIANCR),
        3 MEDIANCR.

    Examples
    --------
    .. plot::
        :include-source:

        import matplotlib.pyplot as plt
        import numpy as np
        from astropy.nddata import CCDData
        from crcombine import CRMaskBuilder
        from crcombine.visualization import plot_masks

        rng = np.random.default_rng(3)
        ccds = [CCDData(rng.poisson(200, (100, 100)) + rng.normal(0, 5, (100, 100)),
                        unit="electron") for _ in range(3)]
        ccds[0].data[20, 20:25] += 3000; ccds[1].data[20, 20:25] += 2000
        ccds[2].data[70, 60] += 5000
        fig, ax = plt.subplots(layout="constrained")
        plot_masks(CRMaskBuilder(gain=1, readnoise=5, seed=1).build(ccds), ax=ax)
    """
    from matplotlib.colors import BoundaryNorm, ListedColormap
    ax = ax if ax is not None else _new_axes(1)[0]
    code = np.zeros(masks.shape, dtype=np.uint8)
    code[masks.crmask.any(axis=0)] = 1
    code[masks.meancrt] = 2
    code[masks.mediancr] = 3
    cmap = ListedColormap(["black", "tab:blue", "tab:orange", "tab:red"])
    im = ax.imshow(code, origin="lower", cmap=cmap, norm=BoundaryNorm([-0.5, 0.5, 1.5, 2.5, 3.5],
                                                                      4),
                   interpolation="nearest")
    cbar = ax.figure.colorbar(im, ax=ax, ticks=[0, 1, 2, 3])
    cbar.ax.set_yticklabels(["none", "CRMASKi only", "MEANCRT", "MEDIANCR"])
    ax.set_xlabel("x [pixel]")
    ax.set_ylabel("y [pixel]")
    ax.set_title(f"masks ({masks.n_exposures} exposures)")
    return im


def plot_exposure_map(result, *, ax=None):
    """The exposure map of a combination (``result.flags``).

    Parameters
    ----------
    result : `~astropy.nddata.CCDData`
        A combination from `~crcombine.CRCombiner.combine`.
    ax : `~matplotlib.axes.Axes`, optional

    Returns
    -------
    `~matplotlib.image.AxesImage`

    Raises
    ------
    ValueError
        ``result`` has no exposure map.

    Examples
    --------
    .. plot::
        :include-source:

        import matplotlib.pyplot as plt
        import numpy as np
        from astropy.nddata import CCDData
        from crcombine import CRCombiner, CRMaskBuilder
        from crcombine.visualization import plot_exposure_map

        rng = np.random.default_rng(4)
        ccds = [CCDData(rng.poisson(200, (100, 100)) + rng.normal(0, 5, (100, 100)),
                        unit="electron") for _ in range(3)]
        ccds[0].data[30:33, 40] += 4000
        comb = CRCombiner(ccds, builder=CRMaskBuilder(gain=1, readnoise=5, seed=1))
        fig, ax = plt.subplots(layout="constrained")
        plot_exposure_map(comb.combine("meancr"), ax=ax)
    """
    from matplotlib.colors import BoundaryNorm
    if result.flags is None:
        raise ValueError("result has no exposure map (flags); use a crcombine combination.")
    ax = ax if ax is not None else _new_axes(1)[0]
    n = int(result.meta.get("NCOMBINE", result.flags.max()))
    cmap = __import__("matplotlib").colormaps["viridis"].resampled(n + 1)
    im = ax.imshow(result.flags, origin="lower", cmap=cmap,
                   norm=BoundaryNorm(np.arange(n + 2) - 0.5, n + 1), interpolation="nearest")
    ax.figure.colorbar(im, ax=ax, ticks=np.arange(n + 1), label="exposures contributing")
    ax.set_xlabel("x [pixel]")
    ax.set_ylabel("y [pixel]")
    ax.set_title(f"exposure map ({result.meta.get('CRMETHOD', '')})")
    return im


def plot_cr_features(combiner, filename=None, *, method="mediancr", maxplots=10,
                     semiwindow=15, color_scale="minmax", mask="MEDIANCR", new_figure=None):
    """Cut-outs of the CR features: each exposure, the median, the mask, the result.

    Features of ``mask`` are taken in rank order (most certain first, see
    ``CRMasks.features``), up to ``maxplots``.  One figure per
    feature; with ``filename`` they are written as pages of a PDF.

    Parameters
    ----------
    combiner : `~crcombine.CRCombiner`
    filename : str or path-like, optional
        Multi-page PDF to write (one page per feature).  Written to a
        temporary file and renamed; an existing file is replaced.
    method : str
        The corrected combination shown in the last panel.
    maxplots : int
        Number of features; ``-1`` for all.
    semiwindow : int
        Half size of the cut-outs (pixels).
    color_scale : {'minmax', 'zscale'}
        Scaling of the cut-outs (`~astropy.visualization.MinMaxInterval` or
        `~astropy.visualization.ZScaleInterval`), shared by the panels of a
        feature.
    mask : {'MEDIANCR', 'MEANCRT'}
        Whose features to show.
    new_figure : callable, optional
        ``new_figure(figsize)`` returns the figure of a feature; by default a
        `~matplotlib.figure.Figure` not registered with pyplot.

    Returns
    -------
    list of `~matplotlib.figure.Figure`
        The figures; empty when there is no feature.  With ``filename`` the
        list is empty and the PDF is written.

    Raises
    ------
    ValueError
        Unknown ``color_scale`` or ``mask``.

    Examples
    --------
    .. plot::
        :include-source:

        import matplotlib.pyplot as plt
        import numpy as np
        from astropy.nddata import CCDData
        from crcombine import CRCombiner, CRMaskBuilder
        from crcombine.visualization import plot_cr_features

        rng = np.random.default_rng(5)
        ccds = [CCDData(rng.poisson(300, (80, 80)) + rng.normal(0, 5, (80, 80)),
                        unit="electron") for _ in range(3)]
        for ccd in ccds[:2]:
            ccd.data[40, 38:43] += 3000.0
        combiner = CRCombiner(ccds, builder=CRMaskBuilder(gain=1, readnoise=5, seed=1))
        plot_cr_features(combiner, maxplots=1, semiwindow=8,
                         new_figure=lambda size: plt.figure(figsize=size, layout="constrained"))
    """
    from astropy.visualization import ImageNormalize, MinMaxInterval, ZScaleInterval
    from matplotlib.figure import Figure
    from scipy import ndimage

    intervals = {"minmax": MinMaxInterval, "zscale": ZScaleInterval}
    if color_scale not in intervals:
        raise ValueError(f"color_scale must be one of {'/'.join(intervals)}; "
                         f"got {color_scale!r}.")
    masks = combiner.masks
    if mask.upper() not in ("MEDIANCR", "MEANCRT"):
        raise ValueError(f"mask must be MEDIANCR or MEANCRT; got {mask!r}.")
    flagged = masks.mediancr if mask.upper() == "MEDIANCR" else masks.meancrt
    if mask.upper() == "MEDIANCR" and masks.labels is not None and masks.features is not None:
        labels, order = masks.labels, list(masks.features["label"])
    else:
        labels, n = ndimage.label(flagged, np.ones((3, 3), bool))
        order = list(range(1, n + 1))
    if maxplots >= 0:
        order = order[:maxplots]
    stack = combiner.stack
    data_unit = [stack.to_data_unit(stack.data[i]) for i in range(stack.n_exposures)]
    median = combiner.combine("median").data
    result = combiner.combine(method).data
    slices = ndimage.find_objects(labels)

    def feature_figures():
        for rank, label in enumerate(order, start=1):
            sl = slices[label - 1]
            cy = (sl[0].start + sl[0].stop - 1) // 2
            cx = (sl[1].start + sl[1].stop - 1) // 2
            win = (slice(max(cy - semiwindow, 0), cy + semiwindow + 1),
                   slice(max(cx - semiwindow, 0), cx + semiwindow + 1))
            panels = [(f"exposure {i + 1}", d[win]) for i, d in enumerate(data_unit)]
            panels += [("median", median[win]), (f"{mask.upper()}", flagged[win]),
                       (method, result[win])]
            size = (2.3 * len(panels), 2.8)
            fig = new_figure(size) if new_figure else Figure(figsize=size, layout="constrained")
            axs = fig.subplots(1, len(panels))
            values = np.concatenate([p[1].ravel() for p in panels[:-2]])
            norm = ImageNormalize(values[np.isfinite(values)], interval=intervals[color_scale]())
            extent = (win[1].start - 0.5, win[1].start + panels[0][1].shape[1] - 0.5,
                      win[0].start - 0.5, win[0].start + panels[0][1].shape[0] - 0.5)
            for ax, (title, img) in zip(axs, panels):
                if img.dtype == bool:
                    im = ax.imshow(img, origin="lower", cmap="gray", vmin=0, vmax=1,
                                   extent=extent, interpolation="nearest")
                else:
                    im = ax.imshow(img, origin="lower", cmap="viridis", norm=norm,
                                   extent=extent, interpolation="nearest")
                ax.set_title(title, fontsize=9)
                ax.tick_params(labelsize=7)
            fig.colorbar(im, ax=axs[-1], shrink=0.8, label=str(stack.unit))
            fig.suptitle(f"feature {rank} (label {label}) at x={cx}, y={cy} (0-based)",
                         fontsize=10)
            yield fig

    if filename is None:
        return list(feature_figures())
    from matplotlib.backends.backend_pdf import PdfPages

    from .._core.files import atomic_file
    with atomic_file(filename, overwrite=True, argument="filename") as fh, PdfPages(fh) as pdf:
        for fig in feature_figures():
            pdf.savefig(fig)
    return []
