# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""The detection boundary of the MM diagram (:ref:`algorithm-mm-diagram`)."""

import warnings

import numpy as np
from scipy.interpolate import BSpline
from astropy.utils.exceptions import AstropyUserWarning
from scipy.optimize import minimize

from .simulate import diagram_noise, noise_axis

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
    ``y_j = upper_edge(b) - width / n_b`` (:ref:`algorithm-mm-diagram`, interpolated
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
    total = counts.sum(axis=1)
    x, y, n = [], [], []
    for a, b in _pooled_groups(total, min_count):
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


#: Points of the grid on which the boundary's slope is constrained (:ref:`algorithm-mm-diagram`).
SLOPE_GRID = 100


def _slope_constraint(t, x_range, noise_scale, kappa):
    """Matrix ``G`` with ``G @ c >= 0`` meaning ``dB/dx' >= 0`` on a grid.

    Without noise normalisation ``B = S`` and ``G`` is the derivative of the
    B-spline basis.  With it, ``B = S * sigma(x)`` and ``dB/dx' = S' sigma +
    S dsigma/dx'``, still linear in the coefficients.
    """
    ncoef = len(t) - 4
    grid = np.linspace(x_range[0], x_range[1], SLOPE_GRID)
    eye = np.eye(ncoef)
    deriv = np.stack([BSpline(t, eye[j], 3).derivative()(grid) for j in range(ncoef)], axis=1)
    if noise_scale is None:
        return deriv
    value = BSpline.design_matrix(grid, t, 3).toarray()
    x = grid ** 2 - noise_scale ** 2
    sigma = diagram_noise(x, noise_scale, kappa)
    xp = np.maximum(x, 0)
    dsigma_dx = np.where(x > 0, (1 + (2 * xp / kappa if kappa else 0)) / (2 * sigma), 0)
    dsigma = dsigma_dx * 2 * grid          # d sigma / d x'
    return deriv * sigma[:, None] + value * dsigma[:, None]


def _monotone_lstsq(design, y, weights, slope, start=None):
    """Weighted least squares ``min ||W^1/2 (A c - y)||^2`` subject to ``slope @ c >= 0``.

    A small convex quadratic programme, solved as one problem with
    `scipy.optimize.minimize` (SLSQP) and analytic gradients, started from the
    previous solution or the unconstrained one.
    """
    sw = np.sqrt(weights)
    a = design * sw[:, None]
    b = y * sw
    scale = max(np.abs(b).max(), 1e-12)
    if start is None:
        start = np.linalg.lstsq(a, b, rcond=None)[0]
    norm = slope / np.maximum(np.abs(slope).max(axis=1, keepdims=True), 1e-300)

    def objective(c):
        r = (a @ c - b) / scale
        return r @ r, 2 * (a.T @ r) / scale

    res = minimize(objective, start, jac=True, method="SLSQP",
                   constraints=[{"type": "ineq", "fun": lambda c: norm @ c,
                                 "jac": lambda c: norm}],
                   options={"maxiter": 500, "ftol": 1e-12})
    return res.x


def _pooled_groups(total, min_count):
    """Column groups (start, stop) holding at least ``min_count`` samples each."""
    groups, start, acc = [], 0, 0
    for j, t in enumerate(total):
        acc += t
        if acc >= min_count:
            groups.append((start, j + 1))
            start, acc = j + 1, 0
    if acc > 0:
        groups[-1:] = [(groups[-1][0] if groups else 0, len(total))]
    return groups


def _exceedance_level(column, width, ymax, e):
    """``y`` above which ``e`` of a column's counts lie (linear within a fine bin)."""
    nfine = column.size - 1
    above = np.cumsum(column[::-1])[::-1]          # counts in this bin and higher
    j = np.flatnonzero(above >= e)
    j = j[-1] if j.size else 0
    inside = column[j]
    frac = (above[j] - e) / inside if inside else 0.0
    return min(j * width + frac * width, ymax) if j < nfine else ymax


def expected_points(counts, x_edges, ymax, *, min_count, exceedances=1.0):
    """Boundary points of the expected histogram of the exact null distribution.

    The counterpart of `boundary_points` for the histogram that
    ``nsimulations`` simulations give on average
    (`crcombine._detection.null.expected_histograms`): in each column (or
    group of sparse columns) the ``y`` above which ``exceedances`` (1) of its
    expected pixels lie, that is numina's criterion (the highest of the
    simulated pixels) without the draws' scatter.

    Returns
    -------
    x, y, total : `~numpy.ndarray`
        As `boundary_points`.
    """
    width = ymax / (counts.shape[1] - 1)
    xc = 0.5 * (x_edges[:-1] + x_edges[1:])
    total = counts.sum(axis=1)
    x, y, n = [], [], []
    for a, b in _pooled_groups(total, min_count):
        column = counts[a:b].sum(axis=0)
        if column[-1] >= exceedances:
            warnings.warn(f"expected values above ydiag_max={ymax:.4g} near x'={xc[a]:.4g}; "
                          "the boundary point there is set to ydiag_max: raise ydiag_max",
                          AstropyUserWarning)
        y.append(_exceedance_level(column, width, ymax, exceedances))
        x.append(np.average(xc[a:b], weights=total[a:b]))
        n.append(column.sum())
    return np.array(x), np.array(y), np.array(n)


def quantile_points(counts, x_edges, ymax, *, min_count, probability, tail=50, exact=False):
    """Boundary points exceeded by a fraction ``probability`` of the simulated pixels.

    For each column (or group of sparse columns, as in `boundary_points`)
    holding ``T`` simulated pixels, the ``y`` exceeded by ``probability * T``
    of them, interpolated within the fine bins.  When fewer than one simulated
    pixel lies above it, the tail is extrapolated as an exponential fitted
    between the ``tail``-th and the 5th largest samples (normalised ``y`` has
    close to Gaussian-like, thinner tails, so this is conservative).  With
    ``exact`` (the expected counts of the exact null distribution, which hold
    the far tail) the quantile is read off the counts at every probability.

    Returns
    -------
    edges, y, total : `~numpy.ndarray`
        The ``x`` edges of the groups (one more than points), their quantiles
        and simulated counts.
    """
    nfine = counts.shape[1] - 1
    width = ymax / nfine
    total = counts.sum(axis=1)
    groups = _pooled_groups(total, min_count)
    y, n = [], []
    for a, b in groups:
        column = counts[a:b].sum(axis=0).astype(float)
        t = column.sum()

        def level(e):
            return min(_exceedance_level(column, width, np.inf, e), ymax)

        want = probability * t
        if exact or want >= 5:
            value = level(want)
        else:
            hi_e, lo_e = 5.0, min(float(tail), max(t / 10, 6.0))
            y5, ytail = level(hi_e), level(lo_e)
            tau = max((y5 - ytail) / np.log(lo_e / hi_e), width)
            value = y5 + tau * np.log(hi_e / want)
        y.append(value)
        n.append(t)
    edges = np.array([x_edges[a] for a, _ in groups] + [x_edges[groups[-1][1]]])
    return edges, np.array(y), np.array(n)


class DetectionBoundary:
    """A detection boundary ``B(x)`` of the Median-Minimum diagram.

    ``B`` is a non-decreasing function of the minimum signal ``x``
    (electrons).  A pixel whose ``y`` (e.g. median - minimum) lies above
    ``B(x)`` is a cosmic-ray candidate.  Outside the fitted ``x`` range the
    boundary is held constant at its end values (:ref:`algorithm-mm-diagram`; numina
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
        If set, the fit is in the diagram's coordinates: ``x' = sqrt(max(x +
        noise_scale^2, 0))`` (``x_points``, ``x_range``) and ``y`` in units of
        the noise ``sqrt(max(x, 0) + noise_scale^2 + max(x, 0)^2 / kappa)``
        (``y_points``); ``B(x)`` is that fit times the noise.  Outside the
        fitted range ``B`` holds the same number of noise units.
    kappa : float or None
        Over-dispersion of that noise model.
    """

    def __init__(self, kind, x_points, y_points, x_range, *, spline=None, weights=None,
                 iterations=None, fixed_points=None, noise_scale=None, kappa=None, low=None,
                 edges=None):
        self.kind = kind
        self.low = low
        self.edges = edges
        self.noise_scale = noise_scale
        self.kappa = kappa
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
        out = self.normalised(x)
        if self.noise_scale is not None:
            out = np.maximum(out, 0) * diagram_noise(x, self.noise_scale, self.kappa)
        dtype = x.dtype if x.dtype.kind == "f" else np.float64
        return np.where(np.isnan(x), np.nan, out).astype(dtype, copy=False)

    def normalised(self, x):
        """The fitted function: ``B(x) / diagram_noise(x)`` when ``noise_scale`` is set."""
        x = np.asarray(x)
        xt = x if self.noise_scale is None else noise_axis(x, self.noise_scale)
        xc = np.clip(xt, *self.x_range)
        if self.spline is not None:
            grid, values = self._spline_table()
            out = np.interp(np.clip(xc, grid[0], grid[-1]), grid, values)
        elif self.edges is not None:
            step = np.clip(np.searchsorted(self.edges, xc, side="right") - 1, 0,
                           len(self.y_points) - 1)
            out = self.y_points[step]
        else:
            out = np.interp(xc, self.x_points, self.y_points)
        if self.low is not None:  # below the bulk: the points' own envelope
            lx, ly = self.low
            start = lx[-1]
            below = xc < start
            if np.any(below):
                out = np.where(below, np.maximum(np.interp(xc, lx, ly), out), out)
        return out

    #: Points of the table through which the spline is evaluated on images.
    TABLE_POINTS = 8193

    def _spline_table(self):
        """The spline on a fine grid of its base interval (made once).

        Evaluating a B-spline costs ~75 ns per pixel; linear interpolation in
        a table of `TABLE_POINTS` values is three times cheaper and differs
        from it by at most ``h^2 max|B''| / 8`` (``h`` the grid step), some
        1e-7 of the boundary.
        """
        table = getattr(self, "_table", None)
        if table is None:
            grid = np.linspace(*self.spline.t[[3, -4]], self.TABLE_POINTS)
            table = self._table = (grid, self.spline(grid))
        return table

    @classmethod
    def steps(cls, edges, y, *, noise_scale=None, kappa=None):
        """A step function: ``y[j]`` over ``edges[j] <= x < edges[j + 1]`` (fit coordinates).

        Used with ``false_alarm``: each step is the calibrated quantile of its
        own diagram column, so that the expected number of false seeds is the
        sum over the columns.
        """
        edges = np.asarray(edges, dtype=float)
        y = np.asarray(y, dtype=float)
        centres = 0.5 * (edges[:-1] + edges[1:])
        return cls("quantile", centres, y, (edges[0], edges[-1]), noise_scale=noise_scale,
                   kappa=kappa, edges=edges)

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
    def fit(cls, x, y, *, knots=3, niter=3, weight=10.0, fixed_points=None, noise_scale=None,
            kappa=None, monotone_from=None):
        """Fit a non-decreasing cubic B-spline to boundary points.

        Parameters
        ----------
        x, y : array_like, shape (n,)
            Boundary points, e.g. from simulations: in electrons, or, when
            ``noise_scale`` (``s``, electrons) is given, ``x`` in
            ``x' = sqrt(max(x + s^2, 0))`` and ``y`` in units of the noise
            ``diagram_noise(x, s, kappa)``.
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
            Fit in the noise coordinates (see ``noise_axis`` and
            ``diagram_noise``); the boundary is then called with ``x`` in
            electrons and returns electrons.  Outside the fitted range it holds
            the same number of noise units.
        kappa : float, optional
            Over-dispersion of the noise model.
        monotone_from : float, optional
            The spline is fitted to the points from this ``x`` (in the fit's
            coordinate) upwards; below it (the pixels whose minimum was pulled
            low by noise, whose null distribution has a heavier tail) the
            boundary is the larger of the spline's start and straight lines
            through those points.  Forcing one monotone spline through both
            would lift the boundary everywhere.

        Returns
        -------
        DetectionBoundary

        Notes
        -----
        The fit is the convex problem ``min_c ||W^1/2 (A c - y)||^2`` subject
        to ``B'(x) >= 0`` on a grid of 100 points (:ref:`algorithm-mm-diagram`), where
        ``B`` is the spline or, with ``noise_scale``, the spline times the
        noise; solved as one problem by `scipy.optimize.minimize` (SLSQP) with
        analytic gradients and a vectorised linear constraint.  With fewer
        points than coefficients the boundary falls back to straight lines
        through the running maximum of the points.
        """
        x = np.asarray(x, dtype=float)
        y = np.asarray(y, dtype=float)
        order = np.argsort(x)
        x, y = x[order], y[order]
        low = None
        if monotone_from is not None and np.sum(x >= monotone_from) >= knots + 2:
            below = x < monotone_from
            if below.any():
                # straight lines through the points below the bulk, joined at its start
                low = (np.r_[x[below], monotone_from], np.r_[y[below], -np.inf])
                x, y = x[~below], y[~below]
        fixed = None if fixed_points is None else np.atleast_2d(
            np.asarray(fixed_points, dtype=float)).copy()
        if fixed is not None and noise_scale is not None:
            fixed[:, 1] = fixed[:, 1] / diagram_noise(fixed[:, 0], noise_scale, kappa)
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
                       noise_scale=noise_scale, kappa=kappa)

        inner = np.linspace(x_range[0], x_range[1], knots)
        t = np.concatenate([[inner[0]] * 3, inner, [inner[-1]] * 3])
        design = BSpline.design_matrix(np.clip(xall, *x_range), t, 3).toarray()
        yall = y if fixed is None else np.concatenate([y, fixed[:, 1]])
        slope = _slope_constraint(t, x_range, noise_scale, kappa)

        w = np.ones(x.size)
        iterations = []
        spline = None
        coef = None
        for it in range(niter + 1):
            if it > 0:
                above = y > spline(x)
                w = np.where(above, weight ** it, 1.0)
            wall = w
            if fixed is not None:
                fw = fixed[:, 2] if fixed.shape[1] == 3 else np.full(len(fixed),
                                                                     FIXED_POINT_WEIGHT * w.max())
                wall = np.concatenate([w, fw])
            coef = _monotone_lstsq(design, yall, wall, slope, coef)
            spline = BSpline(t, coef, 3, extrapolate=False)
            iterations.append(spline)
        if low is not None:
            low = (low[0], np.r_[low[1][:-1], float(spline(x_range[0]))])
            x_range = (low[0][0], x_range[1])
        return cls("spline", x, y, x_range, spline=spline, weights=w, iterations=iterations,
                   fixed_points=fixed, noise_scale=noise_scale, kappa=kappa, low=low)


