"""Text a user controls, made safe to show and to score: `md_escape` for anything shown in
Streamlit Markdown, and the checks on uploaded files and typed texts (one InputError that says
what to do)."""
from __future__ import annotations

import re

from evalcore.data import MAX_TEXT_BYTES, check_text, text_from_bytes
from evalcore.errors import InputError
from evalcore.scoring.nextbyte import MAX_TEXT_BYTES as NEXT_BYTES_LIMIT

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


def upload_text(name: str, data: bytes) -> str:
    """An uploaded file's text, or an InputError that says what is wrong with it: at most
    `MAX_TEXT_BYTES` (the limit the CLI applies to text files), UTF-8, not empty, not binary."""
    limit_mb = f"{MAX_TEXT_BYTES / 2**20:g}"
    if len(data) > MAX_TEXT_BYTES:
        raise InputError(f"{name} is {len(data) / 2**20:.1f} MB; the app takes text files up to {limit_mb} MB. "
                         "Upload a part of it, or score the whole file with: python -m evalcore perplexity --text-file")
    return text_from_bytes(data, what=f"uploaded file {name}")


def upload_paragraphs(name: str, data: bytes, n: int) -> tuple[str, ...]:
    """The first n paragraphs (blocks between blank lines) of an uploaded text file, or an
    InputError from `upload_text`."""
    paragraphs = [p.strip() for p in re.split(r"\n[ \t]*\n", upload_text(name, data)) if p.strip()]
    return tuple(paragraphs[:n])


def first_sentences(texts: tuple[str, ...]) -> tuple[str, ...]:
    """Each text up to its first ". " (the whole text when it has none): prompts to continue."""
    return tuple(t[: t.find(". ") + 1] if ". " in t else t for t in texts)


def short_text(text: str) -> str:
    """A text the per-byte heatmap takes, or an InputError that says what to do: not empty,
    at most `NEXT_BYTES_LIMIT` UTF-8 bytes (checked before any model loads)."""
    text = check_text(text, what="the text")
    size = len(text.encode("utf-8"))
    if size > NEXT_BYTES_LIMIT:
        raise InputError(f"the text is {size} UTF-8 bytes; the per-byte comparison takes at most {NEXT_BYTES_LIMIT}: "
                         "shorten it, or compare the models on a corpus below")
    return text
