import pytest

try:
    from pytest_astropy_header.display import PYTEST_HEADER_MODULES, TESTED_VERSIONS
except ImportError:  # pragma: no cover
    PYTEST_HEADER_MODULES, TESTED_VERSIONS = {}, {}


def pytest_configure(config):
    config.option.astropy_header = True
    PYTEST_HEADER_MODULES.clear()
    PYTEST_HEADER_MODULES.update({"numpy": "numpy", "scipy": "scipy", "astropy": "astropy",
                                  "ccdproc": "ccdproc", "photutils": "photutils",
                                  "astroscrappy": "astroscrappy"})
    from crcombine import __version__
    TESTED_VERSIONS["crcombine"] = __version__


@pytest.fixture
def stack3():
    from helpers import make_stack
    return make_stack(seed=11)
