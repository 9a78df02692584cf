"""How far model P is from model Q on text, per byte, from per-text log-probabilities: the
statistics behind cross-tokenizer comparisons (no model here; evalcore.runs.crosskl scores).

Each text x_i has log P(x_i) and log Q(x_i) in nats, each model scoring its own canonical
tokenization of the same b_i UTF-8 bytes (evalcore.scoring.sequence). With d_i = log P(x_i) - log Q(x_i):

    cross-entropy gap   Σ d_i / (Σ b_i · ln 2)       x_i: a corpus         bits per byte, = bpb(Q) - bpb(P)
    Monte-Carlo KL, k1  Σ d_i / Σ b_i                x_i ~ P (sampled)     nats per byte, unbiased for KL(P‖Q)
                    k3  Σ (r_i - 1 - log r_i) / Σ b_i,  r_i = Q(x_i)/P(x_i)      never negative, same mean

The gap is not a divergence: it is 0 whenever both models give the corpus the same total
probability, even when P ≠ Q, and it can be negative. The Monte-Carlo KL is one; its
standard error falls as 1/√n, so `needed_for` says how many samples a target error takes.
Ratios of sums are estimated per byte; their standard errors use the delta method, and the
gap's interval resamples texts (a paired bootstrap: both models' scores of a text move together).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from evalcore.errors import InputError

LN2 = math.log(2.0)


@dataclass(frozen=True)
class PerByte:
    """An estimate per byte with its standard error and 95% interval."""

    value: float
    se: float
    ci95: tuple[float, float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _arrays(lp_p: npt.ArrayLike, lp_q: npt.ArrayLike, n_bytes: npt.ArrayLike
            ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    p, q, b = (np.asarray(x, dtype=np.float64) for x in (lp_p, lp_q, n_bytes))
    if not (p.shape == q.shape == b.shape) or p.ndim != 1 or p.size == 0:
        raise InputError("log-probabilities and byte counts must be three equal-length, non-empty lists")
    if not (np.isfinite(p).all() and np.isfinite(q).all()) or (b <= 0).any():
        raise InputError("log-probabilities must be finite and every text must have at least one byte")
    return p - q, b


def _ratio_se(num: npt.NDArray[np.float64], den: npt.NDArray[np.float64]) -> tuple[float, float]:
    """(Σ num / Σ den, its delta-method standard error over the n pairs)."""
    n = num.size
    r = float(num.sum() / den.sum())
    if n < 2:
        return r, float("nan")
    resid = num - r * den
    return r, float(math.sqrt(resid.var(ddof=1) / n) / den.mean())


def gap_per_byte(lp_p: npt.ArrayLike, lp_q: npt.ArrayLike, n_bytes: npt.ArrayLike, *, n_boot: int = 2000,
                 random_state: int = 0) -> PerByte:
    """The cross-entropy gap Σ(log P - log Q) / (Σ bytes · ln 2), in bits per byte, with a paired
    bootstrap 95% interval over texts (module docstring: it is not a divergence)."""
    d, b = _arrays(lp_p, lp_q, n_bytes)
    value, se = _ratio_se(d / LN2, b)
    if d.size < 2:
        return PerByte(value, se, (float("nan"), float("nan")))
    rng = np.random.default_rng(random_state)
    idx = rng.integers(0, d.size, size=(n_boot, d.size))
    boots = d[idx].sum(1) / b[idx].sum(1) / LN2
    lo, hi = np.quantile(boots, [0.025, 0.975])
    return PerByte(value, se, (float(lo), float(hi)))


@dataclass(frozen=True)
class MonteCarloKL:
    """KL(P‖Q) per byte estimated from texts sampled from P."""

    k1: PerByte  # Σ(log P - log Q) / Σ bytes: unbiased, can be negative on a small sample
    k3: PerByte | None  # Σ(r - 1 - log r) / Σ bytes: never negative; None when some r overflows
    n: int  # samples used

    def needed_for(self, target_se: float) -> int:
        """Samples the k1 estimate needs for a standard error of `target_se` nats per byte."""
        if not target_se > 0 or not math.isfinite(self.k1.se):
            raise InputError(f"target_se={target_se}: need a positive target and at least two samples")
        return max(2, math.ceil(self.n * (self.k1.se / target_se) ** 2))

    def to_dict(self) -> dict[str, Any]:
        return {"k1": self.k1.to_dict(), "k3": self.k3.to_dict() if self.k3 else None, "n": self.n}


def _normal_interval(value: float, se: float) -> tuple[float, float]:
    return (value - 1.959964 * se, value + 1.959964 * se) if math.isfinite(se) else (float("nan"), float("nan"))


def mc_kl_per_byte(lp_p: npt.ArrayLike, lp_q: npt.ArrayLike, n_bytes: npt.ArrayLike) -> MonteCarloKL:
    """KL(P‖Q) in nats per byte from texts sampled from P: k1 and k3 (module docstring), each
    with a delta-method standard error and a normal 95% interval."""
    d, b = _arrays(lp_p, lp_q, n_bytes)
    v1, se1 = _ratio_se(d, b)
    with np.errstate(over="ignore"):
        k3_terms = np.expm1(-d) + d  # r - 1 - log r with log r = -d, exact near r = 1
    k3 = None
    if np.isfinite(k3_terms).all():
        v3, se3 = _ratio_se(k3_terms, b)
        k3 = PerByte(v3, se3, _normal_interval(v3, se3))
    return MonteCarloKL(PerByte(v1, se1, _normal_interval(v1, se1)), k3, int(d.size))
