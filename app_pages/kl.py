"""KL divergence: two distributions on the simplex, zero probabilities, Bregman, then real models.

The sliders of the first three parts are range inputs of their charts, which compute KL, JS,
the entropies and the Bregman gap in the browser (`_live`), so numbers and picture follow the
pointer; the resting values go to the server only for the URL. The real-model parts are
fragments: a model or text change reruns its own part.
"""
import math

import altair as alt
import pandas as pd
import streamlit as st

import lab_cache as lc
from app_pages import _charts, _live, _state
from evalcore.metrics import hellaswag as hsm

DTYPES = ["float32", "bfloat16"]
SIMPLEX = {"kl_pa": ("pa", 0.6), "kl_pb": ("pb", 0.3), "kl_qa": ("qa", 0.3), "kl_qb": ("qb", 0.3)}
BREGMAN = {"kl_bp": ("bp", 0.8), "kl_bq": ("bq", 0.4)}
DIVERGENCES = {"KL(P‖Q)": "kl_pq", "KL(Q‖P)": "kl_qp", "JS": "js"}  # heatmap choice: ByteDivergences field
CORPORA = {"wikipedia": "Wikipedia passages", "hellaswag": "HellaSwag contexts", "own": "my own file"}  # URL: label
SENTENCE = "KL is not symmetric: KL(P‖Q) ≠ KL(Q‖P)."  # the lesson's point, with three-byte characters

st.title("KL divergence")
st.markdown("Set P (the data) and Q (the model) over three outcomes with the sliders under the chart. KL(P‖Q) is "
            "the extra surprise of coding P with Q; it is zero only when they match, and it is **not symmetric**.")
names = lc.available()
link = _state.Link(["pa", "pb", "qa", "qb", "eps", "bp", "bq", "a", "adt", "b", "bdt", "items", "p", "q", "div", "corpus",
                    "texts"])
for key, (param, default) in SIMPLEX.items():
    link.value(key, param, _state.number(0.0, 1.0, 0.01), default)
link.value("kl_eps", "eps", _state.number(1e-6, 0.2), 0.01)
for key, (param, default) in BREGMAN.items():
    link.value(key, param, _state.number(0.01, 0.99, 0.01), default)
for key, param, dtype in (("kl_tok_a", "a", "adt"), ("kl_tok_b", "b", "bdt")):
    link.value(key, param, _state.one_of(names), names[0] if names else None)
    link.value(f"{key}dt", dtype, _state.one_of(DTYPES), "float32" if param == "a" else "bfloat16")
link.value("kl_hs_n", "items", _state.integer(10, 200), 20)
pair = lc.headline_pair()
for key, param, default in (("kl_x_p", "p", pair[0] if pair else None), ("kl_x_q", "q", pair[-1] if pair else None)):
    link.value(key, param, _state.one_of(names), default)
link.value("kl_x_div", "div", lambda t: next(k for k, v in DIVERGENCES.items() if v == _state.one_of(
    list(DIVERGENCES.values()))(t)), "KL(P‖Q)")
link.value("kl_x_corpus", "corpus", lambda t: CORPORA[_state.one_of(list(CORPORA))(t)], CORPORA["wikipedia"])
link.value("kl_x_n", "texts", _state.integer(2, 50), 5)
link.notice()


@st.fragment
def simplex() -> None:
    pa, pb, qa, qb, eps = _state.chart_start("kl_simplex", [st.session_state[k] for k in [*SIMPLEX, "kl_eps"]])
    event = st.vega_lite_chart(lc.vega_spec("kl_simplex", pa, pb, qa, qb, eps), on_select="rerun", key="kl_simplex",
                               width="content")
    for key, (param, _) in SIMPLEX.items():
        st.session_state[key] = round(float(_state.selected(event, _live.KL_SEL, param, st.session_state[key])), 2)
    log_eps = _state.selected(event, _live.KL_SEL, "log_eps", math.log10(st.session_state["kl_eps"]))
    st.session_state["kl_eps"] = float(f"{10 ** float(log_eps):.3g}")
    _state.write(**{param: st.session_state[key] for key, (param, _) in SIMPLEX.items()}, eps=st.session_state["kl_eps"])


@st.fragment
def bregman() -> None:
    bp, bq = _state.chart_start("kl_bregman", [st.session_state[k] for k in BREGMAN])
    event = st.vega_lite_chart(lc.vega_spec("bregman", bp, bq), on_select="rerun", key="kl_bregman", width="stretch")
    for key, (param, _) in BREGMAN.items():
        st.session_state[key] = round(float(_state.selected(event, _live.BREG_SEL, param[1], st.session_state[key])), 2)
    _state.write(**{param: st.session_state[key] for key, (param, _) in BREGMAN.items()})


