import os

import numpy as np
import pytest
from astropy.io import fits

from crcombine import CRCombiner, CRMaskBuilder, CRMasks


@pytest.fixture(scope="module")
def built():
    from helpers import make_stack
    stack = make_stack(shape=(96, 128), seed=41)
    return stack, CRMaskBuilder(gain=1, readnoise=5, seed=99, flux_factor=[1, 1, 1]).build(
        stack.ccds())


def test_round_trip(tmp_path, built):
    _, masks = built
    path = tmp_path / "crmasks.fits"
    masks.write(path)
    back = CRMasks.read(path)
    for name in ("mediancr", "meancrt", "crmask", "meancr"):
        np.testing.assert_array_equal(getattr(back, name), getattr(masks, name))
    assert back.uuid == masks.uuid and back.seed == 99
    np.testing.assert_array_equal(back.flux_factor, masks.flux_factor)
    assert back.parameters["cr_coincidences"] == 2 and back.parameters["gain"] == 1.0
    assert back.parameters["crmask_method"] == "noise"
    with fits.open(path) as h:
        assert [x.name for x in h] == ["PRIMARY", "MEDIANCR", "MEANCRT", "CRMASK1", "CRMASK2",
                                       "CRMASK3", "MEANCR"]
        assert h[0].data is None and h[0].header["NEXPOSE"] == 3
        assert h["CRMASK2"].data.dtype == np.uint8
        assert h["MEDIANCR"].header["NPMASKED"] == int(masks.mediancr.sum())


def test_never_overwrites_and_is_atomic(tmp_path, built, monkeypatch):
    _, masks = built
    path = tmp_path / "crmasks.fits"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="overwrite"):
        masks.write(path)
    assert path.read_bytes() == b"precious"
    # a failure while writing leaves the old file and no temporary file behind

    def boom(self, fileobj, *args, **kwargs):
        fileobj.write(b"partial")
        raise OSError("disk full")
    monkeypatch.setattr(fits.HDUList, "writeto", boom)
    with pytest.raises(OSError, match="disk full"):
        masks.write(path, overwrite=True)
    assert path.read_bytes() == b"precious"
    assert os.listdir(tmp_path) == ["crmasks.fits"]


def test_missing_output_directory(tmp_path, built):
    _, masks = built
    with pytest.raises(FileNotFoundError, match="does not exist"):
        masks.write(tmp_path / "nowhere" / "crmasks.fits")


def without_kernels(masks):
    """The same masks without the PSF-matching kernels (as numina writes them)."""
    params = {k: v for k, v in masks.parameters.items() if k != "psf_kernels"}
    return CRMasks(mediancr=masks.mediancr, meancrt=masks.meancrt, crmask=masks.crmask,
                   meancr=masks.meancr, flux_factor=masks.flux_factor, parameters=params,
                   uuid=masks.uuid)


def test_numina_layout_file_is_read_and_applied(tmp_path, built):
    """A mask file laid out as numina-crmasks writes it (built here with astropy)."""
    stack, masks = built
    path = tmp_path / "numina_crmasks.fits"
    primary = fits.PrimaryHDU()
    primary.header["UUID"] = "0d9c1b5e-numina"
    for i in range(3):
        primary.header[f"FLUXF{i + 1}"] = 1.0
    hdus = [primary]
    for name, arr in [("MEDIANCR", masks.mediancr), ("MEANCRT", masks.meancrt)] + \
            [(f"CRMASK{i + 1}", m) for i, m in enumerate(masks.crmask)] + \
            [("MEANCR", masks.meancr)]:
        h = fits.ImageHDU(arr.astype(np.uint8), name=name)
        h.header["NPMASKED"] = int(arr.sum())
        hdus.append(h)
    fits.HDUList(hdus).writeto(path)
    read = CRMasks.read(path)
    assert read.uuid == "0d9c1b5e-numina" and read.n_exposures == 3
    with pytest.raises(ValueError, match="builder"):
        CRCombiner(stack.ccds(), read)       # no gain/read noise recorded in this one
    # numina's files have no PSF-matching kernels: meancr is the mean of the unmasked values
    ours = CRCombiner(stack.ccds(), without_kernels(masks)).combine("meancr")
    theirs = CRCombiner(stack.ccds(), read,
                        builder=CRMaskBuilder(gain=1, readnoise=5)).combine("meancr")
    np.testing.assert_array_equal(theirs.data, ours.data)
    assert theirs.meta["CRMUUID"] == "0d9c1b5e-numina"


def test_mask_file_that_does_not_match(tmp_path, built):
    stack, masks = built
    path = tmp_path / "m.fits"
    masks.write(path)
    with pytest.raises(ValueError, match="masks are for 3 exposures"):
        CRCombiner(stack.ccds()[:3] + stack.ccds()[:1], CRMasks.read(path))
    with fits.open(path) as h:
        del h["CRMASK3"]
        h.writeto(tmp_path / "broken.fits")
    with pytest.raises(ValueError, match="CRMASK3"):
        CRMasks.read(tmp_path / "broken.fits")
    with pytest.raises(ValueError, match="not a crmasks.fits"):
        fits.PrimaryHDU(np.zeros((2, 2))).writeto(tmp_path / "other.fits")
        CRMasks.read(tmp_path / "other.fits")


def test_numina_history_parameters(tmp_path, built):
    """numina-crmasks writes its parameters as HISTORY lines; rnoise there is in ADU."""
    stack, masks = built
    path = tmp_path / "numina.fits"
    masks.write(path)
    with fits.open(path) as h:
        hdr = h[0].header
        for key in list(hdr):
            if key not in ("SIMPLE", "BITPIX", "NAXIS", "EXTEND", "UUID", "FLUXF1", "FLUXF2",
                           "FLUXF3"):
                del hdr[key]
        for line in ("CRMasks generated by numina.array.crmasks.compute_crmasks",
                     "- gain = 2.0", "- rnoise = 2.5", "- bias = 10.0", "- mm_seed = 7",
                     "- mm_cr_coincidences = 2", "- la_sigclip = 4.5"):
            hdr["HISTORY"] = line
        h.writeto(tmp_path / "numina2.fits")
    read = CRMasks.read(tmp_path / "numina2.fits")
    assert read.parameters["gain"] == 2.0 and read.parameters["readnoise"] == 5.0
    assert read.parameters["bias"] == 10.0 and read.seed == 7
    ccds = [c for c in stack.ccds()]
    from astropy.nddata import CCDData
    adu = [CCDData(c.data / 2 + 10, unit="adu") for c in ccds]
    r = CRCombiner(adu, read).combine("meancr")   # no builder needed
    ref = CRCombiner(ccds, without_kernels(masks)).combine("meancr")
    np.testing.assert_allclose((r.data - 10) * 2, ref.data, rtol=1e-5)
