"""Streamlit glue shared by the pages: the one resident model, the token, operator switches.

The registry lives in `st.cache_resource`, so every session and rerun shares one model; nothing
per-request is kept on it. Per-session state (chat, captures) lives in `st.session_state`.
"""
from __future__ import annotations

import os

import streamlit as st

from explorer.model.loading import LoadConfig, LoadedModel, LoadError, ModelRegistry, memory_snapshot
from explorer.views.units import fmt_bytes
from pages._state import AUTOLOAD_TRIED, LOAD_ERROR


@st.cache_resource(show_spinner=False)
def registry() -> ModelRegistry:
    return ModelRegistry()


def current_model() -> LoadedModel | None:
    return registry().current


def operator_allows(name: str) -> bool:
    """Operator switches come from the environment only, never from a widget a visitor can tick."""
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes"}


def hf_token() -> str | None:
    """The token from the environment or Streamlit secrets. It is passed on, never displayed or stored."""
    token = os.environ.get("HF_TOKEN")
    if token:
        return token
    try:
        return st.secrets.get("HF_TOKEN")  # type: ignore[no-any-return]
    except Exception:  # noqa: BLE001 - no secrets file is the normal case
        return None


def load_into_registry(cfg: LoadConfig) -> LoadedModel | None:
    """Load with visible progress; a failure becomes a message and the app keeps serving."""
    cfg.token = hf_token()
    cfg.allow_pickle = operator_allows("EXPLORER_ALLOW_PICKLE")
    cfg.trust_remote_code = operator_allows("EXPLORER_ALLOW_REMOTE_CODE")
    with st.status(f"Loading {cfg.source} in {cfg.precision}…", expanded=True) as status:
        try:
            loaded = registry().load(cfg, progress=status.write)
        except LoadError as exc:
            status.update(label="Load failed", state="error", expanded=True)
            st.session_state[LOAD_ERROR] = str(exc)
            return None
        status.update(label=f"Loaded {loaded.name} ({loaded.precision}) in {loaded.load_seconds:.1f} s",
                      state="complete", expanded=False)
    st.session_state.pop(LOAD_ERROR, None)
    return loaded


def ensure_model() -> LoadedModel | None:
    """The resident model, loading the embedded default on first launch (unless turned off)."""
    loaded = current_model()
    autoload = os.environ.get("EXPLORER_AUTOLOAD", "1") != "0"
    if loaded is None and autoload and not st.session_state.get(AUTOLOAD_TRIED):
        st.session_state[AUTOLOAD_TRIED] = True
        loaded = load_into_registry(LoadConfig())
    return loaded


def memory_caption() -> str:
    snap = memory_snapshot()
    parts = [f"process RSS {fmt_bytes(snap.rss_bytes)}"]
    for dev, alloc in snap.cuda_allocated.items():
        parts.append(f"{dev} {fmt_bytes(alloc)} allocated / {fmt_bytes(snap.cuda_reserved[dev])} reserved")
    return " · ".join(parts)
