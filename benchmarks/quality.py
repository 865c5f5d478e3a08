"""Detection quality of every combination method on stacks with known truth.

Seeded realistic stacks (`crcombine.datasets.make_cr_stack`: a star field or
fibre spectra with sky lines; read noise 3.4 e-; CR tracks of 1-20 px with
lognormal charge and diffusion; 4e-4 events per pixel per exposure plus
coincident hits; seeing +/-10 %, transparency +/-5 %, drift 0.2 px) are
combined by plain median and mean, ccdproc sigma clipping, every crcombine
method and, with ``--numina`` when numina-crmasks is installed, numina.

For each method it prints:

* ``resid``: residual CR pixels, combined - truth > 5 sigma of one exposure;
* ``resid_coinc``: the same at pixels hit in two exposures (and their share);
* ``noise``: robust sigma of (combined - truth) / sigma_mean over CR-free
  pixels (1.0 = an ideal CR-free mean);
* ``bias``: median relative flux bias over bright CR-free pixels (truth > 100
  sigma), in per cent;
* ``false``: flagged pixels with no CR within 1 px, in per cent of all pixels.

The truth is the mean of the noiseless exposures (each divided by its true
relative level when crcombine used flux factors: see `metrics`).  Usage::

    python benchmarks/quality.py [--size 1024] [--n 3] [--scene stars] [--seed 1]
                                 [--sky 40] [--fwhm 3 | --fwhm 3.0 2.2 2.8] [--drift 0.2]
                                 [--transparency 0.05] [--option name=value ...]
                                 [--numina] [--lacosmic]
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
from astropy.io import fits
from astropy.stats import mad_std
from scipy import ndimage


def metrics(combined, flagged, truth, *, scaled=False):
    """The metrics of one combination; ``scaled``: its exposures were divided by flux factors.

    Flux factors are normalised to a median of 1, so a flux-scaled combination
    is at the level of the median exposure: its truth is then the mean of
    ``expected_i * median(t) / t_i`` (``t`` the true transparencies), and an
    error of the factors shows as a bias.
    """
    expected = truth["expected"]
    n = expected.shape[0]
    if scaled:
        t = truth["transparency"]
        expected = expected * (np.median(t) / t)[:, None, None]
    ideal = expected.mean(axis=0)
    sigma1 = np.sqrt(np.maximum(ideal, 0) + truth["readnoise"] ** 2)
    diff = combined - ideal
    resid = diff > 5 * sigma1
    hit_any = (truth["deposits"] > 0).any(axis=0)
    near_cr = ndimage.binary_dilation(hit_any, np.ones((3, 3), bool))
    clean = ~near_cr & np.isfinite(diff)
    noise = mad_std(diff[clean] / (sigma1[clean] / np.sqrt(n)))
    bright = clean & (ideal > 100 * sigma1)
    bias = np.median(diff[bright] / ideal[bright]) * 100 if bright.any() else np.nan
    coinc = truth["coincident"]
    false = (flagged & ~near_cr).mean() * 100 if flagged is not None else np.nan
    return {"resid": int(resid.sum()), "resid_coinc": int((resid & coinc).sum()),
            "coinc": int(coinc.sum()), "noise": noise, "bias": bias, "false": false}


def run_numina(ccds, readnoise, tmp):
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
    from test_numina_interop import NUMINA_REQUIREMENTS
    import yaml
    names = []
    for i, c in enumerate(ccds):
        name = os.path.join(tmp, f"e{i}.fits")
        fits.PrimaryHDU(c.data).writeto(name)
        names.append(name)
    params = dict(images=names, gain=1.0, rnoise=readnoise, bias=0.0, extnum=0,
                  requirements=NUMINA_REQUIREMENTS)
    with open(os.path.join(tmp, "p.yaml"), "w") as fh:
        yaml.safe_dump(params, fh)
    t0 = time.perf_counter()
    subprocess.run(["numina-crmasks", os.path.join(tmp, "p.yaml"), "--output_dir", tmp],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    out = {}
    with fits.open(os.path.join(tmp, "crmasks.fits")) as h:
        masks = {"mediancr": h["MEDIANCR"].data.astype(bool),
                 "meancrt": h["MEANCRT"].data.astype(bool),
                 "meancr": np.any([h[f"CRMASK{i + 1}"].data for i in range(len(ccds))], axis=0),
                 "meancr2": h["MEANCR"].data.astype(bool)}
    for method in ("mediancr", "meancrt", "meancr", "meancr2"):
        out[method] = (fits.getdata(os.path.join(tmp, f"combined_{method}.fits")), masks[method])
    return out, wall


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--n", type=int, default=3)
    parser.add_argument("--scene", default="stars", choices=("stars", "fibres"))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--sky", type=float, default=40.0, help="sky level (e-)")
    parser.add_argument("--fwhm", type=float, nargs="+", default=[3.0],
                        help="PSF FWHM (px): one value, or one per exposure")
    parser.add_argument("--drift", type=float, default=0.2, help="drift rms (px)")
    parser.add_argument("--transparency", type=float, default=0.05,
                        help="transparency changes, +/- (fraction)")
    parser.add_argument("--option", nargs="*", default=[],
                        help="extra CRMaskBuilder options, name=value (value parsed as Python)")
    parser.add_argument("--numina", action="store_true", help="also run numina-crmasks")
    parser.add_argument("--lacosmic", action="store_true",
                        help="also crcombine's meancr with the auxiliary L.A.Cosmic")
    args = parser.parse_args()

    import ccdproc
    from crcombine import CRCombiner, CRMaskBuilder
    from crcombine.datasets import make_cr_stack

    fwhm = args.fwhm[0] if len(args.fwhm) == 1 else args.fwhm
    from _options import parse_options
    extra = parse_options(args.option)
    ccds, truth = make_cr_stack((args.size, args.size), args.n, scene=args.scene,
                                seed=args.seed, sky=args.sky, fwhm=fwhm, drift=args.drift,
                                transparency_jitter=args.transparency)
    rn = truth["readnoise"]
    print(f"{args.n} x {args.size}^2 {args.scene} (sky {args.sky:g} e-, FWHM "
          f"{np.round(truth['seeing'] * np.atleast_1d(fwhm)[0], 2).tolist()} px, drift "
          f"{np.round(truth['drift'], 2).tolist()} px, transparency "
          f"{np.round(truth['transparency'], 3).tolist()}), seed {args.seed}: "
          f"{int(truth['coincident'].sum())} coincident-hit px, "
          f"{int((truth['deposits'] > 0).any(axis=0).sum())} CR-hit px")
    rows = {}
    stack = np.stack([c.data for c in ccds])
    rows["median"] = metrics(np.median(stack, axis=0), None, truth)
    rows["mean"] = metrics(stack.mean(axis=0), None, truth)
    comb = ccdproc.Combiner(ccds)
    comb.sigma_clipping(low_thresh=3, high_thresh=3, func="median", dev_func="mad_std")
    sc = comb.average_combine()
    rows["ccdproc sigclip"] = metrics(sc.data, comb.data_arr.mask.any(axis=0)
                                      if hasattr(comb, "data_arr") else None, truth)
    t0 = time.perf_counter()
    crc = CRCombiner(ccds, builder=CRMaskBuilder(gain=1, readnoise=rn, seed=args.seed, **extra))
    masks = crc.masks
    wall = time.perf_counter() - t0
    flags = {"mediancr": masks.mediancr, "meancrt": masks.meancrt,
             "meancr": masks.crmask.any(axis=0), "meancr2": masks.crmask.any(axis=0)
             | masks.meancr}
    scaled = not np.allclose(masks.flux_factor, 1)
    for method, flagged in flags.items():
        rows[f"crcombine {method}"] = metrics(crc.combine(method).data, flagged, truth,
                                              scaled=scaled)
    print(f"crcombine masks: {wall:.1f} s; flux factors {np.round(masks.flux_factor, 4).tolist()}"
          f" (true relative levels "
          f"{np.round(truth['transparency'] / np.median(truth['transparency']), 4).tolist()})")
    if args.lacosmic:
        t0 = time.perf_counter()
        aided = CRCombiner(ccds, builder=CRMaskBuilder(gain=1, readnoise=rn, seed=args.seed,
                                                       lacosmic=True))
        flagged = aided.masks.crmask.any(axis=0)
        print(f"crcombine masks with lacosmic: {time.perf_counter() - t0:.1f} s")
        rows["crc+lacosmic meancr"] = metrics(aided.combine("meancr").data, flagged, truth,
                                              scaled=scaled)
    if args.numina:
        if shutil.which("numina-crmasks") is None:
            print("numina-crmasks is not installed")
        else:
            with tempfile.TemporaryDirectory() as tmp:
                results, nwall = run_numina(ccds, rn, tmp)
            print(f"numina-crmasks (mm_lacosmic): {nwall:.1f} s")
            for method, (data, flagged) in results.items():
                rows[f"numina {method}"] = metrics(data, flagged, truth)
    print(f"{'method':22s} {'resid':>7s} {'resid_coinc':>16s} {'noise':>7s} {'bias %':>8s} "
          f"{'false %':>8s}")
    for name, m in rows.items():
        share = 100 * m["resid_coinc"] / max(m["coinc"], 1)
        print(f"{name:22s} {m['resid']:7d} {m['resid_coinc']:7d} ({share:5.1f} %) "
              f"{m['noise']:7.3f} {m['bias']:8.3f} {m['false']:8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
