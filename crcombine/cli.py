# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""The ``crcombine`` command line: ``compute``, ``apply`` and ``demo``.

``compute`` and ``apply`` take the flags of numina's ``numina-crmasks`` so
that MEGARA/numina users can switch: in particular ``--gain`` is in e-/ADU
and ``--rnoise``, ``--bias`` and ``--threshold`` are in the data unit (ADU
for raw frames), as there.  Errors are one line on stderr and exit code 1
(2 for a bad command line); the library underneath never prints or exits.
"""

import argparse
import glob
import logging
import os
import signal
import sys
import warnings

from ._arguments import (_auto_or_number, _bytes, _combinations, _flux_factor, _read_list,
                         _regions, _saturation)

__all__ = ["main"]

log = logging.getLogger("crcombine")


def _null_note(masks):
    """How the null distribution was made: exact, or simulated with the seed recorded."""
    if masks.parameters.get("crmask_method") == "pairs":
        return "two exposures: pair comparison"
    if masks.parameters.get("null_distribution") == "simulated":
        return f"simulated null, seed {masks.seed}"
    return "exact null distribution"


def _product(path):
    """What crcombine or numina-crmasks product ``path`` is ('mask file', 'combination'), or None.

    Directory and glob inputs leave them out: a second ``compute .`` must not
    take the first one's ``crmasks.fits`` for an exposure.
    """
    from astropy.io import fits
    try:
        with fits.open(path, lazy_load_hdus=True) as hdul:
            header = hdul[0].header
            if "MEDIANCR" in [h.name for h in hdul[:4]] or "NEXPOSE" in header:
                return "mask file"
            if "CRCVERS" in header or "CRMETHOD" in header:
                return "combination"
    except (OSError, ValueError):
        return None       # not FITS: the reader says so
    return None


def _skip_products(files):
    kept = []
    for f in files:
        kind = _product(f)
        if kind is None:
            kept.append(f)
        else:
            log.info("skipping %s: a crcombine %s, not an exposure", f, kind)
    return kept


def _expand(item, filters):
    """A file name, a glob pattern, or a directory read as an ImageFileCollection.

    Directories and patterns leave out crcombine's own products (`_product`).
    """
    if os.path.isdir(item):
        from astropy.utils.exceptions import AstropyUserWarning
        from ccdproc import ImageFileCollection
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyUserWarning)  # "no FITS files"
            ifc = ImageFileCollection(item, glob_include="*.fit*")
        if not ifc.files:
            raise FileNotFoundError(f"directory {item!r} holds no FITS file.")
        files = ifc.files_filtered(include_path=True, **filters) if filters else \
            [os.path.join(item, f) for f in ifc.files]
        if len(files) == 0:
            raise ValueError(f"no file in {item!r} matches --filter "
                             f"{' '.join(f'{k}={v}' for k, v in filters.items())}.")
        return _skip_products(sorted(files))
    if glob.has_magic(item):
        files = sorted(glob.glob(item))
        if not files:
            raise FileNotFoundError(f"the pattern {item!r} matches no file.")
        return _skip_products(files)
    return [item]


def _filters(args):
    out = {}
    for item in args.filter or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--filter takes KEYWORD=VALUE; got {item!r}.")
        out[key.lower()] = value
    return out


def _inputs(args):
    filters = _filters(args)
    names = [f for item in args.inputs for f in _expand(item, filters)]
    if args.inputlist:
        names = _read_list(args.inputlist) + names
    if not names:
        raise ValueError("no input exposures: give --inputlist FILE (one FITS name per line) "
                         "or the file names.")
    return names


def _hdu(args):
    return args.extnum if args.extnum is not None else args.extname


def _add_input_flags(p):
    p.add_argument("inputs", nargs="*", help="input FITS files, glob patterns ('raw/*.fits') "
                   "or directories (read as an ImageFileCollection), besides --inputlist")
    p.add_argument("--filter", action="append", metavar="KEYWORD=VALUE",
                   help="with a directory input: keep files whose header matches (repeatable)")
    p.add_argument("--inputlist", help="text file listing the input FITS files, one per line")
    p.add_argument("--extname", default=None, help="extension name holding the image "
                   "(default: the first image HDU)")
    p.add_argument("--extnum", type=int, default=None, help="extension number holding the image")
    p.add_argument("--hdu_mask", default=None,
                   help="extension with a bad-pixel mask to honour (e.g. BPM)")
    p.add_argument("--unit", default="adu", help="unit of files without BUNIT (default: adu)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--mem_limit", type=_bytes, default=DEFAULT_MEM_LIMIT,
                   help="memory crcombine may use, e.g. 300MB or 4GB; the inputs are read "
                        "in bands of rows (default auto: 400MB, or the least the stack "
                        "needs; none: read everything into memory)")
    p.add_argument("--align", choices=("shift", "interp", "adaptive", "exact"), default=None,
                   help="bring drifting or dithered exposures onto the first one's grid: "
                        "whole-pixel shifts (measured from the WCS or by cross-correlation) "
                        "or resampling on its WCS with reproject (apply: default as in the "
                        "mask file)")
    p.add_argument("--grid", choices=("reference", "union"), default=None,
                   help="with --align: the first exposure's grid (default) or the union of "
                        "all the exposures' footprints (apply: default as in the mask file)")
    p.add_argument("--offsets", choices=("xcorr", "wcs"), default=None,
                   help="with --align shift: measure the offsets by cross-correlation "
                        "(default) or read them from the WCS")
    p.add_argument("--scheduler", default=None,
                   help="run the bands of rows as dask tasks: threads, processes, "
                        "synchronous, or the address of a dask.distributed scheduler "
                        "(tcp://host:8786); needs dask")


#: Default --mem_limit of compute and apply: 400 MB, or the least the stack needs.
DEFAULT_MEM_LIMIT = "auto"


def _scheduler(args):
    """The dask scheduler of --scheduler (a Client for a distributed address), or None."""
    if args.scheduler is None:
        return None
    try:
        import dask  # noqa: F401
    except ImportError:
        raise ValueError("--scheduler needs dask: pip install 'dask[array]'") from None
    if "://" in args.scheduler:
        try:
            from dask.distributed import Client
        except ImportError:
            raise ValueError("a scheduler address needs dask.distributed: "
                             "pip install 'dask[distributed]'") from None
        return Client(args.scheduler)
    if args.scheduler not in ("threads", "processes", "synchronous"):
        raise ValueError("--scheduler must be threads, processes, synchronous or a "
                         f"dask.distributed address (tcp://host:port); got {args.scheduler!r}.")
    return args.scheduler


def _data_unit(names, args):
    """The unit of the first input (its BUNIT, else --unit), read from its header only."""
    from astropy import units as u
    from astropy.io import fits

    from ._inputs.read import _inspect
    if not os.path.exists(names[0]):
        raise FileNotFoundError(f"input file {names[0]!r} does not exist; check the name and "
                                "the current directory.")
    with fits.open(names[0]) as hdul:
        _, bunit, _ = _inspect(names[0], hdul, _hdu(args), args.hdu_mask)
    try:
        return u.Unit(bunit or args.unit)
    except ValueError:
        raise ValueError(f"input file {names[0]!r} has BUNIT = {bunit!r}, which is not a unit "
                         "astropy knows; give --unit.") from None


def _add_detector_flags(p, required):
    p.add_argument("--gain", type=float, required=required, help="gain (e-/ADU)")
    p.add_argument("--rnoise", type=float, required=required,
                   help="read noise in the data unit (ADU for raw frames), as numina-crmasks")
    p.add_argument("--bias", type=float, default=None, help="bias level in the data unit")


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr (exit code 2).

    Abbreviated flags are refused: ``--knots`` must not silently mean
    ``--knots_splfit``.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} -h)\n")


def build_parser():
    from . import __version__
    parser = _Parser(
        prog="crcombine",
        description="Cosmic-ray masks (M.M.Cosmic) and CR-aware combination of equivalent "
                    "CCD exposures.")
    parser.add_argument("--version", action="version", version=f"crcombine {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more progress messages (-vv for debugging)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    c = sub.add_parser("compute", help="compute the cosmic-ray masks (crmasks.fits)")
    _add_input_flags(c)
    _add_detector_flags(c, required=True)
    c.add_argument("--flux_factor", type=_flux_factor, default=None,
                   help="none, auto, a number or a list [f1,...,fN]")
    c.add_argument("--flux_factor_regions", type=_regions, default=None,
                   help="with --flux_factor auto: regions [[xmin,xmax,ymin,ymax],...] (FITS "
                        "pixels, 1-based, inclusive) the factors are estimated from")
    c.add_argument("--cr_coincidences", type=int, default=None,
                   help="number of hit exposures sought (default max(2, ceil(N/2)))")
    c.add_argument("--knots_splfit", type=int, default=3, help="total spline knots (3)")
    c.add_argument("--nsimulations", type=int, default=10, help="simulations (10)")
    c.add_argument("--null_distribution", choices=("exact", "simulated"), default="exact",
                   help="the null distribution of the diagram: exact (computed; the masks do "
                        "not depend on --seed; default) or simulated (numina)")
    c.add_argument("--niter_boundary_extension", type=int, default=3,
                   help="upward extension iterations (3)")
    c.add_argument("--weight_boundary_extension", type=float, default=10.0,
                   help="upward extension weight (10)")
    c.add_argument("--threshold", type=float, default=0.0,
                   help="minimum median - minimum to flag, in the data unit (0)")
    c.add_argument("--minimum_max2d_rnoise", type=float, default=5.0,
                   help="flag only where the maximum exceeds this times the read noise (5)")
    c.add_argument("--dilation", type=int, default=1, help="3x3 dilations of the masks (1)")
    c.add_argument("--nbinom_shape", default="auto",
                   help="negative binomial shape, auto (measured, default) or none (Poisson)")
    c.add_argument("--seed", type=int, default=None,
                   help="seed of the simulations (--null_distribution simulated)")
    c.add_argument("--false_alarm", type=float, default=None,
                   help="expected false seeds per image (default: numina's criterion)")
    c.add_argument("--mm_scale", default="auto",
                   help="derivative term of the MM boundary: auto (measured, default) or a "
                        "number (0: the boundary alone, as numina)")
    c.add_argument("--crmask_method", choices=("noise", "mm"), default="noise",
                   help="per-exposure masks: noise-model comparison (default) or the "
                        "simulated single-exposure boundary")
    c.add_argument("--matched_diagram", choices=("on", "off"), default="off",
                   help="build the MM diagram on the exposures matched to the median's PSF and "
                        "level (default off)")
    c.add_argument("--psf_matching", choices=("on", "off"), default="on",
                   help="with --crmask_method noise: also compare each exposure with its "
                        "PSF-matched prediction from the others, and fill masked values with "
                        "it in meancr (default on)")
    c.add_argument("--psf_kernel_size", type=int, default=5,
                   help="side of the PSF-matching kernels, odd, in pixels (default 5; about "
                        "the FWHM for broad PSFs)")
    c.add_argument("--lacosmic", action="store_true",
                   help="OR what L.A.Cosmic finds in each exposure into its CRMASK (numina's "
                        "mm_lacosmic; ccdproc.cosmicray_lacosmic in electrons)")
    for name, kind in LACOSMIC_FLAGS.items():
        c.add_argument(f"--la_{name}", type=kind, default=None,
                       help=f"with --lacosmic: cosmicray_lacosmic's {name}")
    c.add_argument("--premask", action="store_true",
                   help="exclude non-finite, out-of-DATASEC/TRIMSEC and saturated pixels")
    c.add_argument("--saturation", default="header",
                   help="with --premask: header (SATURATE keyword, default), auto or a level "
                        "in the data unit")
    c.add_argument("--threads", type=int, default=None,
                   help="threads for the simulations (default: the number of CPUs)")
    c.add_argument("--output_masks", default="crmasks.fits", help="output mask file")
    c.add_argument("--plots", action="store_true",
                   help="write the diagnostic plots next to the mask file (needs matplotlib)")
    c.add_argument("--interactive", action="store_true",
                   help="with --plots: also show each plot in a window and wait for it to close")
    c.add_argument("--semiwindow", type=int, default=15,
                   help="half size of the CR cut-outs in pixels (15)")
    c.add_argument("--color_scale", choices=("minmax", "zscale"), default="minmax",
                   help="scaling of the CR cut-outs (minmax)")
    c.add_argument("--maxplots", type=int, default=10,
                   help="CR features in the cut-out PDF (10; -1 for all)")

    a = sub.add_parser("apply", help="combine the exposures with a mask file")
    _add_input_flags(a)
    _add_detector_flags(a, required=False)
    from ._core.methods import METHODS
    a.add_argument("--input_mask", default="crmasks.fits", help="mask file from compute")
    a.add_argument("--output_combined", default=None,
                   help="output file (default combined_<combination>.fits; with several "
                        "combinations, a name holding {combination})")
    a.add_argument("--combination", default="mediancr", type=_combinations,
                   metavar="METHOD[,METHOD...]",
                   help=f"combination method(s), comma-separated, of {', '.join(METHODS)} "
                        "(default mediancr); several are made in one pass over the stack")

    r = sub.add_parser("run", help="run from a numina-crmasks YAML parameter file")
    r.add_argument("inputyaml", help="numina-crmasks YAML file (images, gain, rnoise, bias, "
                   "extnum, requirements)")
    r.add_argument("--crmasks", default=None,
                   help="apply this mask file instead of computing the masks")
    r.add_argument("--output_dir", default=".", help="output directory (default .)")
    r.add_argument("--overwrite", action="store_true", help="replace existing output files")

    d = sub.add_parser("demo", help="run the whole job on the bundled real exposures")
    d.add_argument("--output-dir", default="crcombine_demo",
                   help="output directory (default ./crcombine_demo)")
    d.add_argument("--overwrite", action="store_true", help="replace earlier demo outputs")
    return parser


#: The ``--la_*`` flags (numina-crmasks' ``la_*`` names) and their types.
LACOSMIC_FLAGS = {"sigclip": float, "sigfrac": float, "objlim": float, "niter": int}


def _lacosmic(args):
    """``lacosmic`` of the builder from ``--lacosmic`` and the ``--la_*`` flags."""
    chosen = {name: getattr(args, f"la_{name}") for name in LACOSMIC_FLAGS
              if getattr(args, f"la_{name}") is not None}
    if chosen and not args.lacosmic:
        raise ValueError(f"--la_{next(iter(chosen))} needs --lacosmic.")
    return (chosen or True) if args.lacosmic else False


def _quantity(value, unit):
    return None if value is None else value * unit


def _compute(args):
    from . import CRCombiner, CRMaskBuilder
    from .io import check_output_path
    check_output_path(args.output_masks, overwrite=args.overwrite, argument="--output_masks")
    if args.plots:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ValueError("--plots needs matplotlib: pip install 'crcombine[plot]'") from None
    names = _inputs(args)
    unit = _data_unit(names, args)
    nbinom = args.nbinom_shape if args.nbinom_shape.lower() in ("auto", "none") \
        else float(args.nbinom_shape)
    builder = CRMaskBuilder(
        gain=args.gain, readnoise=args.rnoise * unit,
        bias=_quantity(args.bias, unit) if args.bias is not None else 0.0,
        flux_factor=args.flux_factor, flux_factor_regions=args.flux_factor_regions,
        cr_coincidences=args.cr_coincidences,
        knots=args.knots_splfit, nsimulations=args.nsimulations,
        null_distribution=args.null_distribution,
        niter_boundary_extension=args.niter_boundary_extension,
        weight_boundary_extension=args.weight_boundary_extension,
        threshold=args.threshold * args.gain, minimum_max2d_rnoise=args.minimum_max2d_rnoise,
        dilation=args.dilation, seed=args.seed, nbinom_shape=nbinom,
        false_alarm=args.false_alarm, mm_scale=_auto_or_number(args.mm_scale, "--mm_scale"),
        crmask_method=args.crmask_method, psf_matching=args.psf_matching == "on",
        matched_diagram=args.matched_diagram == "on",
        psf_kernel_size=args.psf_kernel_size, threads=args.threads,
        premask=args.premask, saturation=_saturation(args.saturation),
        lacosmic=_lacosmic(args),
        mem_limit=args.mem_limit, scheduler=_scheduler(args), align=args.align,
        offsets=args.offsets if args.align else None, grid=args.grid or "reference")
    combiner = CRCombiner(names, builder=builder, hdu=_hdu(args), hdu_mask=args.hdu_mask,
                          unit=args.unit)
    with _progress_bar() as progress:
        builder.progress = progress
        masks = combiner.masks
        builder.progress = None
    masks.write(args.output_masks, overwrite=args.overwrite)
    for key, (pix, feat) in masks.summary().items():
        print(f"{key:9s} {pix:8d} px {feat:6d} features")
    print(f"masks written to {args.output_masks} (uuid {masks.uuid}, {_null_note(masks)})")
    if args.plots:
        from ._diagnostics import write_diagnostics
        kwargs = {}
        if args.interactive:
            import matplotlib.pyplot as plt
            kwargs["new_figure"] = lambda size: plt.figure(figsize=size, layout="constrained")
            kwargs["shown"] = _show_and_close
        paths = write_diagnostics(combiner, os.path.dirname(os.path.abspath(args.output_masks)),
                                  semiwindow=args.semiwindow, color_scale=args.color_scale,
                                  maxplots=args.maxplots, **kwargs)
        print(f"{len(paths)} diagnostic files written: "
              f"{', '.join(os.path.basename(p) for p in paths)}")


class _progress_bar:
    """tqdm bars on stderr (only on a terminal), fed by ``progress(step, done, total)``.

    One bar per step: the simulated blocks, and the bands of rows of each
    pass over the image.
    """

    def __init__(self):
        self.bar = None
        self.step = None

    def __enter__(self):
        return self

    def __call__(self, step, done, total):
        if step != self.step:
            if self.bar is not None:
                self.bar.close()
            from tqdm import tqdm
            self.step = step
            self.bar = tqdm(total=total, desc=step, disable=None, leave=False,
                            unit="block" if step == "simulations" else "band")
        self.bar.update(done - self.bar.n)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()


def _show_and_close(fig):
    import matplotlib.pyplot as plt
    plt.show()          # the command line waits here until the window is closed
    plt.close(fig)


def _outputs(args):
    """The output file of each combination, checked before any work."""
    from .io import check_output_path
    methods = args.combination if isinstance(args.combination, list) else [args.combination]
    pattern = args.output_combined or "combined_{combination}.fits"
    if len(methods) > 1 and "{combination}" not in pattern:
        raise ValueError(f"--output_combined {pattern!r} names one file for "
                         f"{len(methods)} combinations; put {{combination}} in it "
                         "(e.g. 'out_{combination}.fits') or leave it out.")
    outputs = [pattern.replace("{combination}", m) for m in methods]
    for output in outputs:
        check_output_path(output, overwrite=args.overwrite, argument="--output_combined")
    return methods, outputs


def _apply(args):
    from . import CRCombiner, CRMasks, CRMaskBuilder
    from .io import write_combined
    methods, outputs = _outputs(args)
    masks = CRMasks.read(args.input_mask)
    names = _inputs(args)
    builder = None
    if args.gain is not None or args.rnoise is not None:
        if args.gain is None or args.rnoise is None:
            raise ValueError("give both --gain and --rnoise (or neither, to use the values "
                             "recorded in the mask file).")
        unit = _data_unit(names, args)
        builder = CRMaskBuilder(gain=args.gain, readnoise=args.rnoise * unit,
                                bias=_quantity(args.bias, unit) if args.bias is not None
                                else 0.0, mem_limit=args.mem_limit,
                                scheduler=_scheduler(args), **_alignment(args, masks))
    else:
        builder = CRMaskBuilder.for_masks(masks, mem_limit=args.mem_limit,
                                          scheduler=_scheduler(args), **_alignment(args, masks))
    combiner = CRCombiner(names, masks, builder=builder, hdu=_hdu(args),
                          hdu_mask=args.hdu_mask, unit=args.unit)
    for method, result, output in zip(methods, combiner.combine(methods), outputs):
        write_combined(result, output, overwrite=args.overwrite)
        print(f"{method} combination of {len(names)} exposures written to {output}")


def _alignment(args, masks):
    """align/offsets for apply: those of the mask file unless --align says otherwise."""
    recorded = masks.parameters.get("align")
    align = args.align or recorded
    if align is None:
        return {}
    offsets = masks.parameters.get("offsets") if align == recorded and not args.offsets \
        else args.offsets
    grid = args.grid or masks.parameters.get("grid") or "reference"
    return {"align": align, "offsets": offsets, "grid": grid}


def _run(args):
    import yaml

    from . import CRCombiner, CRMaskBuilder, CRMasks, read_exposures
    from ._combination.products import check_products, write_products
    from ._numina import from_numina_yaml
    if not os.path.exists(args.inputyaml):
        raise FileNotFoundError(f"YAML file {args.inputyaml!r} does not exist.")
    with open(args.inputyaml) as fh:
        try:
            params = yaml.safe_load(fh)
        except yaml.YAMLError as exc:
            raise ValueError(f"{args.inputyaml!r} is not valid YAML "
                             f"({' '.join(str(exc).split())}).") from None
    images, read, builder_params, ignored = from_numina_yaml(params)
    if ignored:
        print(f"crcombine run: note: ignored (no meaning in crcombine): {', '.join(ignored)}",
              file=sys.stderr)
    if not os.path.isdir(args.output_dir):
        raise FileNotFoundError(f"--output_dir {args.output_dir!r} does not exist; create it "
                                "first.")
    check_products(args.output_dir, overwrite=args.overwrite)
    base = os.path.dirname(os.path.abspath(args.inputyaml))
    images = [i if os.path.isabs(i) else os.path.join(base, i) for i in images]
    ccds = read_exposures(images, **read)
    builder = CRMaskBuilder(**builder_params)
    masks = CRMasks.read(args.crmasks) if args.crmasks else None
    combiner = CRCombiner(ccds, masks, builder=builder)
    paths = write_products(combiner, args.output_dir, overwrite=args.overwrite,
                           write_masks=masks is None)
    if masks is None:
        print(f"masks written to {paths['masks']} (uuid {combiner.masks.uuid}, "
              f"{_null_note(combiner.masks)})")
    print(f"combinations written to {args.output_dir}: "
          f"{', '.join(os.path.basename(p) for k, p in paths.items() if k != 'masks')}")


def _demo(args):
    from ._demo import run_demo
    print(run_demo(args.output_dir, overwrite=args.overwrite))


def main(argv=None):
    """Run the command line; return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING if args.verbose == 0 else (logging.INFO if args.verbose == 1
                                                       else logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("crcombine: %(message)s"))
    log.addHandler(handler)
    log.setLevel(level)
    from astropy.units import UnitsError
    from astropy.wcs import FITSFixedWarning
    previous = _on_sigterm()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            {"compute": _compute, "apply": _apply, "run": _run,
             "demo": _demo}[args.command](args)
    except (ValueError, TypeError, OSError, KeyError, UnitsError) as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"crcombine {args.command}: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:     # Ctrl-C; the temporary files are removed on the way out
        print(f"crcombine {args.command}: interrupted; nothing was written under a final "
              "name that was not complete", file=sys.stderr)
        return 130
    except _Terminated:
        print(f"crcombine {args.command}: terminated (SIGTERM); no partial output was left",
              file=sys.stderr)
        return 143
    finally:
        log.removeHandler(handler)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


class _Terminated(BaseException):
    """SIGTERM, raised where the command is, so that its clean-up runs (`main`)."""


def _raise_terminated(signum, frame):
    raise _Terminated()


def _on_sigterm():
    """Turn SIGTERM into `_Terminated` for the command's duration (main thread only)."""
    try:
        return signal.signal(signal.SIGTERM, _raise_terminated)
    except (ValueError, OSError):   # not the main thread, or no SIGTERM here
        return None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
