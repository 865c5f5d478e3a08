# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""The detection boundary of the MM diagram (ALGORITHM.md §3.3-§3.4)."""

import warnings

import numpy as np
from scipy.interpolate import BSpline
from astropy.utils.exceptions import AstropyUserWarning
from scipy.optimize import lsq_linear

from ._simulate import noise_axis

__all__ = ["DetectionBoundary"]

#: Weight of user fixed points, relative to the largest weight of the fit.
FIXED_POINT_WEIGHT = 1e4


def boundary_points(counts, x_edges, ymax, *, min_count):
    """Boundary points from a fine simulated histogram.

    Columns holding fewer than ``min_count`` simulated pixels are pooled with
    their neighbours (to the right) until they do.  For each column (or pooled
    group) ``j`` holding ``T_j`` simulated pixels, the point is the ``y``
    exceeded by exactly one of them: samples are taken as uniform within their
    fine bin and the column's upper cumulative count is interpolated to 1,
    which always falls in the highest non-empty bin ``b`` holding ``n_b``
    samples:
    ``y_j = upper_edge(b) - width / n_b`` (ALGORITHM.md §3.3, interpolated
    within the bin rather than snapped to its centre).

    Parameters
    ----------
    counts : `~numpy.ndarray`, shape (nx, nyfine + 1), int
        Column histograms with a last overflow row.
    x_edges : `~numpy.ndarray`, shape (nx + 1,)
    ymax : float
        Upper edge of the last regular row.
    min_count : int
        Simulated pixels a point needs; sparser columns are pooled.

    Returns
    -------
    x, y, total : `~numpy.ndarray`
        Count-weighted column centres, boundary values and simulated counts
        of each point.
    """
    nfine = counts.shape[1] - 1
    width = ymax / nfine
    xc = 0.5 * (x_edges[:-1] + x_edges[1:])
    # Pool sparse columns with their right-hand neighbours until each group
    # holds min_count simulated pixels (a leftover tail joins the last group),
    # so that the points cover the whole x range of the data instead of the
    # boundary being clamped below the brightest pixels.
    groups, start, acc = [], 0, 0
    total = counts.sum(axis=1)
    for j, t in enumerate(total):
        acc += t
        if acc >= min_count:
            groups.append((start, j + 1))
            start, acc = j + 1, 0
    if acc > 0:  # a sparse tail joins the last group (or is the only one)
        groups[-1:] = [(groups[-1][0] if groups else 0, len(total))]
    x, y, n = [], [], []
    for a, b in groups:
        column = counts[a:b].sum(axis=0)
        top = np.flatnonzero(column)[-1]   # highest non-empty row
        if top == nfine:
            warnings.warn(f"simulated values above ydiag_max={ymax:.4g} near x'={xc[a]:.4g}; "
                          "the boundary point there is set to ydiag_max: raise ydiag_max",
                          AstropyUserWarning)
            y.append(ymax)
        else:
            y.append((top + 1) * width - width / column[top])
        x.append(np.average(xc[a:b], weights=total[a:b]))
        n.append(column.sum())
    return np.array(x), np.array(y), np.array(n)


