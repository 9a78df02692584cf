"""The exploration app's frame: page config, navigation, shared sidebar.

Run with `make app` (or `streamlit run app.py`). Pages live in pages/ and stay thin:
widgets -> one call into evalcore.runs -> charts.
"""
import streamlit as st

st.set_page_config(page_title="evalcore lab", page_icon="📏", layout="wide")

nav = st.navigation(
    {
        "Start": [st.Page("pages/overview.py", title="Overview", icon="🏠", default=True)],
    }
)
nav.run()
