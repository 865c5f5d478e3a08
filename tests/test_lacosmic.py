"""The auxiliary L.A.Cosmic detector (``lacosmic``), OR-ed into the per-exposure masks."""

import numpy as np
import pytest
from astropy import units as u
from astropy.nddata import CCDData
from scipy import ndimage

from crcombine import CRCombiner, CRMaskBuilder, CRMasks
from crcombine._core import tiles as _tiles
from crcombine._detection.crmasks import crmask_halo
from helpers import make_stack, to_adu

EIGHT = np.ones((3, 3), bool)


@pytest.fixture(scope="module")
def triple_hit():
    """A stack whose pixel (40, 50) is hit in all three exposures on flat sky."""
    stack = make_stack(shape=(256, 256), seed=31, nstars=30, n_single=40, n_coincident=20)
    exposures = stack.exposures.copy()
    ys, xs = np.nonzero(stack.truth > stack.truth.min() + 1)      # star pixels
    assert not ((np.abs(ys - 40) < 6) & (np.abs(xs - 50) < 6)).any()
    assert not stack.deposits[:, 38:43, 48:53].any()
    exposures[:, 40, 50] += [1500.0, 1800.0, 1600.0]
    return stack, exposures


def test_lacosmic_finds_what_the_stack_cannot(triple_hit):
    """A hit in every exposure: no stack statistic sees it, L.A.Cosmic does in each."""
    stack, exposures = triple_hit
    ccds = [CCDData(e, unit="electron") for e in exposures]
    params = dict(gain=1, readnoise=stack.readnoise, seed=2)
    plain = CRMaskBuilder(**params).build(ccds)
    aided = CRMaskBuilder(lacosmic=True, **params).build(ccds)
    assert not plain.crmask[:, 40, 50].any()
    assert aided.crmask[:, 40, 50].all()
    assert aided.crmask[:, 39:42, 49:52].all()             # dilated like the masks
    np.testing.assert_array_equal(aided.mediancr, plain.mediancr)
    np.testing.assert_array_equal(aided.meancrt, plain.meancrt)
    assert aided.parameters["lacosmic"] is True and plain.parameters["lacosmic"] is False
    # meancr no longer keeps the hit: masked in every exposure on flat sky, the pixel
    # takes the median of its neighbours (exposure map 0, masked)
    result = CRCombiner(ccds, aided).combine("meancr")
    assert abs(result.data[40, 50] - stack.truth[40, 50]) < 3 * stack.sigma[40, 50]
    assert result.flags[40, 50] == 0 and result.mask[40, 50]
    assert CRCombiner(ccds, plain).combine("meancr").data[40, 50] > stack.truth[40, 50] + 1000


def test_lacosmic_flags_are_ccdproc_s_in_electrons(triple_hit):
    """The masks are the stack's OR the dilated ccdproc L.A.Cosmic mask, in electrons.

    The same exposures in ADU (gain 2, bias 300, read noise given in ADU)
    give the same masks: the read noise reaches L.A.Cosmic in electrons
    (numina passes ADU).
    """
    from ccdproc import cosmicray_lacosmic
    stack, exposures = triple_hit
    params = dict(seed=2, psf_matching=False, dilation=1)
    ccds = [CCDData(e, unit="electron") for e in exposures]
    plain = CRMaskBuilder(gain=1, readnoise=stack.readnoise, **params).build(ccds)
    aided = CRMaskBuilder(gain=1, readnoise=stack.readnoise, lacosmic={"sigclip": 5.0},
                          **params).build(ccds)
    for i, e in enumerate(exposures):
        direct = cosmicray_lacosmic(CCDData(e.astype(np.float32), unit="electron"),
                                    gain=1.0, readnoise=stack.readnoise, sigclip=5.0,
                                    gain_apply=False, satlevel=np.inf).mask
        assert direct.sum() >= 1
        expected = plain.crmask[i] | ndimage.binary_dilation(direct, EIGHT)
        np.testing.assert_array_equal(aided.crmask[i], expected)
    adu = [CCDData(to_adu(e, 2.0, 300.0), unit="adu") for e in exposures]
    in_adu = CRMaskBuilder(gain=2.0 * u.electron / u.adu, readnoise=stack.readnoise / 2 * u.adu,
                           bias=300 * u.adu, lacosmic={"sigclip": 5.0}, **params).build(adu)
    changed = (in_adu.crmask != aided.crmask).sum()
    assert changed <= 9, changed                # float32 rounding of ADU values at most


