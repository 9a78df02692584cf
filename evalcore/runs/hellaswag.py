"""HellaSwag for model M on items I -> store -> metrics -> a result value."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from evalcore.data import HellaSwag, HellaSwagItem
from evalcore.errors import require_finite
from evalcore.metrics import hellaswag as hsm
from evalcore.models import LoadedModel
from evalcore.runs._memo import Batches, Progress, memo_map
from evalcore.store import Store, record_key

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class HellaSwagItemResult:
    """One scored item."""

    index: int  # row in the validation split
    label: int  # gold ending
    logprobs: list[float]  # log-likelihood of each ending (nats)
    char_lengths: list[int]  # characters of each ending (acc_norm's divisor)
    pred: int  # argmax of logprobs
    pred_norm: int  # argmax of logprobs / char_lengths
    n_tokens: list[int] = field(default_factory=list)  # continuation tokens of each ending


@dataclass(frozen=True)
class HellaSwagResult:
    """A HellaSwag evaluation: metrics, per-item results and timing."""

    model: dict[str, Any]  # identity of the model (name, fingerprint, dtype, device)
    n: int
    acc: hsm.Accuracy
    acc_norm: hsm.Accuracy
    items: list[HellaSwagItemResult]
    seconds: float  # wall time of the run, loading excluded
    cached_items: int  # items read from the store with no forward pass

    def loglik(self) -> np.ndarray:
        """[N, 4] log-likelihoods in item order."""
        return np.array([it.logprobs for it in self.items])

    def to_dict(self) -> dict[str, Any]:
        """The CLI's JSON shape."""
        scored = self.n - self.cached_items
        return {
            "model": self.model,
            "n": self.n,
            "results": {
                "acc": self.acc.value, "acc_stderr": self.acc.stderr, "acc_ci95": list(self.acc.ci95),
                "acc_norm": self.acc_norm.value, "acc_norm_stderr": self.acc_norm.stderr,
                "acc_norm_ci95": list(self.acc_norm.ci95),
            },
            "items": [asdict(it) for it in self.items],
            "timing": {"seconds": round(self.seconds, 3),
                       "items_per_s": round(scored / self.seconds, 3) if scored and self.seconds > 0 else None,
                       "cached_items": self.cached_items},
        }


def _item_key(lm: LoadedModel, ds: HellaSwag, index: int) -> str:
    return record_key(op="hellaswag", model=lm.identity(), data=ds.identity(), index=index)


def _item_result(it: HellaSwagItem, per_cont: Sequence[Any]) -> HellaSwagItemResult:
    """One item's result from the per-token log-probs of its four endings."""
    ll = [float(x.sum()) for x in per_cont]
    require_finite(ll, f"HellaSwag item {it.index}: an ending's log-likelihood")
    cl = [len(c) for c in it.choices]
    pred, pred_norm = (int(v[0]) for v in hsm.predictions([ll], [cl]))
    return HellaSwagItemResult(it.index, it.label, ll, cl, pred, pred_norm, [len(x) for x in per_cont])


def run_hellaswag(
    lm: LoadedModel,
    indices: Sequence[int],
    *,
    dataset: HellaSwag | None = None,
    store: Store | None = None,
    batch_tokens: int | None = None,
    progress: Progress | None = None,
    scorer: Callable[..., Any] | None = None,
) -> HellaSwagResult:
    """Score HellaSwag items with a model, reading and writing per-item results in the store.

    Items already in the store are not recomputed; new ones are written one batch at a
    time, so an interrupted run resumes where it stopped. `scorer` replaces
    `scoring.iter_logprobs` (same contract), e.g. the vLLM backend's.
    """
    from evalcore import scoring  # torch lives below this line

    t0 = time.perf_counter()
    ds = dataset or HellaSwag()
    store = store or Store()
    indices = list(indices)

    def compute(todo: list[int]) -> Batches:
        items: list[HellaSwagItem] = ds.items([indices[j] for j in todo])
        groups = [scoring.encode_pair(lm.tokenizer, it.query, it.continuations) for it in items]
        for batch_idx, lps in (scorer or scoring.iter_logprobs)(lm, groups, batch_tokens=batch_tokens):
            yield [todo[b] for b in batch_idx], [asdict(_item_result(items[b], p)) for b, p in zip(batch_idx, lps)]

    values, cached = memo_map(store, "hellaswag", [_item_key(lm, ds, i) for i in indices], compute, progress=progress)
    ordered = [HellaSwagItemResult(**v) for v in values]
    labels = np.array([r.label for r in ordered])
    acc = hsm.accuracy(np.array([r.pred for r in ordered]) == labels)
    acc_norm = hsm.accuracy(np.array([r.pred_norm for r in ordered]) == labels)
    model = lm.describe()
    return HellaSwagResult(model, len(ordered), acc, acc_norm, ordered, time.perf_counter() - t0, cached)
