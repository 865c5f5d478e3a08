# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""``python -m crcombine``: the command line."""

import sys

from .cli import main

sys.exit(main())