class DetectionBoundary:
    """A detection boundary ``B(x)`` of the Median-Minimum diagram.

    ``B`` is a non-decreasing function of the minimum signal ``x``
    (electrons).  A pixel whose ``y`` (e.g. median - minimum) lies above
    ``B(x)`` is a cosmic-ray candidate.  Outside the fitted ``x`` range the
    boundary is held constant at its end values (ALGORITHM.md §3.4; numina
    extrapolates the cubic instead).

    Build one with `fit` (a monotone cubic spline through simulated boundary
    points, with upward extension) or `piecewise` (straight lines through
    given points); call it like a function.

    Attributes
    ----------
    kind : str
        ``'spline'`` or ``'piecewise'``.
    x_points, y_points : `~numpy.ndarray`
        The points the boundary was fitted to (electrons).
    weights : `~numpy.ndarray`
        The weights of the points in the last iteration.
    iterations : list of `~scipy.interpolate.BSpline`
        The fit of each iteration (first: plain fit; then one per upward
        extension), for diagnostics.
    x_range : tuple of float
        ``(xmin, xmax)`` beyond which the boundary is constant, in the fit's
        coordinate.
    noise_scale : float or None
        If set, the fit is in ``x' = sqrt(max(x + noise_scale^2, 0))``
        (the diagram's column coordinate) and ``x_points``/``x_range`` are too.
    """

    def __init__(self, kind, x_points, y_points, x_range, *, spline=None, weights=None,
                 iterations=None, fixed_points=None, noise_scale=None):
        self.kind = kind
        self.noise_scale = noise_scale
        self.x_points = np.asarray(x_points, dtype=float)
        self.y_points = np.asarray(y_points, dtype=float)
        self.x_range = (float(x_range[0]), float(x_range[1]))
        self.spline = spline
        self.weights = weights
        self.iterations = list(iterations or [])
        self.fixed_points = fixed_points

    def __repr__(self):
        return (f"<DetectionBoundary {self.kind}: {len(self.x_points)} points, "
                f"x in [{self.x_range[0]:.4g}, {self.x_range[1]:.4g}]>")

    def __call__(self, x):
        """Evaluate ``B(x)``; ``x`` is clamped to ``x_range`` (NaN stays NaN)."""
        x = np.asarray(x)
        xt = x if self.noise_scale is None else noise_axis(x, self.noise_scale)
        xc = np.clip(xt, *self.x_range)
        if self.spline is not None:
            out = self.spline(xc.ravel()).reshape(xc.shape)
        else:
            out = np.interp(xc, self.x_points, self.y_points)
        dtype = x.dtype if x.dtype.kind == "f" else np.float64
        return np.where(np.isnan(x), np.nan, out).astype(dtype, copy=False)

    @classmethod
    def piecewise(cls, points):
        """Straight lines through ``points`` (list of ``[x, y]``, electrons).

        The points are sorted by ``x``; ``y`` must not decrease.

        Raises
        ------
        ValueError
            Fewer than two points, or ``y`` decreasing with ``x``.
        """
        pts = np.asarray(points, dtype=float)
        pts = pts[np.argsort(pts[:, 0])]
        if len(pts) < 2 or np.any(np.diff(pts[:, 1]) < 0) or np.any(np.diff(pts[:, 0]) <= 0):
            raise ValueError("piecewise_points must be at least two [x, y] points with distinct "
                             "x and y not decreasing with x.")
        return cls("piecewise", pts[:, 0], pts[:, 1], (pts[0, 0], pts[-1, 0]))

    @classmethod
    def fit(cls, x, y, *, knots=3, niter=3, weight=10.0, fixed_points=None, noise_scale=None):
        """Fit a non-decreasing cubic B-spline to boundary points.

        Parameters
        ----------
        x, y : array_like, shape (n,)
            Boundary points, e.g. from simulations: ``y`` in electrons, ``x``
            in electrons, or in ``x' = sqrt(max(x + s^2, 0))`` when
            ``noise_scale`` (``s``, electrons) is given.
        knots : int
            Total number of knots, ends included, evenly spaced over the
            range of ``x``.  Default is 3.
        niter : int
            Upward-extension iterations.  At iteration ``k`` the points above
            the previous fit get weight ``weight**k``, the others 1.
            Default is 3.
        weight : float
            ``W``, the base of the extension weights.  Default is 10.
        fixed_points : array_like, shape (m, 2) or (m, 3), optional
            ``[x, y(, w)]`` points the fit must honour; the default weight is
            ``1e4`` times the largest weight of the other points.  Their
            ``x`` is in electrons.
        noise_scale : float, optional
            Fit in the noise coordinate ``x'`` (see `~crcombine._simulate.noise_axis`);
            the boundary is then called with ``x`` in electrons.

        Returns
        -------
        DetectionBoundary

        Notes
        -----
        The fit is the convex problem ``min_c ||W^1/2 (A c - y)||^2`` subject
        to non-decreasing B-spline coefficients, solved exactly with
        `scipy.optimize.lsq_linear` by writing ``c = c_0 + cumsum(delta)``
        with ``delta >= 0``.  Non-decreasing coefficients are a sufficient
        condition for ``B'(x) >= 0`` everywhere (de Boor, *A Practical Guide
        to Splines*, 2001, ch. IX), slightly stronger than the grid constraint
        of ALGORITHM.md §3.4, and need no iterative solver.  With fewer points
        than coefficients the boundary falls back to straight lines through the
        running maximum of the points.
        """
        x = np.asarray(x, dtype=float)
        y = np.asarray(y, dtype=float)
        order = np.argsort(x)
        x, y = x[order], y[order]
        fixed = None if fixed_points is None else np.atleast_2d(
            np.asarray(fixed_points, dtype=float)).copy()
        if fixed is not None and noise_scale is not None:
            fixed[:, 0] = noise_axis(fixed[:, 0], noise_scale)
        xall = x if fixed is None else np.concatenate([x, fixed[:, 0]])
        if xall.size == 0:
            raise ValueError("no boundary points: the simulated diagram has no column with "
                             "enough pixels; lower min_column_count or give piecewise_points.")
        x_range = (xall.min(), xall.max())
        ncoef = knots + 2
        if x.size < ncoef or x_range[1] <= x_range[0]:
            warnings.warn(f"only {x.size} boundary points for {ncoef} spline coefficients; the "
                          "boundary is made of straight lines through the running maximum of "
                          "the points (use fewer knots or more nsimulations for a spline)",
                          AstropyUserWarning)
            ym = np.maximum.accumulate(y) if y.size else fixed[:, 1]
            xs = x if y.size else fixed[:, 0]
            if xs.size == 1:
                xs, ym = np.array([xs[0], xs[0] + 1.0]), np.array([ym[0], ym[0]])
            return cls("piecewise", xs, ym, (xs[0], xs[-1]), fixed_points=fixed,
                       noise_scale=noise_scale)

        inner = np.linspace(x_range[0], x_range[1], knots)
        t = np.concatenate([[inner[0]] * 3, inner, [inner[-1]] * 3])
        design = BSpline.design_matrix(np.clip(xall, *x_range), t, 3).toarray()
        # c = L p with p = (c_0, delta_1, ..., delta_{n-1}) and delta >= 0
        lower = np.tril(np.ones((ncoef, ncoef)))
        a = design @ lower
        lb = np.r_[-np.inf, np.zeros(ncoef - 1)]
        ub = np.full(ncoef, np.inf)
        yall = y if fixed is None else np.concatenate([y, fixed[:, 1]])

        w = np.ones(x.size)
        iterations = []
        spline = None
        for it in range(niter + 1):
            if it > 0:
                above = y > spline(x)
                w = np.where(above, weight ** it, 1.0)
            wall = w
            if fixed is not None:
                fw = fixed[:, 2] if fixed.shape[1] == 3 else np.full(len(fixed),
                                                                     FIXED_POINT_WEIGHT * w.max())
                wall = np.concatenate([w, fw])
            sw = np.sqrt(wall)
            res = lsq_linear(a * sw[:, None], yall * sw, bounds=(lb, ub), method="bvls")
            spline = BSpline(t, lower @ res.x, 3, extrapolate=False)
            iterations.append(spline)
        return cls("spline", x, y, x_range, spline=spline, weights=w, iterations=iterations,
                   fixed_points=fixed, noise_scale=noise_scale)
