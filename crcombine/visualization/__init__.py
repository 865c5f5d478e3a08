# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Plotting helpers for every diagnostic of the M.M.Cosmic method.

All helpers follow the photutils conventions: matplotlib is imported inside
the function, ``ax`` (or ``axes``) may be given, the artists are returned, and
no global matplotlib state is changed.  When no axes are given, a new
`~matplotlib.figure.Figure` is made that is *not* registered with pyplot, so
that nothing accumulates in a long session; pass axes from
``matplotlib.pyplot.subplots`` to show the plot in a window.

The MM diagram's columns are of equal width in ``x' = sqrt(x + s^2)`` (``s``
the read noise); the x axes use that scale, labelled in electrons.
"""

from ._diagrams import plot_flagged_pixels, plot_flux_factors, plot_mm_diagram
from ._images import plot_cr_features, plot_exposure_map, plot_masks

__all__ = ["plot_cr_features", "plot_exposure_map", "plot_flagged_pixels",
           "plot_flux_factors", "plot_masks", "plot_mm_diagram"]
