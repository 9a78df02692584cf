"""HellaSwag and text corpora: loading (bundle offline, hub online), preprocessing, selection.

HellaSwag preprocessing is exactly lm-evaluation-harness's `hellaswag` task
(lm_eval/tasks/hellaswag/utils.py), so that results agree item by item:

    query   = preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize())
    choices = [preprocess(e) for e in endings]          # scored as " " + choice
    gold    = int(label)

    preprocess(t): strip; " [title]" -> ". "; drop any "[...]" tag (WikiHow artifacts);
                   "  " -> " "

acc_norm divides each log-likelihood by len(choice) in characters, without the leading
space (lm-eval's `completion_len`).
"""
from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from evalcore import assets
from evalcore.errors import InputError

log = logging.getLogger(__name__)

HELLASWAG_SIZE = 10042  # validation split, bundle and hub alike
PREPROCESS_VERSION = "lm-eval-hellaswag-1"  # part of every stored result's key
HUB_HELLASWAG = "Rowan/hellaswag"
HUB_BOOLQ = "google/boolq"
MAX_TEXT_BYTES = 5 * 2**20  # the one limit on a user's text, CLI and app (= .streamlit server.maxUploadSize, 5 MiB)


@dataclass(frozen=True)
class HellaSwagItem:
    """One preprocessed HellaSwag item."""

    index: int  # row in the validation split (0..10041)
    query: str  # the context, as lm-eval builds it
    choices: tuple[str, str, str, str]  # the four endings, preprocessed, without leading space
    label: int  # index of the gold ending
    activity: str  # activity_label, for display

    @property
    def continuations(self) -> list[str]:
        """The strings scored after the query: lm-eval's target delimiter " " + choice."""
        return [" " + c for c in self.choices]

    @property
    def gold_text(self) -> str:
        """Context followed by the gold ending: the 'human text' of the lesson."""
        return self.query + " " + self.choices[self.label]

    def to_dict(self) -> dict[str, Any]:
        """The item as a JSON-ready dict."""
        return {"index": self.index, "query": self.query, "choices": list(self.choices),
                "label": self.label, "activity": self.activity}


def preprocess(text: str) -> str:
    """lm-eval's HellaSwag `preprocess` (see the module docstring)."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def process_doc(doc: dict[str, Any], index: int) -> HellaSwagItem:
    """A raw HellaSwag row -> HellaSwagItem, as lm-eval's `process_docs`."""
    ctx = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
    choices = tuple(preprocess(e) for e in doc["endings"])
    if len(choices) != 4:
        raise InputError(f"HellaSwag row {index} has {len(choices)} endings, expected 4")
    return HellaSwagItem(index, preprocess(doc["activity_label"] + ": " + ctx), choices,
                         int(doc["label"]), doc["activity_label"])


def _load_split(bundled: assets.BundledFile, hub_id: str, hub_config: str | None = None) -> list[dict[str, Any]]:
    """A validation split's rows from the bundle if installed, else from the hub.

    The bundle is a `datasets.save_to_disk` folder; its Arrow stream files are read with
    pyarrow directly (0.1 s instead of ~0.8 s for importing `datasets`).
    """
    p = assets.locate(bundled)
    if p is not None:
        import pyarrow as pa

        files = [f["filename"] for f in json.loads((p / "state.json").read_text())["_data_files"]]
        tables = []
        for name in files:
            with pa.memory_map(str(p / name)) as src:
                tables.append(pa.ipc.open_stream(src).read_all())
        rows: list[dict[str, Any]] = pa.concat_tables(tables).to_pylist()
        return rows
    from evalcore.models import hub_offline

    if hub_offline():
        raise InputError(f"dataset {hub_id!r}: bundle not installed and offline; run {assets.BUNDLE_INSTALL_HINT}")
    import datasets

    return list(datasets.load_dataset(hub_id, hub_config, split="validation"))


class HellaSwag:
    """The HellaSwag validation split, loaded once; items are preprocessed on demand."""

    def __init__(self) -> None:
        self._ds = _load_split(assets.HELLASWAG_DIR, HUB_HELLASWAG)
        if len(self._ds) != HELLASWAG_SIZE:
            raise InputError(f"HellaSwag validation has {len(self._ds)} rows, expected {HELLASWAG_SIZE}")
        self.source = "bundle" if assets.locate(assets.HELLASWAG_DIR) else HUB_HELLASWAG

    def __len__(self) -> int:
        return len(self._ds)

    def item(self, index: int) -> HellaSwagItem:
        """The item at row `index`, preprocessed as lm-eval does."""
        return process_doc(self._ds[int(index)], int(index))

    def items(self, indices: list[int]) -> list[HellaSwagItem]:
        """The items at these rows, in the order given."""
        return [process_doc(self._ds[int(i)], int(i)) for i in indices]

    def identity(self) -> dict[str, Any]:
        """What results on this data are keyed on: the split, its size and the preprocessing version."""
        return {"dataset": "hellaswag/validation", "n_rows": len(self), "preprocess": PREPROCESS_VERSION}


