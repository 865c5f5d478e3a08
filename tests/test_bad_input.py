"""Bad input: the right exception, a message naming the argument, nothing written,
inputs unchanged (on disk and in memory)."""

import os
from pathlib import Path

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData

from crcombine import CRCombiner, CRMaskBuilder, combine, read_exposures
from helpers import checksum_files


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    names = []
    for i in range(3):
        name = str(tmp_path / f"e{i}.fits")
        fits.PrimaryHDU(rng.normal(100, 5, (32, 32)).astype(np.float32)).writeto(name)
        names.append(name)
    return names


def _ccds(n=3, shape=(32, 32), unit="electron"):
    rng = np.random.default_rng(1)
    return [CCDData(rng.normal(100, 5, shape), unit=unit) for _ in range(n)]


CASES = [
    ("fewer than 3", lambda c: c[:2], {}, ValueError, "at least 3"),
    ("shape differs", lambda c: c[:2] + _ccds(1, (16, 32)), {}, ValueError, "same shape"),
    ("unit differs", lambda c: c[:2] + _ccds(1, unit="adu"), {}, u.UnitsError, "same unit"),
    ("not 2-D", lambda c: [CCDData(np.ones((2, 3, 3)), unit="electron")] * 3, {}, ValueError,
     "2-D"),
    ("all NaN frame", lambda c: c[:2] + [CCDData(np.full((32, 32), np.nan), unit="electron")],
     {}, ValueError, "no valid pixel"),
    ("gain zero", None, {"gain": 0}, ValueError, "gain must be > 0"),
    ("gain negative", None, {"gain": -2}, ValueError, "gain must be > 0"),
    ("gain NaN", None, {"gain": np.nan}, ValueError, "gain must be finite"),
    ("gain for electrons", None, {"gain": 2.0}, ValueError, "gain must be 1"),
    ("gain wrong unit", None, {"gain": 2 * u.m}, u.UnitsError, "gain"),
    ("gain wrong shape", None, {"gain": np.ones((3, 3))}, ValueError, "gain must be a scalar"),
    ("readnoise negative", None, {"readnoise": -1}, ValueError, "readnoise must be >= 0"),
    ("readnoise wrong shape", None, {"readnoise": np.ones((4, 4))}, ValueError,
     "readnoise must be a scalar"),
    ("flux factor count", None, {"flux_factor": [1, 1]}, ValueError, "flux_factor has 2"),
    ("flux factor zero", None, {"flux_factor": [1, 0, 1]}, ValueError, "flux_factor values"),
    ("flux factor negative", None, {"flux_factor": -1}, ValueError, "flux_factor values"),
    ("flux factor word", None, {"flux_factor": "median"}, ValueError, "flux_factor must be"),
    ("unknown option", None, {"knots_splfit": 3}, TypeError, "unknown parameter"),
    ("nsimulations zero", None, {"nsimulations": 0}, ValueError, "nsimulations must be"),
    ("dilation float", None, {"dilation": 1.5}, TypeError, "dilation must be an integer"),
    ("boundary kind", None, {"boundary": "linear"}, ValueError, "boundary must be one of"),
    ("piecewise without points", None, {"boundary": "piecewise"}, ValueError,
     "piecewise_points"),
    ("cr_coincidences too big", None, {"cr_coincidences": 3}, ValueError,
     "cr_coincidences must be smaller"),
    ("threshold negative", None, {"threshold": -1}, ValueError, "threshold must be >= 0"),
]


@pytest.mark.parametrize("label, change, params, exc, message", CASES,
                         ids=[c[0] for c in CASES])
def test_api_bad_input(tmp_path, monkeypatch, label, change, params, exc, message):
    monkeypatch.chdir(tmp_path)
    ccds = _ccds()
    if change is not None:
        ccds = change(ccds)
    before = [c.data.copy() for c in ccds]
    kwargs = {"gain": 1, "readnoise": 5, "seed": 1}
    kwargs.update(params)
    with pytest.raises(exc, match=message):
        combine(ccds, "meancr", output_file="out.fits", **kwargs)
    assert os.listdir(tmp_path) == []
    for c, b in zip(ccds, before):
        np.testing.assert_array_equal(c.data, b)


def test_unknown_method():
    with pytest.raises(ValueError, match="method must be one of median/mean/min/mediancr"):
        combine(_ccds(), "average", gain=1, readnoise=5)
    comb = CRCombiner(_ccds(), builder=CRMaskBuilder(gain=1, readnoise=5))
    with pytest.raises(ValueError, match="method must be one of"):
        comb.combine("sigmaclip")


def test_files_missing_unreadable_or_without_extension(tmp_path, files):
    sums = checksum_files(files)
    with pytest.raises(FileNotFoundError, match="missing.fits"):
        read_exposures(files[:2] + [str(tmp_path / "missing.fits")], unit="adu")
    with pytest.raises(ValueError, match="no extension 'SCI'"):
        read_exposures(files, hdu="SCI", unit="adu")
    with pytest.raises(ValueError, match="no BUNIT"):
        read_exposures(files)
    text = tmp_path / "notfits.fits"
    text.write_text("hello")
    with pytest.raises(OSError, match="cannot be read as FITS"):
        read_exposures(files[:2] + [str(text)], unit="adu")
    truncated = tmp_path / "truncated.fits"
    truncated.write_bytes(Path(files[0]).read_bytes()[:3000])
    with pytest.raises(OSError):
        read_exposures(files[:2] + [str(truncated)], unit="adu")
    assert checksum_files(files) == sums


def test_inputs_not_a_list():
    with pytest.raises(TypeError, match="inputs must be a list"):
        read_exposures("e0.fits")
    with pytest.raises(TypeError, match="item 1 is a int"):
        read_exposures([_ccds(1)[0], 5])


def test_builder_and_masks_required():
    with pytest.raises(TypeError, match="builder="):
        CRCombiner(_ccds())


def test_image_file_collection_input(files):
    from ccdproc import ImageFileCollection
    ifc = ImageFileCollection(os.path.dirname(files[0]))
    ccds = read_exposures(ifc, unit="adu")
    assert len(ccds) == 3 and ccds[0].unit == u.adu
