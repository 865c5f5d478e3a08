"""MEDIANCR features on real raw frames: darks (hot pixels, no light) and long-slit science.

The SBIG ST-402ME + DADOS set (``sbig_dados_nebula_longslit_1200s``, raw ADU:
gain 1.49 e-/ADU, read noise 11.4 ADU, bias about 1093 ADU; see its README):
on darks every MEDIANCR feature is false (hot pixels, low values), on the
science frames 0-2 (which agree to a row) they should be coincident hits.  For
each set it prints the MEDIANCR features, MEANCRT and CRMASK pixels, and the
exposures' values at the first features.  Usage::

    python benchmarks/real_sets.py [--data ../shared/data] [--option name=value ...]
"""

import argparse
import glob
import os

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData

from crcombine import CRMaskBuilder

SETS = {"darks 1200 s": "L2-dark-neon-1200.*.DARK.FIT",
        "darks 240 s": "L2-dark-hg-240.*.DARK.FIT",
        "science 1200 s, frames 0-2": "L2-sci-neon-1200.0000000[0-2].FIT"}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.path.join("..", "shared", "data"))
    parser.add_argument("--option", nargs="*", default=[])
    args = parser.parse_args()
    from _options import parse_options
    extra = parse_options(args.option)
    folder = os.path.join(args.data, "sbig_dados_nebula_longslit_1200s")
    for name, pattern in SETS.items():
        files = sorted(glob.glob(os.path.join(folder, pattern)))
        ccds = [CCDData(fits.getdata(f).astype(np.float32), unit="adu") for f in files]
        masks = CRMaskBuilder(gain=1.49, readnoise=11.4 * u.adu, bias=1093, **extra).build(ccds)
        data = np.stack([c.data for c in ccds]) - 1093
        print(f"{name} ({len(files)} frames): MEDIANCR {len(masks.features)} features, "
              f"{int(masks.mediancr.sum())} px; MEANCRT {int(masks.meancrt.sum())} px; CRMASK "
              f"{masks.crmask.sum(axis=(1, 2)).tolist()} px")
        for f in masks.features[:5]:
            y, x = int(round(f["ycentroid"])), int(round(f["xcentroid"]))
            around = np.median(data[:, max(y - 2, 0):y + 3, max(x - 2, 0):x + 3])
            print(f"    (y {y}, x {x}): {np.round(data[:, y, x]).tolist()} ADU above bias, "
                  f"surroundings {around:.0f}")


if __name__ == "__main__":
    main()
