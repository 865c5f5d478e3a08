"""Time and memory of compute + apply on a seeded 3 x 2048 x 2048 stack.

Prints wall time and peak memory for crcombine (masks, then the ``mediancr``
and ``meancr`` combinations), and, as baselines measured in the same run on
the same stack, ``ccdproc.Combiner.median_combine`` and -- when numina is
installed -- ``numina-crmasks``.  Not a test: it prints figures.

Usage::

    python benchmarks/bench_compute_apply.py [--size 2048] [--n 3] [--numina]
"""

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc

import numpy as np
from astropy.nddata import CCDData


def make_stack(size, n, seed=2026):
    rng = np.random.default_rng(seed)
    truth = np.full((size, size), 200.0)
    yy, xx = rng.integers(0, size, (2, size * size // 200))
    truth[yy, xx] += rng.lognormal(7, 1, yy.size)           # point-like sources
    frames = []
    for _ in range(n):
        d = rng.poisson(truth) + rng.normal(0, 3.4, truth.shape)
        cy, cx = rng.integers(0, size, (2, int(4e-4 * size * size)))
        d[cy, cx] += rng.lognormal(np.log(400), 0.8, cy.size)  # cosmic rays
        frames.append(d.astype(np.float32))
    return frames


def measure(label, func):
    tracemalloc.start()
    t0 = time.perf_counter()
    out = func()
    wall = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"{label:42s} {wall:8.2f} s   peak traced {peak / 1e6:8.1f} MB")
    return wall, out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--n", type=int, default=3)
    parser.add_argument("--numina", action="store_true",
                        help="also time numina-crmasks (slow: minutes at 1024^2)")
    args = parser.parse_args()

    import ccdproc
    from crcombine import Combiner, CRCombiner, CRMaskBuilder

    frames = make_stack(args.size, args.n)
    ccds = [CCDData(f, unit="electron") for f in frames]
    print(f"stack: {args.n} x {args.size} x {args.size}, float32, electrons")

    def crcombine_all():
        comb = CRCombiner(ccds, builder=CRMaskBuilder(gain=1, readnoise=3.4, seed=1))
        comb.masks
        return [comb.combine(m) for m in ("mediancr", "meancr")]

    t_crc, _ = measure("crcombine compute + apply (mediancr, meancr)", crcombine_all)
    t_med, _ = measure("ccdproc Combiner.median_combine", lambda: ccdproc.Combiner(
        ccds).median_combine())
    masks = CRMaskBuilder(gain=1, readnoise=3.4, seed=1).build(ccds)
    t_sub, _ = measure("crcombine Combiner.mediancr_combine (masks given)",
                       lambda: Combiner(ccds, crmasks=masks).mediancr_combine())
    print(f"ratio crcombine Combiner.mediancr_combine / ccdproc median_combine: "
          f"{t_sub / t_med:.2f}")
    print(f"ratio crcombine compute+apply / ccdproc median_combine: {t_crc / t_med:.2f}")

    if shutil.which("numina-crmasks") and args.numina:
        sys.path.insert(0, os.path.dirname(__file__))
        from quality import run_numina
        with tempfile.TemporaryDirectory() as tmp:
            try:
                _, t_num = run_numina(ccds, 3.4, tmp)
            except subprocess.CalledProcessError as exc:
                print(f"numina-crmasks failed ({exc}); no numina baseline")
            else:
                print(f"{'numina-crmasks (mm_lacosmic, YAML of the tests)':42s} {t_num:8.2f} s")
                print(f"speed-up crcombine vs numina: {t_num / t_crc:.1f} x")
    else:
        print("numina baseline not run (give --numina with numina-crmasks installed)")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
    print(f"peak resident memory of this process: {rss:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
