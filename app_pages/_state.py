"""Page state in the URL: each page's sliders and model choices as query parameters, so a link
opens a page where its sender left it (`/mauve?model=gemma3-270m&k=12&alpha=0.3`).

A page builds one `Link` per run, before its widgets. `Link.value` reads a parameter on the
page's first run in a session (while its widget key is not in st.session_state yet) and puts
the value, or the default, under the widget's key, so the widget is created without `value=`
and shows what the link asked for. A parameter that does not parse, is out of range, or is
not the page's is ignored and `Link.notice` says so in one line. After that the URL follows
the widgets: `write` puts the values on screen into the address bar as they change (no rerun).

Parsers take the URL's text and return the value, or raise ValueError with what is wrong.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import streamlit as st

import lab_cache as lc

Parse = Callable[[str], object]


def number(lo: float, hi: float, step: float | None = None) -> Parse:
    """A float in [lo, hi], rounded to the slider's step."""
    def parse(text: str) -> float:
        try:
            x = float(text)
        except ValueError:
            raise ValueError("not a number") from None
        if not math.isfinite(x) or not lo <= x <= hi:
            raise ValueError(f"outside {lo:g}..{hi:g}")
        if step:
            x = round(lo + round((x - lo) / step) * step, 10)
        return min(hi, max(lo, x))
    return parse


def integer(lo: int, hi: int) -> Parse:
    def parse(text: str) -> int:
        try:
            x = int(text)
        except ValueError:
            raise ValueError("not a whole number") from None
        if not lo <= x <= hi:
            raise ValueError(f"outside {lo}..{hi}")
        return x
    return parse


def one_of(options: Sequence) -> Parse:
    """One of `options`, matched by its text (numbers too: `n=80` for the option 80)."""
    by_text = {str(o): o for o in options}

    def parse(text: str):
        if text not in by_text:
            raise ValueError("not one of " + ", ".join(by_text))
        return by_text[text]
    return parse


def many_of(options: Sequence[str]) -> Parse:
    """A comma-separated list, each one of `options` (`models=smollm2-135m,gemma3-270m`)."""
    def parse(text: str) -> list[str]:
        chosen = [t for t in text.split(",") if t]
        bad = [t for t in chosen if t not in options]
        if bad:
            raise ValueError("not available here: " + ", ".join(bad))
        return list(dict.fromkeys(chosen))
    return parse


def text(value) -> str:
    """How a value is written into the URL."""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


class Link:
    """The URL parameters of one page run: read (and checked) once per session, then written."""

    def __init__(self, params: Sequence[str]) -> None:
        self.params = set(params)
        self.ignored: list[str] = []

    def value(self, key: str, param: str, parse: Parse, default):
        """The value of widget `key`: from the URL on the page's first run, else what the widget holds.

        Puts it under `key` in st.session_state, so the widget takes it without `value=`."""
        if key not in st.session_state:
            raw = st.query_params.get(param)
            value = default
            if raw is not None:
                try:
                    value = parse(raw)
                except ValueError as e:
                    self.ignored.append(f"{param}={raw!r} ({e})")
            st.session_state[key] = value
        return st.session_state[key]

    def notice(self) -> None:
        """One st.warning naming what the link set that the page ignored (and the parameters it
        does not know), shown as plain text; the URL is then rewritten to what the page shows."""
        unknown = [p for p in st.query_params if p not in self.params]
        for p in unknown:
            self.ignored.append(f"{p}= (not a setting of this page)")
            del st.query_params[p]
        if self.ignored:
            st.warning("Ignored from the link: " + lc.md_escape("; ".join(self.ignored)) + ". The page uses its defaults there.")


def write(**params) -> None:
    """Put the values on screen into the URL (each only when it changed: no message otherwise)."""
    for name, value in params.items():
        if value is None:
            continue
        s = text(value)
        if st.query_params.get(name) != s:
            st.query_params[name] = s


def selected(event, name: str, field: str, default):
    """The value of a bound point selection `name` in an `st.altair_chart(on_select=...)` event."""
    try:
        rows = event.selection[name]
        if isinstance(rows, list) and rows and field in rows[0]:
            return rows[0][field]
    except (AttributeError, KeyError, TypeError):
        pass
    return default


def chart_start(chart_key: str, values: Sequence, context: tuple = ()) -> tuple:
    """The values a chart's range inputs start from: the current ones whenever the chart is drawn
    anew (its first run, new data: a changed `context`, or back on the page), else the ones it was
    drawn with. So the rerun that reports a resting slider sends the same chart, and the browser
    keeps the one under the pointer."""
    slot = f"_{chart_key}_start"
    held = st.session_state.get(slot)
    if chart_key not in st.session_state or held is None or held[0] != context:
        held = st.session_state[slot] = (context, tuple(values))
    return held[1]
