"""Charts of model results drawn on the server (the charts that compute in the browser are in `_live`).

The per-character heatmap of next-byte divergences (`evalcore.runs.crosskl.run_next_bytes`):
position i compares the models' P(next byte | the text's first i bytes), so a text of n bytes
has n + 1 positions, the last one predicting the end of the text. A character of several UTF-8
bytes covers the positions that predict each of its bytes and shows their sum:

    text:       K    L    ‖              ...   end
    bytes:      4B   4C   E2 80 96       ...
    positions:  0    1    2  3  4        ...   n
    cell:       v0   v1   v2 + v3 + v4   ...   vn
"""
from __future__ import annotations

import altair as alt
import numpy as np
import numpy.typing as npt
import pandas as pd

# characters drawn as a visible sign in a cell
VISIBLE = {" ": "␣", "\n": "⏎", "\t": "⇥", "\r": "␍"}
END = "end"
PER_ROW = 30  # cells per line of the heatmap


def char_cells(text: str, values: npt.ArrayLike) -> pd.DataFrame:
    """One row per character of `text`, then one for the end of text, with the sum of `values`
    ([n_bytes + 1], one per byte position) over the positions of the character's bytes."""
    v = np.asarray(values, dtype=np.float64)
    rows, pos = [], 0
    for i, ch in enumerate(text):
        raw = ch.encode("utf-8")
        span = f"{pos}" if len(raw) == 1 else f"{pos}-{pos + len(raw) - 1}"
        rows.append({"cell": i, "char": VISIBLE.get(ch, ch), "bytes": raw.hex(" ").upper(), "positions": span,
                     "value": float(v[pos : pos + len(raw)].sum())})
        pos += len(raw)
    rows.append({"cell": len(text), "char": END, "bytes": "(end of text)", "positions": f"{pos}",
                 "value": float(v[pos])})
    cells = pd.DataFrame(rows)
    cells["row"], cells["col"] = cells["cell"] // PER_ROW, cells["cell"] % PER_ROW
    cells["dark"] = cells["value"] > 0.6 * max(float(cells["value"].max()), 1e-12)  # white text on dark cells
    return cells


def byte_heatmap(cells: pd.DataFrame, measure: str) -> alt.LayerChart:
    """The characters as rows of cells coloured by `measure` (nats), each showing its character."""
    base = alt.Chart(cells).encode(x=alt.X("col:O", axis=None), y=alt.Y("row:O", axis=None))
    tooltip = ["char:N", "bytes:N", alt.Tooltip("positions:N", title="byte positions"),
               alt.Tooltip("value:Q", title=f"{measure} (nats)", format=".4f")]
    rect = base.mark_rect(stroke="white", strokeWidth=1).encode(
        color=alt.Color("value:Q", title=f"{measure} (nats)", scale=alt.Scale(scheme="oranges")), tooltip=tooltip)
    text = base.mark_text(baseline="middle").encode(
        text="char:N", tooltip=tooltip,
        size=alt.condition(f"datum.char == '{END}'", alt.value(10), alt.value(15)),
        color=alt.condition("datum.dark", alt.value("white"), alt.value("black")))
    title = f"{measure} at each character (several-byte characters: sum over their bytes)"
    return (rect + text).properties(width=alt.Step(26), height=alt.Step(30), title=title)


def byte_sums(sums: dict[str, float], positions: int) -> pd.DataFrame:
    """The three divergences summed over the positions and per position, for a table."""
    names = {"kl_pq": "KL(P‖Q)", "kl_qp": "KL(Q‖P)", "js": "JS"}
    return pd.DataFrame([{"divergence": label, "sum over positions (nats)": sums[k],
                          "mean per byte position (nats)": sums[k] / positions} for k, label in names.items()])


def mc_table(mc) -> pd.DataFrame:
    """Monte-Carlo KL both ways (`crosskl.MonteCarloResult`): k1 with its interval, k3, samples used."""
    rows = []
    for label, d in (("KL(P‖Q), sampled from P", mc.pq), ("KL(Q‖P), sampled from Q", mc.qp)):
        if d is None:
            continue
        lo, hi = d.kl.k1.ci95
        rows.append({"direction": label, "k1 (nats/byte)": d.kl.k1.value, "95% interval": f"[{lo:.4f}, {hi:.4f}]",
                     "k3": d.kl.k3.value if d.kl.k3 else float("nan"),
                     "samples used": _used(d)})
    return pd.DataFrame(rows)


