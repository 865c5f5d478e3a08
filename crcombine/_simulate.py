# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Simulated null distribution of the MM diagram statistics (ALGORITHM.md §3.1-§3.3).

Each simulation redraws every exposure from the expected signal
``lambda_i = f_i * max(median2d, 0)`` (electrons) as
``Poisson(lambda_i) + Normal(0, sigma_r)`` (or a negative binomial with shape
kappa), divides by the flux factor, computes the same statistics as on the
data, and adds them to 2-D histograms.  Nothing larger than one block of rows
of the stack is ever drawn: the draws are made and histogrammed block by block,
in float32.

Reproducibility: block ``b`` of simulation ``s`` draws from
``numpy.random.default_rng(SeedSequence(seed, spawn_key=(s, b)))``, with blocks
of a fixed number of rows that depends only on the image width, so the result
depends on the seed and nothing else.
"""

import logging
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ._stack import sort_stack, stack_statistics

__all__ = []

log = logging.getLogger(__name__)

#: The statistics whose null distributions are simulated, and their ``y``.
STATISTICS = ("median", "mean", "single")
NXBINS = 100           # diagram columns (ALGORITHM.md §3.2)
NYBINS = 100           # diagram rows for display
NYFINE = 2000          # fine rows used to place boundary points within a column
PIXELS_PER_BLOCK = 2 ** 19
PILOT_PIXELS = 20000
PRECLEAN_SIGMA = 10.0


def rows_per_block(nx):
    return max(1, PIXELS_PER_BLOCK // max(nx, 1))


def _rng(seed, *key):
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=tuple(key)))


def draw_exposure(rng, expected, readnoise, nbinom_shape):
    """One synthetic exposure in electrons (float32), same shape as ``expected``."""
    lam = np.maximum(expected, 0)
    if nbinom_shape is None:
        counts = rng.poisson(lam)
    else:
        counts = rng.negative_binomial(nbinom_shape, nbinom_shape / (nbinom_shape + lam))
    out = counts.astype(np.float32)
    noise = rng.standard_normal(out.shape, dtype=np.float32)
    noise *= np.asarray(readnoise, dtype=np.float32)
    out += noise
    return out


def diagram_values(stack, n_coincidences):
    """x and the three y of the MM diagram for a (N, ...) flux-scaled stack.

    Returns ``x`` (the minimum signal), ``y`` as a dict by statistic (the
    ``single`` entry has the stack's shape, one row per exposure), ``median2d``
    and ``max2d``.
    """
    s, count = sort_stack(stack)
    st = stack_statistics(s, count, n_coincidences)
    x = st["min2d"]
    y = {"median": st["median2d"] - x, "mean": st["mean2d"] - x, "single": stack - x}
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
    xp = np.maximum(x, 0)
    var = xp + x.dtype.type(noise_scale ** 2)
    if kappa is not None:
        var = var + xp * xp / x.dtype.type(kappa)
    return np.sqrt(var)


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
        self.counts = {k: np.zeros((NXBINS, NYFINE + 1), dtype=np.int64) for k in STATISTICS}

    def y_edges(self, stat, nbins=NYFINE):
        return np.linspace(0.0, self.ymax[stat], nbins + 1)

    def column(self, x):
        """Diagram column (int64) of minimum signals ``x``; -1 where not finite."""
        xp = noise_axis(x, self.noise_scale)
        x0, x1 = self.x_edges[0], self.x_edges[-1]
        ix = np.clip((xp - x0) * (NXBINS / (x1 - x0)), 0, NXBINS - 1)
        return np.where(np.isfinite(xp), ix, -1).astype(np.int64)

    def add(self, x, y):
        """Add samples: ``x`` (...), ``y[stat]`` (electrons) of the same shape or (N, ...)."""
        ix = self.column(x)
        inv = 1 / diagram_noise(x, self.noise_scale, self.kappa)
        for stat in STATISTICS:
            ys = y[stat] * inv
            cols = np.broadcast_to(ix, ys.shape)
            ok = (cols >= 0) & np.isfinite(ys)
            iy = np.clip(ys[ok] * (NYFINE / self.ymax[stat]), 0, NYFINE).astype(np.int64)
            self.counts[stat] += np.bincount(cols[ok] * (NYFINE + 1) + iy,
                                             minlength=NXBINS * (NYFINE + 1)
                                             ).reshape(NXBINS, NYFINE + 1)

    def display(self, stat):
        """The (NXBINS, NYBINS) histogram for plots (overflow row dropped)."""
        c = self.counts[stat][:, :NYFINE]
        return c.reshape(NXBINS, NYBINS, NYFINE // NYBINS).sum(axis=2)


def _pilot(expected_levels, flux_factor, readnoise, n_coincidences, nbinom_shape, seed):
    """Simulate PILOT_PIXELS pixels at each level; return the x and max normalised y per stat."""
    rn = float(np.max(readnoise))
    xs, ys = [], {k: [] for k in STATISTICS}
    for j, level in enumerate(expected_levels):
        rng = _rng(seed, 2 ** 31, j)
        lam = np.full(PILOT_PIXELS, level, dtype=np.float64)
        stack = np.stack([draw_exposure(rng, f * lam, rn, nbinom_shape) / np.float32(f)
                          for f in flux_factor])
        x, y, _ = diagram_values(stack, n_coincidences)
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
    used instead (ALGORITHM.md §3.1, pre-cleaning).  Returns float32, >= 0,
    0 where not finite.
    """
    with np.errstate(invalid="ignore"):
        noise = np.sqrt(np.maximum(x, 0) + np.asarray(readnoise, dtype=np.float32) ** 2)
        hit = (median2d - x) > preclean_sigma * noise
    level = np.where(hit, x, median2d)
    return np.where(np.isfinite(level), np.maximum(level, 0), 0).astype(np.float32)


def simulate_histograms(scaled, median2d, x_data, y_data, flux_factor, readnoise, *,
                        n_coincidences, nsimulations, seed, nbinom_shape=None, ydiag_max=None,
                        threads=None, progress=None):
    """Run the simulations; return (simulated, data) `DiagramHistograms` on one grid.

    Parameters
    ----------
    scaled : `~numpy.ndarray`, shape (N, ny, nx), float32
        The data in electrons divided by the flux factors, NaN where invalid.
    median2d, x_data : `~numpy.ndarray`, shape (ny, nx)
        Median and minimum signal of ``scaled``.
    y_data : dict
        The data's ``y`` by statistic, as from `diagram_values`.
    flux_factor : `~numpy.ndarray`, shape (N,)
    readnoise : float or `~numpy.ndarray` (ny, nx)
        Electrons.
    n_coincidences, nsimulations, seed, nbinom_shape, ydiag_max
        As in `~crcombine.CRMaskBuilder`; ``ydiag_max`` is in units of the
        noise (see `diagram_noise`).
    threads : int, optional
        Worker threads for the simulations (default: the number of CPUs);
        the result is the same for any number.
    progress : callable, optional
        ``progress(done, total)`` is called after each simulated block (the
        command line draws a progress bar with it).
    """
    n, ny, nx = scaled.shape
    valid = ~np.isnan(scaled)
    expected = expected_signal(median2d, x_data, readnoise)

    # Diagram limits (ALGORITHM.md §3.2) from pilot simulations from zero
    # signal to the brightest minimum signal.
    top = max(float(np.nanmax(x_data)), 0.0)
    pilot_x, pilot_y = _pilot(np.geomspace(1.0, top + 1.0, 5) - 1.0, flux_factor, readnoise,
                              n_coincidences, nbinom_shape, seed)
    scale = float(np.median(readnoise))
    x0 = float(noise_axis(min(float(np.nanmin(x_data)), float(pilot_x.min())), scale))
    x1 = float(noise_axis(max(float(np.nanmax(x_data)), float(pilot_x.max())), scale))
    if not x1 > x0:
        x1 = x0 + 1.0
    x_edges = np.linspace(x0, x1, NXBINS + 1)
    ymax = {}
    for k in STATISTICS:
        ymax[k] = ydiag_max if ydiag_max is not None else 2.0 * max(max(pilot_y[k]), 1e-3)

    sim = DiagramHistograms(x_edges, ymax, scale, nbinom_shape)
    data = DiagramHistograms(x_edges, ymax, scale, nbinom_shape)
    data.add(x_data, y_data)

    step = rows_per_block(nx)
    rn_is_array = np.ndim(readnoise) == 2

    def simulate_block(isim, iblock, r0):
        """Histograms of one block of one simulation (its own seeded generator)."""
        rows = slice(r0, min(r0 + step, ny))
        rng = _rng(seed, isim, iblock)
        lam = expected[rows]
        rn = readnoise[rows] if rn_is_array else readnoise
        block = np.empty((n,) + lam.shape, dtype=np.float32)
        for i, f in enumerate(flux_factor):
            block[i] = draw_exposure(rng, f * lam, rn, nbinom_shape)
            block[i] /= np.float32(f)
        block[~valid[:, rows]] = np.nan
        x, y, _ = diagram_values(block, n_coincidences)
        part = DiagramHistograms(x_edges, ymax, scale, nbinom_shape)
        part.add(x, y)
        return part.counts

    # Blocks are independent (each has its own generator), and histogram
    # counts add up exactly, so the result does not depend on the number of
    # threads; numpy releases the GIL in the draws and array operations.
    tasks = [(isim, iblock, r0) for isim in range(nsimulations)
             for iblock, r0 in enumerate(range(0, ny, step))]
    with ThreadPoolExecutor(max_workers=threads or os.cpu_count() or 1) as pool:
        for done, counts in enumerate(pool.map(lambda t: simulate_block(*t), tasks), start=1):
            for stat in STATISTICS:
                sim.counts[stat] += counts[stat]
            if progress is not None:
                progress(done, len(tasks))
            if done % max(len(tasks) // nsimulations, 1) == 0:
                log.debug("simulated %d/%d blocks", done, len(tasks))
    return sim, data
