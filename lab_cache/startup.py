"""The app server's start-up: `import_backends`, run once per process by app.py before any
session's first heavy call."""
from __future__ import annotations

import importlib
import logging
import threading

import streamlit as st

from evalcore import models, runtime
from evalcore.errors import EvalcoreError

log = logging.getLogger("lab_cache")

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
        runtime.prefer_small_memory()  # a shared box: freed memory goes back (see `Memo.get`)
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
