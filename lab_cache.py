"""The app's one caching module (outside app_pages/): models and stores as resources, results as data.

`st.cache_resource` holds loaded models, the dataset, the store and a `Memo` of results
(one copy per process, shared by sessions, never mutated by pages): HellaSwag and
perplexity results and MAUVE labs, whose progress bars the pages pass in. Every heavy call goes through `evalcore.runs`, so a rerun reads the store.

Text a user controls (model names, file names, and evalcore's messages, which quote them) is
shown through `md_escape`; evalcore calls that user input can make fail go through `guard`.
"""
from __future__ import annotations

import importlib
import logging
import os
import re
import threading
from collections import OrderedDict

import streamlit as st

from evalcore import models, runs, runtime
from evalcore.data import MAX_TEXT_BYTES, HellaSwag, corpus, text_from_bytes
from evalcore.metrics import mauve as mauve_metric
from evalcore.errors import EvalcoreError, InputError
from evalcore.models import (
    OFFLINE_PAIR,
    REGISTRY,
    availability,
    check_app_model,
    device_summary,
    load_embedder,
    load_model,
    resolve_device,
    resolve_dtype,
)
from evalcore.scoring import Decoding
from evalcore.store import Store

log = logging.getLogger(__name__)

LESSON_ASSUMED = {"KL small": 1.8, "KL large": 0.7, "MAUVE small": 0.42, "MAUVE large": 0.78}

# Libraries evalcore imports lazily on the pages' first calls: tokenizers for the bundled
# models, safetensors for their weights, pyarrow for the datasets, scikit-learn and SciPy for
# MAUVE's PCA and HellaSwag's McNemar test. The model libraries come through evalcore.
_LAZY_LIBRARIES = ("tokenizers", "safetensors", "huggingface_hub", "pyarrow", "scipy.stats", "sklearn.decomposition",
                   "sklearn.preprocessing")
_IMPORT_LOCK = threading.Lock()


@st.cache_resource(show_spinner="Starting: importing the model libraries…")
def import_backends() -> bool:
    """Import, once per process and before any session's work, what the pages' first calls
    would import lazily; app.py calls it before the page runs.

    Two threads importing the same packages at once can see each other's half-initialised
    modules (when their imports wait on each other, Python hands one of them a module the
    other is still running): two sessions whose first calls reached Hugging Face's model
    classes together failed with "cannot import name 'AutoModel'".
    Here one thread imports everything and a session that arrives meanwhile waits on the lock:
    evalcore.native brings in PyTorch, evalcore.models.import_backends the Auto model and
    tokenizer classes (under the lock its loaders import with), faiss as MAUVE imports it. Returns True when all of it is importable; what is not is logged,
    and the page that needs it says so through `guard`.
    """
    with _IMPORT_LOCK:
        ok = True
        for name in _LAZY_LIBRARIES:
            try:
                importlib.import_module(name)
            except ImportError:
                log.exception("importing %s failed", name)
                ok = False
        from evalcore import native, scoring, tokenizer  # noqa: F401
        try:
            models.import_backends()  # Hugging Face's Auto classes, under the model loader's lock
            runtime.import_faiss()
        except (EvalcoreError, ImportError) as e:  # the MAUVE page shows the error when it needs them
            log.warning("MAUVE's libraries are not ready: %s", e)
            ok = False
        return ok


_MD_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")  # every ASCII punctuation character, all escapable in CommonMark
_MD_LEADING_SPACE = re.compile(r"^[ \t]+")
# where GitHub-flavoured Markdown's autolinks start: http(s)://, www., user@host
_AUTOLINK_START = re.compile(r"(?i)(?<=https)(?=:)|(?<=http)(?=:)|(?<=www)(?=\.)|(?=@)")
WORD_JOINER = "\u2060"


