"""Calibration of a multiple-choice distribution: ECE, Brier score, NLL, reliability diagram.

Shapes: `probs` [N, C] (each row a distribution over the C endings, e.g. a HellaSwag dialect's
softmax, `metrics.dialects.dialect_distributions`), `labels` [N] (gold ending).

    confidence_i = max_c probs[i, c]            the probability of the predicted ending
    correct_i    = argmax_c probs[i, c] == y_i  (first ending on ties)
    ECE          = sum_b (n_b / N) |acc_b - conf_b|   over the non-empty bins b
    Brier        = mean_i sum_c (probs[i, c] - onehot(y_i)[c])^2   in [0, 2]: lm-eval's
                   `brier_score` (summed over classes; some papers divide by C as well)
    NLL          = mean_i -log probs[i, y_i]   (nats)

Binning (`binning`):
- "mass" (default): equal-count bins. Items are sorted by confidence (a stable sort, so equal
  confidences keep item order) and cut into `n_bins` runs whose sizes differ by at most one.
  Ties are not kept together: items of equal confidence can fall in two neighbouring bins,
  whose edges then coincide. With fewer items than bins, each item is its own bin.
- "width": `n_bins` equal intervals of [0, 1], [k/B, (k+1)/B) with the last one closed;
  empty bins are left out of the diagram and of the ECE.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from evalcore.errors import InputError

Array = npt.NDArray[np.float64]
BINNINGS = ("mass", "width")


@dataclass(frozen=True)
class ReliabilityBin:
    """One bar of the reliability diagram."""

    lo: float  # lower edge: k/B for equal width; the smallest confidence in the bin for equal mass
    hi: float  # upper edge: (k+1)/B for equal width; the largest confidence in the bin for equal mass
    confidence: float  # mean confidence (max probability) of the bin's items
    accuracy: float  # fraction of the bin's items whose most probable ending is the gold one
    count: int  # items in the bin

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class Calibration:
    """How well a choice distribution's confidence matches its accuracy."""

    ece: float  # expected calibration error over `bins`, in [0, 1]
    brier: float  # multi-class Brier score, summed over classes, mean over items, in [0, 2]
    nll: float  # mean -log P(gold ending), nats
    accuracy: float  # fraction of items whose most probable ending is the gold one
    confidence: float  # mean max probability; confidence - accuracy > 0 is overconfidence
    n: int  # items
    binning: str  # "mass" (equal counts) or "width" (equal intervals)
    bins: list[ReliabilityBin]  # non-empty bins, by increasing confidence

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict (bins as a list of dicts)."""
        return {**{k: v for k, v in asdict(self).items() if k != "bins"}, "bins": [b.to_dict() for b in self.bins]}


def _check(probs: npt.ArrayLike, labels: npt.ArrayLike) -> tuple[Array, npt.NDArray[np.int64]]:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] < 1 or p.shape[1] < 2:
        raise InputError(f"probs must be [N, n_choices] with N >= 1 and >= 2 choices, got shape {p.shape}")
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise InputError("probs has negative, NaN or infinite entries; give probabilities (e.g. a softmax)")
    s = p.sum(axis=1)
    if np.any(np.abs(s - 1) > 1e-6):
        i = int(np.argmax(np.abs(s - 1)))
        raise InputError(f"probs row {i} sums to {s[i]:.6g}, not 1; normalise each row (softmax of the scores)")
    y = np.asarray(labels)
    if y.shape != (p.shape[0],) or not np.issubdtype(y.dtype, np.integer):
        raise InputError(f"labels must be {p.shape[0]} integers (one gold choice per row), got shape {y.shape}")
    if np.any((y < 0) | (y >= p.shape[1])):
        raise InputError(f"labels must be in 0..{p.shape[1] - 1}, got {int(y.min())}..{int(y.max())}")
    return p, y.astype(np.int64)


def brier_score(probs: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Mean over items of sum over choices of (p - onehot(label))^2, in [0, 2] (lm-eval's convention)."""
    p, y = _check(probs, labels)
    onehot = np.eye(p.shape[1])[y]
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


def nll(probs: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Mean -log P(label) in nats; a probability that underflowed to 0 counts as the smallest
    positive float64 (at most 708 nats an item, never infinity)."""
    p, y = _check(probs, labels)
    py = np.maximum(p[np.arange(len(y)), y], np.finfo(np.float64).tiny)
    return float(np.mean(-np.log(py)))


def reliability_bins(confidence: npt.ArrayLike, correct: npt.ArrayLike, *, n_bins: int = 10,
                     binning: str = "mass") -> list[ReliabilityBin]:
    """The reliability diagram: the non-empty bins of confidence [N] (in [0, 1]) with their mean
    confidence, accuracy of `correct` [N] (0/1) and count (binning rules: module docstring)."""
    conf = np.asarray(confidence, dtype=np.float64)
    ok = np.asarray(correct, dtype=np.float64)
    if conf.ndim != 1 or conf.size < 1 or ok.shape != conf.shape:
        raise InputError(f"confidence and correct must be [N] with N >= 1, got {conf.shape} and {ok.shape}")
    if not np.all((conf >= 0) & (conf <= 1)):
        raise InputError("confidence must lie in [0, 1] (a probability); NaN is not allowed")
    if n_bins < 1:
        raise InputError(f"n_bins={n_bins}: need at least 1 bin; 10 is the usual choice")
    if binning not in BINNINGS:
        raise InputError(f"binning={binning!r}: choose 'mass' (equal counts) or 'width' (equal intervals)")
    if binning == "mass":
        order = np.argsort(conf, kind="stable")
        groups = np.array_split(order, min(n_bins, conf.size))
        edges = [(float(conf[g].min()), float(conf[g].max())) for g in groups]
    else:
        k = np.minimum((conf * n_bins).astype(np.int64), n_bins - 1)  # [k/B, (k+1)/B), 1.0 in the last
        groups = [np.flatnonzero(k == b) for b in range(n_bins)]
        edges = [(b / n_bins, (b + 1) / n_bins) for b in range(n_bins)]
    return [ReliabilityBin(lo, hi, float(conf[g].mean()), float(ok[g].mean()), int(g.size))
            for g, (lo, hi) in zip(groups, edges) if g.size]


def expected_calibration_error(bins: list[ReliabilityBin]) -> float:
    """ECE of a reliability diagram: sum over bins of (count / N) |accuracy - confidence|."""
    n = sum(b.count for b in bins)
    if n < 1:
        raise InputError("ECE of no items: the reliability diagram has no non-empty bin")
    return float(sum(b.count * abs(b.accuracy - b.confidence) for b in bins) / n)


def calibration(probs: npt.ArrayLike, labels: npt.ArrayLike, *, n_bins: int = 10,
                binning: str = "mass") -> Calibration:
    """ECE, Brier score, NLL and the reliability diagram of a choice distribution [N, C] against
    the gold labels [N] (conventions: module docstring)."""
    p, y = _check(probs, labels)
    conf = p.max(axis=1)
    correct = (np.argmax(p, axis=1) == y).astype(np.float64)
    bins = reliability_bins(conf, correct, n_bins=n_bins, binning=binning)
    return Calibration(expected_calibration_error(bins), brier_score(p, y), nll(p, y), float(correct.mean()),
                       float(conf.mean()), int(p.shape[0]), binning, bins)
