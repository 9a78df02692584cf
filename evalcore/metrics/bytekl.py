"""Divergences between two models' next-byte distributions over the same text, position by
position ("measure 3" of cross-tokenizer KL; `evalcore.scoring.nextbyte` computes the inputs).

Each input is [n, 257]: row i is a model's P(next outcome | the text's first i bytes), over the
256 byte values and end-of-text (column 256), each row summing to 1:

    position i:     0        1        2      ...   n - 1
    P rows:       P(·|"")  P(·|"T")  P(·|"Th") ...           KL(P‖Q)_i = Σ_c P_i(c) log(P_i(c)/Q_i(c))
    Q rows:       Q(·|"")  Q(·|"T")  Q(·|"Th") ...           JS_i = ½KL(P_i‖M_i) + ½KL(Q_i‖M_i), M = ½(P+Q)

In nats. KL is +inf where Q gives 0 to an outcome P gives mass: a vocabulary may be unable to
spell some byte values (SmolLM2's has no token for 21 of them), and pruned marginalisations
leave exact zeros; `floor` (an epsilon floor, then renormalised: `kl.smooth`) keeps it finite,
and is the caller's explicit choice. JS is always finite, in [0, ln 2]. Sums over positions are
the divergences of the two byte-level processes along the text's prefixes (a chain rule over
its positions), not a KL between the models over all texts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from evalcore.errors import InputError
from evalcore.metrics.kl import js, kl, smooth

Array = npt.NDArray[np.float64]
OUTCOMES = 257  # 256 byte values and end-of-text
END = 256  # the column of end-of-text
LN2 = math.log(2.0)


@dataclass(frozen=True, eq=False)
class ByteDivergences:
    """Per-position divergences between P and Q (arrays [n], nats) and their sums."""

    kl_pq: Array  # KL(P‖Q) at each position, >= 0 (+inf where Q rules out what P allows)
    kl_qp: Array  # KL(Q‖P)
    js: Array  # Jensen-Shannon, in [0, ln 2]

    @property
    def n(self) -> int:
        """Positions compared."""
        return int(self.js.shape[0])

    def sums(self) -> dict[str, float]:
        """Each divergence summed over the positions."""
        return {"kl_pq": float(self.kl_pq.sum()), "kl_qp": float(self.kl_qp.sum()), "js": float(self.js.sum())}

    def to_dict(self) -> dict[str, Any]:
        """Per-position lists and their sums (JSON-ready; +inf stays float('inf'))."""
        return {"n": self.n, "kl_pq": self.kl_pq.tolist(), "kl_qp": self.kl_qp.tolist(), "js": self.js.tolist(),
                "sums": self.sums()}


def byte_divergences(p: npt.ArrayLike, q: npt.ArrayLike, *, floor: float | None = None,
                     atol: float = 1e-6) -> ByteDivergences:
    """KL(P‖Q), KL(Q‖P) and JS per position between two [n, 257] next-byte distribution arrays
    (rows summing to 1 within `atol`); `floor`: every probability raised to at least this and
    each row renormalised first (None: as given)."""
    a, b = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != OUTCOMES or a.shape != b.shape:
        raise InputError(f"next-byte distributions of shapes {a.shape} and {b.shape}: need two equal [n, {OUTCOMES}] "
                         "arrays (256 bytes and end-of-text per position)")
    for name, x in (("p", a), ("q", b)):
        if x.size and (not np.all(np.isfinite(x)) or np.any(x < 0) or np.any(np.abs(x.sum(1) - 1) > atol)):
            raise InputError(f"{name} has rows that are not distributions (negative, non-finite, or not summing "
                             f"to 1 within {atol}); pass probabilities, not log-probabilities")
    if not a.size:
        empty = np.zeros(0, dtype=np.float64)
        return ByteDivergences(empty, empty.copy(), empty.copy())
    if floor is not None:
        a, b = smooth(a, method="epsilon", amount=floor), smooth(b, method="epsilon", amount=floor)
    jsd: Array = np.clip(js(a, b), 0.0, LN2)
    return ByteDivergences(kl(a, b), kl(b, a), jsd)
