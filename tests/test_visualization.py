import gc
import re

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from astropy.nddata import CCDData  # noqa: E402

from crcombine import CRCombiner, CRMaskBuilder, visualization as viz  # noqa: E402
from helpers import make_stack  # noqa: E402


@pytest.fixture(scope="module")
def combiner():
    stack = make_stack(shape=(96, 128), seed=81, n_coincident=25)
    return CRCombiner(stack.ccds(), builder=CRMaskBuilder(gain=1, readnoise=5, seed=1,
                                                          flux_factor="auto"))


def test_mm_diagram_artists(combiner):
    from matplotlib.collections import QuadMesh
    from matplotlib.lines import Line2D
    mm = CRMaskBuilder(gain=1, readnoise=5, seed=1, crmask_method="mm").build(
        combiner.stack.ccds)
    for stat, masks in (("median", combiner.masks), ("mean", combiner.masks), ("single", mm)):
        out = viz.plot_mm_diagram(masks, stat)
        assert isinstance(out["simulated"], QuadMesh) and isinstance(out["data"], QuadMesh)
        assert len(out["boundary"]) == 2 and all(isinstance(b, Line2D) for b in out["boundary"])
        n_iter = len(masks.boundaries[stat].iterations) - 1
        assert len(out["iterations"]) == 2 * n_iter
        ax = out["data"].axes
        assert "electron" in ax.get_xlabel() and "noise" in ax.get_ylabel()
        # the boundary drawn is the fitted one, in the panel's units
        line = out["boundary"][1]
        b = masks.boundaries[stat]
        np.testing.assert_allclose(line.get_ydata(), b.normalised(line.get_xdata()))
    with pytest.raises(ValueError, match="statistic must be one of"):
        viz.plot_mm_diagram(combiner.masks, "max")
    with pytest.raises(ValueError, match="simulated only with crmask_method='mm'"):
        viz.plot_mm_diagram(combiner.masks, "single")


def test_flagged_pixels_artists(combiner):
    from matplotlib.collections import PathCollection
    from matplotlib.image import AxesImage
    out = viz.plot_flagged_pixels(combiner, "MEDIANCR")
    assert isinstance(out["diagram"], PathCollection) and isinstance(out["image"], AxesImage)
    # the MEDIANCR pixels above the boundary (the seeds, and dilated pixels above it too)
    masks = combiner.masks
    scaled = np.stack([c.data for c in combiner.stack.ccds]) / masks.flux_factor[:, None, None]
    x, med = scaled.min(axis=0), np.median(scaled, axis=0)
    above = masks.mediancr & (med - x > masks.boundaries["median"](x))
    assert int(above.sum()) >= int(masks.features["n_seeds"].sum()) > 0
    assert len(out["positions"].get_offsets()) == int(above.sum())
    assert len(out["labels"]) == 2 * min(len(combiner.masks.features), 20)
    out = viz.plot_flagged_pixels(combiner, "CRMASK2")
    assert len(out["positions"].get_offsets()) <= combiner.masks.crmask[1].sum()
    with pytest.raises(ValueError, match="CRMASK1..3"):
        viz.plot_flagged_pixels(combiner, "CRMASK4")


def test_flux_factor_masks_and_exposure_map(combiner):
    from matplotlib.image import AxesImage
    out = viz.plot_flux_factors(combiner)
    assert len(out) == 3 and out[0]["band"] is not None
    assert out[1]["factor"].get_ydata()[0] == pytest.approx(combiner.masks.flux_factor[1])
    im = viz.plot_masks(combiner.masks)
    assert isinstance(im, AxesImage)
    code = im.get_array()
    assert (code == 3).sum() == combiner.masks.mediancr.sum()
    result = combiner.combine("meancr")
    im = viz.plot_exposure_map(result)
    np.testing.assert_array_equal(im.get_array(), result.flags)
    with pytest.raises(ValueError, match="exposure map"):
        viz.plot_exposure_map(CCDData(np.zeros((3, 3)), unit="adu"))


def _pages(path):
    return len(re.findall(rb"/Type\s*/Page[^s]", path.read_bytes()))


def test_cr_feature_cutouts_pdf(combiner, tmp_path):
    n = len(combiner.masks.features)
    assert n >= 3
    pdf = tmp_path / "cr.pdf"
    assert viz.plot_cr_features(combiner, pdf, maxplots=3, color_scale="zscale") == []
    assert _pages(pdf) == 3
    viz.plot_cr_features(combiner, pdf, maxplots=-1)
    assert _pages(pdf) == n
    figs = viz.plot_cr_features(combiner, maxplots=2)
    assert len(figs) == 2 and len(figs[0].axes) == 3 + 3 + 1   # panels + colour bar
    with pytest.raises(ValueError, match="color_scale"):
        viz.plot_cr_features(combiner, color_scale="log")


def test_no_figure_leak(combiner):
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure
    gc.collect()
    before = sum(isinstance(o, Figure) for o in gc.get_objects())
    for _ in range(100):
        viz.plot_masks(combiner.masks)
    gc.collect()
    after = sum(isinstance(o, Figure) for o in gc.get_objects())
    assert plt.get_fignums() == [] and after - before <= 1


def test_compute_plots_writes_the_named_files(tmp_path, combiner):
    from astropy.io import fits
    from crcombine.cli import main
    names = []
    for i, e in enumerate(combiner.stack.data):
        name = tmp_path / f"e{i}.fits"
        fits.PrimaryHDU(np.asarray(e)).writeto(name)
        names.append(str(name))
    out = tmp_path / "out"
    out.mkdir()
    assert main(["compute", *names, "--unit", "electron", "--gain", "1", "--rnoise", "5",
                 "--seed", "1", "--output_masks", str(out / "crmasks.fits"), "--plots",
                 "--maxplots", "2"]) == 0
    expected = {"crmasks.fits", "diagnostic_histogram2d.png", "diagnostic_mediancr.png",
                "diagnostic_meancrt.png", "mediancr_identified_cr.pdf"}
    expected |= {f"diagnostic_crmask{i}.png" for i in (1, 2, 3)}
    expected |= {f"flux_factor{i}.png" for i in (1, 2, 3)}
    assert {p.name for p in out.iterdir()} == expected
    assert _pages(out / "mediancr_identified_cr.pdf") == 2
