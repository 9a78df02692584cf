"""Charts whose numbers follow the pointer: the per-slider arithmetic runs in the browser.

Each slider is a Vega-Lite point selection bound to a range input (`alt.selection_point(bind=
alt.binding_range(...))`); `transform_calculate` and `transform_joinaggregate` repeat
evalcore's formulas on the chart's rows, so dragging redraws the numbers and the picture with
no server round trip. Streamlit reports the selection 150 ms after the pointer rests
(`st.altair_chart(on_select=...)`), which is when a page writes the value into the URL.

A bound input's value is the signal `<selection>_<field>` (Vega-Lite's name for it); the
expressions below read those signals. Texts are SVG (`usermeta.embedOptions.renderer`), so a
browser test reads them from the DOM. The formulas, against evalcore:
- KL(P‖Q) = Σ_{p>0} p·log(p/q), +inf where q = 0 < p, at least 0     (metrics.kl.kl)
- H(P) = -Σ_{p>0} p·log p; H(P,Q) = -Σ_{p>0} p·log q                  (entropy, cross_entropy)
- JS = ½KL(P‖M) + ½KL(Q‖M), M = ½(P+Q)                                  (js)
- smooth(q, ε) = max(q, ε) / Σ max(q, ε)                               (smooth, method="epsilon")
- D_φ(p, q) = φ(p) - φ(q) - (log q - log(1-q))·(p - q), φ(p) = p log p + (1-p) log(1-p)  (bregman)
- R_α = αP + (1-α)Q, the point exp(-c·(KL(Q‖R_α), KL(P‖R_α)))          (metrics.mauve.mixture_point)
"""
from __future__ import annotations

import math

import altair as alt
import numpy as np
import pandas as pd

SVG = {"embedOptions": {"renderer": "svg"}}


def _selection(name: str, inputs: dict[str, tuple[float, float, float, float, str]]):
    """One point selection `name` whose fields are bound to range inputs: field -> (lo, hi, step, value, label)."""
    # Vega-Lite adds the inputs in the reverse order of `fields`: reversed, they read top-down
    return alt.selection_point(name=name, fields=list(reversed(inputs)), value=[{f: v[3] for f, v in inputs.items()}],
                               bind={f: alt.binding_range(min=v[0], max=v[1], step=v[2], name=v[4])
                                     for f, v in inputs.items()})


def _fmt(expr: str, digits: int = 4) -> str:
    """A Vega expression printing `expr` with `digits` decimals, ∞ when infinite."""
    return f"(isFinite({expr}) ? format({expr}, '.{digits}f') : '∞')"


def _kl_term(p: str, q: str) -> str:
    """p·log(p/q) as evalcore sums it: 0 where p = 0, +inf where q = 0 < p."""
    return f"({p} > 0 ? ({q} > 0 ? {p} * log({p} / {q}) : 1 / 0) : 0)"


# ----------------------------------------------------------------------------- MAUVE: α


MAUVE_SEL = "mix"
ALPHA = f"{MAUVE_SEL}_alpha"  # the bound input's signal


