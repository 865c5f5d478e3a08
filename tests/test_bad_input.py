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
    ("fewer than 2", lambda c: c[:1], {}, ValueError, "at least 2"),
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
    ("mm_scale negative", None, {"mm_scale": -0.5}, ValueError, "mm_scale must be >= 0"),
    ("mm_scale word", None, {"mm_scale": "large"}, ValueError, "mm_scale must be 'auto'"),
    ("grid word", None, {"grid": "all"}, ValueError, "grid must be one of reference/union"),
    ("grid without align", None, {"grid": "union"}, ValueError, "give align= with it"),
    ("psf_matching word", None, {"psf_matching": "yes"}, TypeError,
     "psf_matching must be True or False"),
    ("psf_kernel_size even", None, {"psf_kernel_size": 4}, ValueError,
     "psf_kernel_size must be an odd integer from 3 to 15"),
    ("regions without auto", None, {"flux_factor_regions": [[1, 10, 1, 10]]}, ValueError,
     "flux_factor_regions is used only with flux_factor='auto'"),
    ("regions reversed", None, {"flux_factor": "auto", "flux_factor_regions": [[10, 1, 1, 10]]},
     ValueError, "flux_factor_regions must be a list of regions"),
    ("regions shape", None, {"flux_factor": "auto", "flux_factor_regions": [[1, 10, 1]]},
     ValueError, "flux_factor_regions must be a list of regions"),
    ("psf_kernel_size small", None, {"psf_kernel_size": 1}, ValueError,
     "psf_kernel_size must be an integer >= 3"),
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


# ---------------------------------------------------------------------------
# The same through the command line: exit code, one line on stderr, nothing
# written, inputs byte-identical.

def _write(path, data, **header):
    hdr = fits.Header(header)
    fits.PrimaryHDU(data, header=hdr).writeto(path)
    return str(path)


@pytest.fixture
def cli_files(tmp_path):
    rng = np.random.default_rng(3)
    d = tmp_path / "in"
    d.mkdir()
    good = [_write(d / f"g{i}.fits", rng.normal(1000, 5, (40, 40)).astype(np.float32))
            for i in range(3)]
    other = {
        "small": _write(d / "small.fits", np.ones((20, 40), np.float32)),
        "electron": _write(d / "el.fits", np.ones((40, 40), np.float32), BUNIT="electron"),
        "nan": _write(d / "nan.fits", np.full((40, 40), np.nan, np.float32)),
        "notfits": str(d / "text.fits"),
        "truncated": str(d / "trunc.fits"),
        "directory": str(d / "dir.fits"),
    }
    Path(other["notfits"]).write_text("not a FITS file\n")
    Path(other["truncated"]).write_bytes(Path(good[0]).read_bytes()[:4000])
    os.mkdir(other["directory"])
    from crcombine import CRMaskBuilder
    masks = CRMaskBuilder(gain=1, readnoise=5, seed=1).build(
        [CCDData(fits.getdata(g), unit="adu") for g in good])
    masks.write(d / "masks.fits")
    small = CRMaskBuilder(gain=1, readnoise=5, seed=1).build(
        [CCDData(rng.normal(0, 1, (20, 40)), unit="adu") for _ in range(3)])
    small.write(d / "small_masks.fits")
    four = CRMaskBuilder(gain=1, readnoise=5, seed=1).build(
        [CCDData(rng.normal(0, 1, (40, 40)), unit="adu") for _ in range(4)])
    four.write(d / "four_masks.fits")
    return tmp_path, good, other, d


