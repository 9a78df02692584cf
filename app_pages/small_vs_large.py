"""Small vs large: the lesson's experiment, measured, beside the lesson's assumed numbers.

The page starts idle; its button measures every model available here, then KL between the
lesson's small and large model directly (Monte-Carlo, per byte, both ways), beside each model's
histogram KL to human text.
"""
import altair as alt
import pandas as pd
import streamlit as st

import lab_cache as lc
from app_pages import _state

st.title("Small vs large")
st.markdown("The lesson *assumes* illustrative numbers (KL 1.8 vs 0.7, MAUVE 0.42 vs 0.78). Here they are "
            "measured for every model available on this machine.")
names = lc.available()
link = _state.Link(["items", "contexts", "prompts"])
link.value("svl_hs", "items", _state.integer(20, 500), 40)
link.value("svl_mv", "contexts", _state.one_of([40, 80, 120, 200]), 80)
link.value("svl_kl", "prompts", _state.one_of([10, 20, 40, 80]), 20)
link.notice()
c1, c2, c3 = st.columns(3)
n_hs = c1.slider("HellaSwag items", 20, 500, step=20, key="svl_hs")
n_mv = c2.select_slider("MAUVE contexts", [40, 80, 120, 200], key="svl_mv")
n_kl = c3.select_slider("prompts for KL(small‖large)", [10, 20, 40, 80], key="svl_kl")
_state.write(items=n_hs, contexts=n_mv, prompts=n_kl)
if st.button("Measure all sizes", key="svl_go", type="primary") or st.session_state.get("svl_done"):
    st.session_state["svl_done"] = True
    rows = []
    wiki = lc.corpus_texts("wikipedia", 10)
    table = st.empty()  # grows a row per model as each is measured
    for m in names:
        hs = lc.guard(lc.hellaswag, m, n_hs, progress=f"{m}: HellaSwag")
        lab = lc.guard(lc.mauve_lab, m, n_mv, progress=f"{m}: generating for MAUVE")
        ppl = lc.guard(lc.perplexity, m, wiki, 512, 256, progress=f"{m}: perplexity")
        if hs is None or lab is None or ppl is None:
            continue
        r = lab.result("auto")
        rows.append({"model": m, "parameters (M)": lc.params(m), "KL(P‖Q) human→model": r.kl_pq, "MAUVE": r.mauve,
                     "perplexity (Wikipedia)": ppl.metrics.perplexity, "bits/byte": ppl.metrics.bits_per_byte,
                     "HellaSwag acc": hs.acc.value, "HellaSwag acc_norm": hs.acc_norm.value})
        table.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    if rows:
        df = pd.DataFrame(rows)
        st.download_button("table (CSV)", df.to_csv(index=False), "small_vs_large.csv", key="svl_dl")
        long = df.melt(id_vars=["model", "parameters (M)"], var_name="measure")
        st.altair_chart(alt.Chart(long).mark_line(point=True).encode(
            x=alt.X("parameters (M):Q", scale=alt.Scale(type="log")), y="value:Q", color="measure:N",
            tooltip=["model", "measure", "value"]).facet(facet="measure:N", columns=3).resolve_scale(y="independent"))
        st.caption("KL here is over MAUVE's cluster histograms of human (P) vs model (Q) text, add-0.5 smoothed.")
    pair = lc.headline_pair()
    if len(set(pair)) == 2:
        small, large = pair
        contexts = lc.guard(lc.prompt_texts, "hellaswag", n_kl, task="Reading HellaSwag contexts")
        mc = contexts and lc.guard(lc.mc_kl, small, large, contexts,
                                   progress=f"KL({small}‖{large}): sampling from each and scoring with both")
        kl_rows = [{"KL": f"KL(human‖{r['model']}), MAUVE cluster histograms", "value": r["KL(P‖Q) human→model"],
                    "95% interval": "", "units": "nats (histograms of k clusters)"} for r in rows if r["model"] in pair]
        directions = [(f"KL({small}‖{large})", mc.pq), (f"KL({large}‖{small})", mc.qp)] if mc else []
        for label, d in directions:
            lo, hi = d.kl.k1.ci95
            kl_rows.append({"KL": f"{label}, measured directly", "value": d.kl.k1.value,
                            "95% interval": f"[{lo:.4f}, {hi:.4f}]", "units": f"nats per byte ({d.kl.n} samples)"})
        st.subheader("KL to human text, and between the small and the large model")
        st.dataframe(pd.DataFrame(kl_rows), hide_index=True, width="stretch")
        st.caption(f"Measured directly: Monte-Carlo KL per byte in nats, both ways, from one continuation of each of "
                   f"{n_kl} HellaSwag contexts sampled from the first model and scored by both (any tokenizers). "
                   "Another quantity than the histogram KL to human text: compare within a row type, not across.")
    st.subheader("The lesson's assumptions (not measurements)")
    st.dataframe(pd.DataFrame([{"model": "small (assumed)", "KL": lc.LESSON_ASSUMED["KL small"],
                                "MAUVE": lc.LESSON_ASSUMED["MAUVE small"]},
                               {"model": "large (assumed)", "KL": lc.LESSON_ASSUMED["KL large"],
                                "MAUVE": lc.LESSON_ASSUMED["MAUVE large"]}]), hide_index=True)
else:
    st.info("Press the button: the first time takes a few minutes on a CPU (generation for MAUVE); "
            "after that the numbers come from the cache on disk.")