def md_escape(text: object) -> str:
    """`text` as literal characters inside Streamlit Markdown (st.error, st.caption, labels...).

    Every ASCII punctuation character gets a backslash, so nothing a user typed becomes bold
    text, a link, an image (which the browser would fetch), HTML, math (`$`), or one of
    Streamlit's directives (`:red[...]`, `:material/icon:`, emoji shortcodes). Escapes do not
    stop GitHub-flavoured autolinks, which Streamlit's renderer finds in the text after parsing
    (`http://…`, `www.…`, `user@host`): an invisible word joiner (U+2060) goes before their `:`,
    `.` or `@`. A line break becomes a Markdown hard break, so it cannot end the paragraph and
    start a new block, and leading spaces become character references, so they cannot start a
    code block.
    """
    s = _AUTOLINK_START.sub(WORD_JOINER, str(text).replace("\r\n", "\n").replace("\r", "\n"))
    s = _MD_PUNCTUATION.sub(r"\\\1", s).replace("\n", "\\\n")
    return _MD_LEADING_SPACE.sub(lambda m: "".join(f"&#{ord(c)};" for c in m.group()), s)


@st.cache_resource(show_spinner="Loading model…")
def model(name: str, dtype: str = "float32"):
    return load_model(name, device="auto", dtype=dtype)


@st.cache_resource(show_spinner=False)
def store() -> Store:
    """The results store: $EVALCORE_STORE if set, else results.sqlite in the evalcore cache."""
    return Store(os.environ.get("EVALCORE_STORE") or None)


@st.cache_resource(show_spinner=False)
def dataset() -> HellaSwag:
    return HellaSwag()


@st.cache_data(show_spinner=False, ttl=60)
def available() -> list[str]:
    """Registry names loadable here, smallest first."""
    names = [n for n, s in REGISTRY.items() if availability(s).ok]
    return sorted(names, key=lambda n: REGISTRY[n].params_m)


def headline_pair() -> list[str]:
    """The small and the large model of the lesson: the bundled pair, else the two smallest available."""
    names = available()
    pair = [n for n in OFFLINE_PAIR if n in names]
    return pair if len(pair) == 2 else names[:2]


def max_k(n: int) -> int:
    """The most MAUVE clusters for n human and n model texts (the engine's one limit)."""
    return mauve_metric.max_k(n, n)


def params(name: str) -> float:
    return REGISTRY[name].params_m if name in REGISTRY else 0.0


@st.cache_resource(show_spinner=False)
def _results() -> Memo:
    return Memo(max_entries=256)


class Memo:
    """Results shared by all sessions, least recently used dropped first.

    Not `st.cache_data`: a progress bar that a page passes in cannot be updated from inside
    a cached function (Streamlit would replay it on every cache hit). Values are frozen
    result dataclasses; a miss computes under a per-key lock, so two sessions asking for
    the same work at once compute it once.
    """

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._data: OrderedDict[tuple, object] = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict[tuple, threading.Lock] = {}

    def peek(self, key: tuple):
        """The value if some session computed it already, else None (never computes)."""
        with self._lock:
            return self._data.get(key)

    def get(self, key: tuple, compute, progress=None):
        """The value for `key`, computed once; while another session computes it, wait.

        The wait polls, calling `progress(-1, -1)` between polls, so a waiting page still
        reacts to its user (Streamlit stops or reruns a script at its next st call).
        """
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        while not key_lock.acquire(timeout=0.25):
            if progress is not None:
                progress(-1, -1)
        try:
            with self._lock:
                if key in self._data:
                    return self._data[key]
            value = compute()
            with self._lock:
                self._data[key] = value
                self._key_locks.pop(key, None)
                while len(self._data) > self.max_entries:
                    self._data.popitem(last=False)
            return value
        finally:
            key_lock.release()


def hellaswag(name: str, n: int, progress=None) -> runs.HellaSwagResult:
    return _results().get(("hellaswag", name, n), lambda: runs.run_hellaswag(
        model(name), list(range(n)), dataset=dataset(), store=store(), progress=progress), progress)


def perplexity(name: str, texts: tuple[str, ...], max_length: int, stride: int, progress=None) -> runs.PerplexityResult:
    return _results().get(("perplexity", name, texts, max_length, stride), lambda: runs.run_perplexity(
        model(name), list(texts), max_length=max_length, stride=stride, store=store(), progress=progress), progress)


def upload_text(name: str, data: bytes) -> str:
    """An uploaded file's text, or an InputError that says what is wrong with it: at most
    `MAX_TEXT_BYTES` (the limit the CLI applies to text files), UTF-8, not empty, not binary."""
    limit_mb = f"{MAX_TEXT_BYTES / 2**20:g}"
    if len(data) > MAX_TEXT_BYTES:
        raise InputError(f"{name} is {len(data) / 2**20:.1f} MB; the app takes text files up to {limit_mb} MB. "
                         "Upload a part of it, or score the whole file with: python -m evalcore perplexity --text-file")
    return text_from_bytes(data, what=f"uploaded file {name}")


