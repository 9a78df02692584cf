"""KL divergence: two distributions on the simplex, zero probabilities, Bregman, then real models."""
import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

import lab_cache as lc
from evalcore.metrics import hellaswag as hsm
from evalcore.metrics import kl as K

st.title("KL divergence")
st.markdown("Set P (the data) and Q (the model) over three outcomes. KL(P‖Q) is the extra surprise of "
            "coding P with Q; it is zero only when they match, and it is **not symmetric**.")


def dist(prefix: str, default: tuple[float, float]) -> np.ndarray:
    a = st.slider(f"{prefix}(A)", 0.0, 1.0, default[0], 0.01, key=f"kl_{prefix}_a")
    room = round(1.0 - a, 2)  # what A leaves for B; a slider needs a range, so none when A takes it all
    if room > 0:
        b = st.slider(f"{prefix}(B)", 0.0, room, min(default[1], room), 0.01, key=f"kl_{prefix}_b")
    else:
        b = 0.0
        st.caption(f"{prefix}(B) = {prefix}(C) = 0: A takes all the probability.")
    return np.array([a, b, max(0.0, 1.0 - a - b)])


c1, c2, c3 = st.columns([1, 1, 2])
with c1:
    p = dist("P", (0.6, 0.3))
with c2:
    q = dist("Q", (0.3, 0.3))
with c3:
    corners = pd.DataFrame({"x": [0, 1, 0.5, 0], "y": [0, 0, np.sqrt(3) / 2, 0], "i": range(4)})
    pts = pd.DataFrame({"x": [v[1] + v[2] / 2 for v in (p, q)], "y": [v[2] * np.sqrt(3) / 2 for v in (p, q)],
                        "name": ["P", "Q"], "probs": [str(np.round(v, 2)) for v in (p, q)]})
    tri = alt.Chart(corners).mark_line(color="gray").encode(x=alt.X("x", axis=None), y=alt.Y("y", axis=None), order="i:O")
    dots = alt.Chart(pts).mark_circle(size=250).encode(x="x", y="y", color="name", tooltip=["name", "probs"])
    st.altair_chart((tri + dots).properties(height=260, title="the probability simplex (corners: A, B, C)"), width="stretch")

kl_pq, kl_qp = float(K.kl(p, q)), float(K.kl(q, p))
m = st.columns(5)
m[0].metric("KL(P‖Q)", f"{kl_pq:.4f}")
m[1].metric("KL(Q‖P)", f"{kl_qp:.4f}")
m[2].metric("JS(P,Q)", f"{float(K.js(p, q)):.4f}")
m[3].metric("H(P)", f"{float(K.entropy(p)):.4f}")
m[4].metric("H(P,Q)", f"{float(K.cross_entropy(p, q)):.4f}")
st.caption(f"Cross-entropy = entropy + KL: {float(K.cross_entropy(p, q)):.4f} = {float(K.entropy(p)):.4f} + "
           f"{kl_pq:.4f} (nats). Perplexity is exp of the cross-entropy: {np.exp(float(K.cross_entropy(p, q))):.3f}.")

st.subheader("Zero probabilities")
eps = st.slider("smoothing ε (floor on Q, then renormalise)", 1e-6, 0.2, 0.01, format="%.6f", key="kl_eps")
q0 = np.array([0.5, 0.5, 0.0])
st.markdown(f"With P = {np.round(p, 2).tolist()} and Q = [0.5, 0.5, 0.0]: KL(P‖Q) = **{float(K.kl(p, q0)):.4f}**"
            f" (infinite whenever P(C) > 0). Smoothed with ε = {eps:g}: **{float(K.kl(p, K.smooth(q0, amount=eps))):.4f}**"
            " — finite, but the value now depends on a choice you made.")