def _used(d) -> str:
    """'used of sampled', and why the others were left out."""
    why = [f"{d.empty} ended at once"] if d.empty else []
    why += [f"{d.non_canonical} not the model's own tokenization"] if d.non_canonical else []
    return f"{d.kl.n} of {d.samples}" + (f" ({', '.join(why)})" if why else "")


def interval_bars(df: pd.DataFrame, x: str, title: str) -> alt.LayerChart:
    """Grouped bars of `value` per `x` and model, with `low`..`high` error bars and chance (0.25) dashed."""
    bars = alt.Chart(df).mark_bar().encode(x=f"{x}:N", y=alt.Y("value:Q", scale=alt.Scale(domain=[0, 1])),
                                           color="model:N", xOffset="model:N", tooltip=list(df.columns))
    err = alt.Chart(df).mark_errorbar().encode(x=f"{x}:N", y=alt.Y("low:Q", title="accuracy"), y2="high:Q",
                                               xOffset="model:N")
    rule = alt.Chart(pd.DataFrame({"chance": [0.25]})).mark_rule(strokeDash=[4, 4]).encode(y="chance")
    return (bars + err + rule).properties(height=280, title=f"{title} (dashed: chance)")


def reliability(bins: pd.DataFrame) -> alt.LayerChart:
    """Reliability diagram: each bin's mean confidence against its accuracy per model, the diagonal dashed."""
    diag = alt.Chart(pd.DataFrame({"confidence": [0.0, 1.0], "accuracy": [0.0, 1.0]})).mark_line(
        strokeDash=[4, 4], color="gray").encode(x="confidence:Q", y="accuracy:Q")
    pts = alt.Chart(bins).mark_circle(opacity=0.8).encode(
        x=alt.X("confidence:Q", scale=alt.Scale(domain=[0, 1]), title="mean confidence in the bin"),
        y=alt.Y("accuracy:Q", scale=alt.Scale(domain=[0, 1]), title="accuracy in the bin"), color="model:N",
        size=alt.Size("items:Q", title="items in the bin"), tooltip=["model", alt.Tooltip("confidence:Q", format=".3f"), alt.Tooltip("accuracy:Q", format=".3f"), "items"])
    return (diag + pts).properties(height=300, title="reliability (dashed: calibrated)")


def mauve_vs_n(df: pd.DataFrame) -> alt.FacetChart:
    """MAUVE against n per model: the point estimate (line), its bootstrap interval (band) and the
    range over k-means seeds (vertical bar), one panel per way of choosing k (auto first)."""
    base = alt.Chart().encode(x=alt.X("n:Q", scale=alt.Scale(type="log"), title="contexts n (texts per side)"),
                              color="model:N")
    boot = base.mark_area(opacity=0.2).encode(y=alt.Y("boot_low:Q", title="MAUVE", scale=alt.Scale(domain=[0, 1])),
                                              y2="boot_high:Q")
    seeds = base.mark_rule(strokeWidth=4, opacity=0.6).encode(y="seed_min:Q", y2="seed_max:Q")
    line = base.mark_line(point=True).encode(y="MAUVE:Q", tooltip=["model", "n", "clusters", alt.Tooltip("MAUVE:Q", format=".3f"),
                                                                   alt.Tooltip("boot_low:Q", format=".3f"),
                                                                   alt.Tooltip("boot_high:Q", format=".3f"),
                                                                   alt.Tooltip("seed_min:Q", format=".3f"),
                                                                   alt.Tooltip("seed_max:Q", format=".3f")])
    order = sorted(df["k"].unique(), key=lambda k: "auto" not in k)
    return alt.layer(boot, seeds, line, data=df).properties(height=220, width=320).facet(
        column=alt.Column("k:N", title=None, sort=order))
