"""Entry script: only navigation. Every view lives in pages/, every computation in explorer/."""
import streamlit as st

st.set_page_config(page_title="LLM Explorer", page_icon="🔬", layout="wide")

PAGES = [
    st.Page("pages/chat.py", title="Load & chat", icon="💬", url_path="chat", default=True),
    st.Page("pages/architecture.py", title="Architecture", icon="🧱", url_path="architecture"),
    st.Page("pages/internals.py", title="Internals", icon="🔎", url_path="internals"),
    st.Page("pages/compare.py", title="Compare", icon="⚖️", url_path="compare"),
]

current = st.navigation(PAGES, position="hidden")
with st.sidebar:
    st.markdown("### 🔬 LLM Explorer")
    for page in PAGES:
        st.page_link(page)
    st.divider()
current.run()
