"""HellaSwag: acc and acc_norm with intervals, an lm-eval run brought in, a per-item explorer, the scoring
dialects, calibration, and where two models disagree with what their items can resolve."""
import altair as alt
import pandas as pd
import streamlit as st

import lab_cache as lc
from app_pages import _charts, _state
from evalcore.metrics import hellaswag as hsm
from evalcore.metrics import power
from evalcore.metrics.dialects import DIALECTS

st.title("HellaSwag")
st.markdown("For each context the model scores four endings; it picks the most likely (acc) or the most "
            "likely per character (acc_norm). P(ending | context) is the softmax of the four log-likelihoods.")
names = lc.available()
link = _state.Link(["models", "items", "pmi", "dialect"])
link.value("hs_models", "models", _state.many_of(names), names[:2])
link.value("hs_n", "items", _state.integer(10, 1000), 20)
link.value("hs_pmi", "pmi", _state.one_of([True, False]), False)
link.value("hs_cal_dialect", "dialect", _state.one_of(DIALECTS), "acc")
link.notice()
c1, c2 = st.columns([2, 1])
chosen = c1.multiselect("models", names, key="hs_models")
extra = c2.text_input("add a model: hub id or local folder", key="hs_extra", placeholder="EleutherAI/pythia-160m").strip()
if extra and (extra := lc.guard(lc.check_app_model, extra, task="Checking the model name")) and extra not in chosen:
    chosen = [*chosen, extra]
n = st.slider("items (the first N of the validation set; 20 take about 10 s on 2 CPU cores)", 10, 1000, step=10,
              key="hs_n")
_state.write(models=st.session_state["hs_models"], items=n)
with st.expander("Bring your own lm-eval run", expanded=st.session_state.get("hs_lmeval") is not None):
    st.markdown("Upload the `samples_hellaswag_*.jsonl` that `lm_eval --tasks hellaswag --log_samples` wrote. "
                "It joins the accuracy chart, the item explorer and the paired comparison, matched by `doc_id`; "
                "the models above are then scored on its items, and each item's text is checked against ours.")
    upload = st.file_uploader("lm-eval samples file (.jsonl)", type=["jsonl"], key="hs_lmeval",
                              max_upload_size=lc.LM_EVAL_UPLOAD_MB)
imported = lc.guard(lc.lm_eval_run, upload.name, upload.getvalue(), task="Reading the lm-eval file") if upload else None
rows_used = tuple(r.index for r in imported.items) if imported else tuple(range(n))
if imported:
    st.info(f"Items: the {len(rows_used)} doc_ids of {lc.md_escape(upload.name)} (without a file, the slider's "
            "first N).")


@st.fragment
def explorer(results: dict, rows: tuple[int, ...]) -> None:
    """One item's endings and each model's choice distribution; a new item reruns only this."""
    st.subheader("Item explorer")
    pos = st.number_input(f"item (1 to {len(rows)})", 1, len(rows), 1, key="hs_item") - 1
    it = lc.dataset().item(rows[pos])
    st.caption(f"validation row {it.index}")
    st.text(it.query)
    table = {"ending": list(it.choices), "gold": ["✓" if i == it.label else "" for i in range(4)]}
    for m, r in results.items():
        table[f"P({m})"] = hsm.choice_distribution(r.loglik()[pos][None])[0].round(3)
    st.dataframe(pd.DataFrame(table), hide_index=True, width="stretch")


pmi = st.toggle("also score acc_mutual_info: each ending after the prefix token alone, one more pass per item "
                "(about 0.6-0.8x the first one's time; stored)", key="hs_pmi")
_state.write(pmi=pmi)
results = {m: r for m in chosen if (r := lc.guard(lc.hellaswag_items, m, rows_used, progress=f"Scoring {m}",
                                                  unconditional=pmi)) is not None}
if imported:
    results = {imported.model["name"]: imported, **results}
n = len(rows_used)


def dialects_section(results: dict, dia: dict) -> None:
    """Each dialect's accuracy per model, and the items where one model's dialects disagree."""
    st.subheader("Scoring dialects")
    st.markdown("The same log-likelihoods, read five ways: **acc** (sum over the ending's tokens), **acc_norm** "
                "(per character, lm-eval's), **acc_bytes** (per UTF-8 byte), **acc_tokens** (per token of the model's "
                "own tokenizer), **acc_mutual_info** (log P(ending | context) − log P(ending | nothing): how much "
                "the context raised the ending, the GPT-3 paper's calibration and lm-eval's name). An lm-eval import "
                "carries acc and acc_norm only.")
    rows = [{"model": m, "dialect": k, "value": a.value, "low": a.ci95[0], "high": a.ci95[1]}
            for m, d in dia.items() for k, a in d.table.items()]
    st.altair_chart(_charts.interval_bars(pd.DataFrame(rows), "dialect", "accuracy per dialect, bootstrap 95% intervals"),
                    width="stretch")
    st.dataframe(pd.DataFrame([{"model": m, **{k: f"{a.value:.3f} [{a.ci95[0]:.2f}, {a.ci95[1]:.2f}]"
                                               for k, a in d.table.items()}} for m, d in dia.items()]),
                 hide_index=True, width="stretch")
    m = st.selectbox("items where the dialects pick different endings, for", list(dia), key="hs_dia_model")
    d, r = dia[m], results[m]
    pos = {it.index: j for j, it in enumerate(r.items)}
    table = [{"row": i, "gold": r.items[pos[i]].label, **{k: p[pos[i]] for k, p in d.predictions.items()},
              "context": lc.dataset().item(i).query[:100]} for i in d.disagreements]
    st.caption(f"{len(table)} of {r.n} items: the ending each dialect picks (0-3), beside the gold one.")
    st.dataframe(pd.DataFrame(table), hide_index=True, width="stretch")


