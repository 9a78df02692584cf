"""The KL page's last part, "small vs large on your text": any two models, whatever their
tokenizers, compared per byte (`evalcore.runs.crosskl`, through lab_cache).

The heatmap of a short text (measure 3) is computed as soon as the text is there; the corpus
measures (1: the cross-entropy gap, 2: Monte-Carlo KL) wait for their buttons, and a result that
some session computed before shows again without one. Charts and tables come from `_charts`.
"""
from __future__ import annotations

import streamlit as st

import lab_cache as lc
from app_pages import _charts, _state

PARAMS = ["p", "q", "div", "corpus", "texts"]  # this part's URL parameters
DIVERGENCES = {"KL(P‖Q)": "kl_pq", "KL(Q‖P)": "kl_qp", "JS": "js"}  # label: ByteDivergences field (and URL value)
CORPORA = {"wikipedia": "Wikipedia passages", "hellaswag": "HellaSwag", "own": "my own file"}  # URL value: label
SENTENCE = "KL is not symmetric: KL(P‖Q) ≠ KL(Q‖P)."  # the lesson's point, with three-byte characters


def _label(options: dict[str, str]) -> _state.Parse:
    """A URL value of `options` (value: label), parsed to its label."""
    return lambda text: options[_state.one_of(list(options))(text)]


def link_values(link: _state.Link, names: list[str]) -> None:
    """This part's widget values from the page's link (defaults: the lesson's small and large model)."""
    pair = lc.headline_pair()
    link.value("kl_x_p", "p", _state.one_of(names), pair[0] if pair else None)
    link.value("kl_x_q", "q", _state.one_of(names), pair[-1] if pair else None)
    link.value("kl_x_div", "div", _label({v: k for k, v in DIVERGENCES.items()}), "KL(P‖Q)")
    link.value("kl_x_corpus", "corpus", _label(CORPORA), CORPORA["wikipedia"])
    link.value("kl_x_n", "texts", _state.integer(2, 50), 5)


@st.fragment
def section(names: list[str]) -> None:
    st.subheader("Small vs large on your text: any two models, per byte")
    st.caption("Their tokenizers may differ: each model's token probabilities are turned into probabilities of the "
               "next byte, so both models are compared on the same events.")
    t1, t2 = st.columns(2)
    with t1:
        p = lc.model_picker("model P", "kl_x_p")
    with t2:
        q = lc.model_picker("model Q", "kl_x_q")
    _state.write(p=p if p in names else None, q=q if q in names else None)
    if p and q:
        heatmap(p, q)
        on_a_corpus(p, q)


def heatmap(p: str, q: str) -> None:
    """Measure 3: exact next-byte distributions over a short text, a divergence at each byte."""
    text = st.text_area(f"text (at most {lc.NEXT_BYTES_LIMIT} UTF-8 bytes; Ctrl+Enter to compare)", SENTENCE,
                        key="kl_x_text", height=68)
    res = lc.guard(lc.next_bytes, p, q, text, progress="Next-byte distributions of both models")
    if res is None:
        return
    measure = st.radio("colour by", list(DIVERGENCES), key="kl_x_div", horizontal=True)
    _state.write(div=DIVERGENCES[measure])
    cells = _charts.char_cells(res.p.text, getattr(res.div, DIVERGENCES[measure]))
    st.altair_chart(_charts.byte_heatmap(cells, measure), width="content")
    st.dataframe(_charts.byte_sums(res.div.sums(), res.div.n), hide_index=True)
    cost = "; ".join(f"{who} {lc.md_escape(name)}: {d.seconds:.1f} s, {d.forward_calls} forward calls"
                     for who, name, d in (("P", p, res.p), ("Q", q, res.q)))
    st.caption(f"Position i compares P and Q on the next byte after the first i bytes: {res.div.n} positions for "
               f"{res.div.n - 1} bytes, the last one the end of the text. Computed once ({cost}), then read from the "
               "store. Nats per byte position: not comparable with the token-level KL above.")


def on_a_corpus(p: str, q: str) -> None:
    """Measures 1 and 2 on a corpus, each behind its button."""
    st.markdown("**On a corpus**, with 95% intervals: (1) the cross-entropy gap per byte, (2) KL per byte by "
                "Monte Carlo, both ways. The first run takes minutes on a CPU; results are stored.")
    c1, c2 = st.columns(2)
    source = c1.radio("texts", list(CORPORA.values()), key="kl_x_corpus", horizontal=True)
    n = c2.slider("texts (and prompts)", 2, 50, key="kl_x_n")
    name = next(k for k, v in CORPORA.items() if v == source)
    _state.write(corpus=name, texts=n)
    texts, prompts = _corpus(name, n)
    if not (texts and prompts):
        return
    if st.button("(1) measure the gap", key="kl_x_gap_go"):
        gap = lc.guard(lc.gap, p, q, texts, progress="Scoring the texts with both models")
    else:
        gap = lc.peek(lc.gap_key(p, q, texts))
    if gap is not None:
        lo, hi = gap.gap.ci95
        better = "Q" if gap.gap.value < 0 else "P" if gap.gap.value > 0 else "neither"
        st.markdown(f"bpb(Q) − bpb(P) = **{gap.gap.value:+.4f}** bits per byte, 95% interval [{lo:+.4f}, {hi:+.4f}]; "
                    f"bpb(P) = {gap.bpb_p:.4f}, bpb(Q) = {gap.bpb_q:.4f} on {gap.n_texts} texts, "
                    f"{gap.n_bytes:,} bytes: {better} gives them more probability.")
        st.caption("Not a divergence: it is 0 whenever both models give the texts the same probability.")
    if st.button("(2) measure KL by sampling", key="kl_x_mc_go"):
        mc = lc.guard(lc.mc_kl, p, q, prompts, progress="Sampling from each model and scoring with both")
    else:
        mc = lc.peek(lc.mc_key(p, q, prompts))
    if mc is not None:
        st.dataframe(_charts.mc_table(mc), hide_index=True)
        st.caption("Nats per byte, from one continuation of each prompt sampled from the first model (temperature "
                   "1, up to the first new line); one that ends at once has no byte to score, one whose tokens are "
                   "not the model's own tokenization of its text is left out. k1 is unbiased, k3 never negative. Not "
                   "comparable with token-level KL.")


def _corpus(name: str, n: int) -> tuple[tuple[str, ...] | None, tuple[str, ...] | None]:
    """The texts (measure 1) and prompts (measure 2) of a corpus, or of an uploaded file."""
    if name != "own":
        st.caption("Wikipedia: the passages, and each one's first sentence as a prompt. HellaSwag: each context with "
                   "its right ending, and the context alone as a prompt.")
        return (lc.guard(lc.corpus_texts, name, n, task="Reading the corpus"),
                lc.guard(lc.prompt_texts, name, n, task="Reading the prompts"))
    upload = st.file_uploader(f"a .txt (UTF-8, ≤ {lc.MAX_TEXT_BYTES / 2**20:g} MB): one text per paragraph, its first "
                              "sentence the prompt", type=["txt"], key="kl_x_upload")
    if upload is None:
        return None, None
    texts = lc.guard(lc.upload_paragraphs, upload.name, upload.getvalue(), n, task="Reading the uploaded file")
    return texts, texts and lc.first_sentences(texts)
