"""A mask file is checked on read: each keyword's type and range, the file and keyword named."""

import hashlib

import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData

from crcombine import CRMaskBuilder, CRMasks
from crcombine.cli import main


@pytest.fixture(scope="module")
def good_file(tmp_path_factory):
    rng = np.random.default_rng(2)
    ccds = [CCDData(rng.normal(300, 17, (64, 64)), unit="electron") for _ in range(3)]
    ccds[0].data[5, 5] += 4000
    path = tmp_path_factory.mktemp("masks") / "crmasks.fits"
    CRMaskBuilder(gain=1, readnoise=5, psf_kernel_size=3).build(ccds).write(path)
    return path, ccds


def _corrupt(good, tmp_path, key, value):
    path = tmp_path / "bad.fits"
    with fits.open(good) as hdul:
        if value is None:
            del hdul[0].header[key]
        else:
            hdul[0].header[key] = value
        hdul.writeto(path)
    return path


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


CASES = [
    ("FLUXF2", 0.0, "FLUXF2 = 0.0 is not a finite number > 0"),
    ("FLUXF1", -1.5, "FLUXF1 = -1.5 is not a finite number > 0"),
    ("FLUXF3", "abc", "FLUXF3 = 'abc' is not a finite number"),
    ("EFLUXF1", -0.1, "EFLUXF1 = -0.1 is not a finite number >= 0"),
    ("GAIN", -2.0, "GAIN = -2.0 is not a finite number > 0"),
    ("GAIN", "two", "GAIN = 'two' is not a finite number"),
    ("RNOISE", -1.0, "RNOISE = -1.0 is not a finite number >= 0"),
    ("NEXPOSE", "garbage", "NEXPOSE = 'garbage' is not an integer"),
    ("NEXPOSE", 2.5, "NEXPOSE = 2.5 is not an integer"),
    ("NCOINC", 3, "NCOINC = 3 is not an integer >= 1 and <= 2"),
    ("DILATION", -1, "DILATION = -1 is not an integer >= 0"),
    ("SEED", "not-a-seed", "SEED = 'not-a-seed' is not an integer"),
    ("PSFKERN", "[[1, 2", "PSFKERN = '[[1, 2' is not valid JSON"),
    ("PSFKERN", "[[1, 2, 3]]", "PSFKERN = '<(1, 3)>' is not 3 kernels"),
    ("OFFSETS", "{oops", "OFFSETS = '{oops' is not valid JSON"),
]


@pytest.mark.parametrize("key, value, message", CASES, ids=[f"{c[0]}={c[1]!r}" for c in CASES])
def test_bad_keyword_is_named(good_file, tmp_path, key, value, message):
    path = _corrupt(good_file[0], tmp_path, key, value)
    digest = _digest(path)
    with pytest.raises(ValueError) as info:
        CRMasks.read(path)
    text = str(info.value)
    assert str(path) in text and message in text and "recompute the masks" in text
    assert _digest(path) == digest                       # the file is not touched


def test_bad_keyword_on_the_command_line_is_one_line(good_file, tmp_path, capsys):
    path = _corrupt(good_file[0], tmp_path, "FLUXF2", 0.0)
    names = []
    for i, c in enumerate(good_file[1]):
        names.append(str(tmp_path / f"e{i}.fits"))
        c.write(names[-1])
    out = tmp_path / "combined.fits"
    assert main(["apply", *names, "--input_mask", str(path), "--unit", "electron",
                 "--output_combined", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "FLUXF2" in err and "bad.fits" in err
    assert not out.exists()


@pytest.mark.parametrize("cut", [0.3, 0.7, 0.95])
def test_truncated_mask_file_is_one_named_error(good_file, tmp_path, cut):
    data = good_file[0].read_bytes()
    path = tmp_path / "truncated.fits"
    path.write_bytes(data[:int(len(data) * cut)])
    with pytest.raises((OSError, ValueError)) as info:
        CRMasks.read(path)
    text = str(info.value)
    assert "truncated.fits" in text and len(text.splitlines()) == 1
    assert "recompute" in text


def test_mask_extensions_of_different_shapes(good_file, tmp_path):
    path = tmp_path / "shapes.fits"
    with fits.open(good_file[0]) as hdul:
        hdul["CRMASK2"] = fits.ImageHDU(np.zeros((10, 10), np.uint8), name="CRMASK2")
        hdul.writeto(path)
    with pytest.raises(ValueError, match="not images of one 2-D shape"):
        CRMasks.read(path)


def test_a_good_file_still_reads(good_file):
    masks = CRMasks.read(good_file[0])
    assert masks.n_exposures == 3 and masks.crmask[0, 5, 5]
