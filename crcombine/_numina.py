# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""numina-crmasks YAML parameter files, translated to crcombine parameters.

numina-crmasks (0.40) reads a YAML file with ``images``, ``gain`` (e-/ADU),
``rnoise`` and ``bias`` (ADU), ``extnum`` and a ``requirements`` mapping.
`from_numina_yaml` maps the names that have a meaning here (``crmethod:
mm_lacosmic`` turns on the auxiliary L.A.Cosmic, ``lacosmic``, with the ``la_*``
names that are keywords of `ccdproc.cosmicray_lacosmic`) and lists the ones
that are ignored, so that ``crcombine run params.yaml`` can say so.  Only the
file format is shared with numina; no numina code is used.
"""

from ._detection.options import DEFAULTS

__all__ = []

# requirements name -> crcombine parameter (values used as they are)
_DIRECT = {
    "flux_factor": "flux_factor",
    "flux_factor_regions": "flux_factor_regions",
    "dilation": "dilation",
    "mm_cr_coincidences": "cr_coincidences",
    "mm_boundary_fit": "boundary",
    "mm_knots_splfit": "knots",
    "mm_nsimulations": "nsimulations",
    "mm_niter_boundary_extension": "niter_boundary_extension",
    "mm_weight_boundary_extension": "weight_boundary_extension",
    "mm_minimum_max2d_rnoise": "minimum_max2d_rnoise",
    "mm_seed": "seed",
}
# handled specially below
_SPECIAL = ("crmethod", "mm_photon_distribution", "mm_nbinom_shape", "mm_threshold_rnoise")
# numina names with no meaning in crcombine (plots, other detectors, numina internals)
_IGNORED_PREFIXES = ("la_", "pc_", "dc_", "nn_")
_IGNORED = ("use_auxmedian", "apply_flux_factor_to", "interactive",
            "regions_to_be_skipped", "pixels_to_be_flagged_as_cr", "pixels_to_be_ignored_as_cr",
            "pixels_to_be_replaced_by_local_median", "dtype", "verify_cr", "semiwindow",
            "color_scale", "maxplots", "debug", "mm_synthetic", "mm_hist2d_min_neighbors",
            "mm_dilation", "mm_xy_offsets", "mm_crosscorr_region", "mm_fixed_points_in_boundary",
            "mm_ydiag_max")


def from_numina_yaml(params):
    """Translate a numina-crmasks parameter mapping.

    Parameters
    ----------
    params : dict
        The parsed YAML file.

    Returns
    -------
    images : list of str
    read : dict
        ``hdu`` and ``unit`` for `~crcombine.read_exposures`.
    builder : dict
        Keyword arguments for `~crcombine.CRMaskBuilder` (``readnoise`` and
        ``bias`` as Quantities in ADU).
    ignored : list of str
        numina names that have no meaning in crcombine.

    Raises
    ------
    ValueError
        Missing ``images``/``gain``/``rnoise``/``bias``, a non-MM ``crmethod``
        or an unknown name.
    """
    from astropy import units as u

    if not isinstance(params, dict):
        raise ValueError("the YAML file must hold a mapping with images, gain, rnoise, bias "
                         "and requirements.")
    missing = [k for k in ("images", "gain", "rnoise", "bias") if k not in params]
    if missing:
        raise ValueError(f"the YAML file lacks {', '.join(missing)} (numina-crmasks format).")
    images = params["images"]
    if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
        raise ValueError("'images' must be a list of FITS file names.")
    unknown_top = sorted(set(params) - {"images", "gain", "rnoise", "bias", "extnum",
                                        "requirements"})
    if unknown_top:
        raise ValueError(f"unknown name(s) in the YAML file: {', '.join(unknown_top)}.")
    gain = float(params["gain"])
    read = {"hdu": int(params.get("extnum", 0)), "unit": u.adu}
    builder = {"gain": gain * u.electron / u.adu, "readnoise": float(params["rnoise"]) * u.adu,
               "bias": float(params["bias"]) * u.adu}
    requirements = params.get("requirements") or {}
    if not isinstance(requirements, dict):
        raise ValueError("'requirements' must be a mapping of parameter names to values.")
    ignored, unknown = [], []
    for name, value in requirements.items():
        if name in _DIRECT:
            builder[_DIRECT[name]] = value
        elif name in DEFAULTS:          # crcombine's own names are accepted too
            builder[name] = value
        elif name in _IGNORED or name.startswith(_IGNORED_PREFIXES):
            ignored.append(name)
        elif name not in _SPECIAL:
            unknown.append(name)
    if unknown:
        raise ValueError(f"unknown name(s) in requirements: {', '.join(sorted(unknown))}.")

    method = str(requirements.get("crmethod", "mm_lacosmic"))
    if not method.startswith("mm_"):
        raise ValueError(f"crmethod {method!r} is not available: crcombine runs the M.M.Cosmic "
                         "method (crmethod mm_lacosmic, mm_pycosmic, mm_deepcr or mm_conn).")
    if method == "mm_lacosmic" and "crmethod" in requirements:
        # the auxiliary L.A.Cosmic, with the la_* names that are keywords of
        # ccdproc.cosmicray_lacosmic (the others stay in the ignored list)
        import inspect
        from ccdproc import cosmicray_lacosmic
        from ._detection.lacosmic import LACOSMIC_FIXED
        known = set(inspect.signature(cosmicray_lacosmic).parameters) - set(LACOSMIC_FIXED)
        chosen = {name[3:]: requirements[name] for name in requirements
                  if name.startswith("la_") and name[3:] in known}
        builder["lacosmic"] = chosen or True
        ignored = [name for name in ignored
                   if not (name.startswith("la_") and name[3:] in chosen)]
    elif "crmethod" in requirements:
        ignored.append(f"crmethod's auxiliary detector ({method[3:]})")
    distribution = str(requirements.get("mm_photon_distribution", "poisson")).lower()
    if distribution == "poisson":
        builder.setdefault("nbinom_shape", None)
    elif distribution == "nbinom":
        builder["nbinom_shape"] = requirements.get("mm_nbinom_shape", "auto")
    else:
        raise ValueError(f"mm_photon_distribution must be poisson or nbinom; got "
                         f"{distribution!r}.")
    if requirements.get("mm_threshold_rnoise"):
        builder["threshold"] = (float(requirements["mm_threshold_rnoise"])
                                * float(params["rnoise"]) * gain)
    if str(builder.get("flux_factor", "")).lower() == "none":
        builder["flux_factor"] = None
    return images, read, builder, sorted(ignored)
