# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""The whole job on the bundled real exposures (``crcombine demo``)."""

import logging
import os

from ._combination.combiner import COMBINATION_METHODS, CRCombiner
from ._combination.products import check_products, write_products
from ._core.files import write_text
from ._detection.builder import CRMaskBuilder
from ._inputs.read import read_exposures
from .datasets import DATASETS, get_dataset

__all__ = []

log = logging.getLogger(__name__)

#: Seed of the demo, so that its results are the same on every run.
DEMO_SEED = 20261121


def run_demo(output_dir, *, overwrite=False):
    """Compute masks and every combination for each bundled data set.

    Parameters
    ----------
    output_dir : str or path-like
        Created if needed; one sub-directory per data set, plus ``summary.txt``.
    overwrite : bool
        Replace existing outputs.  Without it, nothing is computed or written
        when any output already exists.

    Returns
    -------
    str
        The summary text (also written to ``summary.txt``).

    Raises
    ------
    FileExistsError
        An output exists and ``overwrite`` is False.
    """
    output_dir = os.fspath(output_dir)
    summary_path = os.path.join(output_dir, "summary.txt")
    if os.path.exists(summary_path) and not overwrite:
        raise FileExistsError(f"demo output {summary_path!r} exists; use --overwrite to "
                              "replace the demo outputs, or choose another --output-dir.")
    for name in DATASETS:
        check_products(os.path.join(output_dir, name), overwrite=overwrite)
    lines = ["crcombine demo: cosmic-ray masks and combinations of the bundled real exposures",
             ""]
    for name in DATASETS:
        info = get_dataset(name)
        folder = os.path.join(output_dir, name)
        ccds = read_exposures(info["files"], hdu=info["hdu"], hdu_mask=info["hdu_mask"],
                              unit=info["unit"])
        builder = CRMaskBuilder(gain=info["gain"], readnoise=info["readnoise"],
                                bias=info["bias"], seed=DEMO_SEED, align=info["align"])
        log.info("%s: computing masks", name)
        combiner = CRCombiner(ccds, builder=builder)
        write_products(combiner, folder, overwrite=overwrite)
        masks = combiner.masks
        counts = masks.summary()
        lines.append(f"{name}: {info['description']}")
        lines.append(f"  {len(ccds)} exposures of {masks.shape[1]} x {masks.shape[0]} px; "
                     f"flux factors {[round(float(f), 4) for f in masks.flux_factor]}; "
                     f"seed {masks.seed}; "
                     f"over-dispersion kappa {_fmt(masks.parameters.get('nbinom_shape'))}")
        if masks.parameters.get("offsets") is not None:
            lines.append("  aligned by whole-pixel shifts; offsets (dy, dx) "
                         f"{[[round(v, 2) for v in o] for o in masks.parameters['offsets']]}")
        for i, fname in enumerate(combiner.stack.names, start=1):
            pix, feat = counts[f"CRMASK{i}"]
            lines.append(f"  exposure {i} ({fname}): {feat} CRs found, {pix} px masked")
        for key in ("MEDIANCR", "MEANCRT", "MEANCR"):
            pix, feat = counts[key]
            lines.append(f"  {key:8s}: {pix} px flagged in {feat} features")
        lines.append(f"  written to {folder}: crmasks.fits and "
                     f"combined_{{{','.join(COMBINATION_METHODS)}}}.fits")
        lines.append("")
    text = "\n".join(lines)
    write_text(text, summary_path, overwrite=overwrite)
    return text


def _fmt(value):
    return "none (Poisson)" if value is None else f"{value:.4g}"
