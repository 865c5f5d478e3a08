# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Data for tests, tutorials and benchmarks: the bundled real exposures
(see ``crcombine/data/README.rst``) and seeded synthetic stacks with known truth."""

import os

import numpy as np
from astropy import units as u
from astropy.table import Table

__all__ = ["DATASETS", "get_dataset", "make_cr_stack"]

_DATA = os.path.join(os.path.dirname(__file__), "data")

#: Bundled data sets: files and the detector values to use with them.
DATASETS = {
    "lt_sprat": {
        "description": "Liverpool Telescope SPRAT, LHS 6328, 5 x 120 s raw long-slit spectra",
        "files": [f"v_e_20180810_12_{i}_0_0.fits.gz" for i in range(1, 6)],
        "hdu": 0, "hdu_mask": None, "unit": u.adu,
        "gain": 2.45 * u.electron / u.adu, "readnoise": 2.1 * u.adu, "bias": 916.0 * u.adu,
        "align": None,
    },
    "lco_triplet": {
        "description": "Las Cumbres Observatory 0.4 m, PDS 110, 3 x 30 s u' (BANZAI, e-)",
        "files": [f"coj0m403-kb98-20170816-{n:04d}-e91.fits.fz" for n in (389, 390, 391)],
        "hdu": "SCI", "hdu_mask": "BPM", "unit": u.electron,
        "gain": 1.0, "readnoise": 16.4 * u.electron, "bias": 0.0,
        # the frames drift by up to 3.6 px (their WCS are identical): align them
        "align": "shift",
    },
}


def get_dataset(name):
    """Paths and detector values of a bundled data set.

    Parameters
    ----------
    name : {'lt_sprat', 'lco_triplet'}

    Returns
    -------
    dict
        ``files`` (absolute paths), ``hdu``, ``hdu_mask``, ``unit``, ``gain``,
        ``readnoise``, ``bias``, ``align`` (None, or ``'shift'`` for frames
        that drift) and ``description``: ``hdu``, ``hdu_mask`` and ``unit`` go
        to `~crcombine.read_exposures`, the detector values and ``align`` to
        `~crcombine.CRMaskBuilder`.

    Raises
    ------
    ValueError
        Unknown name.
    """
    if name not in DATASETS:
        raise ValueError(f"name must be one of {'/'.join(DATASETS)}; got {name!r}.")
    info = dict(DATASETS[name])
    info["files"] = [os.path.join(_DATA, f) for f in info["files"]]
    return info


def _cr_deposits(rng, shape, n_events, *, length=(1, 20), energy_median=400.0,
                 energy_sigma=0.8, diffusion=0.1):
    """Charge of ``n_events`` CR tracks: straight tracks of 1-20 px (log-uniform),
    a lognormal charge per pixel, and a fraction ``diffusion`` spread to each of
    the 4 neighbours.  Returns (ny, nx) float64 electrons."""
    ny, nx = shape
    out = np.zeros(shape)
    lengths = np.exp(rng.uniform(np.log(length[0]), np.log(length[1] + 1), n_events)).astype(int)
    starts = rng.uniform((0, 0), (ny, nx), (n_events, 2))
    angles = rng.uniform(0, np.pi, n_events)
    for (y0, x0), ang, n in zip(starts, angles, lengths):
        t = np.arange(max(n, 1))
        ys = np.clip((y0 + t * np.sin(ang)).astype(int), 0, ny - 1)
        xs = np.clip((x0 + t * np.cos(ang)).astype(int), 0, nx - 1)
        np.add.at(out, (ys, xs), rng.lognormal(np.log(energy_median), energy_sigma, ys.size))
    if diffusion:
        core = out.copy()
        out *= 1 - 4 * diffusion
        out[1:] += diffusion * core[:-1]
        out[:-1] += diffusion * core[1:]
        out[:, 1:] += diffusion * core[:, :-1]
        out[:, :-1] += diffusion * core[:, 1:]
    return out


def _star_scene(shape, rng, n_exposures, *, sky, fwhm, density, flux_range, seeing, drift,
                transparency):
    from photutils.datasets import make_model_image
    from photutils.psf import CircularGaussianPRF
    ny, nx = shape
    n_stars = max(int(density * ny * nx), 1)
    flux = 10 ** rng.uniform(np.log10(flux_range[0]), np.log10(flux_range[1]), n_stars)
    x0, y0 = rng.uniform(-5, nx + 5, n_stars), rng.uniform(-5, ny + 5, n_stars)
    planes = []
    for i in range(n_exposures):
        table = Table({"flux": flux * transparency[i], "x_0": x0 + drift[i, 1],
                       "y_0": y0 + drift[i, 0], "fwhm": np.full(n_stars, fwhm * seeing[i])})
        planes.append(sky + make_model_image(shape, CircularGaussianPRF(), table,
                                             model_shape=(31, 31)))
    return np.stack(planes)


def _fibre_scene(shape, rng, n_exposures, *, sky, seeing, drift, transparency, pitch=4.0,
                 n_lines=40):
    """MEGARA-like fibre spectra: horizontal traces every ``pitch`` rows with a
    Gaussian profile (sigma 1 px), a smooth continuum and bright narrow sky lines."""
    ny, nx = shape
    xs = np.arange(nx)
    centres = np.arange(pitch / 2, ny, pitch)
    continuum = 200 + 150 * np.sin(xs / nx * 3 * np.pi + rng.uniform(0, 6)) ** 2
    throughput = rng.uniform(0.7, 1.0, centres.size)
    lines = np.zeros(nx)
    for pos, amp in zip(rng.uniform(0, nx, n_lines), 10 ** rng.uniform(2.5, 4.5, n_lines)):
        lines += amp * np.exp(-0.5 * ((xs - pos) / 1.1) ** 2)
    planes = []
    yy = np.arange(ny)[:, None]
    for i in range(n_exposures):
        image = np.full(shape, sky)
        width = 1.0 * seeing[i]
        for c, t in zip(centres + drift[i, 0], throughput):
            profile = np.exp(-0.5 * ((yy - c) / width) ** 2) / (np.sqrt(2 * np.pi) * width)
            image += profile * t * transparency[i] * (continuum + lines)[None, :] * 4
        planes.append(image)
    return np.stack(planes)


def make_cr_stack(shape=(512, 512), n_exposures=3, *, scene="stars", seed=None, sky=40.0,
                  readnoise=3.4, fwhm=3.0, star_density=2e-3, flux_range=(300.0, 1e6),
                  cr_rate=4e-4, coincident_rate=4e-5, seeing_jitter=0.10,
                  transparency_jitter=0.05, drift=0.2, dither=None):
    """A seeded stack of exposures with cosmic rays and known truth, for benchmarks.

    Realistic non-equivalences are included: each exposure has its own seeing
    (FWHM times ``1 + U(-j, j)``), transparency (``1 + U(-t, t)``) and sub-pixel
    drift (normal, ``drift`` px rms).  CR tracks are 1-20 px long with a
    lognormal charge per pixel (median 400 e-) and charge diffusion into the 4
    neighbours; ``cr_rate`` events per pixel per exposure, plus
    ``coincident_rate`` events per pixel that hit the same pixels in two
    exposures (each with its own charge).

    Parameters
    ----------
    shape : tuple of int
    n_exposures : int
    scene : {'stars', 'fibres'}
        A star field (Gaussian PSF, fluxes log-uniform over ``flux_range``, e-)
        or MEGARA-like fibre spectra with bright narrow sky lines.
    seed : int, optional
    sky, readnoise : float
        Electrons.
    fwhm : float or sequence of float
        PSF FWHM in pixels; a sequence gives each exposure's own (then
        ``seeing_jitter`` is not used), e.g. ``(3.0, 2.2, 2.8)`` for a
        seeing change of 27-36 %.
    dither : array (N, 2), optional
        Deliberate offsets ``(dy, dx)`` in pixels of each exposure (a source
        at ``(y, x)`` of a zero-offset exposure is at ``(y + dy, x + dx)``),
        added to the drift.  Every exposure then carries a TAN WCS (1 arcsec
        pixels) that records it.

    Returns
    -------
    ccds : list of `~astropy.nddata.CCDData`
        Electrons, float32.
    truth : dict
        ``'expected'`` (N, ny, nx) noiseless signal of each exposure,
        ``'deposits'`` (N, ny, nx) CR charge, ``'coincident'`` (ny, nx) bool
        pixels hit in two exposures, ``'readnoise'``, ``'transparency'``
        (N,), ``'seeing'`` (N,), ``'drift'`` (N, 2) as (dy, dx) (the dither
        included).

    Raises
    ------
    ValueError
        Unknown scene, or ``fwhm`` not one positive value per exposure.
    """
    from astropy.nddata import CCDData
    if scene not in ("stars", "fibres"):
        raise ValueError(f"scene must be 'stars' or 'fibres'; got {scene!r}.")
    rng = np.random.default_rng(seed)
    npix = shape[0] * shape[1]
    seeing = 1 + rng.uniform(-seeing_jitter, seeing_jitter, n_exposures)
    if np.ndim(fwhm):
        fwhm = np.asarray(fwhm, dtype=float)
        if fwhm.shape != (n_exposures,) or not np.all(fwhm > 0):
            raise ValueError(f"fwhm must be a positive number or {n_exposures} positive "
                             f"numbers (one per exposure); got {fwhm.tolist()}.")
        seeing, fwhm = fwhm / fwhm[0], float(fwhm[0])
    transparency = 1 + rng.uniform(-transparency_jitter, transparency_jitter, n_exposures)
    shifts = rng.normal(0, drift, (n_exposures, 2)) if drift else np.zeros((n_exposures, 2))
    if dither is not None:
        dither = np.asarray(dither, dtype=float)
        if dither.shape != (n_exposures, 2):
            raise ValueError(f"dither must have shape ({n_exposures}, 2); got {dither.shape}.")
        shifts = shifts + dither
    if scene == "stars":
        expected = _star_scene(shape, rng, n_exposures, sky=sky, fwhm=fwhm,
                               density=star_density, flux_range=flux_range, seeing=seeing,
                               drift=shifts, transparency=transparency)
    else:
        expected = _fibre_scene(shape, rng, n_exposures, sky=sky, seeing=seeing, drift=shifts,
                                transparency=transparency)
    deposits = np.stack([_cr_deposits(rng, shape, rng.poisson(cr_rate * npix))
                         for _ in range(n_exposures)])
    # coincident events, shared out among the pairs of exposures
    pair_list = [(i, j) for i in range(n_exposures) for j in range(i + 1, n_exposures)]
    counts = rng.multinomial(rng.poisson(coincident_rate * npix), [1 / len(pair_list)]
                             * len(pair_list))
    coincident = np.zeros(shape, dtype=bool)
    for (i, j), k in zip(pair_list, counts):
        if k:
            first = _cr_deposits(rng, shape, k)
            deposits[i] += first
            deposits[j] += _rescatter(rng, first)
            coincident |= first > 0
    observed = rng.poisson(expected) + rng.normal(0, readnoise, expected.shape) + deposits
    wcs = [None] * n_exposures if dither is None else [_tan_wcs(shape, d) for d in dither]
    ccds = [CCDData(o.astype(np.float32), unit="electron", wcs=w) for o, w in zip(observed, wcs)]
    return ccds, {"expected": expected, "deposits": deposits, "coincident": coincident,
                  "readnoise": readnoise, "transparency": transparency, "seeing": seeing,
                  "drift": shifts}


def _tan_wcs(shape, offset):
    """A TAN WCS with 1 arcsec pixels, its reference pixel moved by ``offset`` (dy, dx)."""
    from astropy.wcs import WCS
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [(shape[1] + 1) / 2 + offset[1], (shape[0] + 1) / 2 + offset[0]]
    w.wcs.cdelt = [-1 / 3600, 1 / 3600]
    return w


def _rescatter(rng, deposits):
    """The same pixels with an independent lognormal charge (median 400 e-)."""
    out = np.zeros_like(deposits)
    hit = deposits > 0
    out[hit] = deposits[hit] * rng.lognormal(0, 0.5, hit.sum())
    return out
