"""The app's one caching package (outside app_pages/): models and stores as resources, results as data.

    lab_cache/__init__   what the pages call (lc.*): models, the store, each measure computed once
    lab_cache/startup    import_backends: the model libraries imported once, before any session's work
    lab_cache/sharing    Turns (one heavy call per model at a time) and Memo (results shared by sessions)
    lab_cache/text       md_escape, and the checks on uploaded files and typed texts
    lab_cache/widgets    guard: an evalcore call with a progress bar, its error one st.error

`st.cache_resource` holds loaded models, the dataset, the store and a `Memo` of results
(one copy per process, shared by sessions, never mutated by pages): HellaSwag and
perplexity results and MAUVE labs, whose progress bars the pages pass in. Every heavy call goes through `evalcore.runs`, so a rerun reads the store.

Text a user controls (model names, file names, and evalcore's messages, which quote them) is
shown through `md_escape`; evalcore calls that user input can make fail go through `guard`.

Two-model measures (per-byte KL between models whose tokenizers differ, `evalcore.runs.crosskl`)
take both models' turns, in name order, so no two sessions each hold a turn the other waits for.
"""
from __future__ import annotations

import gc
import hashlib
import logging
import os
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import streamlit as st

from evalcore import runs, runtime
from evalcore.data import MAX_TEXT_BYTES, HellaSwag, corpus  # noqa: F401 (MAX_TEXT_BYTES: lc.* in the pages)
from evalcore.data import prompts as corpus_prompts
from evalcore.errors import NotEnoughMemoryError
from evalcore.metrics import mauve as mauve_metric
from evalcore.models import (
    OFFLINE_PAIR,
    ONLINE_PAIR,
    REGISTRY,
    availability,
    check_app_model,
    device_summary,
    ensure_converted,
    load_embedder,
    load_model,
    total_memory_bytes,
    unload,
    weights_bytes,
)
from evalcore.models.hub import hub_snapshot
from evalcore.runs import crosskl
from evalcore.metrics.mauve_stats import CurveConfig
from evalcore.runs.lmeval import import_lm_eval
from evalcore.runs.mauve_stats import run_mauve_curves, run_mauve_difference
from evalcore.scoring import Decoding
from evalcore.store import Store
from lab_cache.sharing import Memo, Turns
from lab_cache.startup import import_backends  # noqa: F401 (app.py calls lc.import_backends)
# the text checks and Markdown escaping, which the pages call as lc.*
from lab_cache.text import (NEXT_BYTES_LIMIT, WORD_JOINER, first_sentences, md_escape, short_text,  # noqa: F401
                            upload_paragraphs, upload_text)
from lab_cache.widgets import guard

log = logging.getLogger(__name__)

LESSON_ASSUMED = {"KL small": 1.8, "KL large": 0.7, "MAUVE small": 0.42, "MAUVE large": 0.78}

_PREPARE_POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="evalcore-prepare")
_PREPARE_LOCK = threading.Lock()
_MODELS_LOCK = threading.Lock()  # the loaded-models table (`_model`)


# Registry models larger than this load in bfloat16 in the app, so that two visitors with the
# lesson's pair fit Streamlit Cloud's boxes: Gemma 3 270M's weights are 1.07 GB at float32 and
# 0.54 GB at bfloat16, SmolLM2-360M's 1.45 GB and 0.72 GB (scores move within the tolerance the
# tests hold bf16 to; bf16 also generates about twice as fast on CPU: bench/RESULTS.md).
BF16_ABOVE_M = 200


def app_dtype(name: str) -> str:
    """The dtype the app loads `name` at: float32, or bfloat16 above `BF16_ABOVE_M` parameters."""
    return "bfloat16" if params(name) > BF16_ABOVE_M else "float32"


def model(name: str, dtype: str | None = None):
    """The loaded model, once per process (at `app_dtype(name)` unless a page asks for a dtype).
    A model that must first be converted from its bundled GGUF, or downloaded, gets a progress
    bar of its own for that one-time step."""
    if name in REGISTRY and availability(REGISTRY[name]).source in ("bundle", "hub"):
        _prepare(name)
    return _model(name, dtype or app_dtype(name))


