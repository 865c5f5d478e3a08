# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""The axes of a new figure, not registered with pyplot (shared by the plotting helpers)."""


def new_axes(ncols=1, figsize=None):
    from matplotlib.figure import Figure
    fig = Figure(figsize=figsize or (6.0 * ncols, 4.5), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return list(axes)
