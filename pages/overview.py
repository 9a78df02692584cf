"""Overview: what each measure tells and misses, and which models are available here."""
import pandas as pd
import streamlit as st

from evalcore.models import REGISTRY, availability

st.title("How far is a language model's text from human text?")
st.markdown(
    "This lab measures it four ways: **KL divergence**, **perplexity**, **MAUVE** and "
    "**HellaSwag accuracy**, on a small and a larger model that ship with the app."
)

st.subheader("Models")
rows = []
for spec in REGISTRY.values():
    a = availability(spec)
    rows.append({"model": spec.name, "parameters (M)": spec.params_m, "tokenizer": spec.tokenizer_family,
                 "available": "yes" if a.ok else "no", "source": a.source, "detail": a.detail})
st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
st.caption("Bundled models run offline. Hub models need internet (Gemma 3's original also needs an HF token).")
