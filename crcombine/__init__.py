# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
crcombine: cosmic-ray masks and CR-aware combination of equivalent CCD exposures.

The Median-Minimum (M.M.Cosmic) method finds pixels whose median over three or
more equivalent exposures is still contaminated by cosmic rays (CRs), and builds
per-exposure masks so that a lower-noise mean can be taken without them.

The public names are imported on first use (PEP 562), so that ``import
crcombine`` and the command line's ``--help`` start quickly.
"""

import importlib
import logging

try:
    from ._version import version as __version__
except ImportError:  # pragma: no cover - only without an installed package
    __version__ = ""

# A library logs; the application (or our command line) decides what is shown.
logging.getLogger(__name__).addHandler(logging.NullHandler())

#: public name -> private module holding it
_PUBLIC = {
    # inputs
    "read_exposures": "._inputs.read",
    "make_mask": "._inputs.premask",
    "align_exposures": "._inputs.align",
    "blot_mask": "._inputs.align",
    "measure_offsets": "._inputs.align",
    "union_grid": "._inputs.align",
    # detection
    "CRMaskBuilder": "._detection.builder",
    "CRMasks": "._detection.masks",
    "DetectionBoundary": "._detection.boundary",
    # combination
    "COMBINATION_METHODS": "._combination.combiner",
    "CRCombiner": "._combination.combiner",
    "combine": "._combination.combiner",
    "Combiner": "._combination.ccdproc_combiner",
}

__all__ = sorted(_PUBLIC) + ["__version__"]


def __getattr__(name):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
