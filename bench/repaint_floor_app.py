"""The floor for bench_repaint.py: a fragment with a slider and one small chart, nothing else.

A layer switch on the Internals page cannot repaint faster than Streamlit reruns a fragment and
Plotly redraws one chart on the same machine; this page measures that, under the same load.
"""
import plotly.graph_objects as go
import streamlit as st


@st.fragment
def floor() -> None:
    v = st.slider("v", 0, 1000, 0, key="v")
    st.plotly_chart(go.Figure(go.Scatter(x=[0, 1], y=[v, v]), layout=dict(title=f"Floor {v}")), key="floor")


floor()
