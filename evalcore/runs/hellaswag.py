"""HellaSwag for model M on items I -> store -> metrics -> a result value.

Two store operations, each keyed per item (model, data, row) and computed once:

    hellaswag         log P(" " + ending | context) of the four endings (lm-eval's acc, acc_norm)
    hellaswag_uncond  log P(" " + ending | unconditional context), for acc_mutual_info; only
                      with `unconditional=True`: one more forward pass per item over the four
                      endings after a short context (lm-eval's: the prefix token alone)

Byte lengths (acc_bytes) come from the text and token counts (acc_tokens) from the
tokenizer; records stored before they were kept get them on read, without a forward pass.
`HellaSwagResult.dialects()` turns a run into each dialect's accuracy, predictions,
disagreements and calibration (`metrics.dialects`, `metrics.calibration`).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from evalcore.data import HellaSwag, HellaSwagItem
from evalcore.errors import require_finite
from evalcore.metrics import calibration as cal
from evalcore.metrics import dialects as dia
from evalcore.metrics import hellaswag as hsm
from evalcore.models import LoadedModel
from evalcore.runs._memo import Batches, Progress, memo_map
from evalcore.store import Store, record_key

log = logging.getLogger(__name__)

UNCOND_CONTEXT = ""  # lm-eval's acc_mutual_info: the ending after the prefix token (BOS, else end-of-text) alone


@dataclass(frozen=True)
class HellaSwagItemResult:
    """One scored item."""

    index: int  # row in the validation split
    label: int  # gold ending
    logprobs: list[float]  # log-likelihood of each ending (nats)
    char_lengths: list[int]  # characters of each ending (acc_norm's divisor)
    pred: int  # argmax of logprobs
    pred_norm: int  # argmax of logprobs / char_lengths
    n_tokens: list[int] = field(default_factory=list)  # continuation tokens of each ending (acc_tokens' divisor)
    byte_lengths: list[int] = field(default_factory=list)  # UTF-8 bytes of each ending, no leading space (acc_bytes')
    logprobs_uncond: list[float] | None = None  # log P(" " + ending | unconditional context); None: not scored

    def record(self) -> dict[str, Any]:
        """The value stored under op "hellaswag" (the unconditional scores have their own op)."""
        return {k: v for k, v in asdict(self).items() if k != "logprobs_uncond"}

    def to_dict(self) -> dict[str, Any]:
        """The item as a JSON-ready dict (logprobs_uncond only when scored)."""
        d = asdict(self)
        if self.logprobs_uncond is None:
            del d["logprobs_uncond"]
        return d


@dataclass(frozen=True)
class HellaSwagDialects:
    """A run seen through each scoring dialect (`metrics.dialects`): accuracy, predictions,
    the items where dialects disagree, and optionally each dialect's calibration."""

    table: dict[str, hsm.Accuracy]  # dialect name -> accuracy with stderr and 95% interval
    predictions: dict[str, list[int]]  # dialect name -> ending picked, in item order
    disagreements: list[int]  # dataset rows (item.index) where the dialects do not all pick the same ending
    uncond_context: str | None  # context of the unconditional pass ("" = prefix token); None: not run
    calibration: dict[str, cal.Calibration] | None = None  # dialect name -> calibration of its softmax

    def to_dict(self) -> dict[str, Any]:
        """{"dialects": {name: accuracy}, "disagreements": {...}, "calibration": {...} if computed}."""
        out: dict[str, Any] = {
            "dialects": {k: a.to_dict() for k, a in self.table.items()},
            "disagreements": {"n": len(self.disagreements), "indices": self.disagreements},
            "unconditional_context": self.uncond_context,
        }
        if self.calibration is not None:
            out["calibration"] = {k: c.to_dict() for k, c in self.calibration.items()}
        return out


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
    uncond_context: str | None = None  # context of the unconditional pass; None: not run
    cached_uncond: int = 0  # items whose unconditional scores came from the store

    def loglik(self) -> np.ndarray:
        """[N, 4] log-likelihoods in item order."""
        return np.array([it.logprobs for it in self.items])

    def dialects(self, *, calibration: bool = False, n_bins: int = 10, binning: str = "mass",
                 n_boot: int = 2000, random_state: int = 0) -> HellaSwagDialects:
        """Each dialect's accuracy and predictions, the rows where they disagree, and with
        `calibration` each dialect's ECE, Brier score, NLL and reliability bins.

        A dialect is present when its inputs are: acc_tokens needs every item's token counts,
        acc_bytes its byte lengths (both filled by `run_hellaswag`; an lm-eval import lacks
        them), acc_mutual_info the unconditional pass (`run_hellaswag(unconditional=True)`).
        """
        its = self.items
        inputs: dict[str, list[Any]] = {"byte_len": [r.byte_lengths for r in its],
                                         "token_len": [r.n_tokens for r in its],
                                         "loglik_uncond": [r.logprobs_uncond for r in its]}
        kw: dict[str, Any] = {"char_len": [r.char_lengths for r in its],
                              **{k: v for k, v in inputs.items() if all(v)}}  # present for every item
        labels = np.array([r.label for r in its])
        preds = dia.dialect_predictions(self.loglik(), **kw)
        table = dia.dialect_table(self.loglik(), labels, n_boot=n_boot, random_state=random_state, **kw)
        rows = [its[j].index for j in dia.disagreements(preds)]
        calib = None
        if calibration:
            probs = dia.dialect_distributions(self.loglik(), **kw)
            calib = {k: cal.calibration(p, labels, n_bins=n_bins, binning=binning) for k, p in probs.items()}
        return HellaSwagDialects(table, {k: [int(x) for x in p] for k, p in preds.items()}, rows,
                                 self.uncond_context, calib)

    def to_dict(self, *, dialects: bool = False, calibration: bool = False, n_bins: int = 10,
                binning: str = "mass") -> dict[str, Any]:
        """The CLI's JSON shape; `dialects` adds the dialect table and disagreements,
        `calibration` each dialect's calibration (see `dialects()`)."""
        scored = self.n - self.cached_items
        out: dict[str, Any] = {
            "model": self.model,
            "n": self.n,
            "results": {
                "acc": self.acc.value, "acc_stderr": self.acc.stderr, "acc_ci95": list(self.acc.ci95),
                "acc_norm": self.acc_norm.value, "acc_norm_stderr": self.acc_norm.stderr,
                "acc_norm_ci95": list(self.acc_norm.ci95),
            },
            "items": [it.to_dict() for it in self.items],
            "timing": {"seconds": round(self.seconds, 3),
                       "items_per_s": round(scored / self.seconds, 3) if scored and self.seconds > 0 else None,
                       "cached_items": self.cached_items},
        }
        if self.uncond_context is not None:
            out["timing"]["cached_uncond"] = self.cached_uncond
        if dialects or calibration:
            d = self.dialects(calibration=calibration, n_bins=n_bins, binning=binning).to_dict()
            out.update({k: v for k, v in d.items() if dialects or k == "calibration"})
        return out


