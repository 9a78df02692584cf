"""MAUVE: the mixture R_α, the divergence curve, the cluster count, the model size, example texts."""
import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

import lab_cache as lc

st.title("MAUVE")
st.markdown("P = the gold endings of HellaSwag contexts (human text); Q = the chosen model's continuations "
            "of the same contexts. Both are embedded (all-MiniLM-L6-v2), clustered, and compared as histograms.")
names = lc.available()
c1, c2, c3 = st.columns(3)
with c1:
    name = st.select_slider("model size (whose text is Q)", names, value=names[0] if names else None, key="mauve_model",
                            format_func=lambda n: f"{n} ({lc.params(n):.0f}M)") if names else None
    n = st.select_slider("contexts (more: slower first run, steadier numbers)", [40, 80, 120, 200, 500, 1000],
                         value=80, key="mauve_n")
with c2:
    k = st.slider("clusters k", 2, lc.max_k(n), min(8, lc.max_k(n)), key="mauve_k",
                  help="at most half the texts per side: past that most clusters hold one text and MAUVE falls to 0")
with c3:
    alpha = st.slider("α (mixture weight on P)", 0.01, 0.99, 0.5, 0.01, key="mauve_alpha")

lab = lc.guard(lc.mauve_lab, name, n, progress="Generating continuations (cached after the first time)") if name else None
res = lc.guard(lab.result, k, task=f"MAUVE with k = {k}") if lab is not None else None
if res is not None:
    pt = lab.point(alpha, k)
    lo, hi = lab.bootstrap(k, n_boot=200)
    m = st.columns(4)
    m[0].metric("MAUVE", f"{res.mauve:.3f}", help="area under the divergence curve")
    m[1].metric("95% bootstrap CI", f"[{lo:.2f}, {hi:.2f}]")
    m[2].metric("KL(P‖R_α)", f"{pt['kl_p_r']:.3f}")
    m[3].metric("KL(Q‖R_α)", f"{pt['kl_q_r']:.3f}")
    st.caption(f"Histogram KLs (add-0.5 smoothing): KL(P‖Q) = {res.kl_pq:.3f}, KL(Q‖P) = {res.kl_qp:.3f} nats. "
               f"MAUVE* (smoothed) = {res.mauve_star:.3f}. mauve-text's default k here: {lab.k_auto()}.")
    h = pd.DataFrame({"cluster": np.tile(np.arange(k), 3), "probability": np.r_[res.p_hist, res.q_hist, pt["mixture"]],
                      "distribution": ["P human"] * k + ["Q model"] * k + [f"R_α, α={alpha:.2f}"] * k})
    left, right = st.columns(2)
    left.altair_chart(alt.Chart(h).mark_bar().encode(x="cluster:O", y="probability:Q", color="distribution:N",
                                                     xOffset="distribution:N", tooltip=list(h.columns))
                      .properties(height=280, title="cluster histograms and the mixture"), width="stretch")
    curve = pd.DataFrame(res.divergence_curve, columns=["exp(-c·KL(Q‖R))", "exp(-c·KL(P‖R))"])
    dot = pd.DataFrame({"exp(-c·KL(Q‖R))": [pt["x"]], "exp(-c·KL(P‖R))": [pt["y"]]})
    enc = dict(x="exp(-c·KL(Q‖R)):Q", y="exp(-c·KL(P‖R)):Q")
    right.altair_chart((alt.Chart(curve).mark_area(opacity=0.3).encode(**enc) + alt.Chart(curve).mark_line(point=True)
                        .encode(**enc, tooltip=list(curve.columns)) + alt.Chart(dot).mark_circle(size=200, color="red")
                        .encode(**enc)).properties(height=280, title="divergence curve (area = MAUVE; red: your α)"),
                       width="stretch")
    ks = [x for x in (2, 4, 8, 12, 16, 24, 32, 50, 75, 100, 250, 500) if x <= lab.k_max()]
    sweep = pd.DataFrame(lab.sweep(ks))
    st.altair_chart(alt.Chart(sweep).mark_line(point=True).encode(x="k:Q", y=alt.Y("mauve:Q", scale=alt.Scale(domain=[0, 1])),
                    tooltip=["k", "mauve", "mauve_star"]).properties(height=220, title="MAUVE against k"), width="stretch")
    st.download_button("result (JSON)", pd.Series(res.to_dict()).to_json(), "mauve.json", key="mauve_dl")

    st.subheader("What falls in a cluster")
    c = st.number_input("cluster", 0, k - 1, int(np.argmax(np.abs(np.array(res.p_hist) - np.array(res.q_hist)))), key="mauve_cluster")
    pl, ql = lab.labels(k)
    hp, hq = st.columns(2)
    hp.markdown(f"**Human** ({int((pl == c).sum())} texts)")
    for i in np.flatnonzero(pl == c)[:5]:
        hp.text(lab.p_texts[i])
    hq.markdown(f"**{name}** ({int((ql == c).sum())} texts)")
    for i in np.flatnonzero(ql == c)[:5]:
        hq.text(lab.q_texts[i])
