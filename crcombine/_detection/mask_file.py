# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""The mask file: numina's ``crmasks.fits`` layout, written atomically (:doc:`/mask_file`)."""

import json
import os
import warnings

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning

from .._core.files import write_atomic

__all__ = []


MASK_DTYPE = np.uint8


# Parameters recorded as header keywords: keyword -> (parameter, comment).
_PARAMETER_KEYWORDS = {
    "GAIN": ("gain", "gain used (e-/data unit)"),
    "RNOISE": ("readnoise", "read noise used (e-)"),
    "BIAS": ("bias", "bias used (data unit)"),
    "BUNIT": ("unit", "unit of the input exposures"),
    "NCOINC": ("cr_coincidences", "cr_coincidences (n_c)"),
    "NSIMUL": ("nsimulations", "number of simulations"),
    "NULLDIST": ("null_distribution", "null distribution: exact or simulated"),
    "BOUNDARY": ("boundary", "boundary kind"),
    "KNOTS": ("knots", "spline knots (total)"),
    "NITEREXT": ("niter_boundary_extension", "boundary extension iterations"),
    "WEIGHEXT": ("weight_boundary_extension", "boundary extension weight"),
    "THRESHOL": ("threshold", "minimum y to flag (e-)"),
    "MINMAX2D": ("minimum_max2d_rnoise", "minimum max2d / read noise"),
    "DILATION": ("dilation", "3x3 dilation iterations"),
    "NBINOMK": ("nbinom_shape", "negative binomial shape"),
    "YDIAGMAX": ("ydiag_max", "diagram y limit (e-)"),
    "MINCOLCT": ("min_column_count", "minimum simulated pixels per column"),
    "ALIGN": ("align", "how the exposures were aligned"),
    "GRID": ("grid", "grid the exposures were aligned on"),
    "FALSEALA": ("false_alarm", "expected false seeds per image"),
    "CRMASKM": ("crmask_method", "how CRMASK1..N were made"),
    "MMSCALE": ("mm_scale", "derivative term of the MM boundary"),
    "MATCHDIA": ("matched_diagram", "MM diagram on the PSF-matched stack"),
    "PSFMATCH": ("psf_matching", "CRMASK also against PSF-matched predictions"),
    "PSFKSIZE": ("psf_kernel_size", "side of the PSF-matching kernels (px)"),
}


_JSON_KEYWORDS = {"FIXEDPTS": "fixed_points", "PIECEPTS": "piecewise_points",
                  "OFFSETS": "offsets", "PSFKERN": "psf_kernels", "PSFALLOW": "psf_allowance",
                  "PSFPAIRK": "psf_pair_kernels", "MATCHKER": "matching_kernels",
                  "PSFRALLW": "psf_reverse_allowance",
                  "LACOSMIC": "lacosmic", "FFREGION": "flux_factor_regions"}


# numina-crmasks records its parameters as HISTORY lines "- name = value".
_NUMINA_HISTORY = {"gain": "gain", "rnoise": "readnoise", "bias": "bias",
                   "mm_cr_coincidences": "cr_coincidences", "mm_nsimulations": "nsimulations",
                   "mm_knots_splfit": "knots", "mm_seed": "seed", "dilation": "dilation"}


def _numina_parameters(header):
    """Parameters a numina-crmasks file records in HISTORY (read noise to electrons)."""
    found = {}
    for line in header.get("HISTORY", []):
        name, sep, value = str(line).lstrip("- ").partition(" = ")
        if sep and name.strip() in _NUMINA_HISTORY:
            try:
                found[_NUMINA_HISTORY[name.strip()]] = float(value)
            except ValueError:
                continue
    if "readnoise" in found:  # numina's rnoise is in ADU
        found["readnoise"] *= found.get("gain", 1.0)
    for name in ("cr_coincidences", "nsimulations", "knots", "seed", "dilation"):
        if name in found:
            found[name] = int(found[name])
    if "gain" in found:
        found["unit"] = "adu"
    return found


def _mask_hdu(name, mask):
    hdu = fits.ImageHDU(np.asarray(mask, dtype=MASK_DTYPE), name=name)
    hdu.header["NPMASKED"] = (int(np.count_nonzero(mask)), "number of masked pixels")
    return hdu


