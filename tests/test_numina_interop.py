"""Both ways with numina-crmasks itself (skipped unless numina is installed).

numina is GPL; it is only run here, as a peer, never imported into crcombine.
"""

import shutil
import subprocess

import numpy as np
import pytest
from astropy.io import fits

from crcombine import CRCombiner, CRMaskBuilder, CRMasks
from helpers import make_stack, to_adu

pytestmark = pytest.mark.skipif(shutil.which("numina-crmasks") is None,
                                reason="numina-crmasks is not installed")

# numina 0.40 asks for every parameter in its YAML file
NUMINA_REQUIREMENTS = dict(
    crmethod="mm_lacosmic", use_auxmedian=False, flux_factor="none", flux_factor_regions=None,
    apply_flux_factor_to="simulated", interactive=False, dilation=1,
    regions_to_be_skipped=None, pixels_to_be_flagged_as_cr=None,
    pixels_to_be_ignored_as_cr=None, pixels_to_be_replaced_by_local_median=None,
    dtype="float32", verify_cr=False, semiwindow=15, color_scale="minmax", maxplots=0,
    la_gain_apply=True, la_sigclip=4.5, la_sigfrac=0.3, la_objlim=5.0, la_satlevel=65535.0,
    la_niter=4, la_sepmed=True, la_cleantype="meanmask", la_fsmode="median",
    la_psfmodel="gauss", la_psffwhm_x=2.5, la_psffwhm_y=2.5, la_psfsize=7, la_psfbeta=4.765,
    la_verbose=False, la_padwidth=0, mm_cr_coincidences=2, mm_photon_distribution="poisson",
    mm_nbinom_shape=1000, mm_synthetic="median", mm_hist2d_min_neighbors=0, mm_ydiag_max=0,
    mm_dilation=0, mm_xy_offsets=None, mm_crosscorr_region=None, mm_boundary_fit="spline",
    mm_knots_splfit=3, mm_fixed_points_in_boundary=None, mm_nsimulations=10,
    mm_niter_boundary_extension=3, mm_weight_boundary_extension=10.0, mm_threshold_rnoise=0.0,
    mm_minimum_max2d_rnoise=5.0, mm_seed=1)


@pytest.fixture(scope="module")
def numina_run(tmp_path_factory):
    import yaml
    tmp = tmp_path_factory.mktemp("numina")
    stack = make_stack(shape=(128, 128), seed=71)
    names = []
    for i, e in enumerate(stack.exposures):
        name = tmp / f"e{i}.fits"
        fits.PrimaryHDU(to_adu(e, 2.0, 100.0).astype(np.float32)).writeto(name)
        names.append(str(name))
    params = dict(images=names, gain=2.0, rnoise=2.5, bias=100.0, extnum=0,
                  requirements=NUMINA_REQUIREMENTS)
    (tmp / "params.yaml").write_text(yaml.safe_dump(params))
    out = tmp / "numina_out"
    out.mkdir()
    proc = subprocess.run(["numina-crmasks", str(tmp / "params.yaml"), "--output_dir", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return stack, names, tmp, out


def test_numina_masks_are_read_and_applied(numina_run):
    stack, names, _, out = numina_run
    masks = CRMasks.read(out / "crmasks.fits")
    assert masks.n_exposures == 3 and masks.parameters["gain"] == 2.0
    result = CRCombiner(names, masks, unit="adu").combine("mediancr")
    median = np.median(to_adu(stack.exposures, 2.0, 100.0), axis=0)
    outside = ~masks.mediancr
    np.testing.assert_allclose(result.data[outside], median[outside], rtol=1e-5)


def test_crcombine_masks_are_applied_by_numina(numina_run, tmp_path):
    stack, names, tmp, _ = numina_run
    builder = CRMaskBuilder(gain=2.0, readnoise=2.5 * 2.0, bias=100.0, seed=3)
    ours = builder.build(names, unit="adu")
    ours.write(tmp_path / "ours.fits")
    out = tmp_path / "applied"
    out.mkdir()
    proc = subprocess.run(["numina-crmasks", str(tmp / "params.yaml"), "--crmasks",
                           str(tmp_path / "ours.fits"), "--output_dir", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    theirs = fits.getdata(out / "combined_mediancr.fits")
    median = np.median(stack.exposures, axis=0)   # numina writes bias-subtracted ADU
    outside = ~ours.mediancr
    np.testing.assert_allclose(theirs[outside] * 2.0, median[outside], rtol=1e-4, atol=1e-2)
