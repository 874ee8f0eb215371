"""Architecture: the module tree of the loaded model, or of any model from its config alone.

Thin page: pick a source, let explorer build the view (cached on the config JSON), draw it.
Opens on the loaded model if there is one, else on the embedded model's config, so it works
offline at first launch without loading any weights.
"""
from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from explorer.analyse.architecture import (
    ROLE_LABELS,
    ArchitectureError,
    ArchitectureView,
    config_dict,
    describe_config,
    describe_model,
    model_from_config,
    module_table,
)
from explorer.analyse.data_flow import data_flow
from explorer.analyse.memory_estimate import GIB, RUNTIME_RESERVE_GIB, estimate_all, gpu_fit, kv_cache_bytes, precision_key
from explorer.model.configs import config_from_dict, config_from_hub, config_from_json, config_from_path, embedded_config, preset_config
from explorer.model.errors import clean_text, user_message
from explorer.model.footprint import RESIDENT_HELP
from explorer.model.precisions import PRECISIONS
from explorer.model.switches import local_paths_allowed
from explorer.presets import PRESETS
from explorer.views.figures.architecture import breakdown_figure, dataflow_figure, hierarchy_figure, memory_figure
from explorer.views.units import fmt_bytes, fmt_count
from pages._common import current_model, hf_token

LOADED, EMBEDDED, PATH, UPLOAD, HUB = "loaded", "embedded", "path", "upload", "hub"


# --------------------------------------------------------------------------- cached builds


@st.cache_data(show_spinner="Building the module tree from the config (meta device, no weights)…", max_entries=16)
def view_from_config(config_json: str, name: str, precision: str) -> tuple[ArchitectureView, list]:
    config = config_from_dict(json.loads(config_json), source=name)
    view = describe_config(config, name, precision)
    return view, estimate_all(model_from_config(config))


@st.cache_data(show_spinner="Reading the loaded model's modules…", max_entries=4)
def view_from_loaded(key: str, _model, name: str, precision: str) -> tuple[ArchitectureView, list]:
    """`key` (name, precision, footprint, config) identifies the resident model; the model itself is not hashed."""
    view = describe_model(_model, name, precision)
    return view, estimate_all(model_from_config(_model.config))


def config_json(config) -> str:
    return json.dumps(config_dict(config), sort_keys=True, default=str)


@st.cache_data(show_spinner=False)
def embedded_config_json() -> str:
    """Read once: the embedded config may come from parsing the GGUF's metadata."""
    return config_json(embedded_config())


# --------------------------------------------------------------------------- source


def source_options(loaded) -> dict[str, str]:
    options = {}
    if loaded is not None:
        options[LOADED] = f"Loaded model: {loaded.name} ({loaded.precision})"
    options[EMBEDDED] = "SmolLM2-135M-Instruct (embedded) — config only"
    options.update({k: f"{p.label} — config only" for k, p in PRESETS.items()})
    if local_paths_allowed():
        options[PATH] = "Local config.json or model folder"
    options[UPLOAD] = "Upload a config.json"
    options[HUB] = "Hub id (needs network)"
    return options


def pick_view(loaded) -> tuple[ArchitectureView, list] | None:
    options = source_options(loaded)
    if st.session_state.get("arch_source") not in options:  # e.g. the loaded model was unloaded meanwhile
        st.session_state.pop("arch_source", None)
    cols = st.columns([3, 2])
    source = cols[0].selectbox("Model", list(options), format_func=options.get, key="arch_source")
    if source == LOADED and loaded is not None:
        key = f"{loaded.name}|{loaded.precision}|{loaded.footprint_bytes}|{config_json(loaded.model.config)}"
        return view_from_loaded(key, loaded.model, loaded.name, loaded.precision)
    precisions = {k: p.label for k, p in PRECISIONS.items()}
    precision = cols[1].selectbox("Bytes shown for precision", list(precisions), format_func=precisions.get,
                                  key="arch_precision", help="Config-only models have no weights; sizes are "
                                                             "planned the way bitsandbytes would store them.")
    try:
        if source == EMBEDDED:
            return view_from_config(embedded_config_json(), "SmolLM2-135M-Instruct (embedded)", precision)
        elif source in PRESETS:
            config, name = preset_config(source), PRESETS[source].label
        elif source == PATH:
            path = st.text_input("Path to a config.json or a model folder", key="arch_path")
            if not path.strip():
                st.info("Enter a path on the server's disk.")
                return None
            config, name = config_from_path(path.strip()), path.strip()
        elif source == UPLOAD:
            upload = st.file_uploader("config.json", type=["json"], key="arch_upload")
            if upload is None:
                st.info("Upload a Hugging Face config.json; no weights are needed.")
                return None
            config, name = config_from_json(upload.getvalue(), upload.name), upload.name
        else:
            repo = st.text_input("Hub id, e.g. Qwen/Qwen2.5-0.5B-Instruct", key="arch_hub")
            if not repo.strip():
                st.info("Enter a hub id; only its config.json is fetched.")
                return None
            config, name = config_from_hub(repo, token=hf_token()), repo.strip()
        return view_from_config(config_json(config), name, precision)
    except ArchitectureError as exc:
        st.error(clean_text(str(exc)))
        return None
    except Exception as exc:  # noqa: BLE001 - any input becomes a message; the page keeps drawing
        st.error(user_message(exc))
        return None


