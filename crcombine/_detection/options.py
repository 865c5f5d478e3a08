# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Validation of the detection parameters, in one place.

Every public entry point (`~crcombine.CRMaskBuilder`, the `~crcombine.Combiner`
methods, the command line) goes through `validate_parameters`, so that a bad
value gets the same message wherever it comes from: the message names the
argument, what was given and what is allowed.
"""

import dataclasses
import math

import numpy as np
from astropy import units as u

from .._core.validation import _check_int, _check_real, _is_real
from .._inputs.align import ALIGN_METHODS, GRIDS
from .lacosmic import check_lacosmic

__all__ = []


BOUNDARY_KINDS = ("spline", "piecewise")
NULL_DISTRIBUTIONS = ("exact", "simulated")


@dataclasses.dataclass(frozen=True)
class DetectionOptions:
    """The detection options of `~crcombine.CRMaskBuilder`, validated; each field's default.

    The one list of the options and their defaults:
    the builder's signature, `DEFAULTS` and `validate_parameters` take them
    from here.  Build it with `validated`, which fills in and checks the
    values; the meaning of each field is in the `~crcombine.CRMaskBuilder`
    docstring.
    """

    flux_factor: object = None
    flux_factor_regions: object = None
    cr_coincidences: object = None
    nsimulations: object = 10
    null_distribution: object = "exact"
    boundary: object = "spline"
    knots: object = 3
    niter_boundary_extension: object = 3
    weight_boundary_extension: object = 10.0
    fixed_points: object = None
    piecewise_points: object = None
    threshold: object = 0.0
    minimum_max2d_rnoise: object = 5.0
    dilation: object = 1
    seed: object = None
    nbinom_shape: object = "auto"
    ydiag_max: object = None
    min_column_count: object = 100
    false_alarm: object = None
    mm_scale: object = "auto"
    matched_diagram: object = False
    premask: object = False
    saturation: object = "header"
    threads: object = None
    mem_limit: object = None
    align: object = None
    offsets: object = None
    grid: object = "reference"
    crmask_method: object = "noise"
    crmask_snr: object = (5.0, 4.0)
    crmask_scale: object = (1.2, 0.7)
    psf_matching: object = True
    psf_kernel_size: object = 5
    lacosmic: object = False

    @classmethod
    def names(cls):
        """The option names, in the order of the builder's signature."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def validated(cls, **options):
        """The options with defaults filled in and values checked (`validate_parameters`).

        Raises
        ------
        TypeError
            An unknown option name (named in the message), or a value of the wrong type.
        ValueError
            A value outside its range.
        """
        values = validate_parameters(**options)
        return cls(**{name: values[name] for name in cls.names()})

    def as_dict(self):
        """The options as a new dict, in field order."""
        return {name: getattr(self, name) for name in self.names()}


#: Default values of the detection parameters, ``bias`` (a detector value, in the
#: data unit) included: the names a parameter file may give.
DEFAULTS = {"bias": 0.0, **DetectionOptions().as_dict()}


CRMASK_METHODS = ("noise", "mm")


def check_flux_factor(flux_factor):
    """Return None, ``'auto'``, a float or a 1-D float array (validated values)."""
    if flux_factor is None:
        return None
    if isinstance(flux_factor, str):
        if flux_factor.lower() == "none":
            return None
        if flux_factor.lower() == "auto":
            return "auto"
        raise ValueError(f"flux_factor must be None, 'auto', a positive number or a list of "
                         f"positive numbers (one per exposure); got {flux_factor!r}.")
    arr = np.atleast_1d(np.asarray(flux_factor, dtype=float)) if not isinstance(
        flux_factor, (dict, set)) else None
    if arr is None or arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"flux_factor must be None, 'auto', a positive number or a list of "
                         f"positive numbers (one per exposure); got {flux_factor!r}.")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"flux_factor values must be finite and > 0; got {arr.tolist()}.")
    return float(arr[0]) if _is_real(flux_factor) else arr


