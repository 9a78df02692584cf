"""HellaSwag: acc and acc_norm with intervals, a per-item explorer, and where models disagree."""
import altair as alt
import pandas as pd
import streamlit as st

import lab_cache as lc
from app_pages import _state
from evalcore.metrics import hellaswag as hsm

st.title("HellaSwag")
st.markdown("For each context the model scores four endings; it picks the most likely (acc) or the most "
            "likely per character (acc_norm). P(ending | context) is the softmax of the four log-likelihoods.")
names = lc.available()
link = _state.Link(["models", "items"])
link.value("hs_models", "models", _state.many_of(names), names[:2])
link.value("hs_n", "items", _state.integer(10, 1000), 20)
link.notice()
c1, c2 = st.columns([2, 1])
chosen = c1.multiselect("models", names, key="hs_models")
extra = c2.text_input("add a model: hub id or local folder", key="hs_extra", placeholder="EleutherAI/pythia-160m").strip()
if extra and (extra := lc.guard(lc.check_app_model, extra, task="Checking the model name")) and extra not in chosen:
    chosen = [*chosen, extra]
n = st.slider("items (the first N of the validation set; 20 take about 10 s on 2 CPU cores)", 10, 1000, step=10,
              key="hs_n")
_state.write(models=st.session_state["hs_models"], items=n)


@st.fragment
def explorer(results: dict, n: int) -> None:
    """One item's endings and each model's choice distribution; a new item reruns only this."""
    st.subheader("Item explorer")
    idx = st.number_input("item", 0, n - 1, 0, key="hs_item")
    it = lc.dataset().item(int(idx))
    st.text(it.query)
    table = {"ending": list(it.choices), "gold": ["✓" if i == it.label else "" for i in range(4)]}
    for m, r in results.items():
        table[f"P({m})"] = hsm.choice_distribution(r.loglik()[int(idx)][None])[0].round(3)
    st.dataframe(pd.DataFrame(table), hide_index=True, width="stretch")


results = {m: r for m in chosen if (r := lc.guard(lc.hellaswag, m, n, progress=f"Scoring {m}")) is not None}
if results:
    rows = [{"model": m, "metric": k, "value": a.value, "low": a.ci95[0], "high": a.ci95[1], "stderr": a.stderr}
            for m, r in results.items() for k, a in (("acc", r.acc), ("acc_norm", r.acc_norm))]
    df = pd.DataFrame(rows)
    bars = alt.Chart(df).mark_bar().encode(x="metric:N", y=alt.Y("value:Q", scale=alt.Scale(domain=[0, 1])),
                                           color="model:N", xOffset="model:N", tooltip=list(df.columns))
    err = alt.Chart(df).mark_errorbar().encode(x="metric:N", y=alt.Y("low:Q", title="accuracy"), y2="high:Q", xOffset="model:N")
    rule = alt.Chart(pd.DataFrame({"chance": [0.25]})).mark_rule(strokeDash=[4, 4]).encode(y="chance")
    st.altair_chart((bars + err + rule).properties(height=280, title="accuracy with bootstrap 95% intervals (dashed: chance)"),
                    width="stretch")
    st.dataframe(df, hide_index=True)
    st.download_button("per-item results (JSON)", pd.Series({m: r.to_dict() for m, r in results.items()}).to_json(),
                       "hellaswag.json", key="hs_dl", on_click="ignore")

    explorer(results, n)

    if len(results) >= 2:
        a, b = list(results)[:2]
        ra, rb = results[a], results[b]
        ea, eb = lc.md_escape(a), lc.md_escape(b)  # a typed model name is shown as text
        dis = [i for i in range(n) if ra.items[i].pred != rb.items[i].pred]
        cmp = hsm.paired_comparison([x.pred == x.label for x in ra.items], [x.pred == x.label for x in rb.items],
                                    ra.loglik(), rb.loglik())
        st.subheader(f"Where {ea} and {eb} disagree ({len(dis)} of {n} items)")
        st.markdown(f"acc({ea}) − acc({eb}) = {cmp.acc_diff:+.3f}, paired 95% CI [{cmp.acc_diff_ci95[0]:+.3f}, "
                    f"{cmp.acc_diff_ci95[1]:+.3f}], McNemar p = {cmp.mcnemar_p:.3f}")
        rows = [{"item": i, "gold": ra.items[i].label, a: ra.items[i].pred, b: rb.items[i].pred,
                 "context": lc.dataset().item(i).query[:120]} for i in dis]
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
