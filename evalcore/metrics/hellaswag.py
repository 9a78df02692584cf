"""HellaSwag from log-likelihoods: predictions, accuracy with intervals, choice distributions,
paired comparison of two models. Pure numpy/scipy.

Shapes: `loglik` [N, 4] (natural-log likelihood of each ending given the context),
`char_len` [N, 4] (characters of each ending, without the leading space, as lm-eval),
`labels` [N].

    acc       = mean(argmax_i loglik[:, i] == label)                 (lm-eval "acc")
    acc_norm  = mean(argmax_i loglik[:, i] / char_len[:, i] == label) (lm-eval "acc_norm")
    stderr    = sample std (ddof=1) / sqrt(N)                          (lm-eval mean_stderr)
    P(a_i|ctx)= softmax_i(loglik)                                      (the lesson's section 4)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, overload

import numpy as np
import numpy.typing as npt

from evalcore.errors import InputError
from evalcore.metrics.kl import kl, softmax

Array = npt.NDArray[np.float64]


@overload
def _arrays(loglik: npt.ArrayLike, char_len: npt.ArrayLike) -> tuple[Array, Array]: ...
@overload
def _arrays(loglik: npt.ArrayLike, char_len: npt.ArrayLike | None) -> tuple[Array, Array | None]: ...
def _arrays(loglik: npt.ArrayLike, char_len: npt.ArrayLike | None = None) -> tuple[Array, Array | None]:
    """loglik as a float64 [N, n_choices] array, and char_len checked against it (None stays None)."""
    ll = np.asarray(loglik, dtype=np.float64)
    if ll.ndim != 2 or ll.shape[0] < 1:
        raise InputError(f"loglik must be [N, n_choices] with N >= 1, got shape {ll.shape}")
    if char_len is None:
        return ll, None
    cl = np.asarray(char_len, dtype=np.float64)
    if cl.shape != ll.shape or np.any(cl <= 0):
        raise InputError(f"char_len must match loglik's shape {ll.shape} and be > 0")
    return ll, cl


def predictions(loglik: npt.ArrayLike, char_len: npt.ArrayLike) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(pred, pred_norm) [N]: argmax of log-likelihood, and of log-likelihood per character."""
    ll, cl = _arrays(loglik, char_len)
    return np.argmax(ll, axis=1), np.argmax(ll / cl, axis=1)


def choice_distribution(loglik: npt.ArrayLike, char_len: npt.ArrayLike | None = None) -> Array:
    """P(a_i | context) [N, 4]: softmax of the log-likelihoods (per character if char_len given)."""
    ll, cl = _arrays(loglik, char_len)
    return softmax(ll if cl is None else ll / cl, axis=1)


@dataclass(frozen=True)
class Accuracy:
    """An accuracy with its standard error and a bootstrap 95% interval."""

    value: float  # fraction correct in [0, 1]
    stderr: float  # sample std (ddof=1) / sqrt(n), as lm-eval
    ci95: tuple[float, float]  # percentile bootstrap interval
    n: int

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return asdict(self)


def accuracy(correct: npt.ArrayLike, *, n_boot: int = 2000, random_state: int = 0) -> Accuracy:
    """Mean of a 0/1 vector with stderr and a percentile bootstrap 95% interval."""
    c = np.asarray(correct, dtype=np.float64)
    n = c.size
    if n < 1:
        raise InputError("accuracy of zero items: select at least one item")
    stderr = float(c.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    rng = np.random.default_rng(random_state)
    boots = c[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return Accuracy(float(c.mean()), stderr, (float(lo), float(hi)), n)


@dataclass(frozen=True)
class PairedComparison:
    """Model A vs model B on the same items."""

    acc_diff: float  # acc(A) - acc(B)
    acc_diff_ci95: tuple[float, float]  # paired bootstrap (items resampled jointly)
    mcnemar_p: float  # exact McNemar test (two-sided binomial on discordant items)
    only_a_correct: int  # discordant counts
    only_b_correct: int
    kl_ab_mean: float  # mean over items of KL(P_A || P_B) between choice distributions (nats)
    kl_ba_mean: float  # mean of KL(P_B || P_A)
    kl_ab: list[float]  # per item
    n: int

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return asdict(self)


def paired_comparison(correct_a: npt.ArrayLike, correct_b: npt.ArrayLike, loglik_a: npt.ArrayLike,
                      loglik_b: npt.ArrayLike, *, n_boot: int = 2000, random_state: int = 0) -> PairedComparison:
    """Accuracy difference with a paired bootstrap interval, McNemar's test, and per-item KL
    between the two models' choice distributions (works across tokenizers: it compares
    distributions over the same four endings)."""
    from scipy.stats import binomtest

    a = np.asarray(correct_a, dtype=np.float64)
    b = np.asarray(correct_b, dtype=np.float64)
    if a.shape != b.shape or a.size < 1:
        raise InputError(f"paired comparison needs the same items for both models, got {a.shape} and {b.shape}")
    n = a.size
    rng = np.random.default_rng(random_state)
    idx = rng.integers(0, n, size=(n_boot, n))
    diffs = a[idx].mean(axis=1) - b[idx].mean(axis=1)
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    n10 = int(np.sum((a == 1) & (b == 0)))
    n01 = int(np.sum((a == 0) & (b == 1)))
    p = 1.0 if n10 + n01 == 0 else float(binomtest(n10, n10 + n01, 0.5).pvalue)
    pa, pb = choice_distribution(loglik_a), choice_distribution(loglik_b)
    kab, kba = kl(pa, pb), kl(pb, pa)
    return PairedComparison(float(a.mean() - b.mean()), (float(lo), float(hi)), p, n10, n01,
                            float(kab.mean()), float(kba.mean()), [float(x) for x in kab], n)
