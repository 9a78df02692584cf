"""Overview: what each measure tells and misses, and which models are available here."""
import pandas as pd
import streamlit as st

import lab_cache as lc
from evalcore.models import REGISTRY, availability

st.title("How far is a language model's text from human text?")
pair = lc.headline_pair()
st.markdown(
    "This lab measures it four ways on a small and a larger model"
    + (f" ({pair[0]} and {pair[1]})" if len(pair) == 2 else "")
    + ". Each page lets you move the knobs and watch the number respond."
)
c1, c2 = st.columns(2)
with c1:
    st.subheader("KL divergence")
    st.markdown("D_KL(P‖Q) = Σ P log(P/Q): zero only when P = Q. **Tells** how much extra surprise Q causes "
                "when the data follow P. **Misses**: it is asymmetric, it blows up when Q gives zero "
                "probability to something P allows, and it is blind to diversity.")
    st.subheader("Perplexity")
    st.markdown("PPL = exp(cross-entropy) on real text. **Tells** how well the model predicts the next token. "
                "**Misses**: it only looks one token ahead and never at what the model writes itself.")
with c2:
    st.subheader("MAUVE")
    st.markdown("Compares the *distribution* of model text with human text through mixtures "
                "R_α = αP + (1-α)Q: the area under the divergence frontier, in [0, 1]. **Tells** quality "
                "and diversity at once. **Misses**: depends on the embedding and the number of clusters.")
    st.subheader("HellaSwag")
    st.markdown("Pick the most likely of four endings. **Tells** commonsense completion accuracy. "
                "**Misses**: it scores choices, not generated text.")
st.subheader("Small vs large, measured here")
wiki = lc.corpus_texts("wikipedia", 10)
rows = []
for m in pair:
    hs = lc.guard(lc.hellaswag, m, 40, progress=f"{m}: HellaSwag, 40 items")
    ppl = lc.guard(lc.perplexity, m, wiki, 512, 256, progress=f"{m}: perplexity, 10 passages")
    lab = lc.peek(lc.mauve_key(m, 80))
    if hs is None or ppl is None:
        continue
    rows.append({"model": m, "parameters (M)": lc.params(m), "HellaSwag acc (40 items)": hs.acc.value,
                 "acc 95% CI": f"[{hs.acc.ci95[0]:.2f}, {hs.acc.ci95[1]:.2f}]",
                 "perplexity (Wikipedia)": ppl.metrics.perplexity, "bits/byte": ppl.metrics.bits_per_byte,
                 "MAUVE (80 contexts)": f"{lab.result('auto').mauve:.4f}" if lab is not None
                 else "not yet: pick it on the MAUVE page"})
if rows:
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    st.caption("Measured on this machine and cached on disk. Perplexity and bits/byte are comparable across the two "
               "tokenizers through bits per byte only. MAUVE appears once the MAUVE page has generated the 80 "
               "continuations; every size and KL are on the **Small vs large** page. With 40 items a HellaSwag "
               "interval is wide: move the HellaSwag page's slider for more.")

st.subheader("Models")
rows = []
for spec in REGISTRY.values():
    a = availability(spec)
    rows.append({"model": spec.name, "parameters (M)": spec.params_m, "tokenizer": spec.tokenizer_family,
                 "available": "yes" if a.ok else "no", "source": a.source, "detail": a.detail})
st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
st.caption("Bundled models run offline. Hub models need internet (Gemma 3's original also needs an HF token).")