def test_lacosmic_is_recorded_and_tiled_runs_agree(tmp_path, triple_hit, monkeypatch):
    monkeypatch.setattr(_tiles, "VALUES_PER_BLOCK", 3 * 256 * 8)   # 8-row blocks
    monkeypatch.setattr(_tiles, "MAX_SAMPLE_VALUES", 20000)
    stack, exposures = triple_hit
    ccds = [CCDData(e, unit="electron") for e in exposures]
    params = dict(gain=1, readnoise=stack.readnoise, seed=2, lacosmic={"objlim": 4.0})
    whole = CRMaskBuilder(**params).build(ccds)
    assert len(_tiles.plan_tiles(3, (256, 256), mem_limit=6e6, threads=2,
                                 halo=crmask_halo("noise", 1, 5))) >= 2
    tiled = CRMaskBuilder(mem_limit=6e6, threads=2, **params).build(ccds)
    np.testing.assert_array_equal(whole.crmask, tiled.crmask)
    np.testing.assert_array_equal(whole.meancr, tiled.meancr)
    whole.write(tmp_path / "crmasks.fits")
    again = CRMasks.read(tmp_path / "crmasks.fits")
    assert again.parameters["lacosmic"] == {"objlim": 4.0}


@pytest.mark.parametrize("value, error, match", [
    ("yes", TypeError, "lacosmic must be True, False or a dict"),
    ({"readnoise": 3.0}, ValueError, "readnoise are set by crcombine"),
    ({"sigclp": 4.0}, ValueError, "sigclp not keyword"),
])
def test_bad_lacosmic_values(value, error, match):
    with pytest.raises(error, match=match):
        CRMaskBuilder(gain=1, readnoise=5, lacosmic=value)


def test_every_stack_reads_a_whole_exposure(tmp_path, triple_hit):
    """``read_exposure`` (L.A.Cosmic's input) is the exposure of ``read_rows`` for each source."""
    import dask.array as da
    from astropy.io import fits
    stack, exposures = triple_hit
    adu = to_adu(exposures, 2.0, 300.0).astype(np.float32)
    adu[1, 5, 7] = np.nan                                        # not valid
    names = []
    for i, plane in enumerate(adu):
        names.append(str(tmp_path / f"e{i}.fits"))
        fits.PrimaryHDU(plane, header=fits.Header({"BUNIT": "adu"})).writeto(names[-1])
    ccds = [CCDData(p, unit="adu") for p in adu]
    builder = CRMaskBuilder(gain=2.0 * u.electron / u.adu, readnoise=2.5 * u.adu,
                            bias=300 * u.adu)
    sources = {"memory": builder.stack(ccds),
               "ccds in bands": CRMaskBuilder(gain=2.0 * u.electron / u.adu,
                                              readnoise=2.5 * u.adu, bias=300 * u.adu,
                                              mem_limit=6e6).stack(ccds),
               "files": CRMaskBuilder(gain=2.0 * u.electron / u.adu, readnoise=2.5 * u.adu,
                                      bias=300 * u.adu, mem_limit=6e6).stack(names),
               "dask": builder.stack(da.from_array(adu, chunks=(1, 64, 256)), unit="adu")}
    kinds = {type(s).__name__ for s in sources.values()}
    assert kinds == {"ExposureStack", "CCDStack", "FileStack", "DaskStack"}, kinds
    for name, source in sources.items():
        whole = source.read_rows(0, 256)[0]
        for i in range(3):
            np.testing.assert_array_equal(source.read_exposure(i), whole[i], err_msg=name)
        assert np.isnan(source.read_exposure(1)[5, 7]), name
