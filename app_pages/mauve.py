"""MAUVE: the mixture R_α, the divergence curve, the cluster count, the model size, example texts.

Fragments keep a change to what it touches: the model and the number of contexts rerun the
page below them; k reruns the results of one k (its k-means fit and bootstrap are cached per
k); α never reruns anything: the chart computes R_α, both KLs and the curve's point itself
(`_live.mauve_alpha`), and sends the resting α to the server only for the URL.
"""
import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

import lab_cache as lc
from app_pages import _charts, _live, _state

CONTEXTS = [40, 80, 120, 200, 500, 1000]
CURVE_RESAMPLES = [20, 50, 100, 200]

st.title("MAUVE")
st.markdown("P = the gold endings of HellaSwag contexts (human text); Q = the chosen model's continuations "
            "of the same contexts. Both are embedded (all-MiniLM-L6-v2), clustered, and compared as histograms.")
names = lc.available()
link = _state.Link(["model", "n", "k", "alpha", "estimator", "compare", "resamples"])
link.value("mauve_model", "model", _state.one_of(names), names[0] if names else None)
n0 = link.value("mauve_n", "n", _state.one_of(CONTEXTS), 80)
link.value("mauve_k", "k", _state.integer(2, lc.max_k(n0)), min(8, lc.max_k(n0)))
link.value("mauve_alpha", "alpha", _state.number(0.01, 0.99, 0.01), 0.5)
link.value("mauve_estimator", "estimator", _state.one_of(["quantized", "knn", "classifier"]), "knn")
link.value("mauve_curve_other", "compare", _state.one_of(["none", *names]), "none")
link.value("mauve_curve_boot", "resamples", _state.one_of(CURVE_RESAMPLES), 50)
link.notice()


@st.fragment
def texts() -> None:
    """Model and contexts: the lab (generation, features, PCA) and MAUVE against k."""
    c1, c2 = st.columns(2)
    name = c1.select_slider("model size (whose text is Q)", names, key="mauve_model",
                            format_func=lambda n: f"{n} ({lc.params(n):.0f}M)") if names else None
    n = c2.select_slider("contexts (more: slower first run, steadier numbers)", CONTEXTS, key="mauve_n")
    _state.write(model=name, n=n)
    lab = lc.guard(lc.mauve_lab, name, n, progress="Generating continuations (cached after the first time)") if name else None
    if lab is None:
        return
    ks = [x for x in (2, 4, 8, 12, 16, 24, 32, 50, 75, 100, 250, 500) if x <= lab.k_max()]
    with st.spinner("Clustering the texts for each k (cached after the first time)…"):
        sweep = lc.guard(lab.sweep, ks, task="MAUVE against k")
    if sweep:
        st.altair_chart(alt.Chart(pd.DataFrame(sweep)).mark_line(point=True).encode(
            x="k:Q", y=alt.Y("mauve:Q", scale=alt.Scale(domain=[0, 1])), tooltip=["k", "mauve", "mauve_star"])
            .properties(height=200, title="MAUVE against k"), width="stretch")
    clusters(name, n, lab)
    sample_size(name, n)


@st.fragment
def clusters(name: str, n: int, lab) -> None:
    """One k: the scores, the histograms with the α chart, the texts of a cluster."""
    top = lc.max_k(n)
    if st.session_state.get("mauve_k", 0) > top:  # fewer contexts than the k asked for allow
        st.session_state["mauve_k"] = top
    k = st.slider("clusters k", 2, top, key="mauve_k",
                  help="at most half the texts per side: past that most clusters hold one text and MAUVE falls to 0")
    _state.write(k=k)
    with st.spinner(f"Clustering with k = {k}…"):
        res = lc.guard(lab.result, k, task=f"MAUVE with k = {k}")
    if res is None:
        return
    m = st.columns(4)
    m[0].metric("MAUVE", f"{res.mauve:.3f}", help="area under the divergence curve")
    ci_help = "200 resamples of the texts, clusters fixed"
    ci_slot = m[1].empty()  # filled after the α chart: a new k redraws the chart without waiting for the interval
    ci_slot.metric("95% bootstrap CI", "…", help=ci_help)
    m[2].metric("MAUVE*", f"{res.mauve_star:.3f}", help="on add-0.5 smoothed histograms")
    m[3].metric("KL(P‖Q)", f"{res.kl_pq:.3f}", help="between the add-0.5 smoothed histograms, nats")
    mixture(name, n, k, res, lab.scaling)
    ci = lc.guard(lc.mauve_ci, name, n, k, task="The bootstrap interval")
    if ci is None:
        return
    ci_slot.metric("95% bootstrap CI", f"[{ci[0]:.2f}, {ci[1]:.2f}]", help=ci_help)
    st.caption(f"Drag α under the chart: R_α, KL(P‖R_α), KL(Q‖R_α) and the red point follow it in the browser. "
               f"Histogram KLs (add-0.5 smoothing): KL(P‖Q) = {res.kl_pq:.3f}, KL(Q‖P) = {res.kl_qp:.3f} nats. "
               f"mauve-text's default k here: {lab.k_auto()}.")
    st.download_button("result (JSON)", pd.Series(res.to_dict()).to_json(), "mauve.json", key="mauve_dl",
                       on_click="ignore")
    divergence_bars(lab, k)
    estimators(lab, k)
    explorer(name, lab, res, k)