# Seconds a one-time step takes on one core, per million parameters, for the progress bar's
# estimate: the GGUF conversion de-quantizes and writes the weights; a download streams them.
_PREPARE_S_PER_M = {"bundle": 0.12, "hub": 0.05}


@st.cache_resource(show_spinner=False)
def _preparations() -> dict[str, Future]:
    return {}


def _prepare(name: str) -> None:
    """Convert a bundled model's GGUF, or download a hub model's files, once per process, in a
    worker thread; every session that arrives meanwhile follows it on a progress bar."""
    spec = REGISTRY[name]
    source = availability(spec).source
    jobs = _preparations()
    with _PREPARE_LOCK:
        job = jobs.get(name)
        if job is None or (job.done() and job.exception() is not None):
            step = ensure_converted if source == "bundle" else lambda s: hub_snapshot(s.hub_id)
            job = jobs[name] = _PREPARE_POOL.submit(step, spec)
    what = "converting its bundled weights to safetensors" if source == "bundle" else f"downloading {spec.hub_id}"
    expected = max(5.0, _PREPARE_S_PER_M.get(source, 0.1) * spec.params_m)
    t0 = time.monotonic()
    bar = st.progress(0.0, text=md_escape(f"{name}: {what} (once)…"))
    try:
        while not job.done():
            elapsed = time.monotonic() - t0
            bar.progress(min(0.95, elapsed / expected),
                         text=md_escape(f"{name}: {what} (once), {elapsed:.0f} s of about {expected:.0f} s"))
            time.sleep(0.5)
    finally:
        bar.empty()
    job.result()  # its error, if any, reaches the page's guard


@st.cache_resource(show_spinner=False)
def _loaded() -> dict:
    """(name, dtype) -> LoadedModel: the models this server holds."""
    return {}


def _model(name: str, dtype: str):
    """The model at `dtype`, loaded once per process. When it would not fit in free memory, the
    models no session is using (nobody holds or awaits their turn) are unloaded and the load is
    tried again: a class moving between pages and models then never holds more than the models
    in use."""
    loaded, key = _loaded(), (name, dtype)
    with _MODELS_LOCK:
        if key in loaded:
            return loaded[key]
    with st.spinner("Loading model…"):
        try:
            lm = load_model(name, device="auto", dtype=dtype)
        except NotEnoughMemoryError:
            if not _unload_idle(keep=name):
                raise
            lm = load_model(name, device="auto", dtype=dtype)
    with _MODELS_LOCK:
        loaded[key] = lm
    return lm


def _unload_idle(keep: str) -> int:
    """Unload the loaded models other than `keep` that no session is using; returns how many."""
    loaded, turns = _loaded(), _turns()
    with _MODELS_LOCK:
        idle = [k for k in loaded if k[0] != keep and turns.idle(k[0])]
        dropped = [loaded.pop(k) for k in idle]
    for lm in dropped:
        unload(lm)
        log.info("unloaded %s (%s) to make room", lm.spec.name, lm.dtype)
    del dropped
    gc.collect()
    runtime.release_free_memory()
    return len(idle)


@st.cache_resource(show_spinner=False)
def store() -> Store:
    """The results store: $EVALCORE_STORE if set, else results.sqlite in the evalcore cache."""
    return Store(os.environ.get("EVALCORE_STORE") or None)


@st.cache_resource(show_spinner=False)
def dataset() -> HellaSwag:
    return HellaSwag()


@st.cache_data(show_spinner=False, ttl=60)
def available() -> list[str]:
    """Registry names loadable here whose weights (at `app_dtype`) take at most half of this
    machine's memory, so that two of them fit, smallest first."""
    budget = total_memory_bytes() // 2
    names = [n for n, s in REGISTRY.items()
             if availability(s).ok and (weights_bytes(s, app_dtype(n)) or 0) <= budget]
    return sorted(names, key=lambda n: REGISTRY[n].params_m)


def headline_pair() -> list[str]:
    """The small and the large model of the lesson: the bundled pair (offline, or online with an
    HF token for Gemma), else SmolLM2 135M / 360M (online, ungated), else the two smallest here."""
    names = available()
    for pair in (OFFLINE_PAIR, ONLINE_PAIR):
        if all(n in names for n in pair):
            return list(pair)
    return names[:2]


