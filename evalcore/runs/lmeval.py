"""lm-evaluation-harness `--log_samples` output for a HellaSwag task -> a HellaSwagResult.

`lm_eval ... --log_samples --output_path DIR` writes, per task, `samples_<task>_<time>.jsonl`
(one line per document) beside `results_<time>.json` (the run: model, versions). A line of a
multiple-choice task such as `hellaswag` (or a task derived from it) reads

    {"doc_id": 0, "doc": {..raw row.., "query": ..., "choices": [4 endings], "gold": 3},
     "target": "3",
     "resps":          [[["-39.93", "False"]], ... 4 ...],   # per ending: [(loglik, is_greedy)]
     "filtered_resps": [ ["-39.93", "False"],  ... 4 ...],   # after the task's filter ("none")
     "acc": 0.0, "acc_norm": 1.0, ...}

doc_id is the row's position in the split lm-eval loaded: the validation index when it loaded
the whole split (or its first rows). Each line is matched to our item by doc_id, its text is
checked against our copy, and acc / acc_norm are recomputed from the log-likelihoods with our
choices' lengths: a file whose predictions disagree with its own acc / acc_norm is refused.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evalcore.data import HellaSwag, HellaSwagItem, process_doc
from evalcore.errors import InputError
from evalcore.metrics import hellaswag as hsm
from evalcore.runs.hellaswag import HellaSwagItemResult, HellaSwagResult

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 1 << 20  # a HellaSwag sample line is ~2 kB; past this the file is not one
HINT = "give a samples_<task>_*.jsonl that `lm_eval --log_samples` wrote for a hellaswag task"


def import_lm_eval(path: str | Path, *, dataset: HellaSwag | None = None, name: str | None = None) -> HellaSwagResult:
    """An lm-eval HellaSwag run read from its `--log_samples` file, as a HellaSwagResult.

    Parameters
    ----------
    path : a `samples_<task>_<time>.jsonl` written by `lm_eval --log_samples` for `hellaswag`
        or a task derived from it (same docs, four endings).
    dataset : our HellaSwag copy, to match doc_ids and texts against (loaded when None).
    name : the model's name in the result (default "lm-eval:<model_name of the results file
        beside it>", or "lm-eval:<file name>").

    Returns
    -------
    HellaSwagResult with the file's items in doc_id order: the four log-likelihoods (nats), our
    choices' character lengths, pred / pred_norm recomputed (equal to the file's acc / acc_norm),
    acc and acc_norm with intervals. `model` records {"name", "source": "lm-eval", "file",
    "sha256"} and, from the results file if present, "model_args" and "lm_eval_version";
    `cached_items` = n (no forward pass here), `seconds` the time of the import.

    Raises
    ------
    InputError
        in one line naming the line number: an unreadable or empty file, a line that is not
        JSON, not a hellaswag sample or misses a field, a doc_id out of range or repeated, a doc
        whose text is not our row's, a non-finite log-likelihood, or acc / acc_norm that the
        log-likelihoods do not give.
    """
    p = Path(path)
    ds = dataset or HellaSwag()
    t0 = time.perf_counter()
    items: dict[int, HellaSwagItemResult] = {}
    digest = hashlib.sha256()
    try:
        with open(p, "rb") as f:
            for n, raw in enumerate(iter(lambda: f.readline(MAX_LINE_BYTES + 1), b""), start=1):
                digest.update(raw)
                if len(raw) > MAX_LINE_BYTES:
                    raise InputError(f"{p.name} line {n}: longer than {MAX_LINE_BYTES:,} bytes; {HINT}")
                if raw.strip():
                    it = _item(_record(raw, n, p.name), n, p.name, ds)
                    if it.index in items:
                        raise InputError(f"{p.name} line {n}: doc_id {it.index} appears twice; keep one line "
                                         "per doc (one task's samples file per import)")
                    items[it.index] = it
    except OSError as e:
        raise InputError(f"cannot read lm-eval samples {str(p)!r}: {e.strerror or e}; {HINT}") from e
    if not items:
        raise InputError(f"{p.name} is empty: no samples; {HINT}")
    ordered = [items[i] for i in sorted(items)]
    labels = np.array([r.label for r in ordered])
    acc = hsm.accuracy(np.array([r.pred for r in ordered]) == labels)
    acc_norm = hsm.accuracy(np.array([r.pred_norm for r in ordered]) == labels)
    info = _run_info(p)
    model_name = info.pop("model_name", p.name)
    model = {"name": name or f"lm-eval:{model_name}", "source": "lm-eval", "file": p.name,
             "sha256": digest.hexdigest(), **info}
    return HellaSwagResult(model, len(ordered), acc, acc_norm, ordered, time.perf_counter() - t0, len(ordered))


def _record(raw: bytes, n: int, file: str) -> dict[str, Any]:
    """Line n as a JSON object with the fields an import needs."""
    try:
        rec = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise InputError(f"{file} line {n}: not UTF-8 (byte {e.start}); {HINT}") from None
    except ValueError as e:
        raise InputError(f"{file} line {n}: not JSON ({e}); {HINT}") from None
    if not isinstance(rec, dict):
        raise InputError(f"{file} line {n}: a JSON {type(rec).__name__}, not an object; {HINT}")
    need = ["doc_id", "doc", "acc", "acc_norm"] + ([] if "resps" in rec else ["filtered_resps"])
    missing = [k for k in need if k not in rec]
    if missing:
        raise InputError(f"{file} line {n}: no {', '.join(missing)} field; {HINT} (lm-eval writes them for "
                         "multiple-choice tasks with acc and acc_norm)")
    return rec


def _item(rec: dict[str, Any], n: int, file: str, ds: HellaSwag) -> HellaSwagItemResult:
    """Line n's item: matched to our row by doc_id, checked, its predictions recomputed."""
    where = f"{file} line {n}"
    doc, doc_id = rec["doc"], rec["doc_id"]
    ends = doc.get("choices", doc.get("endings")) if isinstance(doc, dict) else None
    if not (isinstance(ends, list) and len(ends) == 4):
        what = f"keys {sorted(doc)[:6]}" if isinstance(doc, dict) else f"a {type(doc).__name__}"
        raise InputError(f"{where}: the doc ({what}) has no four HellaSwag endings: another task's samples; {HINT}")
    if not isinstance(doc_id, int) or isinstance(doc_id, bool) or not 0 <= doc_id < len(ds):
        raise InputError(f"{where}: doc_id {doc_id!r} is not a validation row 0..{len(ds) - 1}; {HINT}")
    ours = ds.item(doc_id)
    _check_text(doc, rec.get("target"), ours, where)
    ll = _logliks(rec, where)
    cl = [len(c) for c in ours.choices]
    pred, pred_norm = (int(v[0]) for v in hsm.predictions([ll], [cl]))
    for key, got in (("acc", pred), ("acc_norm", pred_norm)):
        if rec[key] not in (0, 1) or isinstance(rec[key], bool) or (got == ours.label) != (rec[key] == 1):
            raise InputError(f"{where}: {key} is {rec[key]!r}, but the log-likelihoods pick ending {got} "
                             f"(gold {ours.label}): the file's scores do not give its own {key}; re-run lm_eval "
                             "rather than edit its output")
    return HellaSwagItemResult(doc_id, ours.label, ll, cl, pred, pred_norm)


