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

#: Child-script lines that make every FITS write stall half-way, after saying "writing".
STALL = textwrap.dedent("""
    import time
    from astropy.io import fits

    def stalled_writeto(self, fileobj, *args, **kwargs):
        fileobj.write(b"SIMPLE  =                    T" + b" " * 50)   # half a header
        fileobj.flush()
        print("writing", flush=True)
        time.sleep(120)

    fits.HDUList.writeto = stalled_writeto
""")

CHILD = STALL + textwrap.dedent("""
    import sys
    import numpy as np
    from crcombine.io import write_atomic

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


STALLED_CLI = STALL + textwrap.dedent("""
    import signal, sys
    from crcombine.cli import main

    # a shell's background job starts with SIGINT ignored; a terminal's Ctrl-C does not
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main(["compute", *sys.argv[2:], "--gain", "1", "--rnoise", "5", "--unit",
                   "electron", "--output_masks", sys.argv[1]]))
""")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("sig, code, word", [(signal.SIGINT, 130, "interrupted"),
                                             (signal.SIGTERM, 143, "terminated")])
def test_interrupted_command_exits_cleanly(tmp_path, sig, code, word):
    """Ctrl-C (130) or SIGTERM (143): one line, no output, no temporary file."""
    stack = make_stack(shape=(48, 48), seed=3)
    names = []
    for i, ccd in enumerate(stack.ccds()):
        names.append(str(tmp_path / f"e{i}.fits"))
        ccd.write(names[-1])
    target = tmp_path / "crmasks.fits"
    with subprocess.Popen([sys.executable, "-c", STALLED_CLI, str(target), *names],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout.readline().strip() == "writing"
            os.kill(proc.pid, sig)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:  # pragma: no cover
                proc.kill()
                proc.communicate()
    assert proc.returncode == code
    assert len(err.strip().splitlines()) == 1 and word in err
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(n) for n in names)


def test_temporary_files_of_dead_processes_are_swept(tmp_path):
    from crcombine.io import write_atomic
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    stale = tmp_path / f".crcombine-{dead}-abc.tmp"
    live = tmp_path / f".crcombine-{os.getpid()}-def.tmp"
    other = tmp_path / ".crcombine-notes.txt"
    for p in (stale, live, other):
        p.write_text("x")
    write_atomic(fits.HDUList([fits.PrimaryHDU(np.zeros((2, 2)))]), tmp_path / "out.fits")
    assert not stale.exists() and live.exists() and other.exists()
    assert (tmp_path / "out.fits").exists()
