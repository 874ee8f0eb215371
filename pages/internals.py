import streamlit as st

st.info("This view is being built.")
