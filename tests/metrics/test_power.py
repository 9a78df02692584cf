"""The noise floor: the formulas against simulated McNemar tests."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom, norm

from evalcore.errors import InputError
from evalcore.metrics import power as pw


def _simulated_power(n, diff, psi, rng, sims=2000):
    """Fraction of `sims` paired experiments (n items, discordance psi, true difference diff)
    in which McNemar's test rejects at 0.05: (normal approximation, exact binomial)."""
    counts = rng.multinomial(n, [(psi + diff) / 2, (psi - diff) / 2, 1 - psi], size=sims)
    n10, n01 = counts[:, 0], counts[:, 1]
    m = np.maximum(n10 + n01, 1)
    z = (n10 - n01) / np.sqrt(m)
    p_exact = np.minimum(1.0, 2 * binom.cdf(np.minimum(n10, n01), m, 0.5))
    return float(np.mean(np.abs(z) > norm.ppf(0.975))), float(np.mean(p_exact < 0.05))


@pytest.mark.parametrize("n,psi", [(1000, 0.2), (400, 0.35)])
def test_min_detectable_difference_has_80_percent_power(n, psi):
    d = pw.min_detectable_difference(n, discordance=psi)
    assert 0 < d < psi
    assert pw.paired_power(n, d, discordance=psi) == pytest.approx(0.8, abs=1e-9)
    normal, exact = _simulated_power(n, d, psi, np.random.default_rng(1))
    assert 0.76 <= normal <= 0.84, normal
    assert 0.72 <= exact <= 0.84, exact  # the exact test is a little more conservative


def test_items_needed_inverts_min_detectable_difference():
    for psi in (0.1, 0.25, 0.5):
        for n in (100, 1000, 10042):
            d = pw.min_detectable_difference(n, discordance=psi)
            assert pw.items_needed(d, discordance=psi) in (n, n + 1)  # ceil of the exact root
            assert pw.items_needed(-d, discordance=psi) in (n, n + 1)  # two-sided
    # smaller differences need more items, lower power fewer
    assert pw.items_needed(0.01, discordance=0.2) > pw.items_needed(0.02, discordance=0.2)
    assert pw.items_needed(0.02, discordance=0.2, power=0.5) < pw.items_needed(0.02, discordance=0.2)
    # with delta^2 << psi, N ~ (z_a + z_b)^2 psi / delta^2
    approx = (norm.ppf(0.975) + norm.ppf(0.8)) ** 2 * 0.2 / 0.01**2
    assert abs(pw.items_needed(0.01, discordance=0.2) - approx) / approx < 0.01


def test_too_few_discordant_items_detect_nothing():
    # n psi = 2 expected discordant items < z^2 = 3.84: not even diff = psi is detectable
    assert math.isinf(pw.min_detectable_difference(20, discordance=0.1))


def test_noise_floor_from_correctness_vectors():
    a = np.array([1] * 30 + [0] * 10 + [1] * 50 + [0] * 10)  # A right only on the first 30
    b = np.array([0] * 30 + [1] * 10 + [1] * 50 + [0] * 10)  # B right only on the next 10
    nf = pw.noise_floor(a, b)
    assert (nf.n, nf.only_a, nf.only_b) == (100, 30, 10)
    assert nf.discordance == pytest.approx(0.4) and nf.diff == pytest.approx(0.2)
    assert nf.min_detectable_difference == pytest.approx(pw.min_detectable_difference(100, discordance=0.4))
    assert nf.items_needed == pw.items_needed(0.2, discordance=0.4)
    same = pw.noise_floor(a, a)
    assert same.discordance == 0 and same.items_needed is None and same.to_dict()["min_detectable_difference"] is None
    assert pw.independent_discordance(0.5, 0.5) == 0.5


@pytest.mark.parametrize("call,msg", [
    (lambda: pw.items_needed(0.3, discordance=0.2), "cannot exceed"),
    (lambda: pw.items_needed(0.1, discordance=0), "discordance=0"),
    (lambda: pw.min_detectable_difference(100, discordance=0.2, power=1.0), "power=1.0"),
    (lambda: pw.min_detectable_difference(0, discordance=0.2), "n=0"),
    (lambda: pw.noise_floor([1, 0], [1, 2]), "0/1"),
])
def test_bad_input(call, msg):
    with pytest.raises(InputError, match=msg):
        call()