def _item_key(lm: LoadedModel, ds: HellaSwag, index: int) -> str:
    return record_key(op="hellaswag", model=lm.identity(), data=ds.identity(), index=index)


def _uncond_key(lm: LoadedModel, ds: HellaSwag, index: int, context: str) -> str:
    return record_key(op="hellaswag_uncond", model=lm.identity(), data=ds.identity(), index=index, context=context)


def _byte_lengths(it: HellaSwagItem) -> list[int]:
    """UTF-8 bytes of each ending without the leading space (lm-eval's `byte_length`)."""
    return [len(c.encode("utf-8")) for c in it.choices]


def _item_result(it: HellaSwagItem, per_cont: Sequence[Any]) -> HellaSwagItemResult:
    """One item's result from the per-token log-probs of its four endings."""
    ll = [float(x.sum()) for x in per_cont]
    require_finite(ll, f"HellaSwag item {it.index}: an ending's log-likelihood")
    cl = [len(c) for c in it.choices]
    pred, pred_norm = (int(v[0]) for v in hsm.predictions([ll], [cl]))
    return HellaSwagItemResult(it.index, it.label, ll, cl, pred, pred_norm, [len(x) for x in per_cont],
                               _byte_lengths(it))


def _fill_lengths(lm: LoadedModel, ds: HellaSwag, results: list[HellaSwagItemResult]) -> list[HellaSwagItemResult]:
    """Results with byte lengths (from the text) and token counts (from the tokenizer) where a
    record stored before they were kept lacks them; no forward pass."""
    from evalcore import scoring

    todo = [j for j, r in enumerate(results) if not r.byte_lengths or not r.n_tokens]
    out = list(results)
    for j, it in zip(todo, ds.items([results[j].index for j in todo])):
        n_tok = out[j].n_tokens or [len(c) for c in scoring.encode_pair(lm.tokenizer, it.query,
                                                                         it.continuations).continuations]
        out[j] = replace(out[j], byte_lengths=_byte_lengths(it), n_tokens=n_tok)
    return out


