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
from app_pages import _crosskl, _live, _state
from evalcore.metrics import hellaswag as hsm

DTYPES = ["float32", "bfloat16"]
SIMPLEX = {"kl_pa": ("pa", 0.6), "kl_pb": ("pb", 0.3), "kl_qa": ("qa", 0.3), "kl_qb": ("qb", 0.3)}
BREGMAN = {"kl_bp": ("bp", 0.8), "kl_bq": ("bq", 0.4)}

st.title("KL divergence")
st.markdown("Set P (the data) and Q (the model) over three outcomes with the sliders under the chart. KL(P‖Q) is "
            "the extra surprise of coding P with Q; it is zero only when they match, and it is **not symmetric**.")
names = lc.available()
link = _state.Link(["pa", "pb", "qa", "qb", "eps", "bp", "bq", "a", "adt", "b", "bdt", "items", *_crosskl.PARAMS])
for key, (param, default) in SIMPLEX.items():
    link.value(key, param, _state.number(0.0, 1.0, 0.01), default)
link.value("kl_eps", "eps", _state.number(1e-6, 0.2), 0.01)
for key, (param, default) in BREGMAN.items():
    link.value(key, param, _state.number(0.01, 0.99, 0.01), default)
for key, param, dtype in (("kl_tok_a", "a", "adt"), ("kl_tok_b", "b", "bdt")):
    link.value(key, param, _state.one_of(names), names[0] if names else None)
    link.value(f"{key}dt", dtype, _state.one_of(DTYPES), "float32" if param == "a" else "bfloat16")
link.value("kl_hs_n", "items", _state.integer(10, 200), 20)
_crosskl.link_values(link, names)
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
    res = lc.guard(lc.token_kl, a, a_dt, b, b_dt, text, progress="Comparing next-token distributions")
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


simplex()
st.subheader("KL as a Bregman divergence")
st.markdown("For two outcomes, φ(p) = Σ p log p is convex; KL(P‖Q) is the gap at P between φ and its tangent at Q.")
bregman()
st.header("Real models")
tokens()
choices()
_crosskl.section(names)
