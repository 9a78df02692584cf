"""MAUVE's frontier without quantization: histogram divergences against scipy, the curve formula
against `mauve.divergence_curve`, and the three estimators against the exact frontier of
Gaussian mixtures (tests/support/gaussians.py), at n = 100 and 2000 points per side."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import entropy

from evalcore.errors import InputError
from evalcore.metrics import frontier as F
from evalcore.metrics import mauve as M
from tests.support.gaussians import PAIRS, GaussianMixture, frontier_error, true_frontier, true_kl_points

# ----------------------------------------------------------------------------- histograms


def test_divergences_match_scipy():
    rng = np.random.default_rng(0)
    p, q = rng.integers(0, 30, size=40), rng.integers(0, 30, size=40)
    p[3] = q[7] = 0
    d = F.divergences(p, q)
    ps, qs = (p + 0.5) / (p + 0.5).sum(), (q + 0.5) / (q + 0.5).sum()
    assert d.kl_pq == pytest.approx(entropy(ps, qs), rel=1e-12)
    assert d.kl_qp == pytest.approx(entropy(qs, ps), rel=1e-12)
    assert d.js == pytest.approx(jensenshannon(p, q) ** 2, rel=1e-9)  # scipy's base is e by default
    assert d.tv == pytest.approx(0.5 * np.abs(p / p.sum() - q / q.sum()).sum(), rel=1e-12)
    # mauve's own histogram KLs use the same add-0.5 convention
    ref = M.mauve_from_counts(p, q)
    assert (d.kl_pq, d.kl_qp) == pytest.approx((ref.kl_pq, ref.kl_qp), rel=1e-12)


def test_divergences_on_disjoint_and_equal_histograms():
    d = F.divergences([0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.25, 0.75], smoothing=0)
    assert (d.tv, d.js, d.kl_pq, d.kl_qp) == (pytest.approx(1.0), pytest.approx(np.log(2)), np.inf, np.inf)
    same = F.divergences([3, 1, 0], [6, 2, 0], smoothing=0)  # equal once normalised
    assert (same.kl_pq, same.kl_qp, same.js, same.tv) == pytest.approx((0, 0, 0, 0), abs=1e-15)
    # add-0.5 acts on counts, so equal proportions from different totals no longer match
    assert F.divergences([3, 1, 0], [6, 2, 0]).kl_pq > 0.01
    assert set(same.to_dict()) == {"kl_pq", "kl_qp", "js", "tv", "smoothing"}


def test_divergences_bad_input():
    with pytest.raises(InputError, match="same k"):
        F.divergences([1, 2], [1, 2, 3])
    with pytest.raises(InputError, match="negative"):
        F.divergences([1, -1], [1, 1])
    with pytest.raises(InputError, match="sums to 0"):
        F.divergences([0, 0], [1, 1])
    with pytest.raises(InputError, match="smoothing=-1"):
        F.divergences([1, 1], [1, 1], smoothing=-1)


# ----------------------------------------------------------------------------- curve from ratios


def test_frontier_from_ratios_equals_divergence_curve_on_exact_samples():
    # Samples whose empirical laws are exactly p and q; r = p/q at each point makes the sample
    # means exact expectations, so the curve must be mauve's plug-in curve to rounding.
    p, q = np.array([0.5, 0.25, 0.25]), np.array([0.25, 0.25, 0.5])
    xp, xq = np.array([0, 0, 1, 2]), np.array([0, 1, 2, 2])
    r = p / q
    want = M.divergence_curve(p, q)
    for normalize in (True, False):  # these ratios already meet E_Q[r] = E_P[1/r] = 1
        got = F.frontier_from_ratios(r[xp], r[xq], normalize=normalize)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    assert M.mauve_area(got) == pytest.approx(M.mauve_from_counts(p, q).mauve, rel=1e-12)


def test_true_ratios_give_the_true_frontier():
    # The formula alone, without a ratio estimator: exact r at 20000 samples per side is a Monte
    # Carlo estimate of the exact curve (standard error ~0.005 in MAUVE here).
    P, Q = PAIRS["2d"]
    xp, xq = P.sample(20000, random_state=1), Q.sample(20000, random_state=2)
    curve = F.frontier_from_ratios(np.exp(P.logpdf(xp) - Q.logpdf(xp)), np.exp(P.logpdf(xq) - Q.logpdf(xq)))
    truth = true_frontier(P, Q)
    assert abs(M.mauve_area(curve) - M.mauve_area(truth)) < 0.015
    assert frontier_error(curve, truth) < 0.015


def test_truth_matches_closed_form_kl():
    # KL between Gaussians with diagonal covariances, summed over coordinates; λ → 0 makes R_λ = Q.
    P = GaussianMixture((1.0,), ((0.0, 1.0),), ((1.0, 0.5),))
    Q = GaussianMixture((1.0,), ((1.0, -0.5),), ((2.0, 0.8),))
    mp, sp, mq, sq = np.array([0.0, 1.0]), np.array([1.0, 0.5]), np.array([1.0, -0.5]), np.array([2.0, 0.8])
    closed = float(np.sum(np.log(sq / sp) + (sp**2 + (mp - mq) ** 2) / (2 * sq**2) - 0.5))
    assert true_kl_points(P, Q, alphas=[1e-12])[0, 1] == pytest.approx(closed, abs=1e-9)
    P1, Q1 = (GaussianMixture((1.0,), ((m[0],),), ((s[0],),)) for m, s in ((mp, sp), (mq, sq)))
    closed1 = float(np.log(sq[0] / sp[0]) + (sp[0] ** 2 + (mp[0] - mq[0]) ** 2) / (2 * sq[0] ** 2) - 0.5)
    assert true_kl_points(P1, Q1, alphas=[1e-12])[0, 1] == pytest.approx(closed1, abs=1e-9)


# ----------------------------------------------------------------------------- three estimators

ESTIMATORS = {
    "quantized": lambda p, q, s: F.mauve_quantized(p, q, k="sqrt", preprocess="none"),
    "knn": lambda p, q, s: F.mauve_knn(p, q, preprocess="none"),
    "classifier": lambda p, q, s: F.mauve_classifier(p, q, random_state=s, preprocess="none"),
}


@pytest.fixture(scope="module")
def truths():
    return {name: true_frontier(*pair) for name, pair in PAIRS.items()}


def _errors(estimate, n, truths, seeds=range(3)):
    """Mean |MAUVE error| and mean frontier error over both pairs and the seeds."""
    e, f = [], []
    for name, (P, Q) in PAIRS.items():
        for s in seeds:
            est = estimate(P.sample(n, random_state=100 * s + 1), Q.sample(n, random_state=100 * s + 2), s)
            e.append(abs(est.mauve - M.mauve_area(truths[name])))
            f.append(frontier_error(est.divergence_curve, truths[name]))
    return float(np.mean(e)), float(np.mean(f))


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_error_falls_with_n(name, truths):
    # These seeds are block 0 of four blocks of 3 seeds (0-2, 3-5, 6-8, 9-11; both pairs each).
    # Over the four, the n = 2000 block means stayed at or below 0.039 (|MAUVE error|) and 0.046
    # (frontier error) for all three estimators, so the bounds 0.06 and 0.07 leave 1.5x; the
    # n = 100 frontier error was 0.066-0.152, and the n = 2000 one at most 0.57 of it (0.10-0.34
    # in block 0). A drop below 0.6x, with the bounds, is what "error falls with n" asserts.
    small = _errors(ESTIMATORS[name], 100, truths)
    large = _errors(ESTIMATORS[name], 2000, truths)
    assert large[0] < 0.06 and large[1] < 0.07, (small, large)
    assert large[1] < 0.6 * small[1] and large[0] < small[0], (small, large)


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_identical_distributions_give_mauve_near_one(name):
    P = PAIRS["2d"][0]
    est = ESTIMATORS[name](P.sample(500, random_state=1), P.sample(500, random_state=2), 0)
    assert est.mauve > 0.95
    assert est.estimator == name and est.settings["n_p"] == 500


def test_quantized_with_mauve_preprocessing_is_compute_mauve():
    rng = np.random.default_rng(0)
    p, q = rng.normal(size=(120, 16)), rng.normal(size=(100, 16)) + 0.3
    est = F.mauve_quantized(p, q, k=8)
    ref = M.compute_mauve(p, q, k=8)
    assert est.mauve == ref.mauve and est.divergence_curve == ref.divergence_curve


def test_knn_ratio_counts_neighbours():
    # Two far-apart clumps, P on the left and Q on the right: every neighbour of a point is on its own
    # side, so with add-0.5 r = (3 + 0.5)/3 / (0.5/4) at P points and (0.5/4) / ((3 + 0.5)/3) at Q.
    p = np.array([[0.0], [0.1], [0.2], [0.3]])
    q = p + 100.0
    rp, rq = F.knn_density_ratio(p, q, n_neighbors=3)
    np.testing.assert_allclose(rp, (3.5 / 3) / (0.5 / 4))
    np.testing.assert_allclose(rq, (0.5 / 4) / (3.5 / 3))


def test_bad_input():
    x = np.zeros((10, 2))
    with pytest.raises(InputError, match="n_neighbors=0"):
        F.knn_density_ratio(x, x, n_neighbors=0)
    with pytest.raises(InputError, match="model='svm'"):
        F.classifier_density_ratio(x, x, model="svm")
    with pytest.raises(InputError, match="n_folds=1"):
        F.classifier_density_ratio(x, x, n_folds=1)
    with pytest.raises(InputError, match="different dimensions"):
        F.knn_density_ratio(x, np.zeros((10, 3)))
    with pytest.raises(InputError, match="r_q must be"):
        F.frontier_from_ratios([1.0, 2.0], [1.0, 0.0])
    with pytest.raises(InputError, match="alphas"):
        F.frontier_from_ratios([1.0], [1.0], alphas=[0.0, 0.5])
    with pytest.raises(InputError, match="preprocess='pca'"):
        F.mauve_knn(x, x, preprocess="pca")
