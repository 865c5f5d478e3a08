"""False seeds on cosmic-ray-free stacks against the ``false_alarm`` setting.

Seeded stacks without cosmic rays (`tests/helpers.make_stack`: flat sky or
Gaussian stars, Poisson and read noise) go through `crcombine.CRMaskBuilder`
with ``false_alarm`` set and ``dilation=0``; every MEDIANCR pixel is then a
false seed.  For each stack it prints the count and its ratio to the setting,
then the totals with their Poisson error.  With ``--noisy-median`` the
simulations are drawn at the median itself (as before the denoised signal),
for comparison in the same run; ``--null`` chooses the null distributions
compared (``exact``, ``simulated`` or both).  Usage::

    python benchmarks/false_alarm.py [--false-alarm 50] [--noisy-median]
                                     [--null exact simulated]
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

#: (size, seed, stars, sky e-, read noise e-)
STACKS = [(512, 21, 0, 100.0, 5.0), (512, 22, 64, 100.0, 5.0), (768, 23, 96, 20.0, 3.0),
          (1024, 24, 128, 300.0, 5.0), (512, 25, 0, 5.0, 3.0), (512, 26, 0, 1000.0, 5.0)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--false-alarm", type=float, nargs="+", default=[5.0, 50.0])
    parser.add_argument("--noisy-median", action="store_true",
                        help="also draw the simulations at the noisy median")
    parser.add_argument("--null", nargs="+", default=["exact"], choices=("exact", "simulated"),
                        help="null distributions to compare (default: exact)")
    args = parser.parse_args()

    from crcombine import CRMaskBuilder
    from crcombine._detection import diagram
    from helpers import make_stack

    modes = [(null, median) for null in args.null
             for median in ["denoised"] + (["noisy median"] if args.noisy_median else [])]
    denoise = diagram.denoised_signal
    totals = {}
    print(f"{'mode':23s} {'setting':>7s} {'size':>5s} {'stars':>5s} {'sky':>6s} {'rn':>4s} "
          f"{'seeds':>6s} {'ratio':>6s}")
    for null, median in modes:
        mode = f"{null}/{median}"
        diagram.denoised_signal = denoise if median == "denoised" else (lambda e, *a, **k: e)
        for fa in args.false_alarm:
            for size, seed, nstars, sky, rn in STACKS:
                stack = make_stack(shape=(size, size), seed=seed, n_single=0, n_coincident=0,
                                   nstars=nstars, sky=sky, readnoise=rn)
                masks = CRMaskBuilder(gain=1, readnoise=rn, seed=seed, dilation=0,
                                      false_alarm=fa, null_distribution=null
                                      ).build(stack.ccds())
                seeds = int(masks.mediancr.sum())
                totals.setdefault((mode, fa), []).append(seeds)
                print(f"{mode:23s} {fa:7g} {size:5d} {nstars:5d} {sky:6g} {rn:4g} {seeds:6d} "
                      f"{seeds / fa:6.2f}", flush=True)
    diagram.denoised_signal = denoise
    for (mode, fa), counts in totals.items():
        expected = fa * len(counts)
        print(f"{mode}, false_alarm={fa:g}: {sum(counts)} seeds on {len(counts)} stacks, "
              f"expected {expected:g} +/- {np.sqrt(expected):.1f} (ratio "
              f"{sum(counts) / expected:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