@st.cache_data(show_spinner=False)
def corpus_texts(name: str, n: int) -> tuple[str, ...]:
    return tuple(corpus(name, limit=n))


@st.cache_data(show_spinner="Comparing next-token distributions…", max_entries=32)
def token_kl(a: str, a_dtype: str, b: str, b_dtype: str, text: str) -> runs.TokenKLResult:
    return runs.run_token_kl(model(a, a_dtype), model(b, b_dtype), text, max_length=256)


def mauve_key(name: str, n: int, temperature: float = 1.0, top_p: float = 0.95, seed: int = 0) -> tuple:
    return ("mauve", name, n, temperature, top_p, seed)


def peek(key: tuple):
    """A result some session already computed in this process, or None."""
    return _results().peek(key)


def mauve_lab(name: str, n: int, temperature: float = 1.0, top_p: float = 0.95, seed: int = 0,
              progress=None) -> runs.MauveLab:
    """The MAUVE lab of one model's continuations; its k-means fits are cached inside it."""
    dec = Decoding(temperature=temperature, top_p=top_p, seed=seed)
    return _results().get(mauve_key(name, n, temperature, top_p, seed), lambda: runs.run_mauve(
        model(name), load_embedder(device="auto"), list(range(n)), dec, dataset=dataset(), store=store(),
        progress=progress), progress)


@st.cache_data(show_spinner=False)
def device_line() -> str:
    """Where inference runs, for the sidebar: device and the dtype `auto` picks there."""
    return f"Inference on **{device_summary()}**, {resolve_dtype('auto', resolve_device('auto'))}."


def guard(fn, *args, progress: str | None = None, task: str | None = None, **kw):
    """Run an evalcore call; on an error show one `st.error` and return None, so the rest of
    the page keeps working.

    An `EvalcoreError` shows its message, which says what to do. Any other exception is a
    bug or a broken environment: the page says which step failed and the exception's type
    only (its message may name server paths); the traceback goes to the server log.

    With `progress="what it does"`, a progress bar follows the call's items (the cached
    functions above take it as `progress`) and disappears when it returns. `task` (else
    `progress`) names the step in the unexpected-error line. Both are shown as plain text.
    """
    what = task or progress or "This step"
    bar = st.progress(0.0, text=md_escape(progress)) if progress else None
    if bar is not None:
        def update(done: int, total: int) -> None:
            if total < 0:  # Memo: another session is computing the same result
                bar.progress(0.0, text=md_escape(f"{progress}: another session is computing this; waiting…"))
            else:
                bar.progress(min(1.0, done / total) if total else 1.0, text=md_escape(f"{progress} {done}/{total}"))

        kw["progress"] = update
    try:
        return fn(*args, **kw)
    except EvalcoreError as e:
        st.error(md_escape(e))
        return None
    except Exception as e:
        log.exception("%s failed unexpectedly", what)
        st.error(md_escape(f"{what} failed unexpectedly ({type(e).__name__}); the details are in the server log."))
        return None
    finally:
        if bar is not None:
            bar.empty()


OTHER = "other: a hub id or a local folder…"


def model_picker(label: str, key: str, default_index: int = 0, *, other: bool = True) -> str | None:
    """A registry model available here, or (with `other`) any hub id / allowed local folder.

    An unusable name shows an `st.error` that says what to do and returns None.
    """
    names = available()
    if not names and not other:
        st.error("No model is available here: install the bundle with `make bundle`.")
        return None
    options = names + ([OTHER] if other else [])
    choice = st.selectbox(label, options, index=min(default_index, max(len(names) - 1, 0)), key=key,
                          format_func=lambda n: n if n == OTHER else f"{n} ({params(n):.0f}M)")
    if choice != OTHER:
        return choice
    typed = st.text_input("hub id (owner/name) or local folder", key=f"{key}_other",
                          placeholder="HuggingFaceTB/SmolLM2-360M-Instruct").strip()
    if not typed:
        return None
    return guard(check_app_model, typed, task="Checking the model name")
