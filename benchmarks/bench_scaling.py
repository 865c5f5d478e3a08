"""How crcombine scales: command line time and memory, cost against N and pixels, mem_limit.

Every figure is printed with a ratio to a baseline measured in the same run on
the same machine (ccdproc's ``Combiner.median_combine`` of the same stack, the
smallest case of a series, or the requested limit), so that the numbers can be
compared across machines.  Not a test: it prints figures.

Usage::

    python benchmarks/bench_scaling.py cli [--size 2048] [--n 3] [--numina]
    python benchmarks/bench_scaling.py slope [--size 1024] [--ns 3 5 10 20]
    python benchmarks/bench_scaling.py sizes [--sizes 1024 2048 4096]
    python benchmarks/bench_scaling.py memory [--size 2048] [--n 20] [--mem-limit 300e6]
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc

import numpy as np
from astropy.io import fits
from astropy.nddata import CCDData


def make_files(directory, size, n, seed=2026):
    """N exposures (electrons, float32) of a star field with sky 200 e- and CRs, as FITS."""
    rng = np.random.default_rng(seed)
    truth = np.full((size, size), 200.0, dtype=np.float32)
    yy, xx = rng.integers(0, size, (2, size * size // 200))
    truth[yy, xx] += rng.lognormal(7, 1, yy.size).astype(np.float32)
    names = []
    for i in range(n):
        plane = (rng.poisson(truth) + rng.normal(0, 3.4, truth.shape)).astype(np.float32)
        cy, cx = rng.integers(0, size, (2, int(4e-4 * size * size)))
        plane[cy, cx] += rng.lognormal(np.log(400), 0.8, cy.size).astype(np.float32)
        name = os.path.join(directory, f"exp{i:02d}.fits")
        fits.writeto(name, plane, header=fits.Header({"BUNIT": "electron"}), overwrite=True)
        names.append(name)
    return names


def timed_command(argv):
    """(wall seconds, max RSS in MB or None) of a command, with /usr/bin/time -v if present."""
    gnu_time = shutil.which("time") if os.path.exists("/usr/bin/time") else None
    prefix = ["/usr/bin/time", "-v"] if gnu_time else []
    t0 = time.perf_counter()
    proc = subprocess.run(prefix + argv, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    return wall, (int(match.group(1)) / 1e3 if match else None)


def cli(args):
    import ccdproc
    with tempfile.TemporaryDirectory() as tmp:
        names = make_files(tmp, args.size, args.n)
        ccds = [CCDData.read(n) for n in names]
        t0 = time.perf_counter()
        ccdproc.Combiner(ccds).median_combine()
        base = time.perf_counter() - t0
        del ccds
        exe = [sys.executable, "-m", "crcombine"]
        masks = os.path.join(tmp, "crmasks.fits")
        t_c, rss_c = timed_command(exe + ["compute", *names, "--gain", "1", "--rnoise", "3.4",
                                          "--seed", "1", "--output_masks", masks])
        t_a = 0.0
        rss_a = []
        for method in ("mediancr", "meancr"):
            t, rss = timed_command(exe + ["apply", *names, "--input_mask", masks,
                                          "--combination", method, "--output_combined",
                                          os.path.join(tmp, f"{method}.fits")])
            t_a += t
            rss_a.append(rss)
        total = t_c + t_a
        print(f"stack: {args.n} x {args.size}^2 float32 files; {os.cpu_count()} CPUs")
        print(f"crcombine compute (command line)         {t_c:7.2f} s  max RSS {rss_c} MB")
        print(f"crcombine apply mediancr + meancr        {t_a:7.2f} s  max RSS {max(rss_a)} MB")
        print(f"ccdproc Combiner.median_combine (base)   {base:7.2f} s")
        print(f"ratio (compute + apply) / ccdproc median {total / base:7.2f}")
        if args.numina and shutil.which("numina-crmasks"):
            sys.path.insert(0, os.path.dirname(__file__))
            from quality import run_numina
            ccds = [CCDData.read(n) for n in names]
            _, t_num = run_numina(ccds, 3.4, tmp)
            print(f"numina-crmasks (mm_lacosmic)             {t_num:7.2f} s")
            print(f"speed-up crcombine vs numina             {t_num / total:7.1f} x")


def build_time(names, **params):
    from crcombine import CRMaskBuilder
    t0 = time.perf_counter()
    CRMaskBuilder(gain=1, readnoise=3.4, seed=1, **params).build(names)
    return time.perf_counter() - t0


def slope(args):
    with tempfile.TemporaryDirectory() as tmp:
        names = make_files(tmp, args.size, max(args.ns))
        print(f"compute on N x {args.size}^2 (mem_limit='auto'); cost per exposure-Mpx")
        first = None
        for n in args.ns:
            t = build_time(names[:n], mem_limit="auto")
            per = t / (n * args.size ** 2 / 1e6)
            first = first or per
            print(f"N = {n:3d}: {t:7.2f} s  {per * 1e3:6.1f} ms/exposure-Mpx  "
                  f"ratio to N = {args.ns[0]}: {per / first:5.2f}")


def sizes(args):
    with tempfile.TemporaryDirectory() as tmp:
        first = None
        print(f"compute on {args.n} x size^2 (in memory); cost per Mpx")
        for size in args.sizes:
            names = make_files(tmp, size, args.n)
            t = build_time(names)
            per = t / (size ** 2 / 1e6)
            first = first or per
            print(f"{size:5d}^2: {t:7.2f} s  {per:6.3f} s/Mpx  ratio to {args.sizes[0]}^2: "
                  f"{per / first:5.2f}")


def memory(args):
    from crcombine import CRCombiner, CRMaskBuilder
    with tempfile.TemporaryDirectory() as tmp:
        names = make_files(tmp, args.size, args.n)
        for limit in (args.mem_limit, None):
            tracemalloc.start()
            t0 = time.perf_counter()
            builder = CRMaskBuilder(gain=1, readnoise=3.4, seed=1, mem_limit=limit,
                                    nsimulations=args.nsimulations)
            combiner = CRCombiner(names, builder=builder)
            masks = combiner.masks
            combiner.combine("meancr")
            wall = time.perf_counter() - t0
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            label = f"mem_limit={limit:.3g}" if limit else "in memory"
            ratio = f"  peak / limit {peak / limit:5.2f}" if limit else ""
            print(f"{args.n} x {args.size}^2 {label:18s}: {wall:7.2f} s  peak traced "
                  f"{peak / 1e6:7.1f} MB{ratio}  CRMASK px {int(masks.crmask.sum())}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("cli")
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--n", type=int, default=3)
    p.add_argument("--numina", action="store_true")
    p = sub.add_parser("slope")
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--ns", type=int, nargs="+", default=[3, 5, 10, 20])
    p = sub.add_parser("sizes")
    p.add_argument("--n", type=int, default=3)
    p.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    p = sub.add_parser("memory")
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--mem-limit", type=float, default=300e6)
    p.add_argument("--nsimulations", type=int, default=10)
    args = parser.parse_args()
    {"cli": cli, "slope": slope, "sizes": sizes, "memory": memory}[args.what](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
