import numpy as np
import pytest
from astropy.nddata import CCDData

from crcombine import CRCombiner, CRMaskBuilder, make_mask
from crcombine.cli import main
from helpers import make_stack


def _image(seed=0, shape=(60, 80)):
    rng = np.random.default_rng(seed)
    return rng.normal(1000, 10, shape)


def test_nonfinite_sections_and_external_mask():
    data = _image()
    data[3, 4] = np.nan
    data[5, 6] = np.inf
    bpm = np.zeros(data.shape, np.uint8)
    bpm[10, 20] = 1
    ccd = CCDData(data, unit="adu", meta={"DATASEC": "[3:78,1:58]", "TRIMSEC": "[1:80,2:60]"})
    m = make_mask(ccd, mask=bpm, saturation=None)
    assert m[3, 4] and m[5, 6] and m[10, 20]
    assert m[:, :2].all() and m[:, 78:].all() and m[58:, :].all() and m[0, :].all()
    inside = np.ones(data.shape, bool)
    inside[1:58, 2:78] = False
    inside[3, 4] = inside[5, 6] = inside[10, 20] = True
    np.testing.assert_array_equal(m, inside)
    with pytest.raises(ValueError, match="cannot parse the section"):
        make_mask(CCDData(data, unit="adu", meta={"DATASEC": "[a:b]"}))


def test_saturation_from_header_level_and_auto_grown():
    data = _image(1)
    data[30, 40] = 65000.0
    ccd = CCDData(data, unit="adu", meta={"SATURATE": 60000})
    m = make_mask(ccd)                                  # SATURATE keyword, grown by 1
    assert m[29:32, 39:42].all() and m.sum() == 9
    assert make_mask(ccd, grow=0).sum() == 1
    assert make_mask(ccd, saturation=None).sum() == 0
    assert make_mask(data, saturation=70000).sum() == 0
    auto = make_mask(data, saturation="auto", grow=0)   # median + 0.95 (max - median)
    assert auto[30, 40] and auto.sum() == 1
    with pytest.raises(ValueError, match="saturation must be"):
        make_mask(data, saturation="max")


def test_lacosmic_finds_a_single_frame_cr():
    data = _image(2)
    data[20, 30:33] += 3000.0
    m = make_mask(data, saturation=None, lacosmic=True, gain=1.0, readnoise=10.0)
    assert m[20, 30:33].all() and m.sum() < 20


def test_premask_excludes_saturated_cores_from_every_combination():
    stack = make_stack(shape=(96, 96), seed=3, n_single=0, n_coincident=0, nstars=20)
    ccds = stack.ccds()
    for c in ccds:
        c.data[40, 40] = 70000.0          # a saturated core in every exposure
        c.meta["SATURATE"] = 60000.0
    before = [c.data.copy() for c in ccds]
    plain = CRCombiner(ccds, builder=CRMaskBuilder(gain=1, readnoise=5, seed=1))
    pre = CRCombiner(ccds, builder=CRMaskBuilder(gain=1, readnoise=5, seed=1, premask=True))
    r0, r1 = plain.combine("meancr"), pre.combine("meancr")
    assert r0.data[40, 40] == pytest.approx(70000.0) and not r0.mask[40, 40]
    assert r1.mask[39:42, 39:42].all() and np.isnan(r1.data[40, 40])
    assert r1.mask.sum() == 9
    for c, b in zip(ccds, before):                    # inputs untouched, masks not added
        np.testing.assert_array_equal(c.data, b)
        assert c.mask is None


def test_cli_premask(tmp_path):
    from astropy.io import fits
    stack = make_stack(shape=(48, 48), seed=4, n_single=0, n_coincident=0, nstars=0)
    names = []
    for i, e in enumerate(stack.exposures):
        e = e.copy()
        e[10, 10] = 9e4
        name = tmp_path / f"e{i}.fits"
        fits.PrimaryHDU(e.astype(np.float32), header=fits.Header({"SATURATE": 6e4})).writeto(
            name)
        names.append(str(name))
    out = tmp_path / "m.fits"
    assert main(["compute", *names, "--unit", "electron", "--gain", "1", "--rnoise", "5",
                 "--premask", "--output_masks", str(out)]) == 0
    comb = tmp_path / "c.fits"
    assert main(["apply", *names, "--unit", "electron", "--input_mask", str(out),
                 "--output_combined", str(comb)]) == 0
    assert main(["compute", *names, "--gain", "1", "--rnoise", "5", "--premask",
                 "--saturation", "lots", "--output_masks", str(tmp_path / "x.fits")]) == 1
