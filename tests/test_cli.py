import os
import subprocess
import sys

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData

from crcombine import CRCombiner, CRMaskBuilder, CRMasks
from crcombine.cli import main
from helpers import make_stack, to_adu


@pytest.fixture
def adu_files(tmp_path):
    stack = make_stack(shape=(96, 96), seed=61)
    names = []
    for i, e in enumerate(stack.exposures):
        name = tmp_path / f"exp{i}.fits"
        hdu = fits.PrimaryHDU(to_adu(e, 2.0, 500.0).astype(np.float32))
        hdu.header["EXPTIME"] = 100.0
        hdu.writeto(name)
        names.append(str(name))
    listfile = tmp_path / "list.txt"
    listfile.write_text("# exposures\n" + "\n".join(os.path.basename(n) for n in names) + "\n")
    return stack, names, listfile


def test_compute_and_apply(tmp_path, adu_files, capsys):
    stack, names, listfile = adu_files
    masks_path = tmp_path / "crmasks.fits"
    assert main(["compute", "--inputlist", str(listfile), "--gain", "2", "--rnoise", "2.5",
                 "--bias", "500", "--seed", "5", "--output_masks", str(masks_path)]) == 0
    masks = CRMasks.read(masks_path)
    assert masks.seed == 5 and masks.parameters["readnoise"] == 5.0   # ADU x gain
    assert masks.parameters["bias"] == 500.0
    strong = stack.hit_count(nsigma=20) >= 2
    assert (masks.mediancr & strong).sum() / strong.sum() >= 0.95
    out = tmp_path / "combined.fits"
    assert main(["apply", "--inputlist", str(listfile), "--input_mask", str(masks_path),
                 "--output_combined", str(out), "--combination", "meancr"]) == 0
    result = CCDData.read(out, unit="adu")
    electrons = (result.data - 500) * 2
    hit = stack.hit_count(nsigma=10) >= 1
    assert (((electrons - stack.truth) / stack.sigma)[hit] > 5).mean() <= 0.02
    with fits.open(out) as h:
        assert h[0].header["CRMUUID"] == masks.uuid and "EXPMAP" in h
    # 96 x 96 pixels are too few to fit the 26 terms of a PSF-matching kernel
    assert "psf_kernels" not in masks.parameters
    printed = capsys.readouterr().out
    assert "MEDIANCR" in printed and "meancr combination" in printed