def detection_boundaries(sim, n, n_valid, kappa, options):
    """The median, mean and single-exposure `DetectionBoundary` from the simulations.

    ``sim`` the simulated `~crcombine._detection.simulate.DiagramHistograms`, ``n``
    the exposures, ``n_valid`` the valid pixels, ``kappa`` the over-dispersion
    (or None) and ``options`` the `~crcombine._detection.options.DetectionOptions`.
    Returns a dict by statistic.
    """
    p = options
    boundaries = {}
    for stat in sim.counts:
        if stat == "median" and p.boundary == "piecewise":
            boundaries[stat] = DetectionBoundary.piecewise(p.piecewise_points)
            continue
        if p.false_alarm is not None:
            per = n_valid * (n if stat == "single" else 1)
            edges, by, _ = quantile_points(sim.counts[stat], sim.x_edges, sim.ymax[stat],
                                           min_count=p.min_column_count,
                                           probability=p.false_alarm / max(per, 1),
                                           exact=sim.expected)
            boundaries[stat] = DetectionBoundary.steps(edges, by, noise_scale=sim.noise_scale,
                                                       kappa=kappa)
            continue
        points = expected_points if sim.expected else boundary_points
        bx, by, counts = points(sim.counts[stat], sim.x_edges, sim.ymax[stat],
                                min_count=p.min_column_count)
        boundaries[stat] = DetectionBoundary.fit(
            bx, by, knots=p.knots, niter=p.niter_boundary_extension,
            weight=p.weight_boundary_extension,
            fixed_points=p.fixed_points if stat == "median" else None,
            noise_scale=sim.noise_scale, kappa=kappa,
            monotone_from=bx[np.argmax(counts)] if counts.size else None)
    return boundaries