def write_crmasks(masks, path, *, overwrite=False):
    """Write ``masks`` to ``path`` (`crcombine.io.write_crmasks` documents the layout)."""
    from .. import __version__
    primary = fits.PrimaryHDU()
    hdr = primary.header
    hdr["UUID"] = (masks.uuid, "identifier of these masks")
    hdr["NEXPOSE"] = (masks.n_exposures, "number of exposures")
    for i, f in enumerate(masks.flux_factor, start=1):
        hdr[f"FLUXF{i}"] = (float(f), f"flux factor of exposure {i}")
    if masks.flux_factor_uncertainty is not None:
        for i, e in enumerate(masks.flux_factor_uncertainty, start=1):
            hdr[f"EFLUXF{i}"] = (float(e), f"uncertainty of FLUXF{i}")
    p = masks.parameters
    if p.get("seed") is not None:
        hdr["SEED"] = (str(p["seed"]), "seed of the simulations")
    for key, (name, comment) in _PARAMETER_KEYWORDS.items():
        value = p.get(name)
        if value is not None:
            hdr[key] = (value, comment)
    for key, name in _JSON_KEYWORDS.items():
        if p.get(name) is not None:
            hdr[key] = json.dumps(np.asarray(p[name]).tolist())
    hdr["CRCVERS"] = (__version__, "crcombine version")
    hdr["HISTORY"] = ("Cosmic-ray masks computed with crcombine ("
                      + ("pair comparison of two exposures)" if p.get("crmask_method") == "pairs"
                         else "M.M.Cosmic method)"))
    hdus = [primary, _mask_hdu("MEDIANCR", masks.mediancr), _mask_hdu("MEANCRT", masks.meancrt)]
    hdus += [_mask_hdu(f"CRMASK{i + 1}", m) for i, m in enumerate(masks.crmask)]
    hdus.append(_mask_hdu("MEANCR", masks.meancr))
    write_atomic(fits.HDUList(hdus), path, overwrite=overwrite, argument="masks file")


def _bad(path, key, value, need):
    return ValueError(f"masks file {path!r}: {key} = {value!r} {need}; recompute the masks "
                      "(crcombine compute) or correct the keyword.")


def _number(path, hdr, key, *, minimum=None, strict=False, integer=False, maximum=None):
    """Keyword ``key`` of ``hdr`` as a checked number, or None when absent."""
    if key not in hdr:
        return None
    value = hdr[key]
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)
    if ok and integer:
        ok = float(value).is_integer()
    if ok and minimum is not None:
        ok = value > minimum if strict else value >= minimum
    if ok and maximum is not None:
        ok = value <= maximum
    if not ok:
        kind = "an integer" if integer else "a finite number"
        bound = "" if minimum is None else f" {'>' if strict else '>='} {minimum:g}"
        bound += "" if maximum is None else f" and <= {maximum:g}"
        raise _bad(path, key, value, f"is not {kind}{bound}")
    return int(value) if integer else float(value)


def _check_header(path, hdr, n):
    """Check the keywords `read_mask_fields` uses; the file and keyword are named."""
    _number(path, hdr, "NEXPOSE", minimum=2, integer=True)
    for i in range(1, n + 1):
        _number(path, hdr, f"FLUXF{i}", minimum=0, strict=True)
        _number(path, hdr, f"EFLUXF{i}", minimum=0)
    _number(path, hdr, "GAIN", minimum=0, strict=True)
    _number(path, hdr, "RNOISE", minimum=0)
    _number(path, hdr, "BIAS")
    _number(path, hdr, "NCOINC", minimum=1, maximum=n - 1, integer=True)
    _number(path, hdr, "DILATION", minimum=0, integer=True)
    if "SEED" in hdr:
        try:
            int(str(hdr["SEED"]))
        except ValueError:
            raise _bad(path, "SEED", hdr["SEED"], "is not an integer") from None
    for key in _JSON_KEYWORDS:
        if key in hdr:
            try:
                json.loads(hdr[key])
            except (TypeError, ValueError):
                raise _bad(path, key, hdr[key], "is not valid JSON") from None
    if "PSFKERN" in hdr:
        kernels = np.asarray(json.loads(hdr["PSFKERN"]), dtype=object)
        size = np.sqrt(max(kernels.shape[-1] - 1, 0)) if kernels.ndim == 2 else 0
        if kernels.ndim != 2 or kernels.shape[0] != n or size % 2 != 1 or \
                not all(isinstance(v, (int, float)) and np.isfinite(v) for v in kernels.flat):
            raise _bad(path, "PSFKERN", f"<{kernels.shape}>", f"is not {n} kernels of K x K + 1 "
                       "finite numbers (K odd)")