@pytest.mark.parametrize("argv, message", [
    (["compute", "--gain", "1", "--rnoise", "1"], "no input exposures"),
    (["compute", "nofile.fits", "--gain", "1", "--rnoise", "1"], "does not exist"),
    (["compute", "{0}", "--gain", "1", "--rnoise", "1"], "at least 2"),
    (["compute", "{0}", "{1}", "{2}", "--gain", "0", "--rnoise", "1"], "gain must be > 0"),
    (["compute", "{0}", "{1}", "{2}", "--gain", "1", "--rnoise", "-1"], "readnoise must be >= 0"),
    (["compute", "{0}", "{1}", "{2}", "--gain", "1", "--rnoise", "1", "--flux_factor", "[1,2]"],
     "flux_factor has 2 values"),
    (["compute", "{0}", "{1}", "{2}", "--gain", "1", "--rnoise", "1", "--extname", "SCI"],
     "no extension 'SCI'"),
    (["compute", "{0}", "{1}", "{2}", "--gain", "1", "--rnoise", "1", "--mm_scale", "big"],
     "--mm_scale must be auto or a number"),
    (["apply", "{0}", "{1}", "{2}", "--input_mask", "missing.fits"], "does not exist"),
])
def test_errors_are_one_line_and_write_nothing(tmp_path, adu_files, capsys, argv, message,
                                               monkeypatch):
    _, names, _ = adu_files
    monkeypatch.chdir(tmp_path)
    before = sorted(os.listdir(tmp_path))
    assert main([a.format(*names) for a in argv]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert sorted(os.listdir(tmp_path)) == before


def test_existing_output_needs_overwrite(tmp_path, adu_files, capsys):
    _, names, _ = adu_files
    out = tmp_path / "crmasks.fits"
    out.write_bytes(b"keep")
    args = ["compute", *names, "--gain", "2", "--rnoise", "2.5", "--output_masks", str(out)]
    assert main(args) == 1
    assert "--overwrite" in capsys.readouterr().err and out.read_bytes() == b"keep"
    assert main(args + ["--overwrite"]) == 0 and CRMasks.read(out).n_exposures == 3


def test_bad_combination_is_a_usage_error(adu_files):
    _, names, _ = adu_files
    with pytest.raises(SystemExit) as exc:
        main(["apply", *names, "--combination", "average"])
    assert exc.value.code == 2


def test_entry_point_runs(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "crcombine", "--version"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.startswith("crcombine")


def test_run_numina_yaml(tmp_path, adu_files, capsys):
    import yaml
    stack, names, _ = adu_files
    params = {"images": [os.path.basename(n) for n in names], "gain": 2.0, "rnoise": 2.5,
              "bias": 500.0, "extnum": 0,
              "requirements": {"crmethod": "mm_lacosmic", "mm_seed": 9, "mm_nsimulations": 5,
                               "mm_photon_distribution": "poisson", "la_sigclip": 4.5,
                               "la_psffwhm_x": 2.5,
                               "maxplots": 0, "dilation": 1}}
    yml = tmp_path / "params.yaml"
    yml.write_text(yaml.safe_dump(params))
    out = tmp_path / "out"
    out.mkdir()
    assert main(["run", str(yml), "--output_dir", str(out)]) == 0
    captured = capsys.readouterr()
    assert "la_psffwhm_x" in captured.err and "maxplots" in captured.err
    assert "la_sigclip" not in captured.err
    masks = CRMasks.read(out / "crmasks.fits")
    assert masks.parameters["lacosmic"] == {"sigclip": 4.5}     # mm_lacosmic's auxiliary
    assert masks.seed == 9 and masks.parameters["nsimulations"] == 5
    assert masks.parameters.get("nbinom_shape") is None
    assert masks.parameters["readnoise"] == 5.0 and masks.parameters["bias"] == 500.0
    assert sorted(os.listdir(out)) == sorted(
        ["crmasks.fits"] + [f"combined_{m}.fits" for m in
                            ("median", "mean", "min", "mediancr", "meancrt", "meancr", "meancr2")])
    # apply existing masks with --crmasks
    out2 = tmp_path / "out2"
    out2.mkdir()
    assert main(["run", str(yml), "--crmasks", str(out / "crmasks.fits"),
                 "--output_dir", str(out2)]) == 0
    assert "crmasks.fits" not in os.listdir(out2)
    a = fits.getdata(out / "combined_meancr.fits")
    b = fits.getdata(out2 / "combined_meancr.fits")
    np.testing.assert_array_equal(a, b)
    # unknown names and non-MM methods are errors, and nothing is written
    params["requirements"]["mm_nsimulation"] = 3
    yml.write_text(yaml.safe_dump(params))
    out3 = tmp_path / "out3"
    out3.mkdir()
    assert main(["run", str(yml), "--output_dir", str(out3)]) == 1
    assert "mm_nsimulation" in capsys.readouterr().err and os.listdir(out3) == []
    del params["requirements"]["mm_nsimulation"]
    params["requirements"]["crmethod"] = "lacosmic"
    yml.write_text(yaml.safe_dump(params))
    assert main(["run", str(yml), "--output_dir", str(out3)]) == 1
    assert "not available" in capsys.readouterr().err


def test_glob_and_directory_inputs(tmp_path, adu_files, capsys):
    _, names, _ = adu_files
    for i, name in enumerate(names):
        with fits.open(name, mode="update") as h:
            h[0].header["OBJECT"] = "target"
    fits.PrimaryHDU(np.zeros((96, 96), np.float32), header=fits.Header(
        {"OBJECT": "flat"})).writeto(tmp_path / "zflat.fits")
    out = tmp_path / "m1.fits"
    assert main(["compute", str(tmp_path / "exp*.fits"), "--gain", "2", "--rnoise", "2.5",
                 "--seed", "1", "--output_masks", str(out)]) == 0
    out2 = tmp_path / "m2.fits"
    assert main(["compute", str(tmp_path), "--filter", "OBJECT=target", "--gain", "2",
                 "--rnoise", "2.5", "--seed", "1", "--output_masks", str(out2)]) == 0
    np.testing.assert_array_equal(CRMasks.read(out).crmask, CRMasks.read(out2).crmask)
    assert main(["compute", str(tmp_path / "none*.fits"), "--gain", "2", "--rnoise", "1"]) == 1
    assert "matches no file" in capsys.readouterr().err


def test_help_and_import_stay_light():
    """``import crcombine`` and ``crcombine --help`` import no scientific stack."""
    code = ("import sys, crcombine, crcombine.cli; crcombine.cli.build_parser(); "
            "print(sorted(m for m in ('numpy', 'scipy', 'astropy', 'ccdproc', 'matplotlib') "
            "if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr


def test_compute_and_apply_import_only_what_they_use(tmp_path, adu_files):
    """A run that does not align, plot or use dask imports none of their libraries."""
    _, names, _ = adu_files
    masks, combined = str(tmp_path / "m.fits"), str(tmp_path / "c.fits")
    code = ("import sys; from crcombine.cli import main; "
            f"assert main(['compute', *{names!r}, '--gain', '2', '--rnoise', '2.5', "
            f"'--output_masks', {masks!r}]) == 0; "
            f"assert main(['apply', *{names!r}, '--input_mask', {masks!r}, "
            f"'--output_combined', {combined!r}]) == 0; "
            "print(sorted(m for m in ('reproject', 'scipy.signal', 'matplotlib', 'dask') "
            "if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout


def test_compute_crcombine_options(tmp_path, adu_files):
    _, names, _ = adu_files
    out = tmp_path / "m.fits"
    assert main(["compute", *names, "--gain", "2", "--rnoise", "2.5", "--seed", "3",
                 "--false_alarm", "10", "--crmask_method", "mm", "--threads", "1",
                 "--mm_scale", "0.75", "--output_masks", str(out)]) == 0
    masks = CRMasks.read(out)
    assert masks.parameters["false_alarm"] == 10.0 and masks.parameters["crmask_method"] == "mm"
    assert masks.parameters["mm_scale"] == 0.75


def test_compute_flux_factor_regions(tmp_path, adu_files, capsys):
    _, names, _ = adu_files
    out = tmp_path / "m.fits"
    common = ["compute", *names, "--gain", "2", "--rnoise", "2.5", "--bias", "500", "--seed",
              "3", "--threads", "1", "--output_masks", str(out)]
    assert main(common + ["--flux_factor_regions", "[[1,48,1,96]]"]) == 1   # needs auto
    assert "flux_factor='auto'" in capsys.readouterr().err and not out.exists()
    assert main(common + ["--flux_factor", "auto", "--flux_factor_regions", "[[1,48,1,96]]"]) == 0
    masks = CRMasks.read(out)
    assert masks.parameters["flux_factor_regions"] == [[1, 48, 1, 96]]
    api = CRMaskBuilder(gain=2.0 * u.electron / u.adu, readnoise=2.5 * u.adu, bias=500 * u.adu,
                        seed=3, flux_factor="auto", flux_factor_regions=[[1, 48, 1, 96]]).build(
        [CCDData.read(n, unit="adu") for n in names])
    np.testing.assert_array_equal(masks.flux_factor, api.flux_factor)


def test_compute_lacosmic_flags(tmp_path, adu_files, capsys):
    stack, names, _ = adu_files
    out = tmp_path / "m.fits"
    common = ["compute", *names, "--gain", "2", "--rnoise", "2.5", "--bias", "500", "--seed",
              "3", "--threads", "1", "--output_masks", str(out)]
    assert main(common + ["--la_sigclip", "5"]) == 1          # needs --lacosmic
    assert "--la_sigclip needs --lacosmic" in capsys.readouterr().err and not out.exists()
    assert main(common + ["--lacosmic", "--la_sigclip", "5", "--la_niter", "2"]) == 0
    masks = CRMasks.read(out)
    assert masks.parameters["lacosmic"] == {"sigclip": 5.0, "niter": 2}
    api = CRMaskBuilder(gain=2.0 * u.electron / u.adu, readnoise=2.5 * u.adu, bias=500 * u.adu,
                        seed=3, threads=1, lacosmic={"sigclip": 5.0, "niter": 2}).build(
        [CCDData.read(n, unit="adu") for n in names])
    np.testing.assert_array_equal(masks.crmask, api.crmask)


def test_psf_kernels_travel_in_the_mask_file(tmp_path):
    """compute records the PSF-matching kernels; apply fills the masked values with them
    exactly as the Python API does; --psf_kernel_size and --psf_matching off."""
    from crcombine import CRMaskBuilder
    from crcombine.datasets import make_cr_stack
    ccds, _ = make_cr_stack((200, 160), 3, seed=21, star_density=5e-3)
    names = []
    for i, c in enumerate(ccds):
        names.append(str(tmp_path / f"e{i}.fits"))
        c.write(names[-1])
    out, combined = tmp_path / "m.fits", tmp_path / "c.fits"
    common = [*names, "--gain", "1", "--rnoise", "3.4", "--seed", "3", "--output_masks",
              str(out), "--overwrite"]
    assert main(["compute", *common]) == 0
    masks = CRMasks.read(out)
    assert np.shape(masks.parameters["psf_kernels"]) == (3, 26)
    assert np.shape(masks.parameters["psf_pair_kernels"]) == (3, 3, 26)
    assert main(["apply", *names, "--input_mask", str(out), "--output_combined",
                 str(combined), "--combination", "meancr"]) == 0
    direct = CRCombiner(ccds, builder=CRMaskBuilder(gain=1, readnoise=3.4, seed=3))
    np.testing.assert_array_equal(CCDData.read(combined).data, direct.combine("meancr").data)
    assert main(["compute", *common, "--psf_kernel_size", "7"]) == 0
    masks = CRMasks.read(out)
    assert masks.parameters["psf_kernel_size"] == 7
    assert np.shape(masks.parameters["psf_kernels"]) == (3, 50)
    assert main(["compute", *common, "--psf_matching", "off"]) == 0
    masks = CRMasks.read(out)
    assert masks.parameters["psf_matching"] is False and "psf_kernels" not in masks.parameters


def test_progress_is_reported_for_every_block_and_band(stack3):
    from crcombine import CRMaskBuilder
    calls = []
    builder = CRMaskBuilder(gain=1, readnoise=5, seed=1, nsimulations=4,
                            null_distribution="simulated")
    builder.progress = lambda step, done, total: calls.append((step, done, total))
    builder.build(stack3.ccds())
    sims = [c for c in calls if c[0] == "simulations"]
    assert [c[1] for c in sims] == list(range(1, 5))     # 4 simulations of one block
    assert sims[-1][2] == 4
    steps = [c[0] for c in calls]
    for step in ("statistics", "seeds", "mismatch", "masks"):   # one band each
        assert steps.count(step) == 1
    calls.clear()                                       # the exact null: nothing simulated
    builder = CRMaskBuilder(gain=1, readnoise=5, seed=1, nsimulations=4)
    builder.progress = lambda step, done, total: calls.append((step, done, total))
    builder.build(stack3.ccds())
    steps = [c[0] for c in calls]
    assert "simulations" not in steps and steps.count("masks") == 1


@pytest.mark.parametrize("text, value", [("300MB", 3e8), ("4GB", 4e9), ("2.5e8", 2.5e8),
                                         ("1GiB", 2 ** 30), ("auto", "auto"), ("none", None)])
def test_mem_limit_sizes(text, value):
    from crcombine.cli import _bytes
    assert _bytes(text) == value


@pytest.mark.parametrize("bad", ["lots", "-3MB", "0", "12XB"])
def test_bad_mem_limit_is_a_usage_error(adu_files, capsys, bad):
    _, names, _ = adu_files
    with pytest.raises(SystemExit) as exc:
        main(["compute", *names, "--gain", "2", "--rnoise", "2.5", "--mem_limit", bad])
    assert exc.value.code == 2
    assert "--mem_limit" in capsys.readouterr().err


def test_mem_limit_and_scheduler_do_not_change_the_results(tmp_path, adu_files, capsys):
    """Bands of rows read from the files (default), all in memory, or dask threads: same."""
    pytest.importorskip("dask")
    _, names, _ = adu_files
    outputs = {}
    for label, extra in [("auto", []), ("none", ["--mem_limit", "none"]),
                         ("dask", ["--mem_limit", "5MB", "--scheduler", "threads"])]:
        masks = tmp_path / f"masks_{label}.fits"
        combined = tmp_path / f"meancr_{label}.fits"
        assert main(["compute", *names, "--gain", "2", "--rnoise", "2.5", "--bias", "500",
                     "--seed", "3", "--output_masks", str(masks)] + extra) == 0
        assert main(["apply", *names, "--input_mask", str(masks), "--combination", "meancr",
                     "--output_combined", str(combined)] + extra) == 0
        outputs[label] = (CRMasks.read(masks), fits.getdata(combined))
    ref_masks, ref_data = outputs["none"]
    for label in ("auto", "dask"):
        masks, data = outputs[label]
        for name in ("mediancr", "meancrt", "crmask", "meancr"):
            assert np.array_equal(getattr(masks, name), getattr(ref_masks, name)), (label, name)
        assert np.array_equal(data, ref_data, equal_nan=True), label


def test_unknown_scheduler_is_refused(adu_files, capsys):
    pytest.importorskip("dask")
    _, names, _ = adu_files
    assert main(["compute", *names, "--gain", "2", "--rnoise", "2.5",
                 "--scheduler", "fast"]) == 1
    assert "--scheduler must be threads, processes, synchronous" in capsys.readouterr().err


def test_numina_yaml_flux_factor_regions_and_lacosmic_names():
    from crcombine._numina import from_numina_yaml
    params = {"images": ["a.fits", "b.fits", "c.fits"], "gain": 2.0, "rnoise": 2.5, "bias": 500,
              "requirements": {"crmethod": "mm_lacosmic", "flux_factor": "auto",
                               "flux_factor_regions": [[1, 100, 1, 50]], "la_objlim": 6.0,
                               "la_satlevel": 60000, "la_psffwhm_x": 2.5}}
    _, _, builder, ignored = from_numina_yaml(params)
    assert builder["flux_factor_regions"] == [[1, 100, 1, 50]]
    assert builder["lacosmic"] == {"objlim": 6.0}           # satlevel is crcombine's to set
    assert ignored == ["la_psffwhm_x", "la_satlevel"]
    CRMaskBuilder(**builder)                                 # valid parameters


def test_apply_several_combinations_in_one_call(tmp_path, adu_files, capsys):
    """``--combination mediancr,meancr`` writes both, as two separate calls would."""
    _, names, _ = adu_files
    masks = str(tmp_path / "m.fits")
    assert main(["compute", *names, "--gain", "2", "--rnoise", "2.5", "--seed", "2",
                 "--output_masks", masks]) == 0
    pattern = str(tmp_path / "both_{combination}.fits")
    assert main(["apply", *names, "--input_mask", masks, "--combination", "mediancr,meancr",
                 "--output_combined", pattern]) == 0
    for method in ("mediancr", "meancr"):
        single = str(tmp_path / f"one_{method}.fits")
        assert main(["apply", *names, "--input_mask", masks, "--combination", method,
                     "--output_combined", single]) == 0
        together = pattern.replace("{combination}", method)
        np.testing.assert_array_equal(fits.getdata(together), fits.getdata(single))
        assert fits.getheader(together)["CRMETHOD"] == method
    capsys.readouterr()
    # one file name for two combinations, an unknown method, an existing output: refused
    # before any work, nothing written
    before = sorted(os.listdir(tmp_path))
    assert main(["apply", *names, "--input_mask", masks, "--combination", "mediancr,meancr",
                 "--output_combined", str(tmp_path / "x.fits")]) == 1
    assert "put {combination} in it" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["apply", *names, "--input_mask", masks, "--combination", "mediancr,bogus"])
    assert exit_info.value.code == 2
    assert "unknown combination bogus" in capsys.readouterr().err
    (tmp_path / "new_meancr.fits").write_text("keep me")
    assert main(["apply", *names, "--input_mask", masks, "--combination", "mediancr,meancr",
                 "--output_combined", str(tmp_path / "new_{combination}.fits")]) == 1
    assert "exists" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == sorted(before + ["new_meancr.fits"])
    assert (tmp_path / "new_meancr.fits").read_text() == "keep me"


def test_combiner_combines_a_list_of_methods_in_one_pass(adu_files):
    stack, names, _ = adu_files
    combiner = CRCombiner(names, builder=CRMaskBuilder(gain=2, readnoise=2.5 * u.adu,
                                                       bias=500, seed=4), unit="adu")
    together = combiner.combine(["mediancr", "meancr", "median"])
    for method, result in zip(["mediancr", "meancr", "median"], together):
        alone = combiner.combine(method)
        np.testing.assert_array_equal(result.data, alone.data)
        np.testing.assert_array_equal(result.uncertainty.array, alone.uncertainty.array)
        np.testing.assert_array_equal(result.flags, alone.flags)
        assert result.meta["CRMETHOD"] == method
    with pytest.raises(ValueError, match="method must be one of"):
        combiner.combine(["meancr", "average"])


def test_directory_inputs_leave_out_crcombine_products(tmp_path, adu_files, capsys):
    """A second ``compute <dir>`` does not take the first one's outputs for exposures."""
    _, names, _ = adu_files
    first, second = tmp_path / "crmasks.fits", tmp_path / "again.fits"
    args = ["--gain", "2", "--rnoise", "2.5", "--seed", "5"]
    assert main(["compute", str(tmp_path), *args, "--output_masks", str(first)]) == 0
    assert main(["apply", str(tmp_path), "--input_mask", str(first), "--combination", "meancr",
                 "--output_combined", str(tmp_path / "combined_meancr.fits")]) == 0
    assert main(["compute", str(tmp_path), *args, "--output_masks", str(second)]) == 0
    assert main(["compute", str(tmp_path / "*.fits"), *args, "--output_masks",
                 str(tmp_path / "third.fits")]) == 0
    a, b, c = (CRMasks.read(p) for p in (first, second, tmp_path / "third.fits"))
    assert a.n_exposures == b.n_exposures == c.n_exposures == len(names)
    np.testing.assert_array_equal(a.crmask, b.crmask)
    np.testing.assert_array_equal(a.crmask, c.crmask)


def test_utf8_file_names_and_a_list_with_a_bom(tmp_path, adu_files):
    """Names outside ASCII go into the headers escaped; an input list may start with a BOM."""
    _, names, _ = adu_files
    renamed = []
    for i, name in enumerate(names):
        new = tmp_path / f"exposición_{i}_ñ.fits"
        os.rename(name, new)
        renamed.append(new)
    listfile = tmp_path / "lista.txt"
    listfile.write_bytes(b"\xef\xbb\xbf" + "\n".join(p.name for p in renamed).encode("utf-8"))
    masks = tmp_path / "máscaras.fits"
    assert main(["compute", "--inputlist", str(listfile), "--gain", "2", "--rnoise", "2.5",
                 "--output_masks", str(masks)]) == 0
    out = tmp_path / "combinación.fits"
    assert main(["apply", "--inputlist", str(listfile), "--input_mask", str(masks),
                 "--combination", "meancr", "--output_combined", str(out)]) == 0
    header = fits.getheader(out)
    assert header["IMCMB001"] == "exposici\\xf3n_0_\\xf1.fits"
    assert CRMasks.read(masks).n_exposures == len(names)