def divergence_bars(lab, k: int) -> None:
    """KL both ways, Jensen-Shannon and total variation between the same two histograms."""
    d = lc.guard(lab.divergences, k, task="The divergences")
    if d is None:
        return
    st.subheader("Other divergences between the same histograms")
    rows = pd.DataFrame([{"divergence": "KL(P‖Q)", "value": d.kl_pq, "on": "add-0.5 counts"},
                         {"divergence": "KL(Q‖P)", "value": d.kl_qp, "on": "add-0.5 counts"},
                         {"divergence": "Jensen-Shannon", "value": d.js, "on": "histograms (at most ln 2 = 0.693)"},
                         {"divergence": "total variation", "value": d.tv, "on": "histograms (at most 1)"}])
    st.altair_chart(alt.Chart(rows).mark_bar().encode(
        x=alt.X("value:Q", title="nats (total variation: a fraction)"), y=alt.Y("divergence:N", sort=None, title=None),
        tooltip=["divergence", alt.Tooltip("value:Q", format=".4f"), "on"]).properties(height=150), width="stretch")
    st.caption(f"The same k = {k} clusters as the curve above. MAUVE summarises the whole frontier between P and Q; "
               "each of these is one number about the same two histograms. KL is asymmetric and needs smoothing "
               "where a cluster holds one side only; JS and total variation are symmetric and bounded.")


ESTIMATOR_NAMES = {"quantized": "k-means clusters (mauve-text)", "knn": "nearest neighbours", "classifier": "classifier"}


@st.fragment
def estimators(lab, k: int) -> None:
    """MAUVE by three estimators of the frontier on the same features (Pillutla et al., JMLR 2023)."""
    st.subheader("Three estimators of the same frontier")
    est = {e: lc.guard(lab.estimate, e, k, task=f"MAUVE by {ESTIMATOR_NAMES[e]}") for e in ESTIMATOR_NAMES}
    if any(v is None for v in est.values()):
        return
    shown = st.segmented_control("estimator", list(ESTIMATOR_NAMES), format_func=ESTIMATOR_NAMES.get,
                                 key="mauve_estimator") or "knn"
    _state.write(estimator=shown)
    m = st.columns(3)
    for col, (e, r) in zip(m, est.items()):
        col.metric(ESTIMATOR_NAMES[e], f"{r.mauve:.3f}")
    curves = pd.concat([pd.DataFrame(est[e].divergence_curve, columns=["x", "y"]).assign(estimator=ESTIMATOR_NAMES[e])
                        for e in dict.fromkeys(["quantized", shown])])
    st.altair_chart(alt.Chart(curves).mark_line(point=True).encode(
        x=alt.X("x:Q", title="exp(−c·KL(Q‖R_λ))"), y=alt.Y("y:Q", title="exp(−c·KL(P‖R_λ))"), color="estimator:N",
        order="x:Q").properties(height=260, title="divergence frontiers (area under each = its MAUVE)"), width="stretch")
    st.caption("k-means quantizes the texts into k clusters and compares histograms; the nearest-neighbour and "
               "classifier estimators estimate the density ratio P/Q at each text without clustering "
               f"({est['knn'].settings['n_neighbors']} neighbours; a 5-fold cross-fitted kernel logistic regression). "
               "On Gaussian mixtures with a known frontier all three approach it as n grows, "
               "while k = n/10 keeps a bias (bench/RESULTS.md, Frontier estimators). With a few dozen texts they can "
               "disagree widely: that spread is part of the answer.")


