"""The noise floor of a paired accuracy comparison: which differences N items can resolve.

Two models scored on the same N items. Per item, each is right or wrong:

                     B right   B wrong
        A right        n11       n10        discordance  psi   = (n10 + n01) / N
        A wrong        n01       n00        difference   delta = (n10 - n01) / N = acc(A) - acc(B)

Only the discordant items carry information about delta, so the noise floor depends on psi,
not on the accuracies themselves. The test is McNemar's, in its normal approximation without
continuity correction, two-sided at level alpha:

    z = (n10 - n01) / sqrt(n10 + n01),   reject when |z| > z_{1-alpha/2}

Its power at (N, delta, psi) follows Connor (1987, Biometrics 43:207), ignoring the far tail:

    power = Phi( (sqrt(N) |delta| - z_{1-alpha/2} sqrt(psi)) / sqrt(psi - delta^2) )

so the items needed to detect delta with power 1 - beta are

    N = ( z_{1-alpha/2} sqrt(psi) + z_{1-beta} sqrt(psi - delta^2) )^2 / delta^2

and the smallest detectable |delta| at N items solves the same equation (a quadratic in delta):

    delta = ( a sqrt(N) + b sqrt((N + b^2) psi - a^2) ) / (N + b^2),  a = z_{1-alpha/2} sqrt(psi), b = z_{1-beta}

The exact McNemar test (`scipy.stats.binomtest` on the discordant items, as
`metrics.hellaswag.paired_comparison` reports) is a little more conservative at small counts.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from evalcore.errors import InputError


def _z(alpha: float, power: float) -> tuple[float, float]:
    """(z_{1-alpha/2}, z_{power}) after checking both."""
    from scipy.stats import norm

    if not 0 < alpha < 1:
        raise InputError(f"alpha={alpha}: need a level in (0, 1), e.g. 0.05")
    if not 0.5 <= power < 1:
        raise InputError(f"power={power}: need a power in [0.5, 1), e.g. 0.8")
    return float(norm.ppf(1 - alpha / 2)), float(norm.ppf(power))


def _check_discordance(discordance: float) -> None:
    if not 0 < discordance <= 1:
        raise InputError(f"discordance={discordance}: need the fraction of items where exactly one model is right, "
                         "in (0, 1]; with no discordant items no difference can be measured")


def paired_power(n: int, diff: float, *, discordance: float, alpha: float = 0.05) -> float:
    """The probability that McNemar's test (normal approximation, two-sided, level `alpha`) finds
    a true accuracy difference `diff` on `n` items with discordance `discordance` (Connor 1987)."""
    from scipy.stats import norm

    _check_discordance(discordance)
    za, _ = _z(alpha, 0.5)
    d = abs(diff)
    if not 0 < d <= discordance:
        raise InputError(f"diff={diff}: |diff| must be in (0, discordance={discordance}]; a difference cannot "
                         "exceed the fraction of items where the models disagree")
    if n < 1:
        raise InputError(f"n={n}: need at least 1 item")
    if d == 1:  # every item favours A (or B): n10 - n01 = +-n, no spread left
        return 1.0 if math.sqrt(n) > za else 0.0
    return float(norm.cdf((math.sqrt(n) * d - za * math.sqrt(discordance)) / math.sqrt(discordance - d * d)))


def items_needed(diff: float, *, discordance: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """How many items a paired comparison needs to detect an accuracy difference `diff` with
    probability `power` (McNemar, normal approximation, two-sided, level `alpha`; Connor 1987)."""
    _check_discordance(discordance)
    za, zb = _z(alpha, power)
    d = abs(diff)
    if not 0 < d <= discordance:
        raise InputError(f"diff={diff}: |diff| must be in (0, discordance={discordance}]; a difference cannot "
                         "exceed the fraction of items where the models disagree")
    return int(math.ceil((za * math.sqrt(discordance) + zb * math.sqrt(discordance - d * d)) ** 2 / d ** 2))


def min_detectable_difference(n: int, *, discordance: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest accuracy difference |acc(A) - acc(B)| that `n` items detect with probability
    `power` (McNemar, normal approximation, two-sided, level `alpha`; Connor 1987). Infinity
    when even a difference equal to the discordance (every discordant item favouring one model)
    would not reach `power`: too few discordant items are expected."""
    _check_discordance(discordance)
    za, zb = _z(alpha, power)
    if n < 1:
        raise InputError(f"n={n}: need at least 1 item")
    a, psi = za * math.sqrt(discordance), discordance
    disc = (n + zb * zb) * psi - a * a
    if disc < 0:
        return math.inf
    d = (a * math.sqrt(n) + zb * math.sqrt(disc)) / (n + zb * zb)
    return d if d <= psi else math.inf


def independent_discordance(acc_a: float, acc_b: float) -> float:
    """The discordance two models with these accuracies would have if their errors were
    independent: acc_a (1 - acc_b) + acc_b (1 - acc_a). Models that share errors (the usual
    case) disagree less, so this is a pessimistic guess when only accuracies are known; a
    measured discordance (`noise_floor`) is better."""
    for name, v in (("acc_a", acc_a), ("acc_b", acc_b)):
        if not 0 <= v <= 1:
            raise InputError(f"{name}={v}: an accuracy must be in [0, 1]")
    return acc_a * (1 - acc_b) + acc_b * (1 - acc_a)


@dataclass(frozen=True)
class NoiseFloor:
    """What a paired comparison of two models on the same items can resolve."""

    n: int  # items both models were scored on
    only_a: int  # items only model A gets right (n10)
    only_b: int  # items only model B gets right (n01)
    discordance: float  # (only_a + only_b) / n
    diff: float  # acc(A) - acc(B) measured
    min_detectable_difference: float  # smallest |diff| detectable at n items (inf: none is)
    items_needed: int | None  # items to detect the measured |diff| (None when it is 0 or no item is discordant)
    alpha: float  # two-sided level
    power: float  # target power

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict (an infinite detectable difference becomes None)."""
        d = asdict(self)
        if math.isinf(self.min_detectable_difference):
            d["min_detectable_difference"] = None
        return d


def noise_floor(correct_a: npt.ArrayLike, correct_b: npt.ArrayLike, *, alpha: float = 0.05,
                power: float = 0.8) -> NoiseFloor:
    """From two models' per-item correctness [N] (0/1, same items): the measured discordance,
    the smallest difference these N items can detect, and the items the measured difference
    would need (McNemar, normal approximation; module docstring)."""
    a = np.asarray(correct_a)
    b = np.asarray(correct_b)
    if a.ndim != 1 or a.shape != b.shape or a.size < 1:
        raise InputError(f"correct_a and correct_b must be [N] for the same N >= 1 items, got {a.shape} and {b.shape}")
    if not (np.isin(a, (0, 1)).all() and np.isin(b, (0, 1)).all()):
        raise InputError("correct_a and correct_b must hold 0/1 (or booleans): whether each item was answered right")
    n = int(a.size)
    n10 = int(np.sum((a == 1) & (b == 0)))
    n01 = int(np.sum((a == 0) & (b == 1)))
    psi, diff = (n10 + n01) / n, (n10 - n01) / n
    _z(alpha, power)
    if n10 + n01 == 0:
        return NoiseFloor(n, 0, 0, 0.0, 0.0, math.inf, None, alpha, power)
    mdd = min_detectable_difference(n, discordance=psi, alpha=alpha, power=power)
    need = items_needed(diff, discordance=psi, alpha=alpha, power=power) if diff else None
    return NoiseFloor(n, n10, n01, psi, diff, mdd, need, alpha, power)
