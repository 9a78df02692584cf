"""Perplexity: per model, on a corpus or your own text, with window and stride, and a surprisal heatmap."""
import altair as alt
import pandas as pd
import streamlit as st

import lab_cache as lc
from app_pages import _state
from evalcore.data import MAX_TEXT_BYTES

MAX_CHARS = 20_000  # about 5,000 tokens: under a minute on 2 CPU cores
SOURCES = {"wikipedia": "Wikipedia passages", "hellaswag": "HellaSwag gold texts", "own": "my own text"}  # URL: label

st.title("Perplexity")
st.markdown("Perplexity = exp(mean negative log-likelihood per token). Bits per byte divides the same "
            "information by the text's bytes, so models with different tokenizers can be compared.")
names = lc.available()
link = _state.Link(["model", "text", "window", "stride", "texts"])
link.value("ppl_model", "model", _state.one_of(names), names[0] if names else None)
link.value("ppl_source", "text", lambda t: SOURCES[_state.one_of(list(SOURCES))(t)], SOURCES["wikipedia"])
link.value("ppl_window", "window", _state.integer(16, 1024), 256)
link.value("ppl_stride", "stride", _state.integer(8, 1024), 128)
link.value("ppl_n", "texts", _state.integer(1, 50), 10)
link.notice()
c1, c2, c3 = st.columns(3)
with c1:
    name = lc.model_picker("model", "ppl_model")
    source = st.radio("text", list(SOURCES.values()), key="ppl_source")
with c2:
    max_length = st.slider("window (tokens)", 16, 1024, step=16, key="ppl_window")
    stride = st.slider("stride (tokens)", 8, 1024, step=8, key="ppl_stride")
with c3:
    n = st.slider("texts", 1, 50, key="ppl_n")
    # the server refuses larger uploads too (.streamlit/config.toml's maxUploadSize, the same limit)
    upload = st.file_uploader(f"or upload a .txt (UTF-8, ≤ {MAX_TEXT_BYTES / 2**20:g} MB)", type=["txt"],
                              key="ppl_upload")
_state.write(model=name if name in names else None, text=next(k for k, v in SOURCES.items() if v == source),
             window=max_length, stride=stride, texts=n)

texts = None
if upload is not None:
    text = lc.guard(lc.upload_text, upload.name, upload.getvalue(), task="Reading the uploaded file")
    if text is not None:
        if len(text) > MAX_CHARS:
            st.warning(f"{lc.md_escape(upload.name)} has {len(text):,} characters; the app scores the first "
                       f"{MAX_CHARS:,} (the CLI scores whole files).")
        texts = (text[:MAX_CHARS],)
elif source == "my own text":
    texts = (st.text_area("your text", "Language models assign a probability to every next token.", key="ppl_text",
                          max_chars=MAX_CHARS),)
else:
    texts = lc.guard(lc.corpus_texts, "wikipedia" if source.startswith("Wiki") else "hellaswag", n,
                     task="Reading the corpus")

if name and texts:
    if stride > max_length:
        st.warning(f"stride {stride} is larger than the window {max_length}; using stride = window.")
    res = lc.guard(lc.perplexity, name, texts, max_length, min(stride, max_length), progress="Scoring texts")
    if res is not None:
        m = res.metrics
        k = st.columns(4)
        k[0].metric("perplexity", f"{m.perplexity:.2f}")
        k[1].metric("bits / token", f"{m.bits_per_token:.3f}")
        k[2].metric("bits / byte", f"{m.bits_per_byte:.4f}")
        k[3].metric("tokens scored", f"{m.tokens:,}")
        st.caption(f"Scored: {res.settings['scored']}. Smaller strides give each token more context.")
        with st.expander("the first text, as scored", expanded=source == "my own text" or upload is not None):
            st.text(texts[0][:1000] + (" …" if len(texts[0]) > 1000 else ""))  # shown as text, never as HTML
        tok = lc.model(name).tokenizer
        first = res.texts[0]
        offset = len(first.ids) - len(first.nll)
        rows = [{"position": i, "token": tok.decode([first.ids[i + offset]]), "surprisal (bits)": nll / 0.6931471805599453}
                for i, nll in enumerate(first.nll[:300])]
        df = pd.DataFrame(rows)
        width = 20
        df["row"], df["col"] = df.position // width, df.position % width
        base = alt.Chart(df).encode(x=alt.X("col:O", axis=None), y=alt.Y("row:O", axis=None))
        st.altair_chart((base.mark_rect().encode(color=alt.Color("surprisal (bits):Q", scale=alt.Scale(scheme="reds")),
                                                 tooltip=["token", "surprisal (bits)"])
                         + base.mark_text(fontSize=9).encode(text="token")).properties(
            title="surprisal of each token of the first text (hover for values)"), width="stretch")
        st.download_button("results (JSON)", pd.Series(res.to_dict()).to_json(), "perplexity.json", key="ppl_dl")
