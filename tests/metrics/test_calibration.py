"""Calibration: a hand computation, and a calibrated sampler against a sharpened one."""
from __future__ import annotations

import numpy as np
import pytest

from evalcore.errors import InputError
from evalcore.metrics import calibration as cal

P = np.array([[0.7, 0.2, 0.1],   # conf 0.7, pred 0
              [0.4, 0.5, 0.1],   # conf 0.5, pred 1
              [0.3, 0.3, 0.4],   # conf 0.4, pred 2
              [0.1, 0.1, 0.8]])  # conf 0.8, pred 2
Y = np.array([0, 0, 2, 1])       # correct: 1, 0, 1, 0


def test_hand_computed_values():
    c = cal.calibration(P, Y, n_bins=2)
    # equal mass: sorted conf 0.4 (ok), 0.5 (wrong) | 0.7 (ok), 0.8 (wrong)
    assert [b.count for b in c.bins] == [2, 2]
    assert [(b.lo, b.hi) for b in c.bins] == [(0.4, 0.5), (0.7, 0.8)]
    assert c.bins[0].confidence == pytest.approx(0.45) and c.bins[0].accuracy == 0.5
    assert c.bins[1].confidence == pytest.approx(0.75) and c.bins[1].accuracy == 0.5
    assert c.ece == pytest.approx(0.5 * 0.05 + 0.5 * 0.25)
    brier = ((0.3**2 + 0.2**2 + 0.1**2) + (0.6**2 + 0.5**2 + 0.1**2) + (0.3**2 + 0.3**2 + 0.6**2)
             + (0.1**2 + 0.9**2 + 0.8**2)) / 4
    assert c.brier == pytest.approx(brier)
    assert c.nll == pytest.approx(-np.mean(np.log([0.7, 0.4, 0.4, 0.1])))
    assert c.accuracy == 0.5 and c.confidence == pytest.approx(0.6) and c.n == 4
    # equal width, 10 bins: 0.4 -> [0.4, 0.5), 0.5 -> [0.5, 0.6), 0.7, 0.8; empty bins left out
    w = cal.calibration(P, Y, binning="width")
    assert [(b.lo, b.hi, b.count) for b in w.bins] == [(0.4, 0.5, 1), (0.5, 0.6, 1), (0.7, 0.8, 1), (0.8, 0.9, 1)]
    assert w.ece == pytest.approx(np.mean([0.6, 0.5, 0.3, 0.8]))
    d = c.to_dict()
    assert d["bins"][0] == {"lo": 0.4, "hi": 0.5, "confidence": pytest.approx(0.45), "accuracy": 0.5, "count": 2}


def test_ties_split_by_item_order_and_few_items():
    conf = np.array([0.5, 0.5, 0.5, 0.9])
    ok = np.array([1, 0, 0, 1])
    b = cal.reliability_bins(conf, ok, n_bins=2)
    assert [x.count for x in b] == [2, 2] and b[0].accuracy == 0.5 and b[1].accuracy == 0.5  # items 0, 1 | 2, 3
    assert (b[0].hi, b[1].lo) == (0.5, 0.5)  # the tie straddles the bins
    assert len(cal.reliability_bins(conf, ok, n_bins=10)) == 4  # fewer items than bins: one item a bin


def _sampler(n, rng):
    probs = rng.dirichlet(np.full(4, 0.5), size=n)
    labels = (rng.random(n)[:, None] > np.cumsum(probs, axis=1)).sum(axis=1)  # drawn from probs
    return probs, np.minimum(labels, 3)


def test_calibrated_sampler_has_small_ece_and_sharpened_larger():
    rng = np.random.default_rng(0)
    probs, labels = _sampler(20000, rng)
    sharp = probs**3 / (probs**3).sum(axis=1, keepdims=True)  # same argmax, overconfident
    for binning in ("mass", "width"):
        good = cal.calibration(probs, labels, binning=binning)
        bad = cal.calibration(sharp, labels, binning=binning)
        assert good.ece < 0.015, good.ece
        assert bad.ece > 0.08 and bad.confidence > bad.accuracy  # overconfident
        assert bad.accuracy == good.accuracy and bad.nll > good.nll and bad.brier > good.brier


@pytest.mark.parametrize("probs,labels,kw,msg", [
    (P * 2, Y, {}, "sums to"),
    (P, Y[:3], {}, "one gold choice per row"),
    (P, np.array([0, 0, 3, 1]), {}, "in 0..2"),
    (P, Y, {"n_bins": 0}, "at least 1 bin"),
    (P, Y, {"binning": "quantile"}, "'mass'"),
])
def test_bad_input(probs, labels, kw, msg):
    with pytest.raises(InputError, match=msg):
        cal.calibration(probs, labels, **kw)
