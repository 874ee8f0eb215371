"""Streamlit glue shared by the pages: the one resident model, the token, operator switches.

The registry lives in `st.cache_resource`, so every session and rerun shares one model; nothing
per-request is kept on it. Per-session state (chat, captures) lives in `st.session_state`.
"""
from __future__ import annotations

import os

import streamlit as st

from explorer.model.errors import Secret, env_token, user_message
from explorer.model.loading import LoadConfig, LoadedModel, ModelRegistry, memory_snapshot
from explorer.model.switches import env_flag, operator_switches
from explorer.views.units import fmt_bytes
from pages._state import AUTOLOAD_TRIED, LOAD_ERROR


@st.cache_resource(show_spinner=False)
def registry() -> ModelRegistry:
    return ModelRegistry()


def current_model() -> LoadedModel | None:
    return registry().current


def operator_allows(name: str) -> bool:
    """Operator switches come from the environment only, never from a widget a visitor can tick
    (explorer.model.switches reads them, for the CLI too)."""
    return env_flag(name)


def hf_secret() -> Secret | None:
    """The token from the environment or Streamlit secrets, wrapped so it is never displayed or stored
    in the clear (making the Secret also registers it with the message scrubber)."""
    token = env_token()
    if token:
        return token
    try:
        value = st.secrets.get("HF_TOKEN")
    except Exception:  # noqa: BLE001 - no secrets file is the normal case
        return None
    return Secret(value) if value else None


def hf_token() -> str | None:
    secret = hf_secret()
    return secret.reveal() if secret else None


def show_error(message: str) -> None:
    """An error where the user is looking: the main area, kept until dismissed."""
    st.session_state[LOAD_ERROR] = message


def load_error_banner() -> None:
    """Draw the kept error (if any) in the main area with a button to dismiss it."""
    message = st.session_state.get(LOAD_ERROR)
    if not message:
        return
    st.error(message, icon="⚠️")
    if st.button("Dismiss", key="load_error_dismiss"):
        st.session_state.pop(LOAD_ERROR, None)
        st.rerun()


def load_into_registry(cfg: LoadConfig) -> LoadedModel | None:
    """Load with visible progress; any failure becomes a message and the app keeps serving."""
    switches = operator_switches()
    cfg.token = hf_secret()
    cfg.allow_pickle = switches.allow_pickle
    cfg.trust_remote_code = switches.trust_remote_code
    label = cfg.source if isinstance(cfg.source, str) else "the model"
    with st.status(f"Loading {label[:80]} in {cfg.precision}…", expanded=True) as status:
        try:
            loaded = registry().load(cfg, progress=status.write)
        except Exception as exc:  # noqa: BLE001 - the one boundary: a message, never a traceback
            status.update(label="Load failed: the model loaded before is still there" if current_model() else
                          "Load failed", state="error", expanded=False)
            show_error(user_message(exc))
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
