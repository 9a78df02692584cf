"""HellaSwag's scoring dialects: one set of log-likelihoods, five ways to pick an ending.

Shapes: every array is [N, C] (items x endings, C = 4 for HellaSwag), `labels` [N].
`loglik` is log P(" " + ending | context) in nats; lengths count the ending *without* its
leading space, as lm-evaluation-harness's `process_results` does for `completion_len` and
`byte_length` (the space is scored but not counted).

    name              score of ending i                          reference
    acc               loglik                                     lm-eval "acc"
    acc_norm          loglik / characters                        lm-eval "acc_norm"
    acc_bytes         loglik / UTF-8 bytes                       lm-eval "acc_bytes"
    acc_tokens        loglik / continuation tokens               GPT-3 paper's per-token likelihood
    acc_mutual_info   loglik - loglik_uncond                     lm-eval "acc_mutual_info"
                      (log P(e | ctx) - log P(e | empty context); the GPT-3 paper's
                       unconditional normalisation, with its context "Answer:" as an option)

The prediction is the argmax of the score (the first ending on ties, as np.argmax and lm-eval).
The softmax of a dialect's scores over the endings is that dialect's choice distribution, the
input of `evalcore.metrics.calibration`.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from evalcore.errors import InputError
from evalcore.metrics.hellaswag import Accuracy, accuracy
from evalcore.metrics.kl import softmax

Array = npt.NDArray[np.float64]
Preds = npt.NDArray[np.int64]

DIALECTS = ("acc", "acc_norm", "acc_bytes", "acc_tokens", "acc_mutual_info")  # stable names (CLI, JSON, app)


def _like(a: npt.ArrayLike, shape: tuple[int, ...], name: str, *, positive: bool) -> Array:
    """`a` as float64, checked against loglik's shape."""
    x = np.asarray(a, dtype=np.float64)
    if x.shape != shape:
        raise InputError(f"{name} has shape {x.shape}, loglik has {shape}: give one value per item and ending")
    if not np.all(np.isfinite(x)):
        raise InputError(f"{name} holds NaN or infinity; every value must be finite")
    if positive and np.any(x <= 0):
        raise InputError(f"{name} has a value <= 0 at item {int(np.argwhere(x <= 0)[0][0])}; lengths must be >= 1")
    return x


def dialect_scores(loglik: npt.ArrayLike, *, char_len: npt.ArrayLike, byte_len: npt.ArrayLike | None = None,
                   token_len: npt.ArrayLike | None = None,
                   loglik_uncond: npt.ArrayLike | None = None) -> dict[str, Array]:
    """Each dialect's score of each ending, name -> [N, C] (higher is better).

    A dialect whose input is missing (`byte_len`, `token_len` or `loglik_uncond` None) is left
    out; the others keep the order of `DIALECTS`.
    """
    ll = np.asarray(loglik, dtype=np.float64)
    if ll.ndim != 2 or ll.shape[0] < 1 or ll.shape[1] < 2:
        raise InputError(f"loglik must be [N, n_endings] with N >= 1 and >= 2 endings, got shape {ll.shape}")
    if not np.all(np.isfinite(ll)):
        raise InputError("loglik holds NaN or infinity; rescore the items (every log-likelihood must be finite)")
    cl = _like(char_len, ll.shape, "char_len", positive=True)
    bl = None if byte_len is None else _like(byte_len, ll.shape, "byte_len", positive=True)
    tl = None if token_len is None else _like(token_len, ll.shape, "token_len", positive=True)
    lu = None if loglik_uncond is None else _like(loglik_uncond, ll.shape, "loglik_uncond", positive=False)
    out = {"acc": ll, "acc_norm": ll / cl}
    if bl is not None:
        out["acc_bytes"] = ll / bl
    if tl is not None:
        out["acc_tokens"] = ll / tl
    if lu is not None:
        out["acc_mutual_info"] = ll - lu
    return out


def dialect_predictions(loglik: npt.ArrayLike, *, char_len: npt.ArrayLike, byte_len: npt.ArrayLike | None = None,
                        token_len: npt.ArrayLike | None = None,
                        loglik_uncond: npt.ArrayLike | None = None) -> dict[str, Preds]:
    """The ending each dialect picks, name -> [N] (argmax of `dialect_scores`, first on ties)."""
    scores = dialect_scores(loglik, char_len=char_len, byte_len=byte_len, token_len=token_len,
                            loglik_uncond=loglik_uncond)
    return {k: np.argmax(s, axis=1).astype(np.int64) for k, s in scores.items()}


def dialect_distributions(loglik: npt.ArrayLike, *, char_len: npt.ArrayLike, byte_len: npt.ArrayLike | None = None,
                          token_len: npt.ArrayLike | None = None,
                          loglik_uncond: npt.ArrayLike | None = None) -> dict[str, Array]:
    """Each dialect's choice distribution, name -> [N, C]: softmax over the endings of its scores
    (for acc, P(ending | context) renormalised over the endings; for acc_norm, of loglik/chars)."""
    scores = dialect_scores(loglik, char_len=char_len, byte_len=byte_len, token_len=token_len,
                            loglik_uncond=loglik_uncond)
    return {k: softmax(s, axis=1) for k, s in scores.items()}


def dialect_table(loglik: npt.ArrayLike, labels: npt.ArrayLike, *, char_len: npt.ArrayLike,
                  byte_len: npt.ArrayLike | None = None, token_len: npt.ArrayLike | None = None,
                  loglik_uncond: npt.ArrayLike | None = None, n_boot: int = 2000,
                  random_state: int = 0) -> dict[str, Accuracy]:
    """Each dialect's accuracy with stderr and bootstrap 95% interval, name -> Accuracy
    (`metrics.hellaswag.accuracy`; every dialect gets the same `random_state`, so the
    intervals of two dialects resample the same items)."""
    preds = dialect_predictions(loglik, char_len=char_len, byte_len=byte_len, token_len=token_len,
                                loglik_uncond=loglik_uncond)
    y = np.asarray(labels)
    n = next(iter(preds.values())).shape[0]
    if y.shape != (n,):
        raise InputError(f"labels has shape {y.shape}; give one gold ending per item, shape ({n},)")
    return {k: accuracy(p == y, n_boot=n_boot, random_state=random_state) for k, p in preds.items()}


def disagreements(predictions: Mapping[str, npt.ArrayLike]) -> npt.NDArray[np.int64]:
    """Positions (0-based, in item order) of the items where the dialects do not all pick the same
    ending; `predictions` is `dialect_predictions`' output (or any subset of it)."""
    if not predictions:
        raise InputError("disagreements of no dialects: give at least one dialect's predictions")
    rows = [np.asarray(p) for p in predictions.values()]
    if any(r.shape != rows[0].shape or r.ndim != 1 for r in rows):
        raise InputError(f"predictions must all be [N] with the same N, got shapes {[r.shape for r in rows]}")
    stacked = np.stack(rows)  # [n_dialects, N]
    return np.flatnonzero(np.any(stacked != stacked[:1], axis=0)).astype(np.int64)
