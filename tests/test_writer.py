"""Outputs: regular files only, the umask, the replaced file's mode, no race, no leftovers."""

import os
import stat
import sys

import numpy as np
import pytest
from astropy.io import fits

from crcombine.cli import main
from crcombine.io import write_atomic

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX modes and FIFOs")


def _hdul():
    return fits.HDUList([fits.PrimaryHDU(np.arange(16.0).reshape(4, 4))])


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask():
    def set_to(value):
        os.umask(value)
    old = os.umask(0o022)
    yield set_to
    os.umask(old)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_new_files_follow_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    path = tmp_path / "out.fits"
    write_atomic(_hdul(), path)
    reference = tmp_path / "astropy.fits"
    _hdul().writeto(reference)
    assert _mode(path) == expected == _mode(reference)


def test_replaced_file_keeps_its_mode(tmp_path, umask):
    path = tmp_path / "out.fits"
    _hdul().writeto(path)
    os.chmod(path, 0o640)
    write_atomic(_hdul(), path, overwrite=True)
    assert _mode(path) == 0o640
    assert fits.getdata(path).shape == (4, 4)


def test_special_files_are_never_replaced(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="output .*pipe.* is not a regular file"):
        write_atomic(_hdul(), fifo, overwrite=True)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["pipe"]


def test_a_directory_is_refused_before_any_work(tmp_path, capsys):
    target = tmp_path / "adir"
    target.mkdir()
    with pytest.raises(IsADirectoryError, match="is a directory"):
        write_atomic(_hdul(), target, overwrite=True)
    # the command line says so before reading any input (the inputs do not exist)
    assert main(["compute", "missing1.fits", "missing2.fits", "--gain", "1", "--rnoise", "1",
                 "--output_masks", str(target), "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert "--output_masks" in err and "is a directory" in err


def test_a_file_created_meanwhile_is_not_replaced(tmp_path, monkeypatch):
    """Without overwrite the final step is exclusive: a concurrent writer's file stays."""
    path = tmp_path / "out.fits"
    real = fits.HDUList.writeto

    def racing_writeto(self, fileobj, *args, **kwargs):
        path.write_text("the other writer's file")
        return real(self, fileobj, *args, **kwargs)

    monkeypatch.setattr(fits.HDUList, "writeto", racing_writeto)
    with pytest.raises(FileExistsError, match="created by another program"):
        write_atomic(_hdul(), path)
    assert path.read_text() == "the other writer's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.fits"]   # no temporary file


def test_no_temporary_file_is_left_after_a_failure(tmp_path, monkeypatch):
    def failing_writeto(self, fileobj, *args, **kwargs):
        fileobj.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fits.HDUList, "writeto", failing_writeto)
    with pytest.raises(OSError, match="No space left"):
        write_atomic(_hdul(), tmp_path / "out.fits")
    assert list(tmp_path.iterdir()) == []


def test_exposure_map_holds_more_than_255_exposures(tmp_path):
    import warnings

    from astropy.nddata import CCDData

    from crcombine import CRCombiner, CRMaskBuilder
    from crcombine.io import write_combined
    rng = np.random.default_rng(3)
    ccds = [CCDData(rng.normal(100, 3, (6, 8)).astype(np.float32), unit="electron",
                    meta={"BLANK": -32768, "OBJECT": "flat"}) for _ in range(260)]
    result = CRCombiner(ccds, builder=CRMaskBuilder(gain=1, readnoise=3)).combine("mean")
    assert np.all(result.flags == 260) and not result.mask.any()
    assert "BLANK" not in result.meta and result.meta["OBJECT"] == "flat"
    path = tmp_path / "c.fits"
    with warnings.catch_warnings():
        warnings.simplefilter("error")      # astropy warns on BLANK in a float image
        write_combined(result, path)
        with fits.open(path) as hdul:
            assert np.all(hdul["EXPMAP"].data == 260)
            assert "BLANK" not in hdul[0].header
            hdul[0].data.sum()
