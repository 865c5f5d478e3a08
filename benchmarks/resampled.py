"""Resampled (dithered) stacks: crcombine's comparison on the common grid against JWST's blot rule.

A seeded star field (`crcombine.datasets.make_cr_stack`, non-equivalences
included) dithered by whole and fractional pixels, each exposure with its TAN
WCS, is resampled onto the first exposure's grid (``align='interp'``,
``'adaptive'`` or ``'exact'``).  Three sets of per-exposure masks are combined
with ``meancr``:

* ``grid``: crcombine's masks, made on the common grid (reference comparison
  and PSF-matched comparison);
* ``blot``: JWST ``outlier_detection``'s rule (ALGORITHM.md section 8): the
  ``mediancr`` image is mapped ("blotted") back onto each exposure's own
  pixels, each original exposure is flagged where
  ``d - B > snr * sigma + scale * dB`` (seeds 5.0, 1.2; neighbours 4.0, 0.7;
  the same dilation), and the flags are mapped onto the grid (any overlap);
* ``grid|blot``: both.

For each it prints the residual CR pixels (``meancr`` - truth > 5 sigma of one
exposure, 10 px border excluded), the residual CR charge (sum of
``meancr`` - truth over the pixels a CR hit, e-), the masked pixels and the
flags with no CR within 3 px, per exposure.  The truth is the noiseless
exposures resampled by the same method.  Usage::

    python benchmarks/resampled.py [--size 1024] [--seed 1] [--method interp]
"""

import argparse
import copy
import warnings

import numpy as np
from scipy import ndimage

DITHER = [(0, 0), (5.4, -3.7), (-4.6, 6.3)]


def blot_flags(ccd, reference, grid_wcs, flux_factor, readnoise, dilation):
    """JWST's derivative rule on an exposure's own pixels against the blotted reference."""
    from reproject import reproject_interp
    from crcombine._outliers import derivative, dilate
    blotted, footprint = reproject_interp((np.nan_to_num(reference).astype(float), grid_wcs),
                                          ccd.wcs, shape_out=ccd.shape)
    blotted = blotted * flux_factor
    data = np.asarray(ccd.data, dtype=float)
    dB = derivative(blotted)
    sigma = np.sqrt(np.clip(blotted, 0, None) + readnoise ** 2)
    inside = footprint > 0.999
    with np.errstate(invalid="ignore"):
        seeds = (data - blotted > 5.0 * sigma + 1.2 * dB) & inside
        neighbours = (data - blotted > 4.0 * sigma + 0.7 * dB) & inside
    return dilate(dilate(seeds, 1) & neighbours, dilation)


def to_grid(image, ccd, grid, method):
    """An exposure's image on the common grid, resampled as the stack was."""
    import reproject
    func = {"interp": reproject.reproject_interp, "adaptive": reproject.reproject_adaptive,
            "exact": reproject.reproject_exact}[method]
    values, _ = func((np.asarray(image, dtype=float), ccd.wcs), grid.wcs, shape_out=grid.shape)
    return np.nan_to_num(values)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--method", default="interp", choices=("interp", "adaptive", "exact"))
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    from reproject import reproject_interp
    from crcombine import CRCombiner, CRMaskBuilder
    from crcombine.datasets import make_cr_stack

    readnoise = 3.4
    ccds, truth = make_cr_stack((args.size, args.size), 3, seed=args.seed, dither=DITHER)
    builder = CRMaskBuilder(gain=1, readnoise=readnoise, seed=1, align=args.method)
    combiner = CRCombiner(ccds, builder=builder)
    masks = combiner.masks
    first = ccds[0]
    ideal = np.mean([to_grid(e, c, first, args.method)
                     for e, c in zip(truth["expected"], ccds)], axis=0)
    deposits = np.array([to_grid(e, c, first, args.method)
                         for e, c in zip(truth["deposits"], ccds)])
    single = np.sqrt(np.clip(ideal, 0, None) + readnoise ** 2)
    inner = np.zeros(ideal.shape, dtype=bool)
    inner[10:-10, 10:-10] = True
    hit = inner & (deposits > 0).any(axis=0)

    reference = combiner.combine("mediancr").data
    blot = []
    for i, ccd in enumerate(ccds):
        own = blot_flags(ccd, reference, first.wcs, masks.flux_factor[i], readnoise,
                         builder.params["dilation"])
        values, _ = reproject_interp((own.astype(float), ccd.wcs), first.wcs,
                                     shape_out=first.shape, order="bilinear")
        blot.append(np.nan_to_num(values) > 0)
    blot = np.array(blot)

    print(f"3 x {args.size}^2 stars, seed {args.seed}, dithers {DITHER}, align={args.method!r}")
    print(f"{'masks':<10} {'resid':>6} {'resid charge e-':>16} {'masked px':>10}  "
          "false flags per exposure")
    for name, crmask in (("grid", masks.crmask), ("blot", blot),
                         ("grid|blot", masks.crmask | blot)):
        variant = copy.deepcopy(masks)
        variant.crmask = crmask
        result = CRCombiner(ccds, masks=variant, builder=builder).combine("meancr").data
        diff = result - ideal
        resid = int(((diff > 5 * single) & inner).sum())
        charge = float(np.nansum(diff[hit]))
        false = [int((m & inner & ~ndimage.binary_dilation(d > 1, np.ones((7, 7), bool))).sum())
                 for m, d in zip(crmask, deposits)]
        print(f"{name:<10} {resid:>6} {charge:>16.0f} {int(crmask.sum()):>10}  {false}")


if __name__ == "__main__":
    main()
