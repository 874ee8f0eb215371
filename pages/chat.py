"""Load & chat: choose a model and precision, see what it costs, talk to it, free it."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from explorer.model.errors import user_message
from explorer.model.footprint import RESIDENT_HELP
from explorer.model.generation import conversation
from explorer.model.load_config import COMPUTE_DTYPES, LoadConfig, plan_precision
from explorer.model.precisions import LOAD_PRECISIONS as PRECISIONS
from explorer.model.switches import local_paths_allowed
from explorer.model.worker_stream import WorkerStream, gather
from explorer.presets import PRESETS
from explorer.views.units import fmt_bytes
from pages._chat_panel import chat_panel, generation_options
from pages._common import ensure_model, load_error_banner, load_into_registry, memory_caption, model_worker, session_alive, session_id, show_error
from pages._state import AUTOLOAD_TRIED, LOAD_ERROR

SOURCE_KINDS = ("Preset", "Hub id", "Local folder or .gguf file")


def source_kinds() -> tuple[str, ...]:
    """The local-path source is offered only where the operator allows paths on the server's disk."""
    return SOURCE_KINDS if local_paths_allowed() else SOURCE_KINDS[:2]


def loader_form() -> tuple[LoadConfig | None, object]:
    """The sidebar form. Returns the config to load now (the load itself runs in the main area,
    where its progress and error are seen) and a slot for the memory caption, filled after any
    load so it never shows the RSS from before it."""
    requested = None
    with st.sidebar:
        st.header("Model")
        kind = st.radio("Source", source_kinds(), key="load_kind", horizontal=False)
        if kind == "Preset":
            key = st.selectbox("Preset", list(PRESETS), format_func=lambda k: PRESETS[k].label.split(" (")[0],
                               key="load_preset")   # the name only: "(embedded, offline)" was cut; the note says it
            st.caption(PRESETS[key].note)
            source = key
        elif kind == "Hub id":
            source = st.text_input("Hub id", placeholder="owner/name", key="load_hub_id")
        else:
            source = st.text_input("Path", placeholder="/path/to/folder or model.gguf", key="load_path")
        precision = st.selectbox("Precision", PRECISIONS, index=0, key="load_precision")
        four_bit = precision in {"nf4", "fp4"}
        double_quant = st.toggle("Double quantization", value=True, key="load_double_quant", disabled=not four_bit)
        compute = st.selectbox("4-bit compute dtype", COMPUTE_DTYPES, key="load_compute", disabled=not four_bit,
                               help="auto: bf16 on a GPU or a CPU with native bf16, fp32 on other CPUs "
                                    f"(here: {plan_precision(LoadConfig())[1]}).")
        c1, c2 = st.columns(2)
        if c1.button("Load", type="primary", key="load_button"):
            requested = LoadConfig(source=source, precision=precision, double_quant=double_quant,
                                   compute_dtype=compute)
        if c2.button("Unload", key="unload_button"):
            try:
                model_worker().unload(session_id(), alive=session_alive())
            except Exception as exc:  # noqa: BLE001 - e.g. cancelled: a message, never a traceback
                show_error(user_message(exc))
            st.session_state[AUTOLOAD_TRIED] = True
        status_slot = st.container()
    return requested, status_slot


def model_card(loaded) -> None:
    if loaded is None:
        st.info("No model is loaded. Choose one in the sidebar.")
        return
    st.subheader(loaded.name)
    c1, c2, c3, c4 = st.columns(4)
    compute = f" · {loaded.compute_dtype} compute" if loaded.compute_dtype else ""
    c1.metric("Precision", loaded.precision, help=f"Weights in {loaded.precision}{compute}.")
    if loaded.compute_dtype:
        c1.caption(f"4-bit matmuls in {loaded.compute_dtype}")
    c2.metric("Memory", fmt_bytes(loaded.resident_bytes), help=RESIDENT_HELP)   # the same number as Architecture
    c3.metric("Load time", f"{loaded.load_seconds:.1f} s")
    c4.metric("Context", f"{loaded.context_length or '?'} tokens")
    for notice in loaded.notices:
        st.info(notice)
    with st.expander("Device map (where each top-level module sits)"):
        st.dataframe(pd.DataFrame(sorted(loaded.device_map.items()), columns=["module", "device"]),
                     hide_index=True, key="device_map_table")


def batch_section(loaded) -> None:
    with st.expander("Batch: several prompts decoded together"):
        text = st.text_area("One prompt per line", key="batch_prompts", height=120)
        options = generation_options("batch")
        if st.button("Generate batch", key="batch_button", disabled=loaded is None):
            prompts = [line for line in text.splitlines() if line.strip()]
            convs = [conversation(p) for p in prompts]
            try:
                with st.spinner(f"Generating {len(prompts)} answers together…"):
                    # rows of the worker's one decode batch, next to other sessions' answers
                    streams = [WorkerStream(model_worker(), c, options, session_id(), load_id=loaded.load_id,
                                            abandon_after_s=max(options.timeout_s, 10.0)) for c in convs]
                    results = gather(streams, session_alive())
            except Exception as exc:  # noqa: BLE001 - GenerationError, ModelReplaced, a worker error, or the unexpected
                st.error(user_message(exc))
                return
            st.dataframe(pd.DataFrame([{"prompt": p, "answer": r.text, "new tokens": r.new_tokens,
                                        "seconds": round(r.seconds, 2), "waited (s)": round(r.queued_seconds, 2)}
                                       for p, r in zip(prompts, results)]),
                         hide_index=True, key="batch_results")


requested, status_slot = loader_form()
if requested is not None:
    load_into_registry(requested)
loaded = ensure_model()
load_error_banner()
with status_slot:  # filled after the load, so the RSS is never the one from before it
    if st.session_state.get(LOAD_ERROR):
        st.caption("The load failed: see the message in the page.")
    st.caption(memory_caption(), help="Measured after this page's last load or unload.")
model_card(loaded)
st.divider()
chat_panel(loaded)
batch_section(loaded)
