"""The app's one caching module (outside pages/): models and stores as resources, results as data.

`st.cache_resource` holds loaded models, the dataset, the store and MAUVE labs (one copy
per process, shared by sessions, never mutated by pages); `st.cache_data` holds result
dataclasses. Every heavy call goes through `evalcore.runs`, so a rerun reads the store.
"""
from __future__ import annotations

import streamlit as st

from evalcore import runs
from evalcore.data import HellaSwag, corpus
from evalcore.errors import EvalcoreError
from evalcore.models import REGISTRY, availability, load_embedder, load_model
from evalcore.scoring import Decoding
from evalcore.store import Store

LESSON_ASSUMED = {"KL small": 1.8, "KL large": 0.7, "MAUVE small": 0.42, "MAUVE large": 0.78}


@st.cache_resource(show_spinner="Loading model…")
def model(name: str, dtype: str = "float32"):
    return load_model(name, device="auto", dtype=dtype)


@st.cache_resource(show_spinner=False)
def store() -> Store:
    return Store()


@st.cache_resource(show_spinner=False)
def dataset() -> HellaSwag:
    return HellaSwag()


@st.cache_data(show_spinner=False, ttl=60)
def available() -> list[str]:
    """Registry names loadable here, smallest first."""
    names = [n for n, s in REGISTRY.items() if availability(s).ok]
    return sorted(names, key=lambda n: REGISTRY[n].params_m)


def params(name: str) -> float:
    return REGISTRY[name].params_m if name in REGISTRY else 0.0


@st.cache_data(show_spinner="Scoring HellaSwag…", max_entries=64)
def hellaswag(name: str, n: int) -> runs.HellaSwagResult:
    return runs.run_hellaswag(model(name), list(range(n)), dataset=dataset(), store=store())


@st.cache_data(show_spinner="Computing perplexity…", max_entries=64)
def perplexity(name: str, texts: tuple[str, ...], max_length: int, stride: int) -> runs.PerplexityResult:
    return runs.run_perplexity(model(name), list(texts), max_length=max_length, stride=stride, store=store())


@st.cache_data(show_spinner=False)
def corpus_texts(name: str, n: int) -> tuple[str, ...]:
    return tuple(corpus(name, limit=n))


@st.cache_data(show_spinner="Comparing next-token distributions…", max_entries=32)
def token_kl(a: str, a_dtype: str, b: str, b_dtype: str, text: str) -> runs.TokenKLResult:
    return runs.run_token_kl(model(a, a_dtype), model(b, b_dtype), text, max_length=256)


@st.cache_resource(show_spinner="Generating continuations and features (cached after the first time)…", max_entries=16)
def mauve_lab(name: str, n: int, temperature: float = 1.0, top_p: float = 0.95, seed: int = 0) -> runs.MauveLab:
    dec = Decoding(temperature=temperature, top_p=top_p, seed=seed)
    return runs.run_mauve(model(name), load_embedder(device="auto"), list(range(n)), dec, dataset=dataset(),
                          store=store())


def guard(fn, *args, **kw):
    """Run an evalcore call; show its message (never a traceback) and return None on error."""
    try:
        return fn(*args, **kw)
    except EvalcoreError as e:
        st.error(str(e))
        return None


def model_picker(label: str, key: str, default_index: int = 0) -> str | None:
    names = available()
    if not names:
        st.error("No model is available here: install the bundle with `make bundle`.")
        return None
    return st.selectbox(label, names, index=min(default_index, len(names) - 1), key=key,
                        format_func=lambda n: f"{n} ({params(n):.0f}M)")
