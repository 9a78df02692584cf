"""The app's small parts, without a page: the Markdown escape for user text, the error guard,
the upload check, and the upload limit shared by Streamlit's config and evalcore."""
from __future__ import annotations

import html
import logging
import re
import string
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import lab_cache as lc
from evalcore.data import MAX_TEXT_BYTES
from evalcore.errors import InputError

ROOT = Path(__file__).resolve().parents[2]
HOSTILE = [
    "**bold** [link](http://example.invalid) ![img](http://example.invalid/x.png)",
    "<img src=x onerror=alert(1)> <script>x</script> &amp; &#65;",
    ":red[red] :material/home: :smile: $x^2$ $$y$$ `code` ~~strike~~ _em_",
    "# heading", "- item", "1. item", "> quote", "| a | b |", "    indented", "\tindented", "a\\*b\\",
    "www.example.invalid a@b.invalid", string.punctuation, "HTTPS://EXAMPLE.INVALID/a WWW.EXAMPLE.INVALID", "a\nb",
]
# Streamlit's renderer (mdast-util-gfm-autolink-literal, run on text after parsing) links these
GFM_AUTOLINKS = [re.compile(r"(https?:\/\/|www(?=\.))([-.\w]+)([^ \t\r\n]*)", re.I),
                 re.compile(r"(?<![-.\w+])([-.\w+]+)@([-\w]+(?:\.[-\w]+)+)")]


# In a fresh process: import_backends, then two threads ask transformers for the classes the
# app's first calls use, at once. Without the import first, this failed in most runs with
# "cannot import name 'AutoModel' from 'transformers'" (a half-initialised module).
CONCURRENT_IMPORTS = """
import sys, threading
import lab_cache
assert lab_cache.import_backends()
errors = []
def use(names):
    try:
        exec(f"from transformers import {names}", {})
    except Exception as e:
        errors.append(repr(e))
threads = [threading.Thread(target=use, args=(names,)) for names in
           ("AutoModelForCausalLM, AutoTokenizer, DynamicCache", "AutoModel, AutoTokenizer")]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(errors, "torch" in sys.modules, "faiss" in sys.modules, "sklearn.decomposition" in sys.modules)
"""