def read_mask_fields(path):
    """The `~crcombine.CRMasks` keyword arguments of a mask file (`crcombine.io.read_crmasks`).

    Raises
    ------
    FileNotFoundError
        No such file.
    OSError
        Not a FITS file, or a truncated one.
    ValueError
        Missing extensions, masks of different shapes, or a keyword of the
        wrong type or range (the file and the keyword are named).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"masks file {path!r} does not exist.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", AstropyUserWarning)   # truncated files warn
            return _read_fields(path)
    except (AstropyUserWarning, OSError, TypeError, IndexError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise OSError(f"masks file {path!r} cannot be read: not a FITS file or truncated "
                      f"({' '.join(str(exc).split())[:200]}); recompute it.") from None


def _read_fields(path):
    with fits.open(path) as hdul:
        names = [h.name for h in hdul]
        hdr = hdul[0].header
        for need in ("MEDIANCR", "MEANCRT", "CRMASK1"):
            if need not in names:
                raise ValueError(f"masks file {path!r} has no {need} extension (it has "
                                 f"{names}); it is not a crmasks.fits file.")
        n = _number(path, hdr, "NEXPOSE", minimum=2, integer=True) or \
            sum(1 for nm in names if nm.startswith("CRMASK"))
        missing = [f"CRMASK{i}" for i in range(1, n + 1) if f"CRMASK{i}" not in names]
        if missing:
            raise ValueError(f"masks file {path!r} lacks {', '.join(missing)} for its {n} "
                             "exposures.")
        _check_header(path, hdr, n)
        shapes = {name: hdul[name].data.shape if hdul[name].data is not None else None
                  for name in ["MEDIANCR", "MEANCRT"] + [f"CRMASK{i}" for i in range(1, n + 1)]}
        if len(set(shapes.values())) != 1 or None in shapes.values() or \
                len(next(iter(shapes.values()))) != 2:
            raise ValueError(f"masks file {path!r}: its mask extensions are not images of one "
                             f"2-D shape ({shapes}); recompute the masks.")
        mediancr = hdul["MEDIANCR"].data.astype(bool)
        meancrt = hdul["MEANCRT"].data.astype(bool)
        crmask = np.stack([hdul[f"CRMASK{i}"].data.astype(bool) for i in range(1, n + 1)])
        meancr = hdul["MEANCR"].data.astype(bool) if "MEANCR" in names else None
        flux = [hdr.get(f"FLUXF{i}", 1.0) for i in range(1, n + 1)]
        eflux = ([hdr[f"EFLUXF{i}"] for i in range(1, n + 1)]
                 if all(f"EFLUXF{i}" in hdr for i in range(1, n + 1)) else None)
        params = {name: hdr[key] for key, (name, _) in _PARAMETER_KEYWORDS.items()
                  if key in hdr}
        if "CRCVERS" not in hdr:  # written by numina-crmasks
            params = {**_numina_parameters(hdr), **params}
        params.update({name: json.loads(hdr[key]) for key, name in _JSON_KEYWORDS.items()
                       if key in hdr})
        if "SEED" in hdr:
            params["seed"] = int(hdr["SEED"])
        uuid = hdr.get("UUID")
    return dict(mediancr=mediancr, meancrt=meancrt, crmask=crmask, meancr=meancr,
                flux_factor=flux, flux_factor_uncertainty=None if eflux is None
                else np.array(eflux), parameters=params, uuid=uuid)
