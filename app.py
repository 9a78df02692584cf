"""The exploration app's frame: page config, navigation, shared sidebar.

Run with `make app` (or `streamlit run app.py`). Pages live in app_pages/ and stay thin:
widgets -> one call into evalcore.runs (through lab_cache) -> charts. Not `pages/`:
Streamlit treats a folder of that name as a legacy multipage app, and a deep link such as
/mauve as the first visit of a fresh server then ran the page without this frame.
"""
import streamlit as st

# An emoji: a material-icon page icon is drawn from a font the browser fetches from a CDN
# (the navigation's icons use the font bundled with Streamlit).
st.set_page_config(page_title="evalcore lab", page_icon="📏", layout="wide")

nav = st.navigation(
    {
        "Start": [st.Page("app_pages/overview.py", title="Overview", icon=":material/home:", default=True)],
        "Measures": [
            st.Page("app_pages/kl.py", title="KL divergence", icon=":material/compare_arrows:"),
            st.Page("app_pages/perplexity.py", title="Perplexity", icon=":material/local_fire_department:"),
            st.Page("app_pages/mauve.py", title="MAUVE", icon=":material/scatter_plot:"),
            st.Page("app_pages/hellaswag.py", title="HellaSwag", icon=":material/task_alt:"),
        ],
        "Experiment": [st.Page("app_pages/small_vs_large.py", title="Small vs large", icon=":material/bar_chart:")],
    }
)
import lab_cache as lc

lc.import_backends()  # once per process, before any session's first heavy call (see its docstring)
with st.sidebar:
    st.markdown(lc.device_line())
    st.caption("Bundled models run offline; numbers are cached on disk, so a second visit is instant. "
               "The Overview lists which models are bundled, cached or downloadable here.")
    if hint := lc.token_hint():  # online without a token: the lesson runs on SmolLM2 135M / 360M
        st.info(hint, icon=":material/key:")
nav.run()
