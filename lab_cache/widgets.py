"""`guard`: how a page runs an evalcore call, with a progress bar, and turns its error into one
`st.error` (the pages call it as lc.guard)."""
from __future__ import annotations

import logging

import streamlit as st

from evalcore.errors import EvalcoreError
from lab_cache.text import md_escape

log = logging.getLogger("lab_cache")


def guard(fn, *args, progress: str | None = None, task: str | None = None, **kw):
    """Run an evalcore call; on an error show one `st.error` and return None, so the rest of
    the page keeps working.

    An `EvalcoreError` shows its message, which says what to do. Any other exception is a
    bug or a broken environment: the page says which step failed and the exception's type
    only (its message may name server paths); the traceback goes to the server log.

    With `progress="what it does"`, a progress bar follows the call's items (the cached
    functions of `lab_cache` take it as `progress`) and disappears when it returns. `task` (else
    `progress`) names the step in the unexpected-error line. Both are shown as plain text.
    """
    what = task or progress or "This step"
    bar = st.progress(0.0, text=md_escape(progress)) if progress else None
    if bar is not None:
        def update(done: int, total: int) -> None:
            if total < 0 and done < 0:  # Memo: another session is computing the same result
                bar.progress(0.0, text=md_escape(f"{progress}: another session is computing this; waiting…"))
            elif total < 0:  # Turns: place `done` in the model's queue
                ahead = "1 visitor is" if done == 1 else f"{done} visitors are"
                bar.progress(0.0, text=md_escape(f"{progress}: queued, {ahead} ahead of you on this model; waiting…"))
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
