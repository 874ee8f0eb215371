"""Compare: the same prompts across models and precisions — speed, memory, output and drift.

Thin page: widgets build a CompareConfig, explorer.compare.run runs it, explorer.views.figures draws it.
Coexistence with the app's resident model: a comparison loads its own models one at a time, so
it first unloads the resident (chat) model — for every session, since there is one — and, unless
told not to, loads it again when the comparison ends. The page says so before and while it runs.
The result lives in this session's state; it can be downloaded and opened again later.
"""
from __future__ import annotations

import pandas as pd
import streamlit as st

from explorer.compare.run import CompareConfig, ComparisonResult, LoadAccess, RunRecord, run_comparison
from explorer.compare.figures import attention_diff_figure, drift_summary_figure, position_kl_figure, \
    residual_drift_figure, run_labels, speed_memory_figure
from explorer.model.precisions import LOAD_PRECISIONS as PRECISIONS
from explorer.presets import PRESETS
from explorer.views.teaching import escape_markdown
from explorer.views.text import reveal
from explorer.compare.report import drift_rows, html_report, markdown_report, results_from_json, results_to_json, \
    speed_rows
from explorer.model.errors import user_message
from explorer.model.switches import operator_switches
from explorer.model.worker import Request
from pages._common import hf_token, model_worker, queue_note, session_alive, session_id

RESULT = "compare_result"
DEFAULT_PROMPTS = "What is the capital of France?\nExplain in one sentence why the sky is blue."


# --------------------------------------------------------------------------- inputs


def choose_config() -> CompareConfig:
    cols = st.columns([2, 2, 1])
    presets = cols[0].multiselect("Models", list(PRESETS), default=["embedded"], key="cmp_models",
                                  format_func=lambda k: PRESETS[k].label)
    extra = cols[0].text_input("Other models (comma-separated hub ids, folders or .gguf paths)", key="cmp_extra")
    precisions = cols[1].multiselect("Precisions", list(PRECISIONS), default=["nf4", "bf16"], key="cmp_precisions",
                                     help="Drift is measured against the highest of these that loads "
                                          "(fp32 > bf16 > fp16 > int8 > nf4/fp4).")
    prompts = cols[1].text_area("Prompts, one per line", DEFAULT_PROMPTS, key="cmp_prompts", height=100)
    max_new = cols[2].number_input("New tokens", 1, 1024, 32, key="cmp_max_new")
    fixed = cols[2].checkbox("Fixed length", key="cmp_fixed",
                             help="Generate exactly this many tokens (EOS cannot stop early): equal work per run.")
    drift = cols[2].checkbox("Quality drift", True, key="cmp_drift")
    attention = cols[2].checkbox("Per-head attention", True, key="cmp_attention", disabled=not drift)
    models = list(presets) + [m.strip() for m in extra.split(",") if m.strip()]
    return CompareConfig(models=models, precisions=list(precisions),
                         prompts=[p for p in prompts.splitlines() if p.strip()], max_new_tokens=int(max_new),
                         fixed_length=fixed, drift=drift, attention_drift=drift and attention)


def compare_on_worker(config: CompareConfig, reload: bool, access: LoadAccess, req: Request) -> ComparisonResult:
    """Runs on the model worker, which has the machine to itself meanwhile: the chat model is
    unloaded, every run loads its own model, and the chat model comes back when asked."""
    reg = model_worker().registry
    resident = reg.current
    previous = (resident.config, resident.name, resident.precision) if resident is not None else None
    del resident
    if previous is not None:
        req.say(f"Unloading the chat model ({previous[1]}, {previous[2]}) so the comparison has the memory.")
        reg.unload()
    result = run_comparison(config, progress=req.say, access=access)
    if reload and previous is not None:
        req.say(f"Loading the chat model ({previous[1]}) again…")
        try:
            reg.load(previous[0], progress=req.say)
        except Exception as exc:  # noqa: BLE001 - a message, never a traceback
            req.say(f"The chat model could not be loaded again: {user_message(exc)}")
    return result