def calibration_section(dia: dict) -> None:
    """The reliability diagram of one dialect's four-choice softmax, and ECE, Brier, NLL for all."""
    st.subheader("Calibration")
    st.markdown("Softmax the four scores into P(ending): is a model that says 80% right 80% of the time? Items are "
                "cut into 10 bins of equal size by confidence (the top probability); each point is a bin's mean "
                "confidence against its accuracy. On the diagonal the model is calibrated; below it, overconfident.")
    cal = {m: d.calibration for m, d in dia.items()}
    names = [k for k in DIALECTS if any(k in c for c in cal.values())]
    if st.session_state.get("hs_cal_dialect") not in names:  # e.g. acc_mutual_info with its pass off
        st.session_state["hs_cal_dialect"] = "acc"
    dialect = st.segmented_control("dialect", names, key="hs_cal_dialect") or "acc"
    _state.write(dialect=dialect)
    bins = pd.DataFrame([{"model": m, "confidence": b.confidence, "accuracy": b.accuracy, "items": b.count}
                         for m, c in cal.items() if dialect in c for b in c[dialect].bins])
    st.altair_chart(_charts.reliability(bins), width="stretch")
    st.dataframe(pd.DataFrame([{"model": m, "dialect": k, "ECE": c.ece, "Brier": c.brier, "NLL (nats)": c.nll,
                                "mean confidence": c.confidence, "accuracy": c.accuracy}
                               for m, cs in cal.items() for k, c in cs.items()]).round(4), hide_index=True,
                 width="stretch")
    st.caption("ECE: the items-weighted mean gap between confidence and accuracy over the bins. Brier: Σ over the four "
               "endings of (P − 1[gold])², averaged; 0.75 for a uniform guess. NLL: mean −log P(gold); ln 4 = 1.386 "
               "for a uniform guess.")


def noise_floor(a: str, b: str, ra, rb) -> None:
    """What n paired items can tell apart, and how many this pair would need."""
    nf = power.noise_floor([x.pred == x.label for x in ra.items], [x.pred == x.label for x in rb.items])
    st.markdown("**Noise floor.** A paired test only learns from the items the two models answer differently "
                f"({nf.only_a + nf.only_b} of {nf.n} here, discordance {nf.discordance:.2f}).")
    c1, c2 = st.columns(2)
    mdd = nf.min_detectable_difference
    c1.metric("smallest difference these items detect", "none" if mdd == float("inf") else f"{mdd:.3f}",
              help="at 80% power, two-sided α = 0.05, McNemar's test (normal approximation), this discordance")
    need = nf.items_needed
    c2.metric("items needed for the measured difference", "—" if need is None else f"{need:,}",
              help=f"to detect |acc difference| = {abs(nf.diff):.3f} at 80% power with the same discordance")
    target = st.number_input("how many items to detect an accuracy difference of", 0.005, 0.5, 0.02, 0.005,
                             format="%.3f", key="hs_target")
    disc = max(nf.discordance, abs(nf.diff) + 1e-9, 1e-9)
    if target > disc:
        st.caption(f"A difference of {target:.3f} is larger than the share of items the two models answer "
                   "differently, so no number of such items shows it.")
    else:
        st.caption(f"About **{power.items_needed(target, discordance=disc):,} items** at discordance {disc:.2f} "
                   "(the validation split has 10,042).")


if results:
    rows = [{"model": m, "metric": k, "value": a.value, "low": a.ci95[0], "high": a.ci95[1], "stderr": a.stderr}
            for m, r in results.items() for k, a in (("acc", r.acc), ("acc_norm", r.acc_norm))]
    df = pd.DataFrame(rows)
    st.altair_chart(_charts.interval_bars(df, "metric", "accuracy with bootstrap 95% intervals"), width="stretch")
    st.dataframe(df, hide_index=True)
    st.download_button("per-item results (JSON)", pd.Series({m: r.to_dict() for m, r in results.items()}).to_json(),
                       "hellaswag.json", key="hs_dl", on_click="ignore")

    explorer(results, rows_used)
    dia = {m: r.dialects(calibration=True) for m, r in results.items()}  # once per run: tables, calibration
    dialects_section(results, dia)
    calibration_section(dia)

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
        noise_floor(a, b, ra, rb)
        rows = [{"row": rows_used[i], "gold": ra.items[i].label, a: ra.items[i].pred, b: rb.items[i].pred,
                 "context": lc.dataset().item(rows_used[i]).query[:120]} for i in dis]
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
