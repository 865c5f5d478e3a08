# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
crcombine: cosmic-ray masks and CR-aware combination of equivalent CCD exposures.

The Median-Minimum (M.M.Cosmic) method finds pixels whose median over three or
more equivalent exposures is still contaminated by cosmic rays (CRs), and builds
per-exposure masks so that a lower-noise mean can be taken without them.
"""

import logging

try:
    from ._version import version as __version__
except ImportError:  # pragma: no cover - only without an installed package
    __version__ = ""

from ._boundary import DetectionBoundary
from ._ccdproc import Combiner
from ._combine import COMBINATION_METHODS, CRCombiner, combine
from ._masks import CRMaskBuilder, CRMasks
from ._stack import read_exposures

# A library logs; the application (or our command line) decides what is shown.
logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "COMBINATION_METHODS",
    "CRCombiner",
    "CRMaskBuilder",
    "CRMasks",
    "Combiner",
    "DetectionBoundary",
    "combine",
    "read_exposures",
    "__version__",
]