@st.fragment
def tokens() -> None:
    st.subheader("Token level: two models that share a tokenizer")
    st.caption("Offline, the shared-tokenizer pair is SmolLM2 at float32 against itself at bfloat16 (quantization "
               "noise); online, try smollm2-135m vs smollm2-360m.")
    t1, t2 = st.columns(2)
    with t1:
        a = lc.model_picker("model P", "kl_tok_a")
        a_dt = st.selectbox("dtype P", DTYPES, key="kl_tok_adt")
    with t2:
        b = lc.model_picker("model Q", "kl_tok_b")
        b_dt = st.selectbox("dtype Q", DTYPES, key="kl_tok_bdt")
    _state.write(a=a if a in names else None, adt=a_dt, b=b if b in names else None, bdt=b_dt)
    text = st.text_area("text", "The cat sat on the mat because it was warm and the sun was shining.", key="kl_tok_text")
    if not (a and b):
        return
    res = lc.guard(lc.token_kl, a, a_dt, b, b_dt, text, task="Comparing next-token distributions")
    if res is None:
        return
    s = res.summary()
    st.write(f"mean KL(P‖Q) = **{s['kl_pq']:.5f}**, KL(Q‖P) = **{s['kl_qp']:.5f}**, JS = {s['js']:.5f} nats; "
             f"top-1 agreement {s['top1_agreement']:.2f}")
    heat = pd.DataFrame({"position": range(len(res.tokens)), "token": res.tokens, "KL(P‖Q)": res.kl_pq})
    st.altair_chart(alt.Chart(heat).mark_rect().encode(x=alt.X("position:O", axis=alt.Axis(labels=False)),
                    color=alt.Color("KL(P‖Q):Q", scale=alt.Scale(scheme="oranges")), tooltip=["token", "KL(P‖Q)"])
                    + alt.Chart(heat).mark_text(angle=270, fontSize=10).encode(x="position:O", text="token"),
                    width="stretch")
    st.download_button("per-token KL (CSV)", heat.to_csv(index=False), "token_kl.csv", key="kl_tok_dl", on_click="ignore")


@st.fragment
def choices() -> None:
    st.subheader("Choice level on HellaSwag: any two models")
    n = st.slider("items", 10, 200, step=10, key="kl_hs_n")
    _state.write(items=n)
    if len(names) < 2:
        return
    r1 = lc.guard(lc.hellaswag, names[0], n, progress=f"Scoring {names[0]}")
    r2 = lc.guard(lc.hellaswag, names[-1], n, progress=f"Scoring {names[-1]}")
    if r1 and r2:
        cmp = hsm.paired_comparison([i.pred == i.label for i in r1.items], [i.pred == i.label for i in r2.items],
                                    r1.loglik(), r2.loglik())
        st.write(f"{names[0]} vs {names[-1]} on {n} items: mean KL over the four-way choice distributions "
                 f"KL(small‖large) = **{cmp.kl_ab_mean:.4f}**, KL(large‖small) = **{cmp.kl_ba_mean:.4f}** nats.")


@st.fragment
def your_text() -> None:
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
    st.caption(f"Position i compares P and Q on the next byte after the first i bytes; {res.div.n} positions for "
               f"{res.div.n - 1} bytes, the last one the end of the text. Computed once ({cost}), then read from the "
               "store. Nats per byte position: not comparable with the token-level KL above.")


def on_a_corpus(p: str, q: str) -> None:
    """Measures 1 and 2 on a corpus, each on its button; a result computed before shows without it."""
    st.markdown("**On a corpus**, with 95% intervals: (1) the cross-entropy gap per byte, (2) KL per byte "
                "by Monte Carlo, both ways. The first run takes minutes on a CPU; results are stored.")
    c1, c2 = st.columns(2)
    source = c1.radio("texts", list(CORPORA.values()), key="kl_x_corpus", horizontal=True)
    n = c2.slider("texts (and prompts)", 2, 50, key="kl_x_n")
    _state.write(corpus=next(k for k, v in CORPORA.items() if v == source), texts=n)
    if source == CORPORA["own"]:
        upload = st.file_uploader("a .txt (UTF-8): one text per paragraph; each paragraph's first sentence is a "
                                  "prompt", type=["txt"], key="kl_x_upload")
        texts = upload and lc.guard(lc.upload_paragraphs, upload.name, upload.getvalue(), n,
                                    task="Reading the uploaded file")
        prompts = texts and lc.first_sentences(texts)
    else:
        name = next(k for k, v in CORPORA.items() if v == source)
        texts = lc.guard(lc.corpus_texts, name, n, task="Reading the corpus")
        prompts = lc.guard(lc.prompt_texts, name, n, task="Reading the prompts")
    if not (texts and prompts):
        return
    g1, g2 = st.columns(2)
    with g1:
        gap = (lc.guard(lc.gap, p, q, texts, progress="Scoring the texts with both models")
               if st.button("(1) measure the gap", key="kl_x_gap_go") else lc.peek(lc.gap_key(p, q, texts)))
        if gap is not None:
            lo, hi = gap.gap.ci95
            st.markdown(f"bpb(Q) − bpb(P) = **{gap.gap.value:+.4f}** bits per byte, 95% interval "
                        f"[{lo:+.4f}, {hi:+.4f}]; bpb(P) = {gap.bpb_p:.4f}, bpb(Q) = {gap.bpb_q:.4f} "
                        f"({gap.n_texts} texts, {gap.n_bytes:,} bytes).")
            st.caption("Not a divergence: it is 0 whenever both models give the texts the same probability.")
    with g2:
        mc = (lc.guard(lc.mc_kl, p, q, prompts, progress="Sampling from each model and scoring with both")
              if st.button("(2) measure KL by sampling", key="kl_x_mc_go") else lc.peek(lc.mc_key(p, q, prompts)))
        if mc is not None:
            st.dataframe(_charts.mc_table(mc), hide_index=True)
            st.caption("Nats per byte on one continuation per prompt sampled from the first model (temperature 1); "
                       "k1 is unbiased, k3 never negative. Not comparable with token-level KL.")


simplex()
st.subheader("KL as a Bregman divergence")
st.markdown("For two outcomes, φ(p) = Σ p log p is convex; KL(P‖Q) is the gap at P between φ and its tangent at Q.")
bregman()
st.header("Real models")
tokens()
choices()
your_text()
