"""Do the masks depend on the seed?  MEDIANCR features of the bundled SPRAT spectra, seeds 1-10.

The README's settings (gain 2.45 e-/ADU, read noise 2.1 ADU, bias 916 ADU, 5
exposures: `crcombine.datasets.get_dataset`).  For each seed it prints the
MEDIANCR features, their pixels, how many lie on the target's trace (rows
120-137), the MEANCRT and CRMASK pixels, whether every mask equals the first
seed's, and the time.  Usage::

    python benchmarks/seed_stability.py [--seeds 1 2 ... 10] [--option name=value ...]
"""

import argparse
import time

import numpy as np

from crcombine import CRMaskBuilder, datasets, read_exposures


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(1, 11)))
    parser.add_argument("--option", nargs="*", default=[],
                        help="extra builder options, name=value (value parsed as Python)")
    args = parser.parse_args()
    from _options import parse_options
    extra = parse_options(args.option)
    info = datasets.get_dataset("lt_sprat")
    ccds = read_exposures(info["files"], hdu=info["hdu"], hdu_mask=info["hdu_mask"],
                          unit=info["unit"])
    first = None
    print(f"{'seed':>4} {'features':>8} {'px':>5} {'on trace':>8} {'meancrt':>7} "
          f"{'crmask':>7} {'same':>5} {'s':>5}")
    for seed in args.seeds:
        t0 = time.perf_counter()
        masks = CRMaskBuilder(gain=info["gain"], readnoise=info["readnoise"], bias=info["bias"],
                              seed=seed,
                              **extra).build(ccds)
        dt = time.perf_counter() - t0
        f = masks.features
        rows = np.asarray(f["ycentroid"]) if len(f) else np.zeros(0)
        trace = int(np.sum((rows >= 120) & (rows <= 137)))
        arrays = (masks.mediancr, masks.meancrt, masks.crmask, masks.meancr)
        same = first is None or all(np.array_equal(a, b) for a, b in zip(arrays, first))
        first = first or arrays
        print(f"{seed:4d} {len(f):8d} {int(masks.mediancr.sum()):5d} {trace:8d} "
              f"{int(masks.meancrt.sum()):7d} {int(masks.crmask.sum()):7d} {str(same):>5} "
              f"{dt:5.1f}")


if __name__ == "__main__":
    main()
