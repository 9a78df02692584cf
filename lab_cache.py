"""The app's one caching module (outside app_pages/): models and stores as resources, results as data.

`st.cache_resource` holds loaded models, the dataset, the store and a `Memo` of results
(one copy per process, shared by sessions, never mutated by pages): HellaSwag and
perplexity results and MAUVE labs, whose progress bars the pages pass in. Every heavy call goes through `evalcore.runs`, so a rerun reads the store.
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict

import streamlit as st

from evalcore import runs
from evalcore.data import HellaSwag, corpus
from evalcore.errors import EvalcoreError
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

LESSON_ASSUMED = {"KL small": 1.8, "KL large": 0.7, "MAUVE small": 0.42, "MAUVE large": 0.78}


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


def guard(fn, *args, progress: str | None = None, **kw):
    """Run an evalcore call; show its message (never a traceback) and return None on error.

    With `progress="what it does"`, a progress bar follows the call's items (the cached
    functions above take it as `progress`) and disappears when it returns.
    """
    bar = st.progress(0.0, text=progress) if progress else None
    if bar is not None:
        def update(done: int, total: int) -> None:
            if total < 0:  # Memo: another session is computing the same result
                bar.progress(0.0, text=f"{progress}: another session is computing this; waiting…")
            else:
                bar.progress(min(1.0, done / total) if total else 1.0, text=f"{progress} {done}/{total}")

        kw["progress"] = update
    try:
        return fn(*args, **kw)
    except EvalcoreError as e:
        st.error(str(e))
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
    return guard(check_app_model, typed)