def run(config: CompareConfig, reload: bool) -> ComparisonResult | None:
    switches = operator_switches()  # the same switches as every other page and CLI subcommand
    access = LoadAccess(token=hf_token(), allow_pickle=switches.allow_pickle,
                        trust_remote_code=switches.trust_remote_code)
    with st.status(f"Comparing {len(config.models)} model(s) × {len(config.precisions)} precision(s)…",
                   expanded=True) as status:
        try:
            result = model_worker().exclusive(
                lambda req: compare_on_worker(config, reload, access, req), session_id(), progress=status.write,
                alive=session_alive(), on_wait=lambda n: status.write(queue_note(n)) if n else None)
        except Exception as exc:  # noqa: BLE001 - cancelled, or the unexpected: a message, never a traceback
            status.update(label="The comparison did not run to its end", state="error", expanded=False)
            st.error(user_message(exc))
            return None
        loaded = sum(r.loaded_precision is not None for r in result.runs)
        state = "complete" if loaded else "error"
        status.update(label=f"Compared {loaded} of {len(result.runs)} runs in {result.seconds:.0f} s",
                      state=state, expanded=False)
    return result


def open_saved() -> None:
    upload = st.file_uploader("Open saved results (.json)", type=["json"], key="cmp_upload")
    if upload is None or st.session_state.get("cmp_upload_id") == upload.file_id:
        return
    st.session_state["cmp_upload_id"] = upload.file_id
    try:
        st.session_state[RESULT] = results_from_json(upload.getvalue())
    except ValueError as exc:
        st.error(str(exc))


# --------------------------------------------------------------------------- results


def show_speed(result: ComparisonResult) -> None:
    st.subheader("Speed and memory")
    st.dataframe(pd.DataFrame(speed_rows(result)), hide_index=True, key="cmp_speed_table",
                 column_config={"load s": st.column_config.NumberColumn(format="%.2f"),
                                "footprint GiB": st.column_config.NumberColumn(format="%.3f"),
                                "peak GiB": st.column_config.NumberColumn(format="%.3f"),
                                "TTFT s": st.column_config.NumberColumn(format="%.3f"),
                                "tokens/s": st.column_config.NumberColumn(format="%.1f")})
    methods = {r.peak_method for r in result.runs if r.peak_method}
    st.caption("Peak: " + ("CUDA max allocated" if "cuda_max_allocated" in methods else
                           "highest process RSS sampled during load and generation, minus the RSS at the start")
               + ". TTFT: prefill and first step. tokens/s: decode after the first token. Means over prompts.")
    if any(r.loaded_precision for r in result.runs):
        st.plotly_chart(speed_memory_figure(result), key="cmp_speed_chart")
    for r in result.runs:
        for notice in r.notices:
            st.info(f"{r.label}: {notice}")


def show_outputs(result: ComparisonResult) -> None:
    st.subheader("Outputs side by side")
    runs = [r for r in result.runs if r.outputs]
    if not runs:
        st.info("No run produced output.")
        return
    labels = run_labels(runs)
    for i, prompt in enumerate(dict.fromkeys(o.prompt for r in runs for o in r.outputs)):
        st.markdown(f"**{i + 1}.** {escape_markdown(reveal(prompt))}")   # a prompt is shown, never rendered
        per_row = min(len(runs), 3)
        for start in range(0, len(runs), per_row):
            cols = st.columns(per_row)
            for col, label, r in zip(cols, labels[start:start + per_row], runs[start:start + per_row]):
                out = next((o for o in r.outputs if o.prompt == prompt), None)
                if out is None:
                    continue
                col.caption(f"{label} · {out.new_tokens} tokens" if out.error is None else label)
                if out.error:
                    col.warning(out.error)
                else:
                    col.text(reveal(out.text.strip()) or "(empty)")