def _check_text(doc: dict[str, Any], target: Any, ours: HellaSwagItem, where: str) -> None:
    """The doc is our row: lm-eval's query / choices / gold when logged, the raw row otherwise;
    the gold ending (and the target, when logged) is ours."""
    if "query" in doc and "choices" in doc:
        got = (doc["query"], tuple(doc["choices"]), doc.get("gold", doc.get("label")))
        fields = "query, choices or gold"
    else:
        try:
            it = process_doc(doc, ours.index)
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            raise InputError(f"{where}: the doc lacks HellaSwag's fields ({type(e).__name__}: {e}); {HINT}") from None
        got, fields = (it.query, it.choices, it.label), "ctx, endings or label"
    want = (ours.query, ours.choices, ours.label)
    if got[:2] != want[:2] or str(got[2]) != str(ours.label) or (target is not None and str(target) != str(ours.label)):
        raise InputError(f"{where}: doc_id {ours.index}'s {fields} differ from validation row {ours.index} "
                         f"(file: {str(got)[:100]!r}, target {target!r}; ours: {str(want)[:100]!r}): lm-eval loaded "
                         "other rows or another split; import runs on the HellaSwag validation split in its order")


def _logliks(rec: dict[str, Any], where: str) -> list[float]:
    """The four log-likelihoods from filtered_resps ([[ll, greedy], ...]) or resps ([[[ll, greedy]], ...])."""
    key = "filtered_resps" if "filtered_resps" in rec else "resps"
    resps = rec[key]
    if not isinstance(resps, list) or len(resps) != 4:
        size = len(resps) if isinstance(resps, list) else type(resps).__name__
        raise InputError(f"{where}: {key} holds {size} responses, expected 4 (one per ending); {HINT}")
    out = []
    for k, r in enumerate(resps):
        while isinstance(r, list) and r:  # [[ll, greedy]] -> [ll, greedy] -> ll
            r = r[0]
        try:
            x = float(r) if isinstance(r, (str, int, float)) and not isinstance(r, bool) else math.nan
        except ValueError:
            x = math.nan
        if not math.isfinite(x):
            raise InputError(f"{where}: {key}[{k}] has log-likelihood {r!r}, not a finite number; the run or "
                             "the file is damaged: re-run lm_eval (at dtype=float32 if the model gave NaN)")
        out.append(x)
    return out