def mauve_alpha(p_hist, q_hist, curve, alpha: float, scaling: float) -> alt.HConcatChart:
    """The mixture R_α beside the divergence curve; α on a range input under the chart.

    Left: P, Q and R_α per cluster. Right: the curve (area = MAUVE), the point of this α in red,
    and KL(P‖R_α), KL(Q‖R_α) in nats, all computed in the chart from the two histograms.
    """
    k = len(p_hist)
    sel = _selection(MAUVE_SEL, {"alpha": (0.01, 0.99, 0.01, float(alpha), "α (mixture weight on P) ")})
    rows = pd.DataFrame({"cluster": np.arange(k), "P": np.asarray(p_hist, float), "Q": np.asarray(q_hist, float)})
    mixed = (alt.Chart(rows)
             .transform_calculate(R=f"{ALPHA} * datum.P + (1 - {ALPHA}) * datum.Q")
             .transform_calculate(tp=_kl_term("datum.P", "datum.R"), tq=_kl_term("datum.Q", "datum.R")))
    names = {"P": "P human", "Q": "Q model", "R": "R_α mixture"}
    bars = (mixed.transform_fold(["P", "Q", "R"], as_=["side", "probability"])
            .transform_calculate(distribution=" : ".join(f"datum.side == '{s}' ? '{n}'" for s, n in names.items())
                                 + " : ''")
            .mark_bar().encode(x=alt.X("cluster:O"), y=alt.Y("probability:Q", title="probability"),
                               color=alt.Color("distribution:N", sort=list(names.values()),
                                               scale=alt.Scale(range=["#1f77b4", "#ff7f0e", "#d62728"]),
                                               legend=alt.Legend(orient="top", title=None)),
                               xOffset=alt.XOffset("distribution:N", sort=list(names.values())),
                               tooltip=["cluster:O", "distribution:N", alt.Tooltip("probability:Q", format=".4f")])
            .add_params(sel).properties(width=max(260, 24 * k), height=260,
                                        title="cluster histograms and the mixture R_α = αP + (1-α)Q"))
    point = (mixed.transform_joinaggregate(kp="sum(tp)", kq="sum(tq)")
             .transform_filter("datum.cluster == 0")
             .transform_calculate(kl_p="max(datum.kp, 0)", kl_q="max(datum.kq, 0)")
             .transform_calculate(x=f"exp(-{scaling!r} * datum.kl_q)", y=f"exp(-{scaling!r} * datum.kl_p)"))
    xy = "exp(-c·KL(Q‖R))", "exp(-c·KL(P‖R))"
    cdf = pd.DataFrame(np.asarray(curve, float), columns=["x", "y"])
    enc = {"x": alt.X("x:Q", title=xy[0], scale=alt.Scale(domain=[0, 1])),
           "y": alt.Y("y:Q", title=xy[1], scale=alt.Scale(domain=[0, 1]))}
    lines = [("α", f"format({ALPHA}, '.2f')"), ("KL(P‖R_α)", _fmt("datum.kl_p")), ("KL(Q‖R_α)", _fmt("datum.kl_q")),
             ("point", "'(' + format(datum.x, '.4f') + ', ' + format(datum.y, '.4f') + ')'")]
    texts = [point.transform_calculate(label=f"'{name} = ' + {expr}")
             .mark_text(align="right", baseline="top", fontSize=13)
             .encode(x=alt.value(312), y=alt.value(6 + 18 * i), text="label:N") for i, (name, expr) in enumerate(lines)]
    right = alt.layer(
        alt.Chart(cdf).mark_area(opacity=0.3).encode(**enc),
        alt.Chart(cdf).mark_line(point=True).encode(**enc, tooltip=[alt.Tooltip("x:Q", format=".4f"),
                                                                    alt.Tooltip("y:Q", format=".4f")]),
        point.mark_circle(size=220, color="red", opacity=1).encode(**enc),
        *texts,
    ).properties(width=320, height=260, title=f"divergence curve (area = MAUVE; red: α; c = {scaling:g})")
    return alt.hconcat(bars, right).properties(usermeta=SVG)


# ----------------------------------------------------------------------------- KL: simplex, zeros


KL_SEL = "pq"
PA, PB, QA, QB, LOG_EPS = (f"{KL_SEL}_{f}" for f in ("pa", "pb", "qa", "qb", "log_eps"))
# each distribution: A from its slider, B from its slider but at most what A leaves, C the rest
P_ROW = (PA, f"min({PB}, 1 - {PA})", f"max(0, 1 - {PA} - min({PB}, 1 - {PA}))")
Q_ROW = (QA, f"min({QB}, 1 - {QA})", f"max(0, 1 - {QA} - min({QB}, 1 - {QA}))")
Q0 = (0.5, 0.5, 0.0)  # the zero-probability example's Q


def three(a: float, b: float) -> np.ndarray:
    """The distribution the KL page's two sliders of one side give (the chart's P_ROW / Q_ROW)."""
    b = min(b, 1 - a)
    return np.array([a, b, max(0.0, 1 - a - b)])