def show_drift(result: ComparisonResult) -> None:
    if not any(r.drift or r.is_reference for r in result.runs):
        return
    st.subheader("Quality drift: what quantization changes inside")
    st.dataframe(pd.DataFrame(drift_rows(result)), hide_index=True, key="cmp_drift_table",
                 column_config={"top-1 agreement": st.column_config.NumberColumn(format="percent")})
    drifted = [r for r in result.runs if r.drift is not None]
    if not drifted:
        st.info("Drift needs at least two precisions of the same model that load.")
        return
    st.plotly_chart(drift_summary_figure(result), key="cmp_drift_chart")
    st.caption("Per layer: the cosine similarity and relative error of the residual stream against the reference. "
               "The layer where a line moves is where the drift enters.")
    st.plotly_chart(residual_drift_figure(result), key="cmp_residual_chart")
    position_view(result, [p.prompt for p in drifted[0].drift.prompts])
    with_heads = [r for r in drifted if r.drift.attention_diff]
    if with_heads:
        head_view(with_heads)
    for r in result.runs:
        if r.drift_error:
            st.warning(f"{r.label}: drift could not be measured: {r.drift_error}")


@st.fragment
def position_view(result: ComparisonResult, prompts: list[str]) -> None:
    """Switching the prompt redraws this chart only."""
    pick = st.selectbox("Prompt", range(len(prompts)), format_func=lambda i: prompts[i], key="cmp_kl_prompt")
    st.plotly_chart(position_kl_figure(result, int(pick or 0)), key="cmp_position_chart")


@st.fragment
def head_view(runs: list[RunRecord]) -> None:
    """Switching the run redraws this heatmap only."""
    labels = [r.label for r in runs]
    choice = st.selectbox("Attention difference of", range(len(labels)), format_func=lambda i: labels[i],
                          key="cmp_head_run")
    r = runs[int(choice or 0)]
    st.plotly_chart(attention_diff_figure(r.drift, r.label), key="cmp_head_chart")


def show_downloads(result: ComparisonResult) -> None:
    stamp = "".join(ch for ch in result.started if ch.isdigit())[:12] or "results"
    cols = st.columns(3)
    cols[0].download_button("Download results (.json)", lambda: results_to_json(result), f"compare-{stamp}.json",
                            "application/json", key="cmp_dl_json", on_click="ignore")
    cols[1].download_button("Download report (.md)", lambda: markdown_report(result), f"compare-{stamp}.md",
                            "text/markdown", key="cmp_dl_md", on_click="ignore")
    cols[2].download_button("Download report (.html)", lambda: html_report(result), f"compare-{stamp}.html",
                            "text/html", key="cmp_dl_html", on_click="ignore")


def show(result: ComparisonResult) -> None:
    c = result.config
    st.caption(f"{result.started} · {', '.join(c.models)} · {', '.join(c.precisions)} · {len(c.prompts)} prompt(s) · "
               f"{result.machine.get('gpu') or result.machine.get('cpu', '')}")
    failed = [r for r in result.runs if r.loaded_precision is None]
    for r in failed:
        st.error(f"{r.label}: {r.error}")
    show_speed(result)
    show_outputs(result)
    show_drift(result)
    show_downloads(result)


# --------------------------------------------------------------------------- page


def main() -> None:
    st.title("Compare models and precisions")
    st.caption("Every model runs in every precision on the same prompts, one load at a time with memory freed in "
               "between. Running a comparison unloads the chat model (shared by every session) first.")
    config = choose_config()
    cols = st.columns([1, 3])
    reload = cols[1].checkbox("Load the chat model again afterwards", True, key="cmp_reload")
    if cols[0].button("Run comparison", type="primary", key="cmp_run"):
        try:
            config.validate()
        except ValueError as exc:
            st.error(str(exc).capitalize())
        else:
            st.session_state[RESULT] = run(config, reload)
    open_saved()
    result = st.session_state.get(RESULT)
    if result is None:
        st.info("Choose models, precisions and prompts, then run; or open saved results.")
        return
    show(result)


main()