def token_hint() -> str | None:
    """One line for a gated model of the lesson that a token would unlock, else None."""
    for name in OFFLINE_PAIR:
        a = availability(REGISTRY[name])
        if a.source == "gated":
            return f"{name} is {a.detail}."
    return None


def max_k(n: int) -> int:
    """The most MAUVE clusters for n human and n model texts (the engine's one limit)."""
    return mauve_metric.max_k(n, n)


def params(name: str) -> float:
    return REGISTRY[name].params_m if name in REGISTRY else 0.0


@st.cache_resource(show_spinner=False)
def _results() -> Memo:
    return Memo(max_entries=256)


@st.cache_resource(show_spinner=False)
def _turns() -> Turns:
    return Turns()


def hellaswag(name: str, n: int, progress=None, unconditional: bool = False) -> runs.HellaSwagResult:
    """HellaSwag on the first n items; with `unconditional`, also the pass acc_mutual_info needs."""
    return hellaswag_items(name, tuple(range(n)), progress, unconditional)


def perplexity(name: str, texts: tuple[str, ...], max_length: int, stride: int, progress=None) -> runs.PerplexityResult:
    return _results().get(("perplexity", name, texts, max_length, stride), lambda: runs.run_perplexity(
        model(name), list(texts), max_length=max_length, stride=stride, store=store(), progress=progress), progress,
        (_turns(), name))


LM_EVAL_UPLOAD_MB = 64  # a full HellaSwag --log_samples file (10,042 lines) is about 30 MB


def lm_eval_run(file_name: str, data: bytes) -> runs.HellaSwagResult:
    """An uploaded lm-eval `--log_samples` HellaSwag file as a HellaSwag result (`runs.lmeval`),
    read once per content; or an InputError that names the bad line. The bytes go to a private
    temporary folder for the import and are removed after it."""
    def read() -> runs.HellaSwagResult:
        with tempfile.TemporaryDirectory(prefix="evalcore-lmeval-") as folder:
            path = Path(folder) / (Path(file_name).name or "samples.jsonl")
            path.write_bytes(data)
            return import_lm_eval(path, dataset=dataset(), name=f"lm-eval: {Path(file_name).name}")

    return _results().get(("lm-eval", hashlib.sha256(data).hexdigest(), file_name), read)


def hellaswag_items(name: str, indices: tuple[int, ...], progress=None,
                    unconditional: bool = False) -> runs.HellaSwagResult:
    """HellaSwag on the given rows (the first n, or an imported run's doc_ids), computed once per
    arguments; `unconditional` adds the second pass of acc_mutual_info (stored like the first)."""
    return _results().get(("hellaswag", name, indices, unconditional), lambda: runs.run_hellaswag(
        model(name), list(indices), dataset=dataset(), store=store(), progress=progress, unconditional=unconditional),
        progress, (_turns(), name))


@st.cache_data(show_spinner=False)
def corpus_texts(name: str, n: int) -> tuple[str, ...]:
    return tuple(corpus(name, limit=n))


def token_kl(a: str, a_dtype: str, b: str, b_dtype: str, text: str, progress=None) -> runs.TokenKLResult:
    """Token-level KL between two models that share a tokenizer, on the first 256 tokens of a
    text: computed once per arguments, in the models' queue (`progress` shows the place)."""
    return _results().get(("tokenkl", a, a_dtype, b, b_dtype, text), lambda: runs.run_token_kl(
        model(a, a_dtype), model(b, b_dtype), text, max_length=256), progress, (_turns(), (a, b)))


@st.cache_data(show_spinner=False)
def prompt_texts(name: str, n: int) -> tuple[str, ...]:
    """The first n prompts of a corpus (`evalcore.data.prompts`): HellaSwag contexts, or the
    first sentence of each Wikipedia passage."""
    return tuple(corpus_prompts(name, limit=n))


def next_bytes(p: str, q: str, text: str, progress=None) -> crosskl.NextBytesResult:
    """Per-byte KL both ways and JS between models `p` and `q` (any tokenizers) over a short text."""
    text = short_text(text)
    return _results().get(("nextbytes", p, q, text), lambda: crosskl.run_next_bytes(
        model(p), model(q), text, store=store(), progress=progress), progress, (_turns(), (p, q)))