# --------------------------------------------------------------------------- sections


CPU_REPACK_NOTE = (" On CPU, bitsandbytes repacks 4-bit weights at their first forward pass (double-quantized "
                   "scales are unpacked), so the number changes a little after the first answer (the embedded "
                   "model: 106.5 → 107.9 MiB); the chat page shows the same number at the same moment.")


def header(view: ArchitectureView, loaded=None) -> None:
    mode = "architecture only: built on the meta device, no weights in memory" if view.meta else "loaded model"
    st.caption(f"{view.name} · {view.model_class} · {mode}")
    a = view.anatomy
    cols = st.columns(4)
    cols[0].metric("Parameters", fmt_count(view.total_params), help=f"{view.total_params:,}; 4-bit weights "
                   "unpacked, tied weights counted once")
    cols[1].metric("Decoder layers", a.num_layers)
    cols[2].metric("Modules", view.num_modules)
    if loaded is not None and not view.meta and view.precision == loaded.precision:
        # the loaded model's memory now, measured as the chat page measures it (the cached tree's
        # bytes were taken when it was first drawn, before a CPU repack at the first forward)
        cols[3].metric(f"Memory ({view.precision})", fmt_bytes(loaded.resident_bytes),
                       help=RESIDENT_HELP + CPU_REPACK_NOTE)
    else:
        cols[3].metric(f"Memory ({view.precision})", fmt_bytes(view.total_bytes), help=RESIDENT_HELP)
    if a.missing:
        st.warning("Could not find: " + "; ".join(a.missing))


def flow_tab(view: ArchitectureView) -> None:
    """Data flow with one layer unfolded; a click on a block picks it for the details below."""
    a = view.anatomy
    n = max(a.num_layers, 1)
    clicked = clicked_flow_node(a)
    if clicked in view.graph:
        st.session_state["arch_module"] = clicked
    if st.session_state.get("arch_layer", 0) > n - 1:  # a model with fewer layers than the last one
        st.session_state["arch_layer"] = 0
    cols = st.columns([1, 3])
    folded = cols[0].checkbox("Fold every layer", key="arch_fold")
    layer = cols[1].slider("Unfold layer", 0, n - 1, key="arch_layer", disabled=folded or a.num_layers < 2) \
        if a.num_layers > 1 else 0
    drawing = data_flow(a, None if folded else layer)
    st.session_state["arch_flow_drawn"] = [(f.kind, f.module, f.span) for f in drawing.nodes]
    st.plotly_chart(dataflow_figure(drawing, selected=st.session_state.get("arch_module")), key="arch_flow",
                    on_select="rerun", selection_mode="points", width="stretch")


def clicked_flow_node(anatomy) -> str | None:
    """The module of a newly clicked block (None if no new click); a folded block also unfolds.

    The chart keeps its last selection across reruns, so only a selection not seen before acts;
    otherwise an old click would keep resetting the layer slider.
    """
    event = st.session_state.get("arch_flow") or {}
    points = (event.get("selection") or {}).get("points") or []
    signature = json.dumps(points, sort_keys=True, default=str)
    if not points or signature == st.session_state.get("arch_flow_seen"):
        return None
    st.session_state["arch_flow_seen"] = signature
    drawn = st.session_state.get("arch_flow_drawn", [])
    idx = points[0].get("point_index")
    if idx is None or points[0].get("curve_number", 2) != 2 or not 0 <= idx < len(drawn):
        return None
    kind, module, span = drawn[idx]
    if kind == "folded" and span:
        st.session_state["arch_layer"] = span[0]
        st.session_state["arch_fold"] = False
        return anatomy.layers[span[0]].name
    return module


def module_details(view: ArchitectureView) -> None:
    names = list(view.graph.nodes)
    if st.session_state.get("arch_module") not in names:
        st.session_state.pop("arch_module", None)
    name = st.selectbox("Module details: pick one, or click a block in the data flow", names, key="arch_module",
                        format_func=lambda x: x or "(model)")
    d = view.graph.nodes[name]
    st.markdown(f"**{name or '(model)'}** · `{d['cls']}` — {d['explain']}")
    facts = {
        "parameters": f"{d['params']:,} ({d['own_params']:,} its own)",
        "bytes": f"{fmt_bytes(d['bytes'])} ({d['bytes']:,})",
        "weight shapes": "; ".join(f"{k}: {'×'.join(map(str, v))}" for k, v in d["shapes"].items()) or "—",
        "dtype": ", ".join(d["dtypes"]) or "—",
        "quantization": d["quant"] or "none",
        "device": d["device"] or "—",
        "role": ROLE_LABELS.get(d["role"] or "", "—"),
    }
    if d["tied"]:
        facts["tied"] = "; ".join(d["tied"]) + " (counted once, at its first owner)"
    st.dataframe(pd.DataFrame({"": list(facts), "value": list(facts.values())}), hide_index=True, width="stretch")