def select_indices(n_total: int, *, limit: int | None = None, indices: list[int] | str | Path | None = None,
                   sample: int | None = None, seed: int = 0) -> list[int]:
    """Which rows to evaluate: the first `limit`, an explicit list (or JSON file), or a seeded sample.

    Raises
    ------
    InputError
        N < 1, duplicates, negative or out-of-range rows, an unreadable or malformed file.
    """
    chosen = [x for x in (limit, indices, sample) if x is not None]
    if len(chosen) > 1:
        raise InputError("give only one of --limit, --indices, --sample")
    if limit is not None:
        if limit < 1:
            raise InputError(f"--limit {limit}: need at least 1 item")
        return list(range(min(limit, n_total)))
    if sample is not None:
        if sample < 1 or sample > n_total:
            raise InputError(f"--sample {sample}: need 1..{n_total}")
        rng = np.random.default_rng(seed)
        return sorted(int(i) for i in rng.choice(n_total, size=sample, replace=False))
    if indices is not None:
        if isinstance(indices, (str, Path)):
            try:
                indices = json.loads(_read_bounded(Path(indices), MAX_TEXT_BYTES, what="indices file"))
            except (OSError, UnicodeDecodeError, ValueError) as e:
                raise InputError(f"indices file {str(indices)!r} unreadable: {e}; give a JSON list of row numbers") from e
        if not isinstance(indices, list) or not indices or not all(isinstance(i, int) and not isinstance(i, bool) for i in indices):
            raise InputError("indices must be a non-empty JSON list of integers, e.g. [0, 5, 17]")
        bad = [i for i in indices if i < 0 or i >= n_total]
        if bad:
            raise InputError(f"indices out of range: {bad[:5]}; valid rows are 0..{n_total - 1}")
        if len(set(indices)) != len(indices):
            from collections import Counter

            dup = sorted(i for i, c in Counter(indices).items() if c > 1)[:5]
            raise InputError(f"indices contain duplicates: {dup}; list each row once")
        return list(indices)
    return list(range(n_total))


def boolq_passages(limit: int | None = None) -> list[str]:
    """Wikipedia passages (BoolQ validation), for perplexity; bundled offline."""
    ds = _load_split(assets.BOOLQ_DIR, HUB_BOOLQ)
    n = len(ds) if limit is None else min(limit, len(ds))
    return [ds[i]["passage"] for i in range(n)]


CORPORA = ("hellaswag", "wikipedia")


def corpus(name: str, *, limit: int | None = None) -> list[str]:
    """Texts for perplexity: "hellaswag" (context + gold ending) or "wikipedia" (BoolQ passages)."""
    if limit is not None and limit < 1:
        raise InputError(f"--limit {limit}: need at least 1 text")
    if name == "hellaswag":
        ds = HellaSwag()
        return [it.gold_text for it in ds.items(list(range(min(limit or len(ds), len(ds)))))]
    if name == "wikipedia":
        return boolq_passages(limit)
    raise InputError(f"unknown corpus {name!r}; use one of {', '.join(CORPORA)} or give a text file")


def prompts(name: str, *, limit: int | None = None) -> list[str]:
    """Prompts to sample continuations after: "hellaswag" (the contexts, as lm-eval builds
    them) or "wikipedia" (each BoolQ passage's first sentence)."""
    if name == "hellaswag":
        ds = HellaSwag()
        if limit is not None and limit < 1:
            raise InputError(f"--limit {limit}: need at least 1 text")
        return [it.query for it in ds.items(list(range(min(limit or len(ds), len(ds)))))]
    return [_first_sentence(t) for t in corpus(name, limit=limit)]


def _first_sentence(text: str) -> str:
    end = text.find(". ")
    return text if end < 0 else text[: end + 1]


