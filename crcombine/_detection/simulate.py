# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Simulated null distribution of the MM diagram statistics (:ref:`algorithm-mm-diagram`).

Each simulation redraws every exposure from the expected signal
``lambda_i = f_i * max(median2d, 0)`` (electrons) as
``Poisson(lambda_i) + Normal(0, sigma_r)`` (or a negative binomial with shape
kappa), divides by the flux factor, computes the same statistics as on the
data, and adds them to 2-D histograms.  Nothing larger than one block of rows
of the stack is ever drawn: the draws are made and histogrammed block by block,
in float32.

Reproducibility: block ``b`` of simulation ``s`` draws from
``numpy.random.default_rng(SeedSequence(seed, spawn_key=(s, b)))``, with blocks
of a fixed number of rows that depends only on the image width and the number
of exposures (`rows_per_block`), so the result depends on the seed and nothing
else: not on the threads, the tiles (`crcombine._core.tiles`, whose heights are whole
numbers of blocks) or the dask scheduler.
"""

import logging
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy import ndimage

from .._core.noise import median_variance_factor, variance
from .._core.statistics import sort_stack, stack_statistics
from .._core.tiles import rows_per_block

__all__ = []

log = logging.getLogger(__name__)

#: The statistics whose null distributions are simulated, and their ``y``.
STATISTICS = ("median", "mean", "single")
NXBINS = 100           # diagram columns (:ref:`algorithm-mm-diagram`)
NYBINS = 100           # diagram rows for display
NYFINE = 2000          # fine rows used to place boundary points within a column
#: Where the simulated value's skewness is at most this (and the read noise at least
#: `SMOOTH_MIN_READNOISE` electrons), it is drawn from its Cornish-Fisher expansion.
SMOOTH_MAX_SKEWNESS = 0.1
SMOOTH_MIN_READNOISE = 1.0
PILOT_PIXELS = 20000
PRECLEAN_SIGMA = 10.0


def _rng(seed, *key):
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=tuple(key)))


class ExposureModel:
    """The distribution of one simulated exposure, ready to draw from many times.

    ``S = Poisson(lambda) + Normal(0, sigma_r)`` in electrons (a negative
    binomial of shape kappa instead of the Poisson with ``nbinom_shape``).
    Exact draws cost ~70 ns each and dominate the run time, so where the
    distribution of ``S`` is nearly normal -- skewness ``g1 = k3 / s^3 <=``
    `SMOOTH_MAX_SKEWNESS` (``lambda >= 100`` without read noise, less with
    it) and read noise
    ``>=`` `SMOOTH_MIN_READNOISE` electrons, so that the integer steps are
    smoothed out -- ``S`` is drawn from its fourth-order Cornish-Fisher
    expansion in a standard normal ``z`` with the exact cumulants
    (Cornish & Fisher 1937; Kendall & Stuart, *The Advanced Theory of
    Statistics*, vol. 1, §6.25-6.26):

        ``S = lambda + s [z + g1 (z^2 - 1) / 6 + g2 (z^3 - 3z) / 24
        - g1^2 (2z^3 - 5z) / 36]``,

    ``s^2 = k2 + sigma_r^2``, ``g1 = k3 / s^3``, ``g2 = k4 / s^4``, with the
    Poisson cumulants ``k2 = k3 = k4 = lambda`` (negative binomial: ``k2 =
    lambda + lambda^2/kappa``, ``k3 = k2 + 2 lambda^2/kappa + 2 lambda^3/kappa^2``,
    ``k4 = k3 + 4 lambda^2/kappa + 10 lambda^3/kappa^2 + 6 lambda^4/kappa^3``),
    evaluated as a cubic in ``z`` whose coefficients are computed once and
    reused by every simulation.  Measured against the exact convolution, the
    tail probabilities of ``S`` are within 0.5 % out to 6 sigma at ``lambda =
    100`` with 3.4 e- read noise (4 % with 1 e-), far inside the Monte Carlo
    error of the simulated boundary; elsewhere the draws are exact.

    Parameters
    ----------
    expected : `~numpy.ndarray`
        ``lambda`` (electrons; negative values count as 0).
    readnoise : float or `~numpy.ndarray` of the same shape
        Electrons.
    nbinom_shape : float or None
    """

    def __init__(self, expected, readnoise, nbinom_shape=None):
        lam = np.maximum(np.asarray(expected, dtype=np.float32), 0)
        rn = np.broadcast_to(np.asarray(readnoise, dtype=np.float32), lam.shape)
        self.shape = lam.shape
        self.nbinom_shape = nbinom_shape
        if nbinom_shape is None:
            k2 = k3 = k4 = lam
        else:
            a = np.float32(1 / nbinom_shape)
            lam2 = lam * lam * a
            k2 = lam + lam2
            k3 = k2 + 2 * lam2 + 2 * lam2 * lam * a
            k4 = k3 + 4 * lam2 + 10 * lam2 * lam * a + 6 * lam2 * lam * lam * a * a
        s2 = k2 + rn * rn
        s = np.sqrt(s2)
        with np.errstate(divide="ignore", invalid="ignore"):
            g1 = k3 / (s2 * s)
            g2 = k4 / (s2 * s2)
        smooth = (g1 <= SMOOTH_MAX_SKEWNESS) & (rn >= SMOOTH_MIN_READNOISE)
        self.all_smooth = bool(smooth.all())
        self.smooth = None if self.all_smooth else smooth
        if not self.all_smooth:
            self.exact_lambda = lam[~smooth].astype(np.float64)
            self.exact_readnoise = rn[~smooth]
            s, g1, g2, lam = s[smooth], g1[smooth], g2[smooth], lam[smooth]
        c1, c2, c3 = s * g1 / 6, s * g2 / 24, s * g1 * g1 / 36
        # S = a0 + z (a1 + z (a2 + z a3))
        self.coefficients = (lam - c1, s - 3 * c2 + 5 * c3, c1, c2 - 2 * c3)

    def draw(self, rng):
        """One draw (float32, electrons) of every pixel."""
        if self.all_smooth:
            return self._cornish_fisher(rng)
        out = np.empty(self.shape, dtype=np.float32)
        exact = ~self.smooth
        if self.nbinom_shape is None:
            counts = rng.poisson(self.exact_lambda)
        else:
            k = self.nbinom_shape
            counts = rng.negative_binomial(k, k / (k + self.exact_lambda))
        noise = rng.standard_normal(counts.shape, dtype=np.float32)
        noise *= self.exact_readnoise
        noise += counts
        out[exact] = noise
        if self.coefficients[0].size:
            out[self.smooth] = self._cornish_fisher(rng)
        return out

    def _cornish_fisher(self, rng):
        a0, a1, a2, a3 = self.coefficients
        z = rng.standard_normal(a0.shape, dtype=np.float32)
        w = a3 * z
        w += a2
        w *= z
        w += a1
        w *= z
        w += a0
        return w


def draw_exposure(rng, expected, readnoise, nbinom_shape):
    """One synthetic exposure in electrons (float32); see `ExposureModel`."""
    return ExposureModel(expected, readnoise, nbinom_shape).draw(rng)


def diagram_values(stack, cr_coincidences, *, inplace=False):
    """x and the three y of the MM diagram for a (N, ...) flux-scaled stack.

    Returns ``x`` (the minimum signal), ``y`` as a dict by statistic (the
    ``single`` entry has the stack's shape, one row per exposure) and the
    statistics of `crcombine._core.statistics.stack_statistics`.  With ``inplace`` the
    ``single`` entry is ``stack`` itself, overwritten.
    """
    s, count = sort_stack(stack)
    st = stack_statistics(s, count, cr_coincidences)
    del s
    x = st["min2d"]
    if inplace:
        stack -= x
        single = stack
    else:
        single = stack - x
    y = {"median": st["median2d"] - x, "mean": st["mean2d"] - x, "single": single}
    return x, y, st


def noise_axis(x, noise_scale):
    """The diagram's column coordinate ``x' = sqrt(max(x + s^2, 0))`` (sqrt electrons).

    ``s`` is the read noise (electrons).  ``x'`` is proportional to the noise
    of a pixel of signal ``x`` (Poisson + read noise), so columns of equal
    width in ``x'`` hold pixels of similar noise at every level.
    """
    x = np.asarray(x)
    x = x if x.dtype.kind == "f" else x.astype(np.float64)
    return np.sqrt(np.maximum(x + x.dtype.type(noise_scale ** 2), 0))


def electron_axis(xp, noise_scale):
    """Inverse of `noise_axis` (for ``x' > 0``)."""
    return np.asarray(xp, dtype=np.float64) ** 2 - noise_scale ** 2


def diagram_noise(x, noise_scale, kappa=None):
    """Noise of a pixel of signal ``x``: ``sqrt(max(x, 0) + s^2 + max(x, 0)^2 / kappa)``.

    The diagram's ``y`` is histogrammed in units of this noise, so that the
    boundary keeps the same resolution from the sky to the brightest stars.
    """
    x = np.asarray(x)
    x = x if x.dtype.kind == "f" else x.astype(np.float64)
    return np.sqrt(variance(np.maximum(x, 0), x.dtype.type(noise_scale ** 2),
                            kappa=None if kappa is None else x.dtype.type(kappa)))


class DiagramHistograms:
    """2-D histograms of the MM diagram for each statistic.

    ``counts[stat]`` has shape (NXBINS, NYFINE + 1): fine rows of the
    normalised ``y_n = y / diagram_noise(x)`` from 0 to ``ymax[stat]`` plus one
    overflow row; values below 0 go to the first row.  Columns are of equal
    width in ``x' = noise_axis(x, noise_scale)`` (``x_edges``, sqrt
    electrons).
    """

    def __init__(self, x_edges, ymax, noise_scale, kappa=None):
        self.x_edges = x_edges
        self.noise_scale = float(noise_scale)
        self.kappa = kappa
        self.ymax = dict(ymax)
        #: True when the counts are the expected counts of the exact null
        #: distribution (`crcombine._detection.null`), floats, rather than draws
        self.expected = False
        #: the statistics histogrammed: those of ``ymax``
        self.counts = {k: np.zeros((NXBINS, NYFINE + 1), dtype=np.int64) for k in STATISTICS
                       if k in self.ymax}

    def y_edges(self, stat, nbins=NYFINE):
        return np.linspace(0.0, self.ymax[stat], nbins + 1)

    def column(self, x):
        """Diagram column (int64) of minimum signals ``x``; -1 where not finite."""
        xp = noise_axis(x, self.noise_scale)
        x0, x1 = self.x_edges[0], self.x_edges[-1]
        ix = np.clip((xp - x0) * (NXBINS / (x1 - x0)), 0, NXBINS - 1)
        return np.where(np.isfinite(xp), ix, -1).astype(np.int64)

    def add(self, x, y):
        """Add samples: ``x`` (...), ``y[stat]`` (electrons) of the same shape or (N, ...).

        The ``single`` entry may be (N, ...); it is histogrammed one exposure at
        a time, so that no (N, ...) temporary is made.
        """
        ix = self.column(x)
        valid = ix >= 0
        base = ix * (NYFINE + 1)
        inv = 1 / diagram_noise(x, self.noise_scale, self.kappa)
        for stat in self.counts:
            planes = y[stat]
            planes = planes.reshape((-1,) + ix.shape) if planes.ndim > ix.ndim else [planes]
            scale = NYFINE / self.ymax[stat]
            for plane in planes:
                ys = plane * inv
                ys *= scale
                ok = valid & np.isfinite(ys)
                np.clip(ys, 0, NYFINE, out=ys)
                if ok.all():  # the usual case: no invalid pixel, no compression
                    index = base + ys.astype(np.intp)
                else:
                    index = base[ok] + ys[ok].astype(np.intp)
                self.counts[stat] += np.bincount(index.ravel(), minlength=NXBINS * (NYFINE + 1)
                                                 ).reshape(NXBINS, NYFINE + 1)

    def merge(self, other):
        """Add the counts of another histogram on the same grid (in place)."""
        for stat in self.counts:
            self.counts[stat] += other.counts[stat]
        return self

    def empty_like(self):
        """A histogram on the same grid with no counts (integer counts, as the data's)."""
        return DiagramHistograms(self.x_edges, self.ymax, self.noise_scale, self.kappa)

    def display(self, stat):
        """The (NXBINS, NYBINS) histogram for plots (overflow row dropped)."""
        c = self.counts[stat][:, :NYFINE]
        return c.reshape(NXBINS, NYBINS, NYFINE // NYBINS).sum(axis=2)


def _pilot(expected_levels, flux_factor, readnoise, cr_coincidences, nbinom_shape, seed):
    """Simulate PILOT_PIXELS pixels at each level; return the x and max normalised y per stat."""
    rn = float(np.max(readnoise))
    xs, ys = [], {k: [] for k in STATISTICS}
    for j, level in enumerate(expected_levels):
        rng = _rng(seed, 2 ** 31, j)
        lam = np.full(PILOT_PIXELS, level, dtype=np.float64)
        stack = np.stack([draw_exposure(rng, f * lam, rn, nbinom_shape) / np.float32(f)
                          for f in flux_factor])
        x, y, _ = diagram_values(stack, cr_coincidences)
        xs.append(x)
        inv = 1 / diagram_noise(x, rn, nbinom_shape)
        for k in STATISTICS:
            ys[k].append(np.nanmax(y[k] * inv))
    return np.concatenate(xs), ys


def expected_signal(median2d, x, readnoise, *, preclean_sigma=PRECLEAN_SIGMA):
    """Signal (electrons) each pixel is simulated at: the median, pre-cleaned.

    Where the median exceeds the minimum signal by more than ``preclean_sigma``
    times the noise ``sqrt(max(x, 0) + sigma_r^2)`` the median itself is
    CR-hit (no clean pixel comes near: the median - minimum difference has a
    standard deviation below one sigma for N >= 3) and the minimum signal is
    used instead (:ref:`algorithm-mm-diagram`, pre-cleaning).  Returns float32, >= 0,
    0 where not finite.
    """
    with np.errstate(invalid="ignore"):
        noise = np.sqrt(variance(np.maximum(x, 0), np.asarray(readnoise, dtype=np.float32) ** 2))
        hit = (median2d - x) > preclean_sigma * noise
    level = np.where(hit, x, median2d)
    return np.where(np.isfinite(level), np.maximum(level, 0), 0).astype(np.float32)


#: Side of the window of `denoised_signal` (pixels); it needs a halo of half of it.
DENOISE_SIZE = 7


def denoised_signal(level, flux_factor, readnoise, n_exposures, *, size=DENOISE_SIZE):
    """The expected signal with the noise of the median filtered out (local Wiener filter).

    The median of the stack scatters about the true signal by its own noise,
    so simulations drawn at it are drawn from a broader set of levels than
    the data: at a given minimum signal the simulated median - minimum
    differences come from levels above and below, and their upper tail is
    heavier than the data's.  A boundary set at a quantile of that null then
    lets through 0.1-0.5 times the false seeds asked for (measured on
    CR-free stacks, ``benchmarks/false_alarm.py``).  The signal is therefore
    filtered first, where the noise dominates its local variations, by the
    adaptive Wiener filter of Lee (1980, IEEE PAMI 2, 165; the form of
    `scipy.signal.wiener`):
    ``t' = m + max(0, 1 - v / s^2) (t - m)``, ``m`` and ``s^2`` the mean and
    variance of ``t`` over a ``size`` x ``size`` window and ``v`` the variance
    of the median of ``n_exposures`` unit-variance values
    (`crcombine._core.noise.median_variance_factor`).  It works in the
    variance-stabilised units ``t = (2 / a) sqrt(a L + b)`` (Anscombe 1948,
    Biometrika 35, 246, for the variance ``a L + b`` of a scaled exposure,
    ``a`` = mean of ``1 / f_i``, ``b = sigma_r^2`` x mean of ``1 / f_i^2``),
    where the noise of one exposure is 1 whatever the level.  On flat sky the
    result is the local mean; on stars, where the signal varies far more
    than the noise, the median itself.  The mean of ``t`` over a window lies
    below ``t`` of the mean level by the transform's curvature; ``a v / 4``
    electrons (delta method) is added back where the window mean is taken.
    Over-dispersion is not in ``t``: with it the filter smooths less (a more
    conservative boundary).

    The window sums are direct (`scipy.ndimage.correlate1d`), so a band of
    rows with a halo of ``size // 2`` rows gives the whole image's values;
    the image edges repeat their nearest pixel.

    Parameters
    ----------
    level : `~numpy.ndarray`, shape (ny, nx), float32
        The expected signal of `expected_signal` (electrons, >= 0).
    flux_factor : `~numpy.ndarray`, shape (N,)
    readnoise : float or `~numpy.ndarray`, shape (ny, nx)
        Electrons.
    n_exposures : int
    size : int
        Window side (odd).

    Returns
    -------
    `~numpy.ndarray`, shape (ny, nx), float32, electrons, >= 0
    """
    f = np.asarray(flux_factor, dtype=float)
    a = float(np.mean(1 / f))
    b = np.asarray(readnoise, dtype=float) ** 2 * float(np.mean(1 / f ** 2))
    t = (2 / a) * np.sqrt(np.maximum(a * level + b, 0))
    noise = median_variance_factor(n_exposures)
    window = np.full(size, 1.0 / size)

    def local_mean(v):
        v = ndimage.correlate1d(v, window, axis=0, mode="nearest")
        return ndimage.correlate1d(v, window, axis=1, mode="nearest")

    mean = local_mean(t)
    variance = local_mean(t * t) - mean * mean
    with np.errstate(divide="ignore", invalid="ignore"):
        keep = np.where(variance > noise, 1 - noise / variance, 0.0)
    t = mean + keep * (t - mean)
    # the mean of t over a window lies below t of the mean level by the curvature of
    # the transform, a * v / 4 in electrons (delta method): put it back where averaged
    out = ((a * t / 2) ** 2 - b) / a + (1 - keep) * a * noise / 4
    return np.maximum(out, 0).astype(np.float32)


def diagram_grid(x_min, x_max, flux_factor, readnoise, *, cr_coincidences, seed,
                 nbinom_shape=None, ydiag_max=None, statistics=STATISTICS):
    """The empty `DiagramHistograms` grid for data whose minimum signal spans ``[x_min, x_max]``.

    The limits (:ref:`algorithm-mm-diagram`) come from the data and from pilot
    simulations from zero signal to the brightest minimum signal.
    ``readnoise`` is the scalar or image of the read noise (electrons); its
    median sets the noise scale of the columns.  Only ``statistics`` are
    histogrammed (the single-exposure diagram costs N planes per block and
    is used only by ``crmask_method='mm'``).
    """
    top = max(float(x_max), 0.0)
    pilot_x, pilot_y = _pilot(np.geomspace(1.0, top + 1.0, 5) - 1.0, flux_factor, readnoise,
                              cr_coincidences, nbinom_shape, seed)
    scale = float(np.median(readnoise))
    x0 = float(noise_axis(min(float(x_min), float(pilot_x.min())), scale))
    x1 = float(noise_axis(max(float(x_max), float(pilot_x.max())), scale))
    if not x1 > x0:
        x1 = x0 + 1.0
    x_edges = np.linspace(x0, x1, NXBINS + 1)
    ymax = {}
    for k in statistics:
        ymax[k] = ydiag_max if ydiag_max is not None else 2.0 * max(max(pilot_y[k]), 1e-3)
    return DiagramHistograms(x_edges, ymax, scale, nbinom_shape)


def simulate_tile(grid, scaled, expected, flux_factor, readnoise, *, first_row,
                  cr_coincidences, nsimulations, seed, nbinom_shape=None, threads=None,
                  progress=None):
    """Histogram the simulations of one tile of rows onto ``grid``'s bins.

    Parameters
    ----------
    grid : `DiagramHistograms`
        The grid (its counts are not changed).
    scaled : `~numpy.ndarray`, shape (N, rows, nx), float32
        The tile's data in electrons divided by the flux factors, NaN where
        invalid.
    expected : `~numpy.ndarray`, shape (rows, nx), float32
        The signal each pixel is drawn at (electrons, >= 0): `expected_signal`,
        or with ``false_alarm`` its `denoised_signal`.
    flux_factor : `~numpy.ndarray`, shape (N,)
    readnoise : float or `~numpy.ndarray` (rows, nx)
        Electrons.
    first_row : int
        Row of the whole image where the tile starts: a multiple of
        `rows_per_block` (the blocks, and so the random draws, are those of
        the whole image).
    cr_coincidences, nsimulations, seed, nbinom_shape
        As in `~crcombine.CRMaskBuilder`.
    threads : int, optional
        Worker threads (default: the number of CPUs); the result is the same
        for any number.
    progress : callable, optional
        Called with no argument after each simulated block.

    Returns
    -------
    `DiagramHistograms`
    """
    n, ny, nx = scaled.shape
    step = rows_per_block(n, nx)
    if first_row % step:
        raise ValueError(f"a tile must start on a block boundary ({step} rows); "
                         f"it starts at row {first_row}.")
    valid = ~np.isnan(scaled)
    rn_is_array = np.ndim(readnoise) == 2

    # the distribution of every exposure of every block, computed once for all simulations
    models = {}
    for r0 in range(0, ny, step):
        rows = slice(r0, min(r0 + step, ny))
        rn = readnoise[rows] if rn_is_array else readnoise
        models[r0] = [ExposureModel(np.float32(f) * expected[rows], rn, nbinom_shape)
                      for f in flux_factor]

    def simulate_block(isim, r0):
        """Histograms of one block of one simulation (its own seeded generator)."""
        rows = slice(r0, min(r0 + step, ny))
        rng = _rng(seed, isim, (first_row + r0) // step)
        block = np.empty((n,) + expected[rows].shape, dtype=np.float32)
        for i, f in enumerate(flux_factor):
            block[i] = models[r0][i].draw(rng)
            block[i] /= np.float32(f)
        block[~valid[:, rows]] = np.nan
        x, y, _ = diagram_values(block, cr_coincidences, inplace=True)
        part = grid.empty_like()
        part.add(x, y)
        return part

    # Blocks are independent (each has its own generator), and histogram
    # counts add up exactly, so the result does not depend on the number of
    # threads; numpy releases the GIL in the draws and array operations.
    out = grid.empty_like()
    tasks = [(isim, r0) for isim in range(nsimulations) for r0 in range(0, ny, step)]
    with ThreadPoolExecutor(max_workers=threads or os.cpu_count() or 1) as pool:
        for part in pool.map(lambda t: simulate_block(*t), tasks):
            out.merge(part)
            if progress is not None:
                progress()
    return out