def modules_tab(view: ArchitectureView) -> None:
    table = module_table(view.graph)
    cols = st.columns([2, 2, 1])
    text = cols[0].text_input("Filter by name or class", key="arch_filter")
    roles = cols[1].multiselect("Roles", list(ROLE_LABELS.values()), key="arch_roles")
    leaves = cols[2].checkbox("Only modules with weights", key="arch_leaves")
    shown = table
    if text:
        mask = table["module"].str.contains(text, case=False, regex=False) | \
            table["class"].str.contains(text, case=False, regex=False)
        shown = shown[mask]
    if roles:
        shown = shown[shown["role"].isin(roles)]
    if leaves:
        shown = shown[shown["own_params"] > 0]
    st.caption(f"{len(shown)} of {len(table)} modules")
    st.dataframe(shown, hide_index=True, width="stretch", height=420)
    st.download_button("Download CSV", shown.to_csv(index=False).encode(), file_name="modules.csv",
                       mime="text/csv", key="arch_csv")


def parameters_tab(view: ArchitectureView) -> None:
    rows = view.breakdown
    st.plotly_chart(breakdown_figure(rows), key="arch_breakdown", width="stretch")
    st.dataframe(pd.DataFrame([{"part": r.label, "parameters": r.params, "share": f"{r.share:.2%}",
                                "bytes": fmt_bytes(r.bytes), "note": r.note} for r in rows]),
                 hide_index=True, width="stretch")
    if view.tied:
        st.info("Tied weights (one tensor, several names): " + "; ".join(
            f"{k} = {', '.join(v)}" for k, v in view.tied.items()))


def memory_tab(view: ArchitectureView, estimates: list, loaded) -> None:
    config = config_from_dict(view.config, view.name)
    tokens = st.number_input("Context for the KV cache (tokens)", 0, 1_000_000, 4096, step=1024, key="arch_ctx")
    st.dataframe(pd.DataFrame([{"precision": e.label, "quantized params": fmt_count(e.quantized_params),
                                "get_memory_footprint (GiB)": round(e.footprint_bytes / GIB, 3),
                                "allocated incl. quant state (GiB)": round(e.allocated_bytes / GIB, 3)}
                               for e in estimates]), hide_index=True, width="stretch")
    extra = (kv_cache_bytes(config, int(tokens)) / GIB) + RUNTIME_RESERVE_GIB
    st.plotly_chart(memory_figure(estimates, extra_gib=extra), key="arch_memory", width="stretch")
    st.markdown("**Fits on** (weights + KV cache + "
                f"{RUNTIME_RESERVE_GIB:g} GiB for the CUDA context):")
    st.dataframe(gpu_fit(estimates, config, int(tokens)), hide_index=True, width="stretch")
    if loaded is not None and not view.meta:
        key = precision_key(loaded.precision, getattr(loaded.config, "double_quant", True))
        est = next((e for e in estimates if e.precision == key), None)
        if est is not None:
            err = est.footprint_bytes / loaded.footprint_bytes - 1
            st.caption(f"Measured on this load: get_memory_footprint {loaded.footprint_bytes / GIB:.4f} GiB; "
                       f"estimate for {est.label}: {est.footprint_bytes / GIB:.4f} GiB ({err:+.2%}).")
    st.caption("NF4/FP4 keep the LM head, embeddings and norms in bf16; int8 keeps them in fp16. "
               "Double quant stores the per-64-weight scales in 8 bits instead of 32.")


# --------------------------------------------------------------------------- page


def main() -> None:
    st.title("Architecture")
    loaded = current_model()
    built = pick_view(loaded)
    if built is None:
        return
    view, estimates = built
    header(view, loaded if st.session_state.get("arch_source", LOADED) == LOADED else None)
    tabs = st.tabs(["Hierarchy", "Data flow", "Modules", "Parameters", "Memory", "Config"])
    with tabs[0]:
        cols = st.columns(2)
        kind = cols[0].radio("Drawing", ["icicle", "treemap"], horizontal=True, key="arch_kind")
        size_by = cols[1].radio("Size by", ["params", "bytes"], horizontal=True, key="arch_size")
        st.plotly_chart(hierarchy_figure(view.graph, kind, size_by), key="arch_hierarchy", width="stretch")
        st.caption(f"Module tree sized by {'parameters' if size_by == 'params' else 'bytes'}. Click a block to "
                   "zoom in; the bar on top is the path back; hover for what a block does. Colours: embeddings, "
                   "attention, MLP, norms, LM head. Blocks without weights take no area.")
    with tabs[1]:
        flow_tab(view)
    with tabs[2]:
        modules_tab(view)
    with tabs[3]:
        parameters_tab(view)
    with tabs[4]:
        memory_tab(view, estimates, loaded)
    with tabs[5]:
        st.json(view.config, expanded=True)
    st.divider()
    module_details(view)


main()