def _simplex(sel) -> alt.LayerChart:
    """P and Q as two dots on the probability simplex, with the chart's range inputs."""
    # the simplex: corner A at (0, 0), B at (1, 0), C at (½, √3/2); a point at (b + c/2, c·√3/2)
    h3 = math.sqrt(3) / 2
    corners = pd.DataFrame({"x": [0, 1, 0.5, 0], "y": [0, 0, h3, 0], "i": range(4), "name": ["A", "B", "C", ""]})
    ax = {"x": alt.X("x:Q", axis=None, scale=alt.Scale(domain=[-0.08, 1.08])),
          "y": alt.Y("y:Q", axis=None, scale=alt.Scale(domain=[-0.08, 0.95]))}
    dots = alt.Chart(pd.DataFrame({"who": ["P", "Q"]})).transform_calculate(
        a=f"datum.who == 'P' ? {P_ROW[0]} : {Q_ROW[0]}", b=f"datum.who == 'P' ? {P_ROW[1]} : {Q_ROW[1]}",
        c=f"datum.who == 'P' ? {P_ROW[2]} : {Q_ROW[2]}").transform_calculate(
        x="datum.b + datum.c / 2", y=f"datum.c * {h3!r}",
        probs="'(' + format(datum.a, '.2f') + ', ' + format(datum.b, '.2f') + ', ' + format(datum.c, '.2f') + ')'")
    return alt.layer(
        alt.Chart(corners).mark_line(color="gray").encode(**ax, order="i:O"),
        alt.Chart(corners.iloc[:3]).mark_text(dy=-10, fontSize=13).encode(**ax, text="name:N"),
        dots.mark_circle(size=250, opacity=1).encode(**ax, color=alt.Color("who:N", legend=None,
                                                                            scale=alt.Scale(range=["#1f77b4", "#ff7f0e"])),
                                                     tooltip=["who:N", "probs:N"]),
        dots.mark_text(dx=12, align="left", fontSize=12).encode(**ax, text=alt.Text("who:N")),
    ).add_params(sel).properties(width=300, height=260, title="the probability simplex (corners: A, B, C)")


def _zero_probabilities(base, sums, eps_: str) -> alt.HConcatChart:
    """Q₀ = (0.5, 0.5, 0) and Q₀ floored at ε as bars, and KL(P‖Q₀), KL(P‖smoothed Q₀) beside them."""
    zero_bars = (base.transform_fold(["q0", "qs"], as_=["which", "probability"])
                 .transform_calculate(dist="datum.which == 'q0' ? 'Q₀' : 'Q₀ smoothed'")
                 .mark_bar().encode(x=alt.X("outcome:N", title=None), xOffset="dist:N",
                                    y=alt.Y("probability:Q", scale=alt.Scale(domain=[0, 1])),
                                    color=alt.Color("dist:N", legend=alt.Legend(orient="top", title=None)),
                                    tooltip=["outcome:N", "dist:N", alt.Tooltip("probability:Q", format=".6f")])
                 .properties(width=300, height=180, title="zero probabilities: Q₀ = (0.5, 0.5, 0)"))
    zlines = [("ε", f"format({eps_}, '.6f')"), ("KL(P‖Q₀)", _fmt("datum.kl_p0")),
              ("KL(P‖smoothed Q₀)", _fmt("datum.kl_ps"))]
    zero_numbers = alt.layer(*[
        sums.transform_calculate(label=f"'{name} = ' + {expr}")
        .mark_text(align="left", baseline="top", fontSize=14).encode(x=alt.value(4), y=alt.value(4 + 26 * i),
                                                                     text="label:N")
        for i, (name, expr) in enumerate(zlines)],
        sums.transform_calculate(label="'infinite whenever P(C) > 0; smoothed, finite,'")
        .mark_text(align="left", baseline="top", fontSize=11, color="gray").encode(
            x=alt.value(4), y=alt.value(4 + 26 * len(zlines)), text="label:N"),
        sums.transform_calculate(label="'but the value now depends on the ε you chose'")
        .mark_text(align="left", baseline="top", fontSize=11, color="gray").encode(
            x=alt.value(4), y=alt.value(20 + 26 * len(zlines)), text="label:N"),
    ).properties(width=320, height=180)
    return alt.hconcat(zero_bars, zero_numbers)


