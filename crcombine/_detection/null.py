# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""The exact null distribution of the MM diagram statistics (:ref:`algorithm-null`).

Instead of simulating the stack ``nsimulations`` times and histogramming the
draws (`crcombine._detection.simulate`), the histogram those simulations
would give *on average* is computed from the order statistics of the noise
model.  The boundary computed from it is the same for every seed: the seed
no longer enters the masks.

For one pixel of expected signal ``lambda`` with ``k`` valid exposures, each
flux-scaled exposure ``X = S / f`` (``S`` = Poisson or negative binomial of
mean ``f lambda`` plus read noise) has the distribution ``F``, taken as the
average of the exposures' own (their flux factors differ by some per cent;
the order statistics of independent values with the average distribution
bound the spread of those of the exact, non-identical ones from above,
Hoeffding 1956, so the boundary is if anything conservative).  On a lattice
of step `STEP` in units of the noise ``sigma``, the joint distribution of the
minimum signal ``x`` (mean of the ``m = max(k - n_c, 1)`` lowest values) and
of ``y`` (median, mean or single exposure minus ``x``) follows by
conditioning on the ``m``-th lowest value ``b``, whose density is (David &
Nagaraja, *Order Statistics*, 3rd ed., 2003, eq. 2.1.6)

    ``k! / ((m-1)! (k-m)!) F(b)^(m-1) f(b) [1 - F(b)]^(k-m)``.

Given ``b``, the ``m - 1`` lower values are independent draws from ``F``
truncated below ``b`` and the ``k - m`` higher ones from ``F`` truncated
above it (ibid., Theorem 2.5), independent of each other: ``x`` is ``b``
plus the sum of the lower ones (a convolution power), over ``m``; the median
is an order statistic of the higher ones (or the mean of two adjacent ones,
joint density eq. 2.2.1), the mean their sum.  Each statistic's joint
distribution with ``x`` given ``b`` is an outer product, summed over ``b``.

