"""Interrupted and failed writes never leave a partial file under the final name."""

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData

from crcombine import CRCombiner, CRMaskBuilder
from helpers import make_stack

CHILD = textwrap.dedent("""
    import sys, time
    import numpy as np
    from astropy.io import fits
    from crcombine.io import write_atomic

    def stalled_writeto(self, fileobj, *args, **kwargs):
        fileobj.write(b"SIMPLE  =                    T" + b" " * 50)   # half a header
        fileobj.flush()
        print("writing", flush=True)
        time.sleep(120)

    fits.HDUList.writeto = stalled_writeto
    write_atomic(fits.HDUList([fits.PrimaryHDU(np.ones((8, 8)))]), sys.argv[1], overwrite=True)
""")


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_killed_while_writing_leaves_the_old_file(tmp_path):
    target = tmp_path / "crmasks.fits"
    fits.PrimaryHDU(np.zeros((4, 4))).writeto(target)
    before = target.read_bytes()
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(target)], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:  # pragma: no cover
            proc.kill()
        proc.stdout.close()
    assert target.read_bytes() == before
    np.testing.assert_array_equal(fits.getdata(target), np.zeros((4, 4)))
    leftovers = [p for p in os.listdir(tmp_path) if p != "crmasks.fits"]
    assert all(p.startswith(".crcombine-") for p in leftovers)  # never under a final name


def test_failure_among_several_outputs_keeps_the_earlier_ones(tmp_path, monkeypatch):
    from crcombine._combination import products as _products
    stack = make_stack(shape=(32, 32), seed=1)
    comb = CRCombiner(stack.ccds(), builder=CRMaskBuilder(gain=1, readnoise=5, seed=1))
    calls = []
    real = _products.write_combined

    def failing(ccd, path, **kwargs):
        calls.append(path)
        if len(calls) == 3:
            raise OSError("No space left on device")
        real(ccd, path, **kwargs)

    monkeypatch.setattr(_products, "write_combined", failing)
    with pytest.raises(OSError, match="No space"):
        _products.write_products(comb, tmp_path)
    written = sorted(p for p in os.listdir(tmp_path) if not p.startswith("."))
    assert written == ["combined_mean.fits", "combined_median.fits", "crmasks.fits"]
    for name in written:
        with fits.open(tmp_path / name) as h:
            h.verify("exception")
    assert CCDData.read(tmp_path / "combined_mean.fits").meta["CRMETHOD"] == "mean"