def check_text(text: str, *, what: str = "text") -> str:
    """A usable text, or an InputError that says what is wrong with it."""
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"{what} is empty or whitespace only; give some text")
    if "\x00" in text:
        raise InputError(f"{what} contains NUL bytes: it looks binary; give a plain UTF-8 text")
    return text


def _read_bounded(p: Path, max_bytes: int, *, what: str) -> bytes:
    """At most `max_bytes` of a file, pipe or device (/dev/stdin, /dev/zero): limit + 1 bytes are
    read, so an endless source stops there and an over-long one is an InputError."""
    if p.is_dir():
        raise InputError(f"{what} {str(p)!r} is a folder; give a file")
    with open(p, "rb") as f:
        raw = f.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise InputError(f"{what} {str(p)!r} is more than {max_bytes:,} bytes (the limit); split it")
    return raw


def read_text_file(path: str | Path, *, max_bytes: int = MAX_TEXT_BYTES) -> str:
    """A UTF-8 text file's contents, with one-line errors for missing, binary, huge or non-UTF-8 files."""
    p = Path(path)
    try:
        raw = _read_bounded(p, max_bytes, what="text file")
    except OSError as e:
        raise InputError(f"cannot read text file {str(p)!r}: {e.strerror or e}") from e
    return text_from_bytes(raw, what=f"text file {str(p)!r}")


def text_from_bytes(raw: bytes, *, what: str) -> str:
    """A file's bytes as text (CLI files and app uploads alike), with one-line errors for
    binary, non-UTF-8, empty or whitespace-only contents."""
    if b"\x00" in raw:  # before decoding: a binary file is rarely valid UTF-8, and "binary" says more
        raise InputError(f"{what} contains NUL bytes: it looks binary; give a plain UTF-8 text file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{what} is not UTF-8 (byte {e.start}); re-save it as UTF-8") from None
    return check_text(text, what=what)


MAX_FEATURE_BYTES = 4 << 30  # 4 GiB: ~1M texts x 1024 float32 dims, far past what MAUVE's k-means needs


def _check_npy_header(p: Path, side: str, hint: str) -> None:
    """Read a .npy header before the array: a shape whose bytes exceed the file (forged or
    truncated) or MAX_FEATURE_BYTES is refused without allocating it."""
    try:
        with open(p, "rb") as f:
            if f.read(6) != b"\x93NUMPY":
                return  # np.load words what else it is (.npz, pickle, text)
            f.seek(0)
            version = np.lib.format.read_magic(f)
            readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            if version not in readers:
                return
            shape, _, dtype = readers[version](f)
            offset = f.tell()
            size = os.fstat(f.fileno()).st_size
    except OSError as e:
        raise InputError(f"cannot read {side} features {str(p)!r}: {e.strerror or e}; {hint}") from e
    except (ValueError, TypeError, SyntaxError) as e:
        raise InputError(f"{side} features {str(p)!r} have a malformed .npy header ({type(e).__name__}); {hint}") from None
    need = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if need > MAX_FEATURE_BYTES:
        raise InputError(f"{side} features {str(p)!r} claim shape {shape} ({need:,} bytes), past the "
                         f"{MAX_FEATURE_BYTES:,}-byte limit; {hint}")
    if need > size - offset:
        raise InputError(f"{side} features {str(p)!r} claim shape {shape} ({need:,} bytes) but the file holds "
                         f"{max(0, size - offset):,}: truncated or forged; {hint}")


def read_features(path: str | Path, *, side: str = "P") -> npt.NDArray[np.float64]:
    """MAUVE features saved with `numpy.save`: a numeric array, with one-line errors for a
    missing, empty, pickled, .npz or non-numeric file (shape and NaN checks are the metric's)."""
    p = Path(path)
    hint = "save them with numpy.save(path, array), shape [n_texts, dim]"
    _check_npy_header(p, side, hint)
    try:
        a = np.load(p, allow_pickle=False)
    except OSError as e:
        raise InputError(f"cannot read {side} features {str(p)!r}: {e.strerror or e}; {hint}") from e
    except (ValueError, EOFError) as e:  # pickles, text, truncated or empty files
        raise InputError(f"{side} features {str(p)!r} are not a .npy array ({str(e).split('.')[0]}); {hint}") from e
    if not isinstance(a, np.ndarray):
        a.close()
        raise InputError(f"{side} features {str(p)!r} are a .npz archive; {hint}")
    if a.dtype.kind not in "biuf":
        raise InputError(f"{side} features {str(p)!r} hold {a.dtype} values, not numbers; {hint}")
    return a.astype(np.float64, copy=False)
