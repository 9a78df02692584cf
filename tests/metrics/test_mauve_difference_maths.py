"""Is a MAUVE difference real: the paired bootstrap's verdicts, its seeding, intervals, curve points."""
from __future__ import annotations

import numpy as np
import pytest

from evalcore.errors import InputError
from evalcore.metrics import mauve as M
from evalcore.metrics import mauve_stats as S


def _sides(n=40, d=16, shift=1.0, seed=0):
    """P and Q_A from one distribution, Q_B shifted away from it."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.normal(size=(n, d)), rng.normal(size=(n, d)) + shift


def test_a_clearly_better_than_b_gives_a_gt_b_and_swapping_gives_b_gt_a():
    p, qa, qb = _sides()
    ab = S.paired_bootstrap(p, qa, qb, n_boot=30)
    assert ab.verdict == "A > B" and 0 < ab.low <= ab.high
    assert ab.mauve_a == pytest.approx(M.compute_mauve(p, qa, k="auto").mauve)  # the usual MAUVE, seed 25
    assert ab.difference == pytest.approx(ab.mauve_a - ab.mauve_b) and ab.n == 40 and ab.k == 4 and ab.n_boot == 30
    ba = S.paired_bootstrap(p, qb, qa, n_boot=30)
    assert ba.verdict == "B > A" and ba.high < 0
    np.testing.assert_allclose(ba.replicate_differences, -np.asarray(ab.replicate_differences))


def test_identical_inputs_are_not_distinguishable():
    p, qa, _ = _sides()
    r = S.paired_bootstrap(p, qa, qa, n_boot=20)
    assert r.low <= 0 <= r.high and r.verdict == S.NOT_DISTINGUISHABLE and r.difference == 0


def test_same_distribution_different_samples_not_distinguishable():
    p, qa, _ = _sides(seed=1)
    qa2 = np.random.default_rng(7).normal(size=qa.shape)
    r = S.paired_bootstrap(p, qa, qa2, n_boot=40)
    assert r.low < 0 < r.high and r.verdict == S.NOT_DISTINGUISHABLE, (r.low, r.high)


def test_same_random_state_same_interval_and_replicates_do_not_depend_on_n_boot():
    p, qa, qb = _sides(n=24, seed=2)
    a = S.paired_bootstrap(p, qa, qb, k=3, n_boot=12, random_state=5)
    b = S.paired_bootstrap(p, qa, qb, k=3, n_boot=12, random_state=5)
    assert (a.low, a.high, a.replicates_a) == (b.low, b.high, b.replicates_a)
    more = S.paired_bootstrap(p, qa, qb, k=3, n_boot=16, random_state=5)
    assert more.replicates_a[:12] == a.replicates_a and more.replicates_b[:12] == a.replicates_b
    other = S.paired_bootstrap(p, qa, qb, k=3, n_boot=12, random_state=6)
    assert other.replicates_a != a.replicates_a


def test_replicate_draw_and_seeds():
    idx, seed = S.replicate_draw(50, 3, random_state=0)
    again = S.replicate_draw(50, 3, random_state=0)
    assert (idx == again[0]).all() and seed == again[1]
    assert idx.min() >= 0 and idx.max() < 50 and len(np.unique(idx)) < 50  # with replacement
    assert not (S.replicate_draw(50, 4, random_state=0)[0] == idx).all()
    assert S.kmeans_seeds(25, 3) == [27, 28, 29]  # the first is compute_mauve's (seed + 2)


def test_percentile_interval_and_verdict_by_hand():
    assert S.percentile_interval(np.arange(101), level=0.9) == pytest.approx((5.0, 95.0))
    assert S.percentile_interval(np.arange(101)) == pytest.approx((2.5, 97.5))
    assert S.verdict(0.01, 0.2) == "A > B" and S.verdict(-0.2, -0.01) == "B > A"
    assert S.verdict(-0.1, 0.1) == S.verdict(0.0, 0.1) == S.NOT_DISTINGUISHABLE
    with pytest.raises(InputError, match="level=1.5"):
        S.percentile_interval([1, 2, 3], level=1.5)


def test_curve_points_and_separation():
    a = [S.curve_point(n, 4, [0.5, 0.7], np.linspace(lo, lo + 0.2, 21)) for n, lo in ((25, 0.5), (50, 0.6), (100, 0.7))]
    b = [S.curve_point(n, 4, [0.6], np.linspace(lo, lo + 0.2, 21)) for n, lo in ((25, 0.6), (50, 0.35), (100, 0.3))]
    assert a[0].mauve == 0.5 and a[0].seed_mean == pytest.approx(0.6) and a[0].seed_std == pytest.approx(0.1414, abs=1e-4)
    assert b[0].seed_std == 0 and a[1].boot_low == pytest.approx(0.605) and a[1].boot_high == pytest.approx(0.795)
    assert [S.separated(x, y) for x, y in zip(a, b)] == [False, True, True]
    assert S.separation_n(a, b) == 50 and S.separation_n(a, a) is None


def test_fixed_cluster_band_is_a_proper_interval():
    p, qa, _ = _sides(n=60, seed=3)
    res, labels = S.refit_mauve(p, qa, k=6, kmeans_seed=27)
    vals = S.fixed_cluster_mauves(labels, 60, 6, n_boot=50, random_state=0)
    lo, hi = S.percentile_interval(vals)
    assert len(vals) == 50 and 0 < lo <= hi <= 1 and lo < hi


def test_bad_input():
    p, qa, qb = _sides()
    with pytest.raises(InputError, match="40 human rows but 39 model rows"):
        S.paired_bootstrap(p, qa[:-1], qb)
    with pytest.raises(InputError, match="n_boot=1"):
        S.paired_bootstrap(p, qa, qb, n_boot=1)
    with pytest.raises(InputError, match="need 2..20 clusters"):
        S.paired_bootstrap(p, qa, qb, k=30)
    with pytest.raises(InputError, match="n=3 in the curve: need an integer >= 4"):
        S.check_sizes([25, 3], 100)
    with pytest.raises(InputError, match="n=200 in the curve: only 100 contexts"):
        S.check_sizes([25, 200], 100)
    assert S.check_sizes([50, 25, 50], 100) == [25, 50]
    assert S.fixed_k([25, 100], None) == 10 and S.fixed_k([8, 100], None) == 4 and S.fixed_k([25], 12) == 12
    with pytest.raises(InputError, match="fixed k=13: need 2..12 clusters"):
        S.fixed_k([25, 100], 13)
    with pytest.raises(InputError, match="band='boot'"):
        S.check_curve_config(S.CurveConfig(band="boot"))
