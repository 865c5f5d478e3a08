# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""The diagnostic files of ``crcombine compute --plots`` (numina's file names)."""

import os

from . import visualization as viz

__all__ = []


def _figure(figsize):
    from matplotlib.figure import Figure
    return Figure(figsize=figsize, layout="constrained")


def write_diagnostics(combiner, directory, *, semiwindow=15, color_scale="minmax",
                      maxplots=10, new_figure=None, shown=None, dpi=100):
    """Write every diagnostic plot of a `~crcombine.CRCombiner` into ``directory``.

    Files (as numina-crmasks names them): ``diagnostic_histogram2d.png`` (the
    MM diagram of the median), ``diagnostic_mediancr.png``,
    ``diagnostic_meancrt.png``, ``diagnostic_crmask{i}.png`` (flagged pixels
    on their diagram and image), ``flux_factor{i}.png`` and
    ``mediancr_identified_cr.pdf`` (cut-outs of the MEDIANCR features, one
    page each); two exposures have no MM diagram.  Existing files are replaced.

    Parameters
    ----------
    combiner : `~crcombine.CRCombiner`
    directory : str or path-like
    semiwindow, color_scale, maxplots
        As in `~crcombine.visualization.plot_cr_features`.
    new_figure : callable, optional
        ``new_figure(figsize)`` returns the `~matplotlib.figure.Figure` to
        draw in; by default one not registered with pyplot.
    shown : callable, optional
        Called with each figure after it is saved (the command line uses it to
        show the figure in a window); never called by default.
    dpi : int

    Returns
    -------
    list of str
        The paths written.
    """
    new_figure = new_figure or _figure
    masks = combiner.masks
    written = []

    def save(fig, name):
        path = os.path.join(directory, name)
        fig.savefig(path, dpi=dpi)
        written.append(path)
        if shown is not None:
            shown(fig)

    if masks.parameters.get("crmask_method") != "pairs":   # two exposures: no MM diagram
        fig = new_figure((11, 4.5))
        viz.plot_mm_diagram(masks, "median", axes=fig.subplots(1, 2))
        save(fig, "diagnostic_histogram2d.png")
    for mask in ["MEDIANCR", "MEANCRT"] + [f"CRMASK{i + 1}" for i in range(masks.n_exposures)]:
        fig = new_figure((11, 4.5))
        viz.plot_flagged_pixels(combiner, mask, axes=fig.subplots(1, 2))
        save(fig, f"diagnostic_{mask.lower()}.png")
    for i in range(masks.n_exposures):
        fig = new_figure((5, 3.8))
        viz.plot_flux_factors(combiner, exposures=[i], axes=[fig.subplots()])
        save(fig, f"flux_factor{i + 1}.png")
    pdf = os.path.join(directory, "mediancr_identified_cr.pdf")
    viz.plot_cr_features(combiner, pdf, maxplots=maxplots, semiwindow=semiwindow,
                         color_scale=color_scale)
    written.append(pdf)
    return written