def _uncond_group(tokenizer: Any, context: str, continuations: Sequence[str]) -> Any:
    """The unconditional pass's token ids (a scoring.Group):

        context ""        [prefix] | cont tokens      lm-eval's acc_mutual_info: ("", " " + ending),
                                                      the prefix token (BOS, else end-of-text) as context
        context "Answer:" encode_pair("Answer:", " " + ending)   the GPT-3 paper's answer context
    """
    from evalcore import scoring
    from evalcore.scoring.sequence import encode_scored

    if context:
        return scoring.encode_pair(tokenizer, context, continuations)
    ids = [encode_scored(tokenizer, c) for c in continuations]
    return scoring.Group((ids[0][0],), tuple(tuple(x[1:]) for x in ids))


def run_unconditional(
    lm: LoadedModel,
    indices: Sequence[int],
    *,
    context: str = UNCOND_CONTEXT,
    dataset: HellaSwag | None = None,
    store: Store | None = None,
    batch_tokens: int | None = None,
    progress: Progress | None = None,
    scorer: Callable[..., Any] | None = None,
) -> tuple[list[list[float]], int]:
    """(log P(" " + ending | context) of each item's four endings [N][4], how many items came
    from the store): acc_mutual_info's unconditional scores, stored per item under op
    "hellaswag_uncond" (keyed with `context`), so they are computed once and a killed run resumes.
    """
    from evalcore import scoring

    ds = dataset or HellaSwag()
    store = store or Store()
    indices = list(indices)

    def compute(todo: list[int]) -> Batches:
        items = ds.items([indices[j] for j in todo])
        groups = [_uncond_group(lm.tokenizer, context, it.continuations) for it in items]
        for batch_idx, lps in (scorer or scoring.iter_logprobs)(lm, groups, batch_tokens=batch_tokens):
            vals = []
            for b, p in zip(batch_idx, lps):
                ll = [float(x.sum()) for x in p]
                require_finite(ll, f"HellaSwag item {items[b].index}: an ending's unconditional log-likelihood")
                vals.append({"logprobs": ll})
            yield [todo[b] for b in batch_idx], vals

    keys = [_uncond_key(lm, ds, i, context) for i in indices]
    values, cached = memo_map(store, "hellaswag_uncond", keys, compute, progress=progress)
    return [v["logprobs"] for v in values], cached


def run_hellaswag(
    lm: LoadedModel,
    indices: Sequence[int],
    *,
    dataset: HellaSwag | None = None,
    store: Store | None = None,
    batch_tokens: int | None = None,
    progress: Progress | None = None,
    scorer: Callable[..., Any] | None = None,
    unconditional: bool = False,
    uncond_context: str = UNCOND_CONTEXT,
) -> HellaSwagResult:
    """Score HellaSwag items with a model, reading and writing per-item results in the store.

    Items already in the store are not recomputed; new ones are written one batch at a
    time, so an interrupted run resumes where it stopped. `scorer` replaces
    `scoring.iter_logprobs` (same contract), e.g. the vLLM backend's. `unconditional` adds
    the unconditional pass (`run_unconditional`, for acc_mutual_info; one more forward pass
    per item, with a context of one token by default) and puts its scores in the items.
    """
    from evalcore import scoring  # torch lives below this line

    t0 = time.perf_counter()
    ds = dataset or HellaSwag()
    store = store or Store()
    indices = list(indices)
    n = len(indices)
    step = progress if progress is None or not unconditional else (lambda done, total: progress(done, 2 * total))

    def compute(todo: list[int]) -> Batches:
        items: list[HellaSwagItem] = ds.items([indices[j] for j in todo])
        groups = [scoring.encode_pair(lm.tokenizer, it.query, it.continuations) for it in items]
        for batch_idx, lps in (scorer or scoring.iter_logprobs)(lm, groups, batch_tokens=batch_tokens):
            yield [todo[b] for b in batch_idx], [_item_result(items[b], p).record() for b, p in zip(batch_idx, lps)]

    values, cached = memo_map(store, "hellaswag", [_item_key(lm, ds, i) for i in indices], compute, progress=step)
    ordered = _fill_lengths(lm, ds, [HellaSwagItemResult(**v) for v in values])
    cached_uncond = 0
    if unconditional:
        after = None if progress is None else (lambda done, total: progress(n + done, 2 * n))
        uncond, cached_uncond = run_unconditional(lm, indices, context=uncond_context, dataset=ds, store=store,
                                                  batch_tokens=batch_tokens, progress=after, scorer=scorer)
        ordered = [replace(r, logprobs_uncond=u) for r, u in zip(ordered, uncond)]
    labels = np.array([r.label for r in ordered])
    acc = hsm.accuracy(np.array([r.pred for r in ordered]) == labels)
    acc_norm = hsm.accuracy(np.array([r.pred_norm for r in ordered]) == labels)
    model = lm.describe()
    return HellaSwagResult(model, len(ordered), acc, acc_norm, ordered, time.perf_counter() - t0, cached,
                           uncond_context if unconditional else None, cached_uncond)