G = ["{g0}", "{g1}", "{g2}"]
DET = ["--gain", "2", "--rnoise", "2"]
CLI_CASES = [
    ("fewer than 2", ["compute", "{g0}"] + DET, 1, "at least 2"),
    ("shape differs", ["compute", "{g0}", "{g1}", "{small}"] + DET, 1, "same shape"),
    ("unit differs", ["compute", "{g0}", "{g1}", "{electron}"] + DET, 1, "same unit"),
    ("all NaN frame", ["compute", "{g0}", "{g1}", "{nan}"] + DET, 1, "no valid pixel"),
    ("gain zero", ["compute"] + G + ["--gain", "0", "--rnoise", "2"], 1, "gain must be > 0"),
    ("gain negative", ["compute"] + G + ["--gain", "-1", "--rnoise", "2"], 1, "gain must be"),
    ("gain nan", ["compute"] + G + ["--gain", "nan", "--rnoise", "2"], 1, "gain must be finite"),
    ("gain not a number", ["compute"] + G + ["--gain", "two", "--rnoise", "2"], 2, "--gain"),
    ("readnoise negative", ["compute"] + G + ["--gain", "2", "--rnoise", "-2"], 1,
     "readnoise must be >= 0"),
    ("flux factor count", ["compute"] + G + DET + ["--flux_factor", "[1,1]"], 1,
     "flux_factor has 2"),
    ("flux factor zero", ["compute"] + G + DET + ["--flux_factor", "[1,0,1]"], 1,
     "flux_factor values"),
    ("flux factor negative", ["compute"] + G + DET + ["--flux_factor", "-1"], 1,
     "flux_factor values"),
    ("unknown option", ["compute"] + G + DET + ["--knots", "3"], 2, "unrecognized arguments"),
    ("unknown method", ["apply"] + G + ["--input_mask", "{d}/masks.fits", "--combination",
                                        "average"], 2, "unknown combination average"),
    ("unknown sub-command", ["combine"] + G, 2, "invalid choice"),
    ("missing file", ["compute", "{g0}", "{g1}", "{d}/missing.fits"] + DET, 1, "does not exist"),
    ("unreadable file", ["compute", "{g0}", "{g1}", "{directory}"] + DET, 1, "dir.fits"),
    ("truncated file", ["compute", "{g0}", "{g1}", "{truncated}"] + DET, 1, "trunc"),
    ("non-FITS file", ["compute", "{g0}", "{g1}", "{notfits}"] + DET, 1, "text.fits"),
    ("missing extension", ["compute"] + G + DET + ["--extname", "SCI"], 1, "no extension 'SCI'"),
    ("mask shape differs", ["apply"] + G + ["--input_mask", "{d}/small_masks.fits"], 1,
     "masks are for 3 exposures of shape (20, 40)"),
    ("mask count differs", ["apply"] + G + ["--input_mask", "{d}/four_masks.fits"], 1,
     "masks are for 4 exposures"),
    ("mask file missing", ["apply"] + G + ["--input_mask", "{d}/none.fits"], 1,
     "does not exist"),
    ("output directory missing", ["compute"] + G + DET + ["--output_masks", "{t}/no/m.fits"],
     1, "does not exist"),
    ("output exists", ["compute"] + G + DET + ["--output_masks", "{d}/masks.fits"], 1,
     "--overwrite"),
    ("no inputs", ["compute"] + DET, 1, "no input exposures"),
    ("bad filter", ["compute", "{d}", "--filter", "OBJECT"] + DET, 1, "KEYWORD=VALUE"),
    ("yaml missing", ["run", "{d}/none.yaml"], 1, "does not exist"),
]


@pytest.mark.parametrize("label, argv, code, message", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input(cli_files, capsys, monkeypatch, label, argv, code, message):
    from crcombine.cli import main
    tmp, good, other, d = cli_files
    monkeypatch.chdir(tmp)
    names = {**{f"g{i}": g for i, g in enumerate(good)}, **other, "d": str(d), "t": str(tmp)}
    before_files = sorted(str(p) for p in tmp.rglob("*"))
    sums = checksum_files([p for p in before_files if os.path.isfile(p)])
    args = [a.format(**names) for a in argv]
    if code == 2:
        with pytest.raises(SystemExit) as exc:
            main(args)
        assert exc.value.code == 2
    else:
        assert main(args) == code
    err = capsys.readouterr().err.strip()
    assert message in err, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert sorted(str(p) for p in tmp.rglob("*")) == before_files      # nothing written
    assert checksum_files(list(sums)) == sums                           # inputs unchanged


def test_cli_read_only_output_directory(cli_files, capsys, monkeypatch):
    """Root can write anywhere, so the read-only directory is simulated."""
    from crcombine.cli import main
    tmp, good, _, d = cli_files
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(tmp / "ro")
                        else real_access(p, mode))
    (tmp / "ro").mkdir()
    assert main(["compute", *good, *DET, "--output_masks", str(tmp / "ro" / "m.fits")]) == 1
    assert "not writable" in capsys.readouterr().err and os.listdir(tmp / "ro") == []


@pytest.mark.parametrize("kind", ["int16", "big-endian", "mixed dtypes"])
def test_accepted_unusual_inputs(kind):
    """(Constant exposures, accepted before #20, are refused: see
    `test_dead_or_blank_exposure_is_refused`.)"""
    rng = np.random.default_rng(5)
    base = rng.normal(1000, 10, (3, 32, 32))
    if kind == "int16":
        arrays = [b.astype(np.int16) for b in base]
    elif kind == "big-endian":
        arrays = [b.astype(">f4") for b in base]
    else:
        arrays = [base[0].astype(np.int32), base[1].astype(np.float32), base[2]]
    ccds = [CCDData(a, unit="adu") for a in arrays]
    before = [c.data.copy() for c in ccds]
    r = combine(ccds, "meancr", gain=2, readnoise=5, bias=900, seed=1)
    assert np.isfinite(r.data).all() and r.data.dtype == np.float32
    mean = combine(ccds, "mean", gain=2, readnoise=5, bias=900, seed=1)
    np.testing.assert_allclose(mean.data, np.mean([a.astype(float) for a in arrays], axis=0),
                               rtol=1e-5)
    for c, b in zip(ccds, before):
        np.testing.assert_array_equal(c.data, b)
        assert c.data.dtype == b.dtype


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("value", [0.0, 917.0])
def test_dead_or_blank_exposure_is_refused(n, value):
    """An exposure with one value everywhere is named, and refused before any mask."""
    rng = np.random.default_rng(8)
    ccds = [CCDData(rng.normal(200, 10, (48, 48)), unit="electron") for _ in range(n)]
    ccds.insert(1, CCDData(np.full((48, 48), value), unit="electron"))
    before = [c.data.copy() for c in ccds]
    with pytest.raises(ValueError, match=r"exposure 1 has the value .* dead or blank frame.*"
                                         r"remove it"):
        CRMaskBuilder(gain=1, readnoise=5).build(ccds)
    for c, b in zip(ccds, before):
        np.testing.assert_array_equal(c.data, b)
