"""Compare: the same prompts across models and precisions — speed, memory, output and drift.

Thin page: widgets build a CompareConfig, explorer.compare.run runs it, explorer.compare.figures draws it.
Coexistence with the app's resident model: a comparison loads its own models one at a time, so
it first unloads the resident (chat) model — for every session, since there is one — and, unless
told not to, loads it again when the comparison ends. The page says so before and while it runs.
The result lives in this session's state; it can be downloaded and opened again later.
A comparison runs in a thread (pages/_compare_job.py) under a process-wide lock
(explorer/compare/lock.py): one at a time across sessions, cancellable, and the form's inputs
survive a visit to another page.
"""
from __future__ import annotations

import time
import uuid

import pandas as pd
import streamlit as st

from explorer.compare.figures import (
    attention_diff_figure,
    drift_summary_figure,
    position_kl_figure,
    residual_drift_figure,
    run_labels,
    speed_memory_figure,
)
from explorer.compare.lock import COMPARE_LOCK, CompareBusy
from explorer.compare.report import drift_rows, html_report, markdown_report, results_from_json, results_to_json, speed_rows
from explorer.compare.run import CANCELLED, CompareConfig, ComparisonResult, LoadAccess, RunRecord
from explorer.model.precisions import LOAD_PRECISIONS as PRECISIONS
from explorer.model.switches import local_paths_allowed, operator_switches
from explorer.presets import PRESETS
from explorer.views.text import markdown_text, show_hidden
from explorer.views.units import table_cells
from pages import _compare_job as compare_job
from pages._common import hf_token, model_worker, session_alive, session_id
from pages._state import COMPARE_INPUTS, COMPARE_JOB, COMPARE_OWNER, COMPARE_RESULT

RESULT = COMPARE_RESULT
ENDED = "compare_ended"            # (kind, message) of the comparison that just ended, shown once
DEFAULT_PROMPTS = "What is the capital of France?\nExplain in one sentence why the sky is blue."


# --------------------------------------------------------------------------- inputs


INPUT_DEFAULTS: dict[str, object] = {
    "cmp_models": ["embedded"], "cmp_extra": "", "cmp_precisions": ["nf4", "bf16"], "cmp_prompts": DEFAULT_PROMPTS,
    "cmp_max_new": 32, "cmp_fixed": False, "cmp_drift": True, "cmp_attention": True, "cmp_reload": True,
}


def restore_inputs() -> None:
    """Put back the form's values before its widgets are drawn.

    Why: Streamlit forgets a widget's value on any run that does not draw it, so a visit to
    another page reset the whole form. The values are copied to a plain key (kept_inputs) on
    every run and restored from it; the widgets take their value from session state only (no
    default argument), so Streamlit has one source and no warning."""
    kept = st.session_state.get(COMPARE_INPUTS, {})
    for key, default in INPUT_DEFAULTS.items():
        if key not in st.session_state:
            value = kept.get(key, default)
            st.session_state[key] = list(value) if isinstance(value, list) else value


def keep_inputs() -> None:
    st.session_state[COMPARE_INPUTS] = {k: st.session_state.get(k, d) for k, d in INPUT_DEFAULTS.items()}


def choose_config(disabled: bool = False) -> CompareConfig:
    cols = st.columns([2, 2, 1])
    presets = cols[0].multiselect("Models", list(PRESETS), key="cmp_models", format_func=lambda k: PRESETS[k].label,
                                  disabled=disabled)
    other = ("Other models (comma-separated hub ids, folders or .gguf paths)" if local_paths_allowed()
             else "Other models (comma-separated hub ids)")
    extra = cols[0].text_input(other, key="cmp_extra", disabled=disabled)
    precisions = cols[1].multiselect("Precisions", list(PRECISIONS), key="cmp_precisions", disabled=disabled,
                                     help="Drift is measured against the highest of these that loads "
                                          "(fp32 > bf16 > fp16 > int8 > nf4/fp4).")
    prompts = cols[1].text_area("Prompts, one per line", key="cmp_prompts", height=100, disabled=disabled)
    max_new = cols[2].number_input("New tokens", min_value=1, max_value=1024, key="cmp_max_new", disabled=disabled)
    fixed = cols[2].checkbox("Fixed length", key="cmp_fixed", disabled=disabled,
                             help="Generate exactly this many tokens (EOS cannot stop early): equal work per run.")
    drift = cols[2].checkbox("Quality drift", key="cmp_drift", disabled=disabled)
    attention = cols[2].checkbox("Per-head attention", key="cmp_attention", disabled=disabled or not drift)
    models = list(presets) + [m.strip() for m in extra.split(",") if m.strip()]
    return CompareConfig(models=models, precisions=list(precisions),
                         prompts=[p for p in prompts.splitlines() if p.strip()], max_new_tokens=int(max_new),
                         fixed_length=fixed, drift=drift, attention_drift=drift and attention)