@pytest.mark.slow  # a CLI process or a fresh interpreter
def test_import_backends_makes_first_calls_thread_safe():
    out = subprocess.run([sys.executable, "-c", CONCURRENT_IMPORTS], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[] True True True", out.stdout


def test_upload_limit_is_the_engine_limit():
    """Streamlit refuses uploads over server.maxUploadSize (MB); the page and the CLI refuse texts
    over evalcore.data.MAX_TEXT_BYTES: one limit."""
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["maxUploadSize"] * 2**20 == MAX_TEXT_BYTES


@pytest.mark.parametrize("text", HOSTILE)
def test_md_escape_shows_the_literal_characters(text):
    """Rendered as CommonMark, the escaped string is one paragraph of exactly the input's characters."""
    markdown_it = pytest.importorskip("markdown_it")
    rendered = markdown_it.MarkdownIt("commonmark").render(lc.md_escape(text))
    assert rendered.startswith("<p>") and rendered.endswith("</p>\n"), rendered
    shown = html.unescape(rendered[3:-5].replace("<br />\n", "\n"))
    assert shown.replace(lc.WORD_JOINER, "") == text  # no tag inside: every character shown as it was typed
    assert not any(p.search(shown) for p in GFM_AUTOLINKS)  # and nothing that GFM would turn into a link


def test_md_escape_escapes_every_ascii_punctuation_character():
    escaped = lc.md_escape(string.punctuation).replace(lc.WORD_JOINER, "")
    assert escaped == "".join("\\" + c for c in string.punctuation)
    assert lc.md_escape("smollm2 135m café") == "smollm2 135m café"  # letters, digits, spaces, non-ASCII: as they are


def test_md_escape_keeps_line_breaks_inside_one_paragraph():
    markdown_it = pytest.importorskip("markdown_it")
    rendered = markdown_it.MarkdownIt("commonmark").render(lc.md_escape("a\n\n# b\r\nc"))
    assert rendered == "<p>a<br />\n<br />\n# b<br />\nc</p>\n"


def test_upload_text_checks():
    assert lc.upload_text("ok.txt", "héllo".encode()) == "héllo"
    with pytest.raises(InputError, match="empty"):
        lc.upload_text("blank.txt", b" \n")
    with pytest.raises(InputError, match="not UTF-8"):
        lc.upload_text("latin1.txt", "café".encode("latin-1"))
    with pytest.raises(InputError, match="binary"):
        lc.upload_text("nul.txt", b"a\x00b")
    with pytest.raises(InputError, match="up to 5 MB"):
        lc.upload_text("huge.txt", b"x" * (MAX_TEXT_BYTES + 1))
    assert lc.upload_text("edge.txt", b"x" * MAX_TEXT_BYTES)  # the limit itself is allowed


def _guarded_script():
    import streamlit as st

    import lab_cache as lc
    from evalcore.errors import InputError

    def unexpected():
        raise RuntimeError("/srv/private/weights.bin is broken")

    def expected():
        raise InputError("model '**x**' is unknown; pick another")

    st.session_state["unexpected"] = lc.guard(unexpected, task="Scoring **x**")
    st.session_state["expected"] = lc.guard(expected)
    st.markdown("the page goes on")


def test_guard_turns_any_error_into_one_line(caplog):
    at = AppTest.from_function(_guarded_script, default_timeout=120)
    with caplog.at_level(logging.ERROR, logger="lab_cache"):
        at.run()
    assert not at.exception
    assert at.session_state["unexpected"] is None and at.session_state["expected"] is None
    unexpected, expected = (e.value for e in at.error)
    assert unexpected == lc.md_escape("Scoring **x** failed unexpectedly (RuntimeError); "
                                      "the details are in the server log.")
    assert "/srv/private" not in unexpected  # the raw message may name server paths: only the log has it
    assert expected == lc.md_escape("model '**x**' is unknown; pick another")  # evalcore's message, as text
    assert at.markdown[-1].value == "the page goes on"
    logged = [r for r in caplog.records if r.name == "lab_cache"]
    assert logged and logged[0].exc_info and "/srv/private/weights.bin" in str(logged[0].exc_info[1])


def test_short_text_counts_utf8_bytes_and_says_what_to_do():
    assert lc.short_text("x" * lc.NEXT_BYTES_LIMIT) == "x" * lc.NEXT_BYTES_LIMIT  # the limit itself is allowed
    with pytest.raises(InputError, match="201 UTF-8 bytes.*at most 200: shorten it"):
        lc.short_text("x" * 201)
    with pytest.raises(InputError, match="201 UTF-8 bytes"):
        lc.short_text("‖" * 67)  # 67 characters of three bytes each
    with pytest.raises(InputError, match="empty"):
        lc.short_text(" \n")


def test_heatmap_cells_sum_a_characters_bytes_and_end_with_the_end_of_text():
    from app_pages import _charts

    cells = _charts.char_cells("a‖\n", [1.0, 2.0, 3.0, 4.0, 5.0, 6.0])  # 1 + 3 + 1 bytes: 6 positions
    assert cells["char"].tolist() == ["a", "‖", "⏎", _charts.END]
    assert cells["value"].tolist() == [1.0, 9.0, 5.0, 6.0]
    assert cells["positions"].tolist() == ["0", "1-3", "4", "5"] and cells["bytes"][1] == "E2 80 96"
    assert cells["dark"].tolist() == [False, True, False, True]  # white text on the darkest cells


def test_uploaded_paragraphs_and_their_first_sentences():
    data = "First one. More of it.\n\n  \nSecond, no stop\n \nThird. x".encode()
    texts = lc.upload_paragraphs("notes.txt", data, 2)
    assert texts == ("First one. More of it.", "Second, no stop")
    assert lc.first_sentences(texts) == ("First one.", "Second, no stop")
