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
from evalcore.metrics import hellaswag as hsm
from evalcore.metrics import power
from evalcore.metrics.mauve_stats import verdict

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
def _verdict(lo: float, hi: float, small: str, large: str, higher: str = "higher") -> str:
    """What a 95% interval of (large − small) says, in `metrics.mauve_stats.verdict`'s terms with
    A = large, B = small."""
    said = verdict(lo, hi)
    return {"A > B": f"{large} {higher}", "B > A": f"{small} {higher}"}.get(said, said)


def verdicts(small: str, large: str, n_hs: int, n_mv: int, wiki: tuple[str, ...]) -> None:
    """Each measured difference between the lesson's two models, with its interval and verdict."""
    st.subheader(f"Is the difference real? {large} − {small}")
    rows = []
    hs_s, hs_l = lc.hellaswag(small, n_hs), lc.hellaswag(large, n_hs)
    for metric, pred in (("acc", "pred"), ("acc_norm", "pred_norm")):
        ok_l = [getattr(x, pred) == x.label for x in hs_l.items]
        ok_s = [getattr(x, pred) == x.label for x in hs_s.items]
        cmp = hsm.paired_comparison(ok_l, ok_s, hs_l.loglik(), hs_s.loglik())
        nf = power.noise_floor(ok_l, ok_s)
        lo, hi = cmp.acc_diff_ci95
        rows.append({"measure": f"HellaSwag {metric} ({n_hs} items)", small: getattr(hs_s, metric).value,
                     large: getattr(hs_l, metric).value, "difference": cmp.acc_diff, "95% interval": f"[{lo:+.3f}, {hi:+.3f}]",
                     "verdict": _verdict(lo, hi, small, large),
                     "how it was tested": f"paired bootstrap; McNemar p = {cmp.mcnemar_p:.2f}; "
                                          + (f"{nf.items_needed:,} items would detect this difference"
                                             if nf.items_needed else "no discordant items")})
    diff = lc.guard(lc.mauve_difference, large, small, n_mv, progress="MAUVE: 200 paired resamples, re-clustered")
    if diff is not None:
        rows.append({"measure": f"MAUVE ({n_mv} contexts, k = {diff.k})", small: diff.mauve_b, large: diff.mauve_a,
                     "difference": diff.difference, "95% interval": f"[{diff.low:+.3f}, {diff.high:+.3f}]",
                     "verdict": _verdict(diff.low, diff.high, small, large),
                     "how it was tested": f"paired bootstrap over contexts, {diff.n_boot} resamples, PCA and k-means "
                                          "refitted in each", "lesson assumes": "small 0.42, large 0.78"})
    kl = {m: lab.result("auto").kl_pq for m in (small, large) if (lab := lc.peek(lc.mauve_key(m, n_mv))) is not None}
    if len(kl) == 2:
        rows.append({"measure": "KL(human‖model), histograms (lower: closer)", small: kl[small],
                     large: kl[large], "difference": kl[large] - kl[small], "95% interval": "",
                     "verdict": "no interval", "how it was tested": "one number per model (MAUVE's row tests the same histograms)",
                     "lesson assumes": "small 1.8, large 0.7"})
    gap = lc.guard(lc.gap, small, large, wiki, progress="Bits per byte, paired over texts")
    if gap is not None:
        lo, hi = gap.gap.ci95
        rows.append({"measure": f"bits/byte, {gap.n_texts} Wikipedia texts (lower: better)", small: gap.bpb_p,
                     large: gap.bpb_q, "difference": gap.gap.value, "95% interval": f"[{lo:+.3f}, {hi:+.3f}]",
                     "verdict": _verdict(lo, hi, small, large, "higher (worse)"),
                     "how it was tested": "paired bootstrap over texts (the cross-entropy gap per byte)"})
    st.dataframe(pd.DataFrame(rows).fillna(""), hide_index=True, width="stretch")
    st.caption("A verdict names a model only when the 95% interval of the difference excludes 0. The intervals are "
               "paired: both models on the same items, contexts or texts, resampled together. A difference the "
               "interval cannot resolve at this n may still be real: more items narrow it.")


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
        r, d = lab.result("auto"), lab.divergences("auto")
        rows.append({"model": m, "parameters (M)": lc.params(m), "KL(P‖Q) human→model": r.kl_pq, "JS": d.js,
                     "total variation": d.tv, "MAUVE": r.mauve, "perplexity (Wikipedia)": ppl.metrics.perplexity,
                     "bits/byte": ppl.metrics.bits_per_byte, "HellaSwag acc": hs.acc.value,
                     "HellaSwag acc_norm": hs.acc_norm.value})
        table.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    if rows:
        df = pd.DataFrame(rows)
        st.download_button("table (CSV)", df.to_csv(index=False), "small_vs_large.csv", key="svl_dl")
        long = df.melt(id_vars=["model", "parameters (M)"], var_name="measure")
        st.altair_chart(alt.Chart(long).mark_line(point=True).encode(
            x=alt.X("parameters (M):Q", scale=alt.Scale(type="log")), y="value:Q", color="measure:N",
            tooltip=["model", "measure", "value"]).properties(width=130, height=120).facet(
            facet=alt.Facet("measure:N", title=None), columns=4).resolve_scale(y="independent"))
        st.caption("KL, JS and total variation here are over MAUVE's cluster histograms of human (P) vs model (Q) "
                   "text (k = auto); KL on add-0.5 smoothed counts.")
    pair = lc.headline_pair()
    if len(set(pair)) == 2:
        small, large = pair
        verdicts(small, large, n_hs, n_mv, wiki)
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
