"""Overview: what each measure tells and misses, and which models are available here."""
import pandas as pd
import streamlit as st

from evalcore.models import REGISTRY, availability

st.title("How far is a language model's text from human text?")
st.markdown(
    "This lab measures it four ways on a small and a larger model that ship with the app "
    "(SmolLM2-135M and Gemma 3 270M). Each page lets you move the knobs and watch the number respond."
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
st.info("The headline comparison of the two models, measured here, is on the **Small vs large** page.")

st.subheader("Models")
rows = []
for spec in REGISTRY.values():
    a = availability(spec)
    rows.append({"model": spec.name, "parameters (M)": spec.params_m, "tokenizer": spec.tokenizer_family,
                 "available": "yes" if a.ok else "no", "source": a.source, "detail": a.detail})
st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
st.caption("Bundled models run offline. Hub models need internet (Gemma 3's original also needs an HF token).")