The shape of these distributions in units of ``sigma`` depends on the level
only through the skewness and discreteness of the counts, so it is computed
at anchor levels spaced by a factor `ANCHOR_RATIO` (and at 0), and each
level of the data uses the nearest anchor's shape with its own ``lambda`` and
``sigma``.  The pixels are counted by level (four bins per diagram column),
read noise (an image is split into `READNOISE_BINS` bins) and number of valid
exposures; the expected histogram is the sum over those bins, times
``nsimulations``.
"""

import logging
import math

import numpy as np
from scipy import special

from .._core.noise import variance
from .simulate import NXBINS, NYFINE, STATISTICS, DiagramHistograms, diagram_noise, noise_axis

__all__ = []

log = logging.getLogger(__name__)

#: Lattice step of the standardised exposure values ``(X - lambda) / sigma``.
STEP = 0.1
#: Range of the standardised values: masses beyond are below 1e-17 (read noise
#: dominated) and still below 1e-12 for the Poisson tail at one count.
Z_LOW, Z_HIGH = -8.5, 11.5
#: Ratio between consecutive anchor levels (electrons, from `ANCHOR_FIRST`), up to
#: `ANCHOR_BREAK` electrons; beyond, where the skewness of the counts is below 0.03,
#: `ANCHOR_RATIO_HIGH`.
ANCHOR_RATIO = 1.3
ANCHOR_FIRST = 0.1
ANCHOR_BREAK = 1000.0
ANCHOR_RATIO_HIGH = 2.0
#: Level bins per diagram column.
LEVEL_BINS_PER_COLUMN = 4
#: Bins of an image of the read noise.
READNOISE_BINS = 8
#: Masses below this (of a probability 1) are left out of the expected histograms.
NEGLIGIBLE = 1e-25
#: Sub-positions spreading each lattice cell over its width in ``y``.
SUBCELLS = 8
_SUBLATTICE = 16


def _ncells():
    return int(round((Z_HIGH - Z_LOW) / STEP))


def _z_centres():
    return Z_LOW + STEP * (np.arange(_ncells()) + 0.5)


def exposure_sigma(level, flux_factor, readnoise, kappa):
    """``sigma`` of one flux-scaled exposure at ``level``: the exposures' root mean variance.

    ``Var(S_i / f_i) = variance(f_i lambda, sigma_r^2, kappa) / f_i^2``
    (`crcombine._core.noise.variance`), electrons.
    """
    f = np.asarray(flux_factor, dtype=float)
    v = variance(f * max(float(level), 0.0), float(readnoise) ** 2, kappa=kappa) / f ** 2
    return max(math.sqrt(float(np.mean(v))), 1e-6)


def _fft_convolve(a, b):
    n = a.size + b.size - 1
    size = 1 << (n - 1).bit_length()
    out = np.fft.irfft(np.fft.rfft(a, size) * np.fft.rfft(b, size), size)[:n]
    return np.maximum(out, 0)


def _count_pmf(counts, mu, kappa):
    """Poisson (``kappa`` None) or negative binomial probabilities of ``counts`` of mean ``mu``.

    ``P(n) = exp(n ln mu - mu - ln n!)``; negative binomial of shape ``kappa``:
    ``Gamma(n + kappa) / (n! Gamma(kappa)) r^kappa (1 - r)^n``, ``r = kappa / (kappa + mu)``.
    """
    n = np.asarray(counts, dtype=float)
    if kappa is None:
        log = n * math.log(mu) - mu - special.gammaln(n + 1)
    else:
        r = kappa / (kappa + mu)
        log = (special.gammaln(n + kappa) - special.gammaln(n + 1) - special.gammaln(kappa)
               + kappa * math.log(r) + n * math.log1p(-r))
    return np.exp(log)


def exposure_masses(level, flux_factor, readnoise, kappa):
    """Masses (G,) of one standardised flux-scaled exposure on the lattice, and ``sigma``.

    The counts' probabilities (Poisson, or negative binomial of shape
    ``kappa``: `_count_pmf`) are placed at ``(n / f - lambda) / sigma`` on a
    lattice 16 times finer, convolved with the read noise's Gaussian
    (`scipy.special.ndtr` differences) and summed into the cells; averaged
    over the exposures.
    """
    sigma = exposure_sigma(level, flux_factor, readnoise, kappa)
    g = _ncells()
    fine = STEP / _SUBLATTICE
    total = np.zeros(g * _SUBLATTICE)
    lam = max(float(level), 0.0)
    for f in np.asarray(flux_factor, dtype=float):
        mu = f * lam
        if mu > 0:
            sd = math.sqrt(variance(mu, 0.0, kappa=kappa))
            counts = np.arange(max(0, math.floor(mu - 12 * sd - 5)), math.ceil(mu + 16 * sd + 12))
            pmf = _count_pmf(counts, mu, kappa)
        else:
            counts, pmf = np.zeros(1), np.ones(1)
        pos = ((counts / f - lam) / sigma - Z_LOW) / fine
        inside = (pos >= 0) & (pos < total.size)
        part = np.bincount(pos[inside].astype(np.intp), weights=pmf[inside],
                           minlength=total.size)
        width = float(readnoise) / f / sigma / fine      # read noise, in fine cells
        if width > 0.25:
            half = int(math.ceil(9 * width))
            edges = (np.arange(-half, half + 2) - 0.5) / width
            kernel = np.diff(special.ndtr(edges))
            part = _fft_convolve(part, kernel)[half:half + total.size]
        total += part
    masses = total.reshape(g, _SUBLATTICE).sum(axis=1)
    return masses / max(masses.sum(), 1e-300), sigma


def _power(q, n):
    """Distribution of the sum of ``n`` independent draws from masses ``q`` (indices add)."""
    if n == 0:
        return np.ones(1)
    if n == 1:
        return q
    size = n * (q.size - 1) + 1
    fft = 1 << (size - 1).bit_length()
    out = np.fft.irfft(np.fft.rfft(q, fft) ** n, fft)[:size]
    return np.maximum(out, 0)


def _rebin(position, mass, size):
    """Masses at fractional lattice positions, split linearly onto ``size`` integer cells."""
    lo = np.floor(position)
    frac = position - lo
    lo = lo.astype(np.intp)
    keep = (lo >= 0) & (lo < size)
    out = np.bincount(lo[keep], weights=mass[keep] * (1 - frac[keep]), minlength=size + 1)
    out[:size + 1] += np.bincount(lo[keep] + 1, weights=mass[keep] * frac[keep],
                                  minlength=size + 1)[:size + 1]
    return out[:size]


def _order_density(q, j, n):
    """Masses of the ``j``-th lowest (1-based) of ``n`` draws from ``q`` (cells' mid CDF)."""
    cdf = np.cumsum(q) - q / 2
    d = cdf ** (j - 1) * q * np.clip(1 - cdf, 0, None) ** (n - j)
    return d / max(d.sum(), 1e-300)


def _adjacent_mean(q, j, n):
    """Masses of the mean of the ``j``-th and ``j+1``-th lowest of ``n`` draws, on half cells.

    Joint density ``F(c)^(j-1) f(c) f(d) [1 - F(d)]^(n-j-1)``, ``c <= d``
    (David & Nagaraja 2003, eq. 2.2.1).  Returns masses at positions
    ``0, 0.5, 1, ...`` (``2 len(q) - 1`` of them).
    """
    cdf = np.cumsum(q) - q / 2
    low = cdf ** (j - 1) * q
    high = q * np.clip(1 - cdf, 0, None) ** (n - j - 1)
    joint = np.triu(np.outer(low, high))
    joint[np.diag_indices_from(joint)] *= 0.5
    c, d = np.nonzero(joint)
    out = np.bincount(c + d, weights=joint[c, d], minlength=2 * q.size - 1)
    return out / max(out.sum(), 1e-300)


def exact_statistics(n_valid, cr_coincidences):
    """The statistics whose null distribution `order_tables` computes for ``n_valid`` values.

    The median is exact when it does not lie among the ``m`` lowest values
    (``(k-1)//2 >= m-1``, which holds for the default ``n_c``); the mean and
    the single exposures always are.
    """
    m = max(n_valid - cr_coincidences, 1)
    return tuple(s for s in STATISTICS if s != "median" or (n_valid - 1) // 2 >= m - 1)


def order_tables(p, n_valid, cr_coincidences, statistics):
    """Joint masses of ``(u, v)`` for each statistic, for ``n_valid`` draws from masses ``p``.

    ``u`` is the minimum signal on the lattice of ``p`` (cell ``i`` at
    ``Z_LOW + (i + 0.5) STEP``) and ``v >= 0`` the statistic minus the minimum
    signal in lattice steps (cell ``j`` at ``j STEP``; the single exposures'
    ``v`` may be negative and is then in cell 0, as the histograms clip it).
    The single-exposure table sums over the ``k`` exposures (total mass
    ``k``).  Returns a dict of (G, G) arrays.

    Given ``b`` (the ``m``-th lowest value, weight ``w_b``), the law of ``x``
    is a row ``X_b`` and that of the statistic (on a lattice ``q`` times
    finer) a row ``S_b``; they are independent, so the joint law of
    ``(x, statistic)`` is the matrix product ``X^T diag(w) S``, turned into
    ``(x, v)`` cells at the end.
    """
    g = p.size
    k = n_valid
    m = max(k - cr_coincidences, 1)
    na = k - m
    cdf = np.cumsum(p) - p / 2
    wb = cdf ** (m - 1) * p * np.clip(1 - cdf, 0, None) ** na
    wb /= max(wb.sum(), 1e-300)
    used = np.flatnonzero(wb > wb.max() * 1e-22)
    lo, hi = (k - 1) // 2 - (m - 1), k // 2 - (m - 1)      # median ranks among b and above
    xrows = np.zeros((used.size, g))
    fine = {"median": 1 if lo == hi else 2, "mean": max(na, 1), "single": 1}
    srows = {s: np.zeros((used.size, g * fine[s])) for s in statistics}
    for r, b in enumerate(used):
        # the lower values: x = (b + their sum) / m
        if m > 1:
            below = p[:b + 1].copy()
            below[b] /= 2
            below /= max(below.sum(), 1e-300)
            total = _power(below, m - 1)
            xrows[r] = _rebin((np.arange(total.size) + b) / m, total, g)
        else:
            xrows[r, b] = 1.0
        above = p[b:].copy()
        above[0] /= 2
        above /= max(above.sum(), 1e-300)
        if "median" in srows:
            row = srows["median"][r]
            if lo == hi == 0:
                row[b] = 1.0
            elif lo == hi:
                row[b:] = _order_density(above, lo, na)
            elif lo == 0:       # (b + the lowest of the higher values) / 2, on half steps
                row[2 * b + np.arange(above.size)] = _order_density(above, 1, na)
            else:               # the mean of two adjacent higher values, on half steps
                med = _adjacent_mean(above, lo, na)
                row[2 * b:2 * b + med.size] = med[:row.size - 2 * b]
        if "mean" in srows:
            row = srows["mean"][r]
            if na == 0:
                row[b] = 1.0
            else:               # the mean of the higher values, on steps of 1 / na
                total = _power(above, na)
                row[na * b:na * b + total.size] = total[:row.size - na * b]
        if "single" in srows:
            row = srows["single"][r]
            row[b:] += na * above
            row[b] += 1.0
    weighted = (xrows * wb[used][:, None]).T
    tables = {}
    for stat, rows in srows.items():
        joint = weighted @ rows                     # (x cell, statistic on the fine lattice)
        q = fine[stat]
        coef = na / k if stat == "mean" and na else 1.0
        xi, sj = np.nonzero(joint > 0)
        v = np.clip(coef * (sj / q - xi), 0, g - 1)
        v0 = np.floor(v)
        frac = v - v0
        index = xi * g + v0.astype(np.intp)
        mass = joint[xi, sj]
        table = np.bincount(index, weights=mass * (1 - frac), minlength=g * g)
        table += np.bincount(np.minimum(index + 1, xi * g + g - 1), weights=mass * frac,
                             minlength=g * g)
        table = table.reshape(g, g)
        if stat == "single" and m > 1:
            # the m - 1 lower values: their y is at most b - x, a spread among the lowest
            # values far below the boundary; counted in the lowest cell
            table[:, 0] += (m - 1) * weighted.sum(axis=1)
        tables[stat] = table
    return tables


class LevelBinning:
    """How `level_counts` bins the pixels: exposures and read-noise bin edges (electrons)."""

    def __init__(self, n_exposures, readnoise_edges):
        self.n_exposures = n_exposures
        self.readnoise_edges = np.asarray(readnoise_edges, dtype=float)

    @property
    def n_readnoise_bins(self):
        return len(self.readnoise_edges) - 1

    def readnoise_bin(self, rn):
        """Read-noise bin (int) of values ``rn``."""
        e = self.readnoise_edges
        return np.clip(np.searchsorted(e, rn, side="right") - 1, 0, len(e) - 2)


class NullModel:
    """The exact null distribution of a stack, ready to map onto a `DiagramHistograms` grid.

    Parameters
    ----------
    flux_factor : `~numpy.ndarray`, shape (N,)
    readnoise : float or `~numpy.ndarray`
        Electrons; an image is binned (`READNOISE_BINS`).
    kappa : float or None
        Negative binomial shape (None: Poisson).
    cr_coincidences : int
    top : float
        Highest level (electrons) the anchors must reach.
    statistics : tuple of str
    """

    def __init__(self, flux_factor, readnoise, kappa, cr_coincidences, top, statistics):
        self.flux_factor = np.asarray(flux_factor, dtype=float)
        self.n_exposures = self.flux_factor.size
        self.kappa = kappa
        self.cr_coincidences = cr_coincidences
        self.statistics = tuple(statistics)
        rn = np.asarray(readnoise, dtype=float)
        finite = rn[np.isfinite(rn)] if rn.ndim else rn.reshape(1)
        lo, hi = float(finite.min()), float(finite.max())
        #: how the pixels are binned (`LevelBinning`), the one piece the tiles need
        self.bins = LevelBinning(self.n_exposures, np.array([lo, hi]) if hi <= lo * 1.001
                                 else np.linspace(lo, hi, READNOISE_BINS + 1))
        self.readnoise_edges = self.bins.readnoise_edges
        #: read noise of the anchors' shapes (electrons): the median
        self.readnoise = float(np.median(finite))
        top = max(float(top), 1.0)
        count = int(math.ceil(math.log(ANCHOR_BREAK / ANCHOR_FIRST) / math.log(ANCHOR_RATIO)))
        low = ANCHOR_FIRST * ANCHOR_RATIO ** np.arange(count)
        count = max(int(math.ceil(math.log(top / low[-1]) / math.log(ANCHOR_RATIO_HIGH))), 0) + 1
        high = low[-1] * ANCHOR_RATIO_HIGH ** np.arange(1, count + 1)
        levels = np.r_[low, high]
        # up to the first anchor at or above the top level
        self.anchors = np.r_[0.0, levels[:int(np.searchsorted(levels, top)) + 1]]
        self._masses = {}
        self._tables = {}

    def anchor(self, level):
        """Index of the anchor level nearest ``level`` (in ``log(level + ANCHOR_FIRST)``)."""
        a = np.log(self.anchors + ANCHOR_FIRST)
        return int(np.argmin(np.abs(a - math.log(max(level, 0.0) + ANCHOR_FIRST))))

    def masses(self, index):
        if index not in self._masses:
            self._masses[index] = exposure_masses(self.anchors[index], self.flux_factor,
                                                  self.readnoise, self.kappa)[0]
        return self._masses[index]

    def exact(self, n_valid):
        """The statistics computed exactly for ``n_valid`` values (`exact_statistics`)."""
        return exact_statistics(n_valid, self.cr_coincidences)

    def cells(self, index, n_valid):
        """Non-negligible cells of the anchor's tables: dict stat -> (u, v, mass)."""
        key = (index, n_valid)
        if key not in self._tables:
            stats_k = tuple(s for s in self.statistics if s in self.exact(n_valid))
            tables = order_tables(self.masses(index), n_valid, self.cr_coincidences, stats_k)
            self._tables[key] = {}
            for stat, t in tables.items():
                u, v = np.nonzero(t > NEGLIGIBLE)
                self._tables[key][stat] = (u, v, t[u, v])
        return self._tables[key]

    def sigma(self, level, readnoise):
        return exposure_sigma(level, self.flux_factor, readnoise, self.kappa)

    def extent(self, noise_scale):
        """``(x_min, x_max, ymax)`` over the anchors for ``N`` valid values.

        ``x_min``, ``x_max``: where the minimum signal has a probability above
        1e-7 per lattice cell (pilot simulations of 1e5 pixels reach as far);
        ``ymax`` per statistic: the largest normalised ``y`` holding mass
        above 1e-20, which sets the diagram's ``y`` range.
        """
        z = _z_centres()
        x_lo, x_hi, ymax = np.inf, -np.inf, {s: 0.0 for s in self.statistics}
        rn_values = (self.readnoise_edges[0], self.readnoise_edges[-1])
        for i, level in enumerate(self.anchors):
            for rn in rn_values:
                s = self.sigma(level, rn)
                for stat, (u, v, w) in self.cells(i, self.n_exposures).items():
                    # x where the pixels are (mass 1e-7: as far as a few million draw)
                    likely = np.flatnonzero(np.bincount(u, weights=w, minlength=z.size) > 1e-7)
                    x_lo = min(x_lo, level + s * z[likely[0]])
                    x_hi = max(x_hi, level + s * z[likely[-1]])
                    keep = w > 1e-20
                    x = level + s * z[u[keep]]
                    yn = s * (v[keep] + 1) * STEP / diagram_noise(x, noise_scale, self.kappa)
                    ymax[stat] = max(ymax[stat], float(yn.max()))
        return x_lo, x_hi, ymax


def exact_grid(x_min, x_max, model, noise_scale, *, ydiag_max=None):
    """The empty `DiagramHistograms` grid for data whose minimum signal spans ``[x_min, x_max]``.

    As `crcombine._detection.simulate.diagram_grid`, with the limits from the
    exact null distribution of the anchors instead of pilot simulations:
    ``ymax`` is 1.25 times the largest normalised ``y`` holding mass above 1e-20.
    """
    lo, hi, top = model.extent(noise_scale)
    x0 = float(noise_axis(min(float(x_min), lo), noise_scale))
    x1 = float(noise_axis(max(float(x_max), hi), noise_scale))
    if not x1 > x0:
        x1 = x0 + 1.0
    ymax = {k: ydiag_max if ydiag_max is not None else 1.25 * max(top[k], 1e-3)
            for k in model.statistics}
    grid = DiagramHistograms(np.linspace(x0, x1, NXBINS + 1), ymax, noise_scale, model.kappa)
    return grid


def exact_null(null_distribution, x_min, x_max, flux_factor, readnoise, kappa,
               cr_coincidences, statistics, *, ydiag_max=None):
    """The `NullModel` and its `exact_grid`, or ``(None, None)`` when simulations are needed.

    ``null_distribution='simulated'``, or a ``cr_coincidences`` that leaves
    the median among the lowest values (`exact_statistics`; logged).
    """
    n = np.size(flux_factor)
    if null_distribution != "exact":
        return None, None
    if "median" not in exact_statistics(n, cr_coincidences):
        log.info("cr_coincidences=%d leaves the median among the lowest values: the null "
                 "distribution is simulated", cr_coincidences)
        return None, None
    model = NullModel(flux_factor, readnoise, kappa, cr_coincidences, max(x_max, 0.0),
                      statistics)
    grid = exact_grid(x_min, x_max, model, float(np.median(readnoise)), ydiag_max=ydiag_max)
    return model, grid


def level_counts(expected, readnoise, count, grid, binning):
    """Pixels of one tile counted by (valid exposures, read-noise bin, level bin).

    Returns ``(n, sum)``: arrays of shape (N + 1, R, L) of the pixel counts and
    of the sums of their expected levels (electrons); ``L`` level bins, 4 per
    diagram column (the grid's ``x'`` axis).
    """
    n_exp = binning.n_exposures
    nl = NXBINS * LEVEL_BINS_PER_COLUMN
    x0, x1 = grid.x_edges[0], grid.x_edges[-1]
    xp = noise_axis(expected, grid.noise_scale)
    lb = np.clip(((xp - x0) * (nl / (x1 - x0))).astype(np.intp), 0, nl - 1)
    rb = (binning.readnoise_bin(np.broadcast_to(readnoise, expected.shape))
          if np.ndim(readnoise) else np.zeros(expected.shape, dtype=np.intp))
    rb = np.asarray(rb, dtype=np.intp)
    nr = binning.n_readnoise_bins
    key = (np.asarray(count, dtype=np.intp) * nr + rb) * nl + lb
    key = key.ravel()
    size = (n_exp + 1) * nr * nl
    shape = (n_exp + 1, nr, nl)
    n = np.bincount(key, minlength=size).reshape(shape)
    total = np.bincount(key, weights=np.asarray(expected, dtype=float).ravel(),
                        minlength=size).reshape(shape)
    return n, total


def expected_histograms(grid, counts, model, nsimulations):
    """The histograms ``nsimulations`` simulations would give on average (float counts).

    ``counts`` is the merged `level_counts`.  Each bin's pixels take the
    anchor shape nearest their mean level, at their own ``lambda`` and
    ``sigma``: ``x = lambda + sigma u``, ``y = sigma v``, ``y`` spread evenly
    over its cell (`SUBCELLS` positions).
    """
    n, total = counts
    out = grid.empty_like()
    out.expected = True
    for stat in out.counts:
        out.counts[stat] = out.counts[stat].astype(float)
    z = _z_centres()
    sub = (np.arange(SUBCELLS) + 0.5) / SUBCELLS - 0.5
    size = NXBINS * (NYFINE + 1)
    rn_mid = 0.5 * (model.readnoise_edges[:-1] + model.readnoise_edges[1:])
    if model.bins.n_readnoise_bins == 1:
        rn_mid = np.array([model.readnoise])
    for k, r, lb in zip(*np.nonzero(n)):
        if k == 0:
            continue
        pixels = float(n[k, r, lb])
        level = float(total[k, r, lb]) / pixels
        s = model.sigma(level, rn_mid[r])
        for stat, (u, v, w) in model.cells(model.anchor(level), int(k)).items():
            if stat not in out.counts:
                continue
            x = level + s * z[u]
            col = grid.column(x)
            scale = NYFINE / grid.ymax[stat]
            inv = s * STEP * scale / diagram_noise(x, grid.noise_scale, grid.kappa)
            rows = (v[:, None] + sub[None, :]) * inv[:, None]
            rows = np.clip(rows, 0, NYFINE).astype(np.intp)
            index = col[:, None] * (NYFINE + 1) + rows
            weights = np.repeat(w * (pixels * nsimulations / SUBCELLS), SUBCELLS)
            out.counts[stat] += np.bincount(index.ravel(), weights=weights,
                                            minlength=size).reshape(NXBINS, NYFINE + 1)
    return out
