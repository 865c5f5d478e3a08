"""ccdproc's own Combiner test-suite, run against crcombine.Combiner.

The upstream module binds ``Combiner`` at import time and ``ccdproc.combine``
looks up the module-global ``Combiner`` at call time, so the swap happens
before the upstream module's tests are imported here (CONVENTIONS.md §2.3 B).
The swap is process-wide for this pytest run, which is acceptable because
the subclass must be a drop-in replacement anyway.
"""

import pytest

pytest.register_assert_rewrite("ccdproc.tests.test_combiner")

import ccdproc  # noqa: E402
import ccdproc.combiner  # noqa: E402
import ccdproc.tests.test_combiner as _upstream  # noqa: E402

from crcombine import Combiner  # noqa: E402

_upstream.Combiner = ccdproc.combiner.Combiner = ccdproc.Combiner = Combiner

from ccdproc.tests.test_combiner import *  # noqa: E402,F401,F403

# ccdproc's own filters for these tests (its pytest configuration is not ours)
pytestmark = [
    pytest.mark.filterwarnings("ignore:All-NaN slice encountered:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:Mean of empty slice:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:Degrees of freedom <= 0:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore::astropy.utils.exceptions.AstropyDeprecationWarning"),
    pytest.mark.filterwarnings("ignore::astropy.utils.exceptions.AstropyUserWarning"),
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
]


def test_swap_took_effect():
    assert _upstream.Combiner is Combiner and ccdproc.combiner.Combiner is Combiner
    n_upstream = len([name for name in dir(_upstream) if name.startswith("test_")])
    n_here = len([name for name in globals() if name.startswith("test_")])
    assert n_upstream >= 50 and n_here == n_upstream + 1
