"""Seeded synthetic stacks with injected cosmic rays (known truth) for the tests.

`make_stack` draws N equivalent exposures of a scene (flat sky plus Gaussian
stars) with Poisson and read noise, and adds cosmic-ray hits: single-exposure
hits, and "coincident" hits where the same pixels are hit in several
exposures (what defeats the median).  Everything is in electrons; `to_adu`
converts to ADU with a bias and gain.
"""

from dataclasses import dataclass

import numpy as np
from astropy.nddata import CCDData


@dataclass
class SyntheticStack:
    exposures: np.ndarray     # (N, ny, nx) float64 electrons
    truth: np.ndarray         # (ny, nx) expected signal (electrons)
    deposits: np.ndarray      # (N, ny, nx) CR charge added to each exposure (electrons)
    readnoise: float          # electrons

    @property
    def sigma(self):
        """Noise of one exposure per pixel (electrons)."""
        return np.sqrt(self.truth + self.readnoise ** 2)

    def hit_count(self, nsigma=0.0):
        """Per pixel, the number of exposures with a deposit above nsigma * sigma."""
        return (self.deposits > nsigma * self.sigma).sum(axis=0) if nsigma else \
            (self.deposits > 0).sum(axis=0)

    def ccds(self, unit="electron"):
        return [CCDData(e.copy(), unit=unit) for e in self.exposures]


def make_scene(shape, rng, *, sky=100.0, nstars=30, peak_range=(200.0, 20000.0), fwhm=3.0):
    ny, nx = shape
    yy, xx = np.mgrid[:ny, :nx]
    scene = np.full(shape, sky, dtype=float)
    s = fwhm / 2.3548
    for _ in range(nstars):
        x0, y0 = rng.uniform(5, nx - 5), rng.uniform(5, ny - 5)
        peak = np.exp(rng.uniform(np.log(peak_range[0]), np.log(peak_range[1])))
        r2 = (xx - x0) ** 2 + (yy - y0) ** 2
        near = r2 < (6 * s) ** 2
        scene[near] += peak * np.exp(-0.5 * r2[near] / s ** 2)
    return scene


def _track(rng, shape, length):
    """Pixels of a straight CR track of ``length`` pixels at a random position/angle."""
    ny, nx = shape
    y0, x0 = rng.uniform(0, ny), rng.uniform(0, nx)
    ang = rng.uniform(0, np.pi)
    t = np.arange(length)
    ys = np.clip((y0 + t * np.sin(ang)).astype(int), 0, ny - 1)
    xs = np.clip((x0 + t * np.cos(ang)).astype(int), 0, nx - 1)
    return ys, xs


def make_stack(shape=(256, 256), n=3, *, seed=0, sky=100.0, readnoise=5.0, nstars=30,
               n_single=60, n_coincident=40, coincident_exposures=2, energy=(300.0, 3000.0),
               max_length=4):
    """A seeded stack with known CR hits.

    ``n_single`` tracks per exposure hit one exposure only; ``n_coincident``
    tracks hit the same pixels in ``coincident_exposures`` randomly chosen
    exposures (each with its own deposit).  Deposits per pixel are uniform in
    ``energy`` (electrons).
    """
    rng = np.random.default_rng(seed)
    truth = make_scene(shape, rng, sky=sky, nstars=nstars) if nstars else np.full(shape, sky)
    exposures = np.stack([rng.poisson(truth) + rng.normal(0, readnoise, shape)
                          for _ in range(n)]).astype(float)
    deposits = np.zeros((n,) + shape)
    for i in range(n):
        for _ in range(n_single):
            ys, xs = _track(rng, shape, rng.integers(1, max_length + 1))
            deposits[i, ys, xs] += rng.uniform(*energy, size=ys.size)
    for _ in range(n_coincident):
        ys, xs = _track(rng, shape, rng.integers(1, max_length + 1))
        for i in rng.choice(n, size=coincident_exposures, replace=False):
            deposits[i, ys, xs] += rng.uniform(*energy, size=ys.size)
    return SyntheticStack(exposures + deposits, truth, deposits, readnoise)


def to_adu(electrons, gain, bias):
    return electrons / gain + bias


def checksum_files(paths):
    import hashlib
    from pathlib import Path
    return {p: hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths}