def _run_info(samples: Path) -> dict[str, Any]:
    """model_name, model_args and lm_eval_version from the `results_<time>.json` lm-eval wrote
    beside `samples_<task>_<time>.jsonl`, when it is there and readable; {} otherwise."""
    stamp = samples.stem.rsplit("_", 1)[-1]
    res = samples.with_name(f"results_{stamp}.json")
    try:
        meta = json.loads(res.read_text()) if res.is_file() else None
    except (OSError, ValueError) as e:
        log.warning("ignoring %s (%s): the import records no model details", res, e)
        return {}
    if not isinstance(meta, dict):
        return {}
    config: dict[str, Any] = meta["config"] if isinstance(meta.get("config"), dict) else {}
    info = {"model_name": meta.get("model_name"), "model_args": config.get("model_args"),
            "lm_eval_version": meta.get("lm_eval_version"), "results_file": res.name}
    return {k: v for k, v in info.items() if v is not None}


@dataclass(frozen=True)
class RunComparison:
    """Two HellaSwag runs of the same items (A, e.g. an lm-eval import, against B, our own run)."""

    paired_comparison: hsm.PairedComparison  # acc(A) - acc(B) with its interval, McNemar, per-item KL of the choice distributions
    max_abs_loglik_diff: list[float]  # per item: max over the four endings of |loglik A - loglik B| (nats)
    same_pred: int  # items where both pick the same ending (acc's argmax)
    same_pred_norm: int  # items where both pick the same ending per character (acc_norm's)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict, with the largest difference over all items."""
        d = asdict(self)
        d["max_abs_loglik_diff_all"] = max(self.max_abs_loglik_diff)
        return d


def compare_runs(a: HellaSwagResult, b: HellaSwagResult) -> RunComparison:
    """How run A differs from run B on the same items: the paired accuracy comparison, the
    largest log-likelihood difference per item, and how often the predictions agree."""
    if [r.index for r in a.items] != [r.index for r in b.items]:
        raise InputError(f"runs of different items ({a.n} and {b.n}): score B on A's doc_ids, in the same order")
    la, lb = a.loglik(), b.loglik()
    ya, yb = np.array([r.label for r in a.items]), np.array([r.label for r in b.items])
    pa, pb = np.array([r.pred for r in a.items]), np.array([r.pred for r in b.items])
    pc = hsm.paired_comparison(pa == ya, pb == yb, la, lb)
    return RunComparison(pc, [float(x) for x in np.abs(la - lb).max(axis=1)], int(np.sum(pa == pb)),
                         int(sum(x.pred_norm == y.pred_norm for x, y in zip(a.items, b.items))))