def gap_key(p: str, q: str, texts: tuple[str, ...]) -> tuple:
    return ("gap", p, q, texts)


def gap(p: str, q: str, texts: tuple[str, ...], progress=None) -> crosskl.GapResult:
    """The cross-entropy gap per byte, bpb(q) - bpb(p), on `texts`, with a bootstrap interval."""
    return _results().get(gap_key(p, q, texts), lambda: crosskl.run_gap(
        model(p), model(q), list(texts), store=store(), progress=progress), progress, (_turns(), (p, q)))


def mc_key(p: str, q: str, prompts: tuple[str, ...], max_new_tokens: int = 48, seed: int = 0) -> tuple:
    return ("mckl", p, q, prompts, max_new_tokens, seed)


def mc_kl(p: str, q: str, prompts: tuple[str, ...], max_new_tokens: int = 48, seed: int = 0,
          progress=None) -> crosskl.MonteCarloResult:
    """Monte-Carlo KL(p‖q) and KL(q‖p) per byte, from one continuation per prompt sampled from each."""
    return _results().get(mc_key(p, q, prompts, max_new_tokens, seed), lambda: crosskl.run_mc_kl(
        model(p), model(q), list(prompts), max_new_tokens=max_new_tokens, seed=seed, store=store(),
        progress=progress), progress, (_turns(), (p, q)))


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
        progress=progress), progress, (_turns(), name))


APP_DECODING = {"temperature": 1.0, "top_p": 0.95, "seed": 0}  # the MAUVE pages' sampling (mauve_lab's defaults)


def mauve_difference(a: str, b: str, n: int, n_boot: int = 200, progress=None):
    """MAUVE(a) − MAUVE(b) on the first n contexts with its paired, re-clustered bootstrap interval
    and verdict (`runs.mauve_stats.run_mauve_difference`); generations and features come from the
    store (the MAUVE labs made them), and every k-means fit is stored."""
    return _results().get(("mauve_diff", a, b, n, n_boot), lambda: run_mauve_difference(
        model(a), model(b), load_embedder(device="auto"), list(range(n)), Decoding(**APP_DECODING), n_boot=n_boot,
        dataset=dataset(), store=store(), progress=progress), progress, (_turns(), (a, b)))


def mauve_curves(names: tuple[str, ...], ns: tuple[int, ...], n_boot: int = 50, progress=None):
    """MAUVE against n (first n contexts) for each model, at k = auto(n) and at a fixed k, with a
    k-means seed band and a re-clustered bootstrap band of `n_boot` resamples
    (`runs.mauve_stats.run_mauve_curves`); only missing generations and fits are computed."""
    config = CurveConfig(n_boot=n_boot)
    return _results().get(("mauve_curves", names, ns, n_boot), lambda: run_mauve_curves(
        [model(m) for m in names], load_embedder(device="auto"), list(ns), Decoding(**APP_DECODING), config=config,
        dataset=dataset(), store=store(), progress=progress), progress, (_turns(), names))


@st.cache_data(show_spinner=False)
def device_line() -> str:
    """Where inference runs and at which dtypes, for the sidebar."""
    return (f"Inference on **{device_summary()}**: models up to {BF16_ABOVE_M}M parameters in float32, "
            "larger ones in bfloat16 (memory).")


def mauve_ci(name: str, n: int, k: int, n_boot: int = 200) -> tuple[float, float]:
    """MAUVE's 95% bootstrap interval at k clusters, computed once per (model, n, k) and shared:
    `MauveLab.bootstrap` recomputes its resamples on every call."""
    lab = mauve_lab(name, n)  # a memo hit: the page asked for the lab first
    return _results().get(("mauve_ci", *mauve_key(name, n), k, n_boot), lambda: lab.bootstrap(k, n_boot=n_boot))


@st.cache_data(show_spinner=False, max_entries=128)
def vega_spec(chart: str, *args) -> dict:
    """The Vega-Lite dict of `app_pages._live.<chart>(*args)`, built once per arguments and shared:
    Altair's to_dict takes a few hundred milliseconds, the dominant cost of redrawing a cached k."""
    from app_pages import _live

    return getattr(_live, chart)(*args).to_dict()


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