def kl_simplex(pa: float, pb: float, qa: float, qb: float, eps: float) -> alt.VConcatChart:
    """P and Q on the simplex with KL both ways, JS, H(P), H(P,Q); below, Q₀ = (0.5, 0.5, 0)
    floored at ε: KL(P‖Q₀) and KL(P‖smoothed Q₀). Five range inputs under the chart."""
    sel = _selection(KL_SEL, {"pa": (0.0, 1.0, 0.01, pa, "P(A) "), "pb": (0.0, 1.0, 0.01, pb, "P(B) (at most 1 - P(A)) "),
                              "qa": (0.0, 1.0, 0.01, qa, "Q(A) "), "qb": (0.0, 1.0, 0.01, qb, "Q(B) (at most 1 - Q(A)) "),
                              "log_eps": (-6.0, round(math.log10(0.2), 2), 0.01, round(math.log10(eps), 2),
                                          "log₁₀ ε (smoothing floor on Q₀) ")})
    rows = pd.DataFrame({"o": [0, 1, 2], "outcome": ["A", "B", "C"], "q0": Q0})
    pick = lambda row: f"(datum.o == 0 ? {row[0]} : datum.o == 1 ? {row[1]} : {row[2]})"
    eps_ = f"pow(10, {LOG_EPS})"
    base = (alt.Chart(rows)
            .transform_calculate(p=pick(P_ROW), q=pick(Q_ROW), qe=f"max(datum.q0, {eps_})")
            .transform_joinaggregate(qe_sum="sum(qe)")
            .transform_calculate(m="(datum.p + datum.q) / 2", qs="datum.qe / datum.qe_sum")
            .transform_calculate(t_pq=_kl_term("datum.p", "datum.q"), t_qp=_kl_term("datum.q", "datum.p"),
                                 t_pm=_kl_term("datum.p", "datum.m"), t_qm=_kl_term("datum.q", "datum.m"),
                                 t_h="datum.p > 0 ? -datum.p * log(datum.p) : 0",
                                 t_x="datum.p > 0 ? (datum.q > 0 ? -datum.p * log(datum.q) : 1 / 0) : 0",
                                 t_p0=_kl_term("datum.p", "datum.q0"), t_ps=_kl_term("datum.p", "datum.qs")))
    sums = (base.transform_joinaggregate(s_pq="sum(t_pq)", s_qp="sum(t_qp)", s_pm="sum(t_pm)", s_qm="sum(t_qm)",
                                         h="sum(t_h)", hx="sum(t_x)", s_p0="sum(t_p0)", s_ps="sum(t_ps)")
            .transform_filter("datum.o == 0")
            .transform_calculate(kl_pq="max(datum.s_pq, 0)", kl_qp="max(datum.s_qp, 0)",
                                 js="0.5 * max(datum.s_pm, 0) + 0.5 * max(datum.s_qm, 0)",
                                 kl_p0="max(datum.s_p0, 0)", kl_ps="max(datum.s_ps, 0)"))
    simplex = _simplex(sel)
    lines = [("P", "'(' + format(datum.p_a, '.2f') + ', ' + format(datum.p_b, '.2f') + ', ' + format(datum.p_c, '.2f') + ')'"),
             ("Q", "'(' + format(datum.q_a, '.2f') + ', ' + format(datum.q_b, '.2f') + ', ' + format(datum.q_c, '.2f') + ')'"),
             ("KL(P‖Q)", _fmt("datum.kl_pq")), ("KL(Q‖P)", _fmt("datum.kl_qp")), ("JS(P,Q)", _fmt("datum.js")),
             ("H(P)", _fmt("datum.h")), ("H(P,Q)", _fmt("datum.hx")),
             ("perplexity exp H(P,Q)", _fmt("exp(datum.hx)", 3))]
    named = sums.transform_calculate(p_a=P_ROW[0], p_b=P_ROW[1], p_c=P_ROW[2], q_a=Q_ROW[0], q_b=Q_ROW[1], q_c=Q_ROW[2])
    numbers = alt.layer(*[
        named.transform_calculate(label=f"'{name} = ' + {expr}")
        .mark_text(align="left", baseline="top", fontSize=14, fontWeight="bold" if name.startswith("KL") else "normal")
        .encode(x=alt.value(4), y=alt.value(4 + 26 * i), text="label:N") for i, (name, expr) in enumerate(lines)],
        named.transform_calculate(label="'H(P,Q) = H(P) + KL(P‖Q), in nats; KL is not symmetric'")
        .mark_text(align="left", baseline="top", fontSize=11, color="gray").encode(
            x=alt.value(4), y=alt.value(4 + 26 * len(lines)), text="label:N"),
    ).properties(width=320, height=260, title="the numbers (nats)")
    return (alt.vconcat(alt.hconcat(simplex, numbers), _zero_probabilities(base, sums, eps_))
            .resolve_scale(color="independent").resolve_legend(color="independent").properties(usermeta=SVG))


