"""Perplexity from token NLLs: pure numpy.

    nll_per_token  = mean NLL (nats)
    perplexity     = exp(nll_per_token)          (= 2^{H} with H in bits: the lesson's PPL)
    bits_per_token = nll_per_token / ln 2
    bits_per_byte  = total NLL / ln 2 / UTF-8 bytes of the texts (comparable across tokenizers)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from evalcore.errors import InputError

LN2 = float(np.log(2.0))


@dataclass(frozen=True)
class Perplexity:
    """Perplexity of a corpus, with the quantities it comes from."""

    perplexity: float  # exp(mean NLL)
    nll_per_token: float  # nats
    bits_per_token: float
    bits_per_byte: float
    tokens: int  # tokens scored
    bytes: int  # UTF-8 bytes of the texts

    def to_dict(self) -> dict[str, Any]:
        """The numbers as a JSON-ready dict."""
        return asdict(self)


def perplexity(nlls: npt.ArrayLike | list[npt.ArrayLike], n_bytes: int) -> Perplexity:
    """Perplexity of per-token NLLs (nats; one array, or one per text, pooled over tokens)."""
    arrs = [np.asarray(a, dtype=np.float64).ravel() for a in (nlls if isinstance(nlls, list) else [nlls])]
    x = np.concatenate(arrs) if arrs else np.empty(0)
    if x.size == 0:
        raise InputError("no tokens were scored: give a longer text")
    if not np.all(np.isfinite(x)) or np.any(x < 0):
        raise InputError("NLLs must be finite and >= 0")
    if n_bytes < 1:
        raise InputError(f"n_bytes={n_bytes}: need at least one byte of text")
    total = float(x.sum())
    mean = total / x.size
    return Perplexity(float(np.exp(mean)), mean, mean / LN2, total / LN2 / n_bytes, int(x.size), int(n_bytes))
