"""SHA-256 fingerprints of the masks and combinations, to show a refactoring changed nothing.

Runs the demo's data sets with the demo's parameters and the star field of
``benchmarks/quality.py --size 1024`` (and, with ``--more``, the fibre scene,
a tiled run under ``mem_limit``, ``crmask_method='mm'``, ``false_alarm`` and
the auxiliary L.A.Cosmic), and prints one line per array: the SHA-256 of its
bytes (dtype and shape included).  Run it before and after a change and
compare the outputs with ``diff``::

    python benchmarks/fingerprint.py [--more] > before.txt
    ...
    python benchmarks/fingerprint.py [--more] > after.txt && diff before.txt after.txt

The header cards that differ on every run (dates, UUIDs) are not part of it.
"""

import argparse
import hashlib
import sys

import numpy as np


def digest(array):
    array = np.ascontiguousarray(array)
    h = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    h.update(array.tobytes())
    return h.hexdigest()[:16]


def fingerprint(name, combiner, methods):
    masks = combiner.masks
    lines = [f"{name} mediancr {digest(masks.mediancr)}",
             f"{name} meancrt {digest(masks.meancrt)}",
             f"{name} crmask {digest(masks.crmask)}",
             f"{name} meancr {digest(masks.meancr)}",
             f"{name} flux_factor {digest(masks.flux_factor)}"]
    for key in ("mm_scale", "nbinom_shape", "psf_kernels", "psf_allowance"):
        value = masks.parameters.get(key)
        if value is not None:
            lines.append(f"{name} {key} {digest(np.asarray(value, dtype=float))}")
    for method in methods:
        result = combiner.combine(method)
        lines.append(f"{name} {method} data {digest(result.data)}")
        lines.append(f"{name} {method} uncertainty {digest(result.uncertainty.array)}")
        lines.append(f"{name} {method} mask {digest(result.mask)}")
        lines.append(f"{name} {method} flags {digest(result.flags)}")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--more", action="store_true", help="also other scenes and options")
    args = parser.parse_args()

    from crcombine import COMBINATION_METHODS, CRCombiner, CRMaskBuilder, read_exposures
    from crcombine._demo import DEMO_SEED
    from crcombine.datasets import DATASETS, get_dataset, make_cr_stack

    lines = []
    for name in DATASETS:
        info = get_dataset(name)
        ccds = read_exposures(info["files"], hdu=info["hdu"], hdu_mask=info["hdu_mask"],
                              unit=info["unit"])
        builder = CRMaskBuilder(gain=info["gain"], readnoise=info["readnoise"],
                                bias=info["bias"], seed=DEMO_SEED, align=info["align"])
        lines += fingerprint(name, CRCombiner(ccds, builder=builder), COMBINATION_METHODS)

    ccds, truth = make_cr_stack((1024, 1024), 3, scene="stars", seed=1)
    rn = truth["readnoise"]
    builder = CRMaskBuilder(gain=1, readnoise=rn, seed=1)
    lines += fingerprint("quality-1024", CRCombiner(ccds, builder=builder), COMBINATION_METHODS)
    if args.more:
        small, truth = make_cr_stack((384, 384), 3, scene="fibres", seed=2)
        rn = truth["readnoise"]
        cases = {"fibres": {}, "tiled": {"mem_limit": 7e7, "threads": 2},
                 "mm": {"crmask_method": "mm"}, "false_alarm": {"false_alarm": 20},
                 "lacosmic": {"lacosmic": True}, "flux_auto": {"flux_factor": "auto"},
                 "no_psf": {"psf_matching": False}}
        for case, options in cases.items():
            builder = CRMaskBuilder(gain=1, readnoise=rn, seed=3, **options)
            lines += fingerprint(case, CRCombiner(small, builder=builder), COMBINATION_METHODS)
        ccds4, truth4 = make_cr_stack((256, 256), 5, scene="stars", seed=4)
        builder = CRMaskBuilder(gain=1, readnoise=truth4["readnoise"], seed=4)
        lines += fingerprint("n5", CRCombiner(ccds4, builder=builder), COMBINATION_METHODS)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