st.subheader("KL as a Bregman divergence")
st.markdown("For two outcomes, φ(p) = Σ p log p is convex; KL(P‖Q) is the gap at P between φ and its tangent at Q.")
bp = st.slider("P(A)", 0.01, 0.99, 0.8, key="kl_bp")
bq = st.slider("Q(A)", 0.01, 0.99, 0.4, key="kl_bq")
xs = np.linspace(0.005, 0.995, 199)
phi = K.neg_entropy_phi(np.stack([xs, 1 - xs], 1))
phi_q = float(K.neg_entropy_phi([bq, 1 - bq]))
tangent = phi_q + (np.log(bq) - np.log(1 - bq)) * (xs - bq)
df = pd.DataFrame({"p": np.r_[xs, xs], "value": np.r_[phi, tangent], "curve": ["φ(p)"] * 199 + ["tangent at Q"] * 199})
gap = float(K.bregman([bp, 1 - bp], [bq, 1 - bq]))
st.altair_chart(alt.Chart(df).mark_line().encode(x="p", y="value", color="curve", tooltip=["p", "value"])
                .properties(height=250, title=f"gap at P = {gap:.4f} = KL(P‖Q) = {float(K.kl([bp, 1 - bp], [bq, 1 - bq])):.4f}"),
                width="stretch")

st.header("Real models")
st.subheader("Token level: two models that share a tokenizer")
st.caption("Offline, the shared-tokenizer pair is SmolLM2 at float32 against itself at bfloat16 (quantization noise); "
           "online, try smollm2-135m vs smollm2-360m.")
t1, t2 = st.columns(2)
with t1:
    a = lc.model_picker("model P", "kl_tok_a")
    a_dt = st.selectbox("dtype P", ["float32", "bfloat16"], key="kl_tok_adt")
with t2:
    b = lc.model_picker("model Q", "kl_tok_b")
    b_dt = st.selectbox("dtype Q", ["float32", "bfloat16"], index=1, key="kl_tok_bdt")
text = st.text_area("text", "The cat sat on the mat because it was warm and the sun was shining.", key="kl_tok_text")
if a and b:
    res = lc.guard(lc.token_kl, a, a_dt, b, b_dt, text, task="Comparing next-token distributions")
    if res is not None:
        s = res.summary()
        st.write(f"mean KL(P‖Q) = **{s['kl_pq']:.5f}**, KL(Q‖P) = **{s['kl_qp']:.5f}**, JS = {s['js']:.5f} nats; "
                 f"top-1 agreement {s['top1_agreement']:.2f}")
        heat = pd.DataFrame({"position": range(len(res.tokens)), "token": res.tokens, "KL(P‖Q)": res.kl_pq})
        st.altair_chart(alt.Chart(heat).mark_rect().encode(x=alt.X("position:O", axis=alt.Axis(labels=False)),
                        color=alt.Color("KL(P‖Q):Q", scale=alt.Scale(scheme="oranges")), tooltip=["token", "KL(P‖Q)"])
                        + alt.Chart(heat).mark_text(angle=270, fontSize=10).encode(x="position:O", text="token"),
                        width="stretch")
        st.download_button("per-token KL (CSV)", heat.to_csv(index=False), "token_kl.csv", key="kl_tok_dl")

st.subheader("Choice level on HellaSwag: any two models")
names = lc.available()
n = st.slider("items", 10, 200, 20, 10, key="kl_hs_n")
if len(names) >= 2:
    r1 = lc.guard(lc.hellaswag, names[0], n, progress=f"Scoring {names[0]}")
    r2 = lc.guard(lc.hellaswag, names[-1], n, progress=f"Scoring {names[-1]}")
    if r1 and r2:
        cmp = hsm.paired_comparison([i.pred == i.label for i in r1.items], [i.pred == i.label for i in r2.items],
                                    r1.loglik(), r2.loglik())
        st.write(f"{names[0]} vs {names[-1]} on {n} items: mean KL over the four-way choice distributions "
                 f"KL(small‖large) = **{cmp.kl_ab_mean:.4f}**, KL(large‖small) = **{cmp.kl_ba_mean:.4f}** nats.")
