"""The exact null distribution of the MM diagram (``null_distribution='exact'``).

The tables of `crcombine._detection.null.order_tables` are checked against
large seeded Monte Carlo draws of the same noise model; the masks against the
seed (they must not depend on it) and against injected coincident hits.
"""

import numpy as np
import pytest

from crcombine import CRMaskBuilder
from crcombine._core.statistics import sort_stack, stack_statistics
from crcombine._detection import null
from crcombine.io import read_crmasks, write_crmasks

from helpers import make_stack


def _tail(table, q):
    """P(v > q) of a table (cells of width STEP centred on j * STEP)."""
    v = np.arange(table.shape[1]) * null.STEP
    marginal = table.sum(axis=0)
    return float((marginal * np.clip((v + null.STEP / 2 - q) / null.STEP, 0, 1)).sum())


@pytest.mark.parametrize("n, level, readnoise, flux_factor", [
    (3, 200.0, 5.0, [1.0, 1.0, 1.0]),
    (3, 2.0, 2.0, [1.0, 1.0, 1.0]),         # skewed, nearly discrete counts
    (4, 500.0, 5.0, [1.0, 1.0, 1.0, 1.0]),  # even: the median is a mean of two
    (5, 30.0, 3.0, [1.0, 0.95, 1.05, 1.0, 1.0]),
])
def test_tables_match_monte_carlo(n, level, readnoise, flux_factor):
    """Tail probabilities of median - x and mean - x against 2e6 draws.

    The tables may be higher than the draws (the average-distribution
    approximation of unequal flux factors, and the lattice's linear
    splitting, widen them): the median's by at most 6 %, the mean's (whose
    own spread is a third of one exposure's, so that the lattice matters
    more) by at most 35 % for N >= 4 (a boundary higher by some 0.05 of the
    mean's noise); never lower beyond the Monte Carlo error, so that the
    boundary is, if anything, conservative.
    """
    nc = max(2, -(-n // 2))
    p, sigma = null.exposure_masses(level, flux_factor, readnoise, None)
    tables = null.order_tables(p, n, nc, ("median", "mean"))
    rng = np.random.default_rng(12)
    f = np.asarray(flux_factor)[:, None]
    draws = (rng.poisson(f * level, (n, 2_000_000)) + rng.normal(0, readnoise, (n, 2_000_000))) / f
    s, count = sort_stack(draws)
    st = stack_statistics(s, count, nc)
    x = st["min2d"]
    z = null._z_centres()
    assert np.isclose((tables["median"].sum(axis=1) * z).sum() * sigma + level, x.mean(),
                      atol=0.01 * sigma)
    for stat in ("median", "mean"):
        y = (st[f"{stat}2d"] - x) / sigma
        for q in (1.0, 2.0, 3.0):
            mc = float(np.mean(y > q))
            if mc * 2e6 < 400:
                continue
            exact = _tail(tables[stat], q)
            err = 3 * np.sqrt(mc / 2e6)
            upper = 1.06 if stat == "median" or n == 3 else 1.35
            assert mc - err <= exact <= upper * mc + err, (stat, q, exact, mc)


def test_exposure_masses_moments():
    """The lattice law of one exposure has mean 0 and variance 1 (in sigma) to 1 %."""
    for level, rn, kappa in [(0.0, 3.0, None), (5.0, 2.0, None), (400.0, 5.0, None),
                             (1e5, 5.0, None), (1e4, 5.0, 200.0)]:
        p, sigma = null.exposure_masses(level, [1.0, 0.9, 1.1], rn, kappa)
        z = null._z_centres()
        assert abs(p.sum() - 1) < 1e-9
        assert abs((p * z).sum()) < 0.01, level
        assert abs((p * z * z).sum() - 1) < 0.02, level


def test_exact_statistics_need_the_median_above_the_lowest_values():
    assert null.exact_statistics(3, 2) == ("median", "mean", "single")
    assert null.exact_statistics(5, 3) == ("median", "mean", "single")
    assert null.exact_statistics(8, 4) == ("median", "mean", "single")
    # N = 6, n_c = 2: x is the mean of the 4 lowest, the median (3rd, 4th) lies among them
    assert "median" not in null.exact_statistics(6, 2)


@pytest.fixture(scope="module")
def hit_stack():
    return make_stack(shape=(256, 256), seed=31, n_single=40, n_coincident=40, nstars=25)


def test_masks_do_not_depend_on_the_seed(hit_stack):
    """Exact null: every mask is the same for three seeds; the seed is recorded as unused."""
    results = [CRMaskBuilder(gain=1, readnoise=5, seed=seed).build(hit_stack.ccds())
               for seed in (1, 2, 3)]
    for m in results[1:]:
        for name in ("mediancr", "meancrt", "crmask", "meancr"):
            assert np.array_equal(getattr(m, name), getattr(results[0], name)), name
    assert results[0].parameters["null_distribution"] == "exact"


def test_exact_null_finds_coincident_hits_without_false_ones(hit_stack):
    """Recall of clear coincident hits >= 95 %; false MEDIANCR seeds at most 3 (0.005 %).

    numina's criterion (one simulated pixel above the boundary per column and
    ``nsimulations``) expects about ``1 / nsimulations`` false seeds per
    occupied column before the spline's upward extension.
    """
    m = CRMaskBuilder(gain=1, readnoise=5, seed=1, dilation=0).build(hit_stack.ccds())
    clear = hit_stack.hit_count(nsigma=10) >= 2
    assert clear.sum() > 50
    assert m.mediancr[clear].mean() >= 0.95
    from scipy import ndimage
    near = ndimage.binary_dilation(hit_stack.hit_count() >= 1, iterations=2)
    assert int((m.mediancr & ~near).sum()) <= 3


def test_exact_boundary_keeps_numina_s_criterion():
    """CR-free stacks: false seeds at most one per boundary point and ``nsimulations``.

    numina's criterion puts each boundary point where one of the
    ``nsimulations`` x (pixels of the column) simulated pixels lies above
    it; the exact histogram does the same without the draws' scatter, so the
    false seeds on CR-free data stay within that budget (plus Poisson error).
    Where the simulated diagram is dense (the sky), the exact boundary lies
    within 3 % of the simulated ones of 4 seeds.
    """
    found, budget = 0, 0.0
    for seed, nstars in ((41, 0), (42, 30), (43, 60)):
        stack = make_stack(shape=(256, 256), seed=seed, n_single=0, n_coincident=0,
                           nstars=nstars)
        m = CRMaskBuilder(gain=1, readnoise=5, dilation=0, nbinom_shape=None,
                          mm_scale=0).build(stack.ccds())
        found += int(m.mediancr.sum())
        budget += m.boundaries["median"].x_points.size / m.parameters["nsimulations"]
    assert found <= budget + 3 * np.sqrt(budget) + 1, (found, budget)
    sky = np.array([float(np.median(stack.exposures.min(axis=0)))])
    sims = [CRMaskBuilder(gain=1, readnoise=5, seed=s, nbinom_shape=None, mm_scale=0,
                          null_distribution="simulated").build(stack.ccds())
            .boundaries["median"](sky)[0] for s in range(1, 5)]
    b = m.boundaries["median"](sky)[0]
    assert 0.97 * min(sims) <= b <= 1.03 * max(sims), (b, sims)


def test_fallback_to_simulations_is_recorded(tmp_path):
    """N = 6 with n_c = 2 has no exact median law: simulated, and the file says so."""
    stack = make_stack(shape=(96, 96), n=6, seed=4, n_single=5, n_coincident=5, nstars=5)
    m = CRMaskBuilder(gain=1, readnoise=5, seed=1, cr_coincidences=2).build(stack.ccds())
    assert m.parameters["null_distribution"] == "simulated"
    path = tmp_path / "masks.fits"
    write_crmasks(m, path)
    assert read_crmasks(path).parameters["null_distribution"] == "simulated"
    exact = CRMaskBuilder(gain=1, readnoise=5, seed=1).build(stack.ccds())
    write_crmasks(exact, tmp_path / "exact.fits")
    assert read_crmasks(tmp_path / "exact.fits").parameters["null_distribution"] == "exact"


def test_null_distribution_is_validated():
    with pytest.raises(ValueError, match="null_distribution must be one of exact/simulated"):
        CRMaskBuilder(gain=1, readnoise=5, null_distribution="analytic")