def owner_id() -> str:
    """This session's opaque id for the compare lock (not shown to anyone)."""
    return st.session_state.setdefault(COMPARE_OWNER, uuid.uuid4().hex)


def start_run(config: CompareConfig, reload: bool) -> None:
    """Validate, take the lock and start the comparison thread; say clearly why not otherwise."""
    try:
        config.validate()
    except ValueError as exc:
        st.error(str(exc).capitalize())
        return
    switches = operator_switches()  # the same switches as every other page and CLI subcommand
    access = LoadAccess(token=hf_token(), allow_pickle=switches.allow_pickle,
                        trust_remote_code=switches.trust_remote_code, allow_local_paths=switches.allow_local_paths)
    try:
        st.session_state[COMPARE_JOB] = compare_job.start(config, reload, owner_id(), model_worker(), access,
                                                          session_id(), session_alive())
    except CompareBusy as exc:
        st.warning(str(exc), icon="⏳")


def cancel_job() -> None:
    job = st.session_state.get(COMPARE_JOB)
    if job is not None:
        job.cancel.set()


@st.fragment(run_every=0.5)
def job_status() -> None:
    """Redrawn twice a second while this session's comparison runs; a full rerun once it ends."""
    job = st.session_state.get(COMPARE_JOB)
    if job is None:
        return
    if job.done.is_set():
        finish_job(job)
        st.rerun()
    label = f"Comparing {compare_job.describe(job.config)}… ({time.time() - job.started:.0f} s)"
    if job.cancelled:
        label = "Cancelling: the step in progress finishes first…"
    with st.status(label, expanded=True, state="running"):
        for line in job.lines[-12:]:
            st.write(line)
    st.button("Cancel comparison", key="cmp_cancel", on_click=cancel_job, disabled=job.cancelled,
              icon=":material/cancel:")


def finish_job(job) -> None:
    """Move a finished job's result into the session, with a line saying how it ended."""
    st.session_state.pop(COMPARE_JOB, None)
    if job.result is not None:
        st.session_state[RESULT] = job.result
    ran = sum(r.loaded_precision is not None for r in job.result.runs) if job.result else 0
    if job.error:
        st.session_state[ENDED] = ("error", job.error)
    elif job.cancelled:
        whole = sum(r.loaded_precision is not None and r.error != CANCELLED for r in job.result.runs) if job.result else 0
        st.session_state[ENDED] = ("warning", f"Cancelled: {whole} run(s) had finished before it; the results so far "
                                              "are below (an interrupted run keeps the prompts it finished).")
    else:
        total = len(job.result.runs) if job.result else 0
        st.session_state[ENDED] = ("success", f"Compared {ran} of {total} runs in {job.result.seconds:.0f} s.")


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


def table(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(table_cells(rows))     # "—" where a run has no number, never a raw "None"


def show_speed(result: ComparisonResult) -> None:
    st.subheader("Speed and memory")
    st.dataframe(table(speed_rows(result)), hide_index=True, key="cmp_speed_table",
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
        st.markdown(f"**{i + 1}.** {markdown_text(prompt)}")   # a prompt is shown, never rendered
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
                    col.text(show_hidden(out.text.strip()) or "(empty)")


def show_drift(result: ComparisonResult) -> None:
    if not any(r.drift or r.is_reference for r in result.runs):
        return
    st.subheader("Quality drift: what quantization changes inside")
    st.dataframe(table(drift_rows(result)), hide_index=True, key="cmp_drift_table",
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
    parts = (result.started, ", ".join(c.models), ", ".join(c.precisions), f"{len(c.prompts)} prompt(s)",
             result.machine.get("gpu") or result.machine.get("cpu", ""))
    st.caption(" · ".join(str(p) for p in parts if p))      # a file without a date or machine shows no empty "·"
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
    restore_inputs()
    job = st.session_state.get(COMPARE_JOB)
    if job is not None and job.done.is_set():
        finish_job(job)
        job = None
    config = choose_config(disabled=job is not None)
    cols = st.columns([1, 3])
    reload = cols[1].checkbox("Load the chat model again afterwards", key="cmp_reload", disabled=job is not None)
    keep_inputs()
    holder = COMPARE_LOCK.holder
    if job is None and holder is not None and holder.owner != owner_id():
        st.info(str(CompareBusy(holder)), icon="⏳")
    if cols[0].button("Run comparison", type="primary", key="cmp_run", disabled=job is not None):
        start_run(config, reload)
        if st.session_state.get(COMPARE_JOB) is not None:
            st.rerun()                      # redraw the form disabled, with the live status
    if st.session_state.get(COMPARE_JOB) is not None:  # the fragment's timer runs only while a job does
        job_status()
    ended = st.session_state.pop(ENDED, None)
    if ended is not None:
        getattr(st, ended[0])(ended[1])
    open_saved()
    result = st.session_state.get(RESULT)
    if result is None:
        if st.session_state.get(COMPARE_JOB) is None:
            st.info("Choose models, precisions and prompts, then run; or open saved results.")
        return
    show(result)


main()