def check_regions(name, regions):
    """A list of FITS-style regions ``[xmin, xmax, ymin, ymax]`` (1-based, inclusive).

    Returns a list of lists of 4 ints.

    Raises
    ------
    ValueError
        Not a non-empty list of 4 whole numbers each, with ``1 <= min <= max``.
    """
    message = (f"{name} must be a list of regions [xmin, xmax, ymin, ymax] (FITS pixels, "
               f"1-based, inclusive, min <= max), e.g. [[1, 100, 1, 200]]; got {regions!r}.")
    try:
        arr = np.asarray(regions, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(message) from None
    if arr.ndim == 1 and arr.size == 4:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 4 or arr.shape[0] == 0 or not np.all(
            np.isfinite(arr)) or np.any(arr != np.round(arr)):
        raise ValueError(message)
    if np.any(arr < 1) or np.any(arr[:, 0] > arr[:, 1]) or np.any(arr[:, 2] > arr[:, 3]):
        raise ValueError(message)
    return arr.astype(int).tolist()


def _check_points(name, points, *, min_points, ncols):
    arr = np.asarray(points, dtype=float)
    if arr.ndim != 2 or arr.shape[1] not in ncols or arr.shape[0] < min_points:
        cols = " or ".join(str(c) for c in ncols)
        raise ValueError(f"{name} must be a list of at least {min_points} points with {cols} "
                         f"values each ([x, y] or [x, y, weight]); got {points!r}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must hold finite numbers; got {points!r}.")
    return arr


def validate_parameters(**params):
    """Validate detection parameters; return a complete dict with defaults filled in.

    Parameters are those of `~crcombine.CRMaskBuilder` except ``gain``,
    ``readnoise`` and ``bias``, whose values are checked by
    `check_detector_value` (their units need the data).

    Raises
    ------
    TypeError
        Unknown parameter name, or a value of the wrong type.
    ValueError
        A value out of its allowed range.
    """
    unknown = sorted(set(params) - set(DEFAULTS))
    if unknown:
        raise TypeError(f"unknown parameter(s) {', '.join(unknown)}; allowed parameters are "
                        f"{', '.join(sorted(DEFAULTS))}.")
    p = dict(DEFAULTS)
    p.update(params)

    p["flux_factor"] = check_flux_factor(p["flux_factor"])
    if p["flux_factor_regions"] is not None:
        if p["flux_factor"] != "auto":
            raise ValueError("flux_factor_regions is used only with flux_factor='auto'; set "
                             "flux_factor='auto' or leave the regions out.")
        p["flux_factor_regions"] = check_regions("flux_factor_regions",
                                                 p["flux_factor_regions"])
    if p["cr_coincidences"] is not None:
        p["cr_coincidences"] = _check_int("cr_coincidences", p["cr_coincidences"], minimum=2)
    p["nsimulations"] = _check_int("nsimulations", p["nsimulations"], minimum=1)
    if p["null_distribution"] not in NULL_DISTRIBUTIONS:
        raise ValueError(f"null_distribution must be one of {'/'.join(NULL_DISTRIBUTIONS)}; "
                         f"got {p['null_distribution']!r}.")
    if p["boundary"] not in BOUNDARY_KINDS:
        raise ValueError(f"boundary must be one of {'/'.join(BOUNDARY_KINDS)}; "
                         f"got {p['boundary']!r}.")
    p["knots"] = _check_int("knots", p["knots"], minimum=2)
    p["niter_boundary_extension"] = _check_int("niter_boundary_extension",
                                               p["niter_boundary_extension"], minimum=0)
    p["weight_boundary_extension"] = _check_real("weight_boundary_extension",
                                                 p["weight_boundary_extension"], minimum=1)
    if p["fixed_points"] is not None:
        p["fixed_points"] = _check_points("fixed_points", p["fixed_points"],
                                          min_points=1, ncols=(2, 3))
    if p["boundary"] == "piecewise":
        if p["piecewise_points"] is None:
            raise ValueError("boundary='piecewise' needs piecewise_points, a list of at least "
                             "2 [x, y] points (electrons) for the median boundary.")
        p["piecewise_points"] = _check_points("piecewise_points", p["piecewise_points"],
                                              min_points=2, ncols=(2,))
    elif p["piecewise_points"] is not None:
        raise ValueError("piecewise_points is only used with boundary='piecewise'.")
    threshold = p["threshold"]
    if isinstance(threshold, u.Quantity):
        threshold = threshold.to_value(u.electron)
    p["threshold"] = _check_real("threshold", threshold, minimum=0)
    p["minimum_max2d_rnoise"] = _check_real("minimum_max2d_rnoise", p["minimum_max2d_rnoise"])
    p["dilation"] = _check_int("dilation", p["dilation"], minimum=0)
    if p["seed"] is not None:
        p["seed"] = _check_int("seed", p["seed"], minimum=0)
    if isinstance(p["nbinom_shape"], str) and p["nbinom_shape"].lower() in ("auto", "none"):
        p["nbinom_shape"] = None if p["nbinom_shape"].lower() == "none" else "auto"
    elif p["nbinom_shape"] is not None:
        p["nbinom_shape"] = _check_real("nbinom_shape", p["nbinom_shape"], minimum=0,
                                        strict=True)
    if p["ydiag_max"] is not None:
        p["ydiag_max"] = _check_real("ydiag_max", p["ydiag_max"], minimum=0, strict=True)
    p["min_column_count"] = _check_int("min_column_count", p["min_column_count"], minimum=2)
    p["lacosmic"] = check_lacosmic(p["lacosmic"])
    if not isinstance(p["premask"], bool):
        raise TypeError(f"premask must be True or False; got {p['premask']!r}.")
    sat = p["saturation"]
    if not (sat is None or sat in ("header", "auto") or
            (_is_real(sat) and math.isfinite(sat))):
        raise ValueError(f"saturation must be 'header', 'auto', a number or None; got {sat!r}.")
    if p["threads"] is not None:
        p["threads"] = _check_int("threads", p["threads"], minimum=1)
    if p["align"] is not None:
        if p["align"] not in ALIGN_METHODS:
            raise ValueError(f"align must be None or one of {'/'.join(ALIGN_METHODS)}; got "
                             f"{p['align']!r}.")
    if isinstance(p["offsets"], str):
        if p["offsets"] not in ("xcorr", "wcs"):
            raise ValueError("offsets must be 'xcorr', 'wcs' or (dy, dx) pairs, one per "
                             f"exposure; got {p['offsets']!r}.")
    elif p["offsets"] is not None:
        offsets = np.asarray(p["offsets"], dtype=float)
        if offsets.ndim != 2 or offsets.shape[1] != 2 or not np.isfinite(offsets).all():
            raise ValueError("offsets must be finite (dy, dx) pairs, one per exposure; got "
                             f"{p['offsets']!r}.")
        p["offsets"] = offsets.tolist()
    if p["grid"] not in GRIDS:
        raise ValueError(f"grid must be one of {'/'.join(GRIDS)}; got {p['grid']!r}.")
    if p["grid"] != "reference" and p["align"] is None:
        raise ValueError(f"grid={p['grid']!r} is the grid the exposures are aligned on: give "
                         "align= with it.")
    if p["offsets"] is not None and p["align"] is None:
        raise ValueError("offsets are used to align the exposures: give align='shift' with "
                         "them.")
    if p["mem_limit"] is not None and p["mem_limit"] != "auto":
        if isinstance(p["mem_limit"], str):
            raise ValueError(f"mem_limit must be a number of bytes, 'auto' or None; got "
                             f"{p['mem_limit']!r}.")
        p["mem_limit"] = _check_real("mem_limit", p["mem_limit"], minimum=0, strict=True)
    if p["false_alarm"] is not None:
        p["false_alarm"] = _check_real("false_alarm", p["false_alarm"], minimum=0, strict=True)
    if isinstance(p["mm_scale"], str):
        if p["mm_scale"].lower() != "auto":
            raise ValueError(f"mm_scale must be 'auto' or a number >= 0; got {p['mm_scale']!r}.")
        p["mm_scale"] = "auto"
    else:
        p["mm_scale"] = _check_real("mm_scale", p["mm_scale"], minimum=0)
    if p["crmask_method"] not in CRMASK_METHODS:
        raise ValueError(f"crmask_method must be one of {'/'.join(CRMASK_METHODS)}; "
                         f"got {p['crmask_method']!r}.")
    for name in ("crmask_snr", "crmask_scale"):
        pair = p[name]
        if np.ndim(pair) != 1 or len(pair) != 2:
            raise ValueError(f"{name} must be a pair (seed, neighbour) of numbers; got {pair!r}.")
        p[name] = tuple(_check_real(name, float(v), minimum=0) for v in pair)
    if not isinstance(p["matched_diagram"], bool):
        raise TypeError(f"matched_diagram must be True or False; got {p['matched_diagram']!r}.")
    if not isinstance(p["psf_matching"], bool):
        raise TypeError(f"psf_matching must be True or False; got {p['psf_matching']!r}.")
    size = _check_int("psf_kernel_size", p["psf_kernel_size"], minimum=3)
    if size % 2 == 0 or size > 15:
        raise ValueError(f"psf_kernel_size must be an odd integer from 3 to 15 (pixels); got "
                         f"{size}.")
    p["psf_kernel_size"] = size
    return p


def resolve_cr_coincidences(cr_coincidences, n_exposures):
    """Return n_c for N exposures: the default is ``max(2, ceil(N/2))``, 1 for N = 2.

    See :ref:`algorithm-statistics`.
    """
    if cr_coincidences is None:  # two exposures: the lower one is the minimum
        return 1 if n_exposures == 2 else max(2, math.ceil(n_exposures / 2))
    if cr_coincidences >= n_exposures:
        raise ValueError(f"cr_coincidences must be smaller than the number of exposures "
                         f"({n_exposures}); got {cr_coincidences}.")
    return cr_coincidences