@st.fragment
def mixture(name: str, n: int, k: int, res, scaling: float) -> None:
    """The α chart. It reruns only when α comes to rest, to put α into the URL, and then sends the
    same chart again (`_state.chart_start`): the browser keeps the one it has."""
    (alpha0,) = _state.chart_start("mauve_mix", [st.session_state["mauve_alpha"]], (name, n, k))
    event = st.vega_lite_chart(lc.vega_spec("mauve_alpha", res.p_hist, res.q_hist, res.divergence_curve, alpha0, scaling),
                               on_select="rerun", key="mauve_mix", width="content")
    alpha = _state.selected(event, _live.MAUVE_SEL, "alpha", st.session_state["mauve_alpha"])
    st.session_state["mauve_alpha"] = round(float(alpha), 2)
    _state.write(alpha=st.session_state["mauve_alpha"])


@st.fragment
def explorer(name: str, lab, res, k: int) -> None:
    st.subheader("What falls in a cluster")
    c = st.number_input("cluster", 0, k - 1, int(np.argmax(np.abs(np.array(res.p_hist) - np.array(res.q_hist)))),
                        key=f"mauve_cluster_{k}")
    pl, ql = lab.labels(k)
    hp, hq = st.columns(2)
    hp.markdown(f"**Human** ({int((pl == c).sum())} texts)")
    for i in np.flatnonzero(pl == c)[:5]:
        hp.text(lab.p_texts[i])
    hq.markdown(f"**{lc.md_escape(name)}** ({int((ql == c).sum())} texts)")
    for i in np.flatnonzero(ql == c)[:5]:
        hq.text(lab.q_texts[i])




@st.fragment
def sample_size(name: str, n: int) -> None:
    """MAUVE against n: the first 20, 40, ... contexts, with a k-means seed band and a bootstrap band."""
    st.subheader("MAUVE against the number of texts")
    if st.session_state.get("mauve_curve_other") == name:  # the model itself: nothing to compare
        st.session_state["mauve_curve_other"] = "none"
    c1, c2 = st.columns(2)
    other = c1.selectbox("compare with", ["none", *(m for m in names if m != name)], key="mauve_curve_other")
    n_boot = c2.select_slider("resamples per point", CURVE_RESAMPLES, key="mauve_curve_boot")
    _state.write(compare=other, resamples=n_boot)
    ns = tuple(x for x in (20, *CONTEXTS) if x <= n)
    chosen = (name,) if other == "none" else (name, other)
    curves = lc.guard(lc.mauve_curves, chosen, ns, n_boot, progress="MAUVE against n: generating what is missing, "
                      "then the k-means fits (stored)")
    if curves is None:
        return
    rows = [{"model": c.model, "k": "k = n/10 (auto)" if c.k_mode == "auto" else f"k = {curves.k_fixed} (fixed)",
             "n": p.n, "MAUVE": p.mauve, "boot_low": p.boot_low, "boot_high": p.boot_high, "seed_min": p.seed_min,
             "seed_max": p.seed_max, "clusters": p.k} for c in curves.curves for p in c.points]
    st.altair_chart(_charts.mauve_vs_n(pd.DataFrame(rows)), width="stretch")
    if len(chosen) == 2:
        sep = curves.separation_n
        said = [f"at {label}: " + (f"from n = {sep[mode]}" if sep[mode] else f"not up to n = {max(ns)}")
                for mode, label in (("auto", "k = n/10"), ("fixed", f"k = {curves.k_fixed}"))]
        st.markdown(f"**Where the two models' intervals separate** ({'; '.join(said)}). Separate intervals mean the "
                    "gap is larger than resampling the texts would make it; overlapping ones mean this n cannot "
                    "rank them (the Small vs large page tests the paired difference directly).")
    st.caption(f"Line: MAUVE of the first n contexts. Band: the middle 95% of {n_boot} resamples of the contexts, PCA "
               "and k-means refitted in each. Bar: the range over 5 k-means seeds. At a fixed k MAUVE rises with n "
               "as clusters fill; at k = n/10 it drifts with both. A resample repeats texts, so its clusters are "
               "thinner and its MAUVE sits lower than the point: read the band's width, not its centre.")


texts()
