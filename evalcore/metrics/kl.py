"""Divergences between discrete distributions, vectorised over rows (last axis = outcomes).

Conventions are explicit parameters, never silent:
- `base`: e (nats, default) or 2 (bits);
- zero probabilities: 0·log(0/q) = 0; p > 0 where q = 0 makes KL = +inf (reported, not NaN);
- smoothing (`smooth`) is the caller's choice: an epsilon floor or add-k, then renormalised.

Identities that hold to rounding: H(P,Q) = H(P) + KL(P||Q); KL(P||P) = 0;
JS(P,Q) = ½KL(P||M) + ½KL(Q||M), M = ½(P+Q), bounded by log 2.
"""
from __future__ import annotations

import numpy as np
import numpy.typing as npt

from evalcore.errors import InputError

Array = npt.NDArray[np.float64]


def _check(p: npt.ArrayLike, name: str = "p", *, atol: float = 1e-6) -> Array:
    a = np.asarray(p, dtype=np.float64)
    if a.ndim == 0 or a.shape[-1] < 1:
        raise InputError(f"{name} must have at least one outcome on its last axis")
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        raise InputError(f"{name} has negative, NaN or infinite entries; probabilities must be finite and >= 0")
    s = a.sum(axis=-1)
    if np.any(np.abs(s - 1) > atol):
        raise InputError(f"{name} rows sum to {np.ravel(s)[:3]}, not 1; normalise first (or use smooth())")
    return a


def _log(x: Array, base: float) -> Array:
    return np.log(x) / (np.log(base) if base != np.e else 1.0)


def smooth(p: npt.ArrayLike, *, method: str = "epsilon", amount: float = 1e-6) -> Array:
    """Remove zeros so KL stays finite; the caller records `method` and `amount`.

    method="epsilon": p' ∝ max(p, amount); method="add-k": p' ∝ p + amount (counts or probs).
    """
    a = np.asarray(p, dtype=np.float64)
    if amount <= 0:
        raise InputError(f"smoothing amount={amount}: must be > 0, e.g. 1e-6")
    if method == "epsilon":
        a = np.maximum(a, amount)
    elif method == "add-k":
        a = a + amount
    else:
        raise InputError(f"smoothing method {method!r}: use 'epsilon' or 'add-k'")
    out: Array = a / a.sum(axis=-1, keepdims=True)
    return out


def entropy(p: npt.ArrayLike, *, base: float = np.e) -> Array:
    """H(P) = -Σ p log p, per row."""
    p = _check(p)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(p > 0, p * _log(np.where(p > 0, p, 1.0), base), 0.0)
    h: Array = -t.sum(axis=-1)
    return h


def cross_entropy(p: npt.ArrayLike, q: npt.ArrayLike, *, base: float = np.e) -> Array:
    """H(P,Q) = -Σ p log q, per row; +inf where q = 0 < p."""
    p, q = _check(p), _check(q, "q")
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(p > 0, p * _log(np.where(q > 0, q, 1.0), base), 0.0)
        inf = np.any((p > 0) & (q == 0), axis=-1)
    return np.where(inf, np.inf, -t.sum(axis=-1))


def kl(p: npt.ArrayLike, q: npt.ArrayLike, *, base: float = np.e) -> Array:
    """KL(P||Q) = Σ p log(p/q), per row; 0 terms where p = 0; +inf where q = 0 < p.

    Matches `scipy.stats.entropy(p, q)` (which is KL when given two arguments).
    """
    p, q = _check(p), _check(q, "q")
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where((p > 0) & (q > 0), p / np.where(q > 0, q, 1.0), 1.0)
        t = np.where(p > 0, p * _log(ratio, base), 0.0)
        inf = np.any((p > 0) & (q == 0), axis=-1)
    return np.where(inf, np.inf, np.maximum(t.sum(axis=-1), 0.0))


def reverse_kl(p: npt.ArrayLike, q: npt.ArrayLike, *, base: float = np.e) -> Array:
    """KL(Q||P): the other direction, which is in general different (KL is asymmetric)."""
    return kl(q, p, base=base)


def js(p: npt.ArrayLike, q: npt.ArrayLike, *, base: float = np.e) -> Array:
    """Jensen-Shannon divergence ½KL(P||M) + ½KL(Q||M), M = (P+Q)/2; always finite, <= log 2."""
    p, q = _check(p), _check(q, "q")
    m = 0.5 * (p + q)
    return 0.5 * kl(p, m, base=base) + 0.5 * kl(q, m, base=base)


def neg_entropy_phi(p: npt.ArrayLike) -> Array:
    """φ(p) = Σ p log p (negative entropy), the convex generator of KL as a Bregman divergence."""
    return -entropy(p)


def bregman(p: npt.ArrayLike, q: npt.ArrayLike) -> Array:
    """D_φ(p, q) = φ(p) - φ(q) - ∇φ(q)·(p - q) for φ(p) = Σ p log p (nats).

    ∇φ(q) = log q + 1; on the simplex Σ(p - q) = 0, so D_φ(p, q) = KL(P||Q).
    """
    p, q = _check(p), _check(q, "q")
    with np.errstate(divide="ignore"):
        grad = np.log(q) + 1.0
    inner = np.where(p - q == 0, 0.0, grad * (p - q))
    d: Array = neg_entropy_phi(p) - neg_entropy_phi(q) - inner.sum(axis=-1)
    return d


def softmax(logits: npt.ArrayLike, axis: int = -1) -> Array:
    """Numerically stable softmax (log-likelihoods -> a distribution over choices)."""
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    out: Array = e / e.sum(axis=axis, keepdims=True)
    return out