# ----------------------------------------------------------------------------- KL: Bregman


BREG_SEL = "breg"
BP, BQ = f"{BREG_SEL}_p", f"{BREG_SEL}_q"


def bregman(bp: float, bq: float) -> alt.LayerChart:
    """φ(p) = p log p + (1-p) log(1-p), its tangent at Q, and the gap at P (= KL(P‖Q))."""
    sel = _selection(BREG_SEL, {"p": (0.01, 0.99, 0.01, bp, "P(A) "), "q": (0.01, 0.99, 0.01, bq, "Q(A) ")})
    xs = pd.DataFrame({"p": np.linspace(0.005, 0.995, 199)})
    phi = lambda v: f"({v} * log({v}) + (1 - {v}) * log(1 - {v}))"
    slope = f"(log({BQ}) - log(1 - {BQ}))"
    curves = (alt.Chart(xs).transform_calculate(phi=phi("datum.p"), tangent=f"{phi(BQ)} + {slope} * (datum.p - {BQ})")
              .transform_fold(["phi", "tangent"], as_=["which", "value"])
              .transform_calculate(curve="datum.which == 'phi' ? 'φ(p)' : 'tangent at Q'")
              .mark_line().encode(x=alt.X("p:Q", title="p = P(A)"), y=alt.Y("value:Q", title="φ"),
                                  color=alt.Color("curve:N", legend=alt.Legend(orient="top", title=None)),
                                  tooltip=[alt.Tooltip("p:Q", format=".3f"), alt.Tooltip("value:Q", format=".4f")]))
    one = alt.Chart(pd.DataFrame({"o": [0]})).transform_calculate(
        p=BP, top=phi(BP), low=f"{phi(BQ)} + {slope} * ({BP} - {BQ})").transform_calculate(
        gap="datum.top - datum.low",
        kl=f"max(({BP} > 0 ? {BP} * log({BP} / {BQ}) : 0) + ({BP} < 1 ? (1 - {BP}) * log((1 - {BP}) / (1 - {BQ})) : 0), 0)")
    gap = one.mark_rule(color="red", strokeWidth=3).encode(x="p:Q", y="low:Q", y2="top:Q")
    label = (one.transform_calculate(label="'gap at P = ' + format(datum.gap, '.4f') + ' = KL(P‖Q) = ' + "
                                           "format(datum.kl, '.4f')")
             .mark_text(align="left", baseline="top", fontSize=14).encode(x=alt.value(6), y=alt.value(6), text="label:N"))
    return alt.layer(curves, gap, label).add_params(sel).properties(
        height=250, title="KL(P‖Q) is the gap at P between φ and its tangent at Q").properties(usermeta=SVG)
