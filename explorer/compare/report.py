"""A comparison as a file that reopens, as tables, and as a report to download.

Why JSON: a comparison takes minutes of loading; saving it lets it be reopened later (in the page,
the CLI or a notebook) without any model. The file says what it is (`format`, `version`), so a
wrong file fails with a sentence rather than a KeyError deep in a page.
"""
from __future__ import annotations

import dataclasses
import html
import json
import math
from pathlib import Path
from typing import Any

from explorer.analyse.drift import DriftResult, PromptDrift
from explorer.compare import figures as figs
from explorer.compare.run import CompareConfig, ComparisonResult, PromptOutput, RunRecord
from explorer.model.safe_write import write_text
from explorer.views.units import gib

FORMAT = "llm-explorer-compare"
VERSION = 1


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------

def _finite(value: Any) -> Any:
    """JSON has no NaN/inf; they become null rather than an invalid file."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


def to_dict(result: ComparisonResult) -> dict:
    return _finite({"format": FORMAT, "version": VERSION, **dataclasses.asdict(result)})


def results_to_json(result: ComparisonResult) -> str:
    return json.dumps(to_dict(result), indent=1, ensure_ascii=False)


def _build(cls, data: dict):
    """A dataclass from a dict, ignoring keys it does not know (files from newer versions)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


def _drift(data: dict | None) -> DriftResult | None:
    if not data:
        return None
    drift = _build(DriftResult, data)
    drift.prompts = [_build(PromptDrift, p) for p in data.get("prompts", [])]
    return drift


def from_dict(data: dict) -> ComparisonResult:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError("This is not a comparison results file (it lacks the llm-explorer-compare marker).")
    if int(data.get("version", 0)) > VERSION:
        raise ValueError(f"This results file is version {data['version']}; this app reads up to {VERSION}.")
    try:
        runs = []
        for r in data.get("runs", []):
            run = _build(RunRecord, r)
            run.outputs = [_build(PromptOutput, o) for o in r.get("outputs", [])]
            run.drift = _drift(r.get("drift"))
            runs.append(run)
        return ComparisonResult(config=_build(CompareConfig, data["config"]), runs=runs,
                                machine=data.get("machine", {}), started=data.get("started", ""),
                                seconds=float(data.get("seconds", 0.0)))
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"The results file is damaged or incomplete ({type(exc).__name__}: {exc}).") from None


def results_from_json(text: str | bytes) -> ComparisonResult:
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"The results file is not valid JSON ({exc}).") from None
    return from_dict(data)


def save_results(result: ComparisonResult, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, results_to_json(result))
    return path


def open_results(path: str | Path) -> ComparisonResult:
    return results_from_json(Path(path).read_text(encoding="utf-8"))


# --------------------------------------------------------------------------------------------
# Tables (list of row dicts: the page makes DataFrames of them, the reports render them)
# --------------------------------------------------------------------------------------------

def speed_rows(result: ComparisonResult) -> list[dict]:
    """One row per run: memory and speed (numbers, for sorting and charts)."""
    rows = []
    for r in result.runs:
        rows.append({"model": r.model_name or r.model, "precision": r.precision,
                     "loaded as": r.loaded_precision or "—", "load s": r.load_seconds,
                     "footprint GiB": gib(r.footprint_bytes),
                     "peak GiB": gib(r.peak_bytes),
                     "TTFT s": r.time_to_first_token, "tokens/s": r.tokens_per_second,
                     "error": r.error or ""})
    return rows


def drift_rows(result: ComparisonResult) -> list[dict]:
    """One row per run: drift against its model's reference."""
    rows = []
    for r in result.runs:
        d = r.drift
        row = {"model": r.model_name or r.model, "precision": r.precision,
               "reference": "(reference)" if r.is_reference else (d.reference if d else "—"),
               "KL mean (nats)": d.kl_mean if d else (0.0 if r.is_reference else None),
               "KL max": d.kl_max if d else (0.0 if r.is_reference else None),
               "top-1 agreement": d.top1_agreement if d else (1.0 if r.is_reference else None),
               "min residual cosine": min(d.residual_cosine) if d and d.residual_cosine else None,
               "final relative error": d.residual_rel_error[-1] if d and d.residual_rel_error else None,
               "largest jump at layer": d.largest_jump_layer if d else None,
               "max head difference": (max(max(row) for row in d.attention_diff) if d and d.attention_diff
                                       else None),
               "note": r.drift_error or r.error or ""}
        rows.append(row)
    return rows


def output_rows(result: ComparisonResult) -> list[dict]:
    """One row per (prompt, run): the text each run produced."""
    rows = []
    for r in result.runs:
        for o in r.outputs:
            rows.append({"prompt": o.prompt, "run": r.label, "output": o.error and f"⚠ {o.error}" or o.text,
                         "new tokens": o.new_tokens, "TTFT s": o.time_to_first_token,
                         "tokens/s": o.tokens_per_second})
    return rows


# --------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------

_SPEED_FMT = {"load s": ".2f", "footprint GiB": ".3f", "peak GiB": ".3f", "TTFT s": ".3f", "tokens/s": ".1f"}
_DRIFT_FMT = {"KL mean (nats)": ".2e", "KL max": ".2e", "top-1 agreement": ".1%", "min residual cosine": ".5f",
              "final relative error": ".3e", "max head difference": ".3e"}


def _cell(value: Any, fmt: str | None) -> str:
    if value is None or value == "":
        return "—" if value is None else ""
    if fmt and isinstance(value, (int, float)) and not isinstance(value, bool):
        return format(value, fmt)
    return str(value)


def _markdown_table(rows: list[dict], fmts: dict[str, str]) -> str:
    if not rows:
        return "_(none)_\n"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        cells = [_cell(row[c], fmts.get(c)).replace("|", "\\|").replace("\n", " ") for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _machine_line(result: ComparisonResult) -> str:
    m = result.machine
    where = m.get("gpu") or m.get("cpu") or m.get("device", "?")
    return (f"{where} · torch {m.get('torch', '?')} · transformers {m.get('transformers', '?')} · "
            f"bitsandbytes {m.get('bitsandbytes') or 'absent'}")


def _peak_note(result: ComparisonResult) -> str:
    methods = {r.peak_method for r in result.runs if r.peak_method}
    notes = {"cuda_max_allocated": "peak = torch.cuda.max_memory_allocated during load and generation",
             "rss_sampled": "peak = highest process RSS (sampled every 20 ms) during load and generation, "
                            "minus the RSS at the run's start"}
    return "; ".join(notes[m] for m in sorted(methods) if m in notes)


def markdown_report(result: ComparisonResult, extra: str = "") -> str:
    """The whole comparison as Markdown: settings, speed and memory, drift, per-layer drift, outputs."""
    c = result.config
    parts = ["# Model comparison\n\n",
             f"{result.started} · {_machine_line(result)} · {result.seconds:.0f} s in all\n\n",
             f"Models: {', '.join(c.models)} · precisions: {', '.join(c.precisions)} · {len(c.prompts)} prompt(s) · "
             f"up to {c.max_new_tokens} new tokens{' (fixed length)' if c.fixed_length else ''}, greedy"
             f"{f', median of {c.repeats} timed repeats' if c.repeats > 1 else ''}\n",
             "\n## Speed and memory\n\n", _markdown_table(speed_rows(result), _SPEED_FMT),
             f"\n{_peak_note(result)}. TTFT = prefill and the first decode step; tokens/s = decode rate after "
             "the first token (means over prompts).\n"]
    if any(r.drift or r.is_reference for r in result.runs):
        parts += ["\n## Quality drift against the highest precision that loaded\n\n",
                  _markdown_table(drift_rows(result), _DRIFT_FMT),
                  "\nKL(P_ref ‖ P_run) of the next-token distribution and top-1 agreement over every prompt "
                  "position; residual cosine and relative error per decoder layer (mean over positions); head "
                  "difference = mean total-variation distance between attention rows.\n"]
        for r in result.runs:
            d = r.drift
            if d is None or not d.layers:
                continue
            parts.append(f"\n### Per layer: {r.label} against {d.reference}\n\n")
            rows = [{"layer": layer, "cosine": cos, "relative error": rel}
                    for layer, cos, rel in zip(d.layers, d.residual_cosine, d.residual_rel_error)]
            parts.append(_markdown_table(rows, {"cosine": ".6f", "relative error": ".3e"}))
    parts.append("\n## Outputs\n")
    for prompt in dict.fromkeys(o.prompt for r in result.runs for o in r.outputs):
        parts.append(f"\n**Prompt:** {prompt}\n")
        for r in result.runs:
            for o in r.outputs:
                if o.prompt == prompt:
                    text = f"⚠ {o.error}" if o.error else (o.text.strip() or "(empty)")
                    parts.append(f"\n- *{r.label}*: {text.replace(chr(10), ' ')}\n")
    errors = [r for r in result.runs if r.error and r.loaded_precision is None]
    if errors:
        parts.append("\n## Runs that did not load\n")
        parts += [f"\n- {r.label}: {r.error}\n" for r in errors]
    if extra:
        parts.append("\n" + extra.strip() + "\n")
    return "".join(parts)


def _html_table(rows: list[dict], fmts: dict[str, str]) -> str:
    if not rows:
        return "<p><em>(none)</em></p>"
    cols = list(rows[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(row[c], fmts.get(c)))}</td>" for c in cols) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_CSS = ("body{font-family:system-ui,sans-serif;margin:2rem;max-width:1400px}table{border-collapse:collapse;"
        "margin:.5rem 0 1.5rem}td,th{border:1px solid #ccc;padding:.25rem .5rem;font-size:.9rem;text-align:left}"
        "th{background:#f4f4f4}.out{white-space:pre-wrap}")


def html_report(result: ComparisonResult, plotlyjs: str | bool = True) -> str:
    """A self-contained HTML page with the tables and the interactive charts.

    plotlyjs=True embeds plotly.js once (works offline, ~4 MB); "cdn" links it instead (small file,
    needs network to view).
    """
    c = result.config
    figures = [figs.speed_memory_figure(result)]
    if any(r.drift for r in result.runs):
        figures += [figs.drift_summary_figure(result), figs.residual_drift_figure(result)]
        figures += [figs.attention_diff_figure(r.drift, r.label) for r in result.runs if r.drift and r.drift.attention_diff]
        figures.append(figs.position_kl_figure(result, 0))
    chart_html = []
    for i, fig in enumerate(figures):
        chart_html.append(fig.to_html(full_html=False, include_plotlyjs=plotlyjs if i == 0 else False))
    outputs = []
    for prompt in dict.fromkeys(o.prompt for r in result.runs for o in r.outputs):
        cells = "".join(f"<tr><td>{html.escape(r.label)}</td><td class='out'>"
                        f"{html.escape(('⚠ ' + o.error) if o.error else o.text)}</td></tr>"
                        for r in result.runs for o in r.outputs if o.prompt == prompt)
        outputs.append(f"<h3>{html.escape(prompt)}</h3><table><tbody>{cells}</tbody></table>")
    return "".join([
        "<!doctype html><html><head><meta charset='utf-8'><title>Model comparison</title>",
        f"<style>{_CSS}</style></head><body><h1>Model comparison</h1>",
        f"<p>{html.escape(result.started)} · {html.escape(_machine_line(result))} · {result.seconds:.0f} s in all</p>",
        f"<p>Models: {html.escape(', '.join(c.models))} · precisions: {html.escape(', '.join(c.precisions))} · "
        f"{len(c.prompts)} prompt(s) · up to {c.max_new_tokens} new tokens, greedy</p>",
        "<h2>Speed and memory</h2>", _html_table(speed_rows(result), _SPEED_FMT),
        f"<p>{html.escape(_peak_note(result))}.</p>",
        "<h2>Quality drift</h2>", _html_table(drift_rows(result), _DRIFT_FMT),
        "<h2>Charts</h2>", *chart_html,
        "<h2>Outputs</h2>", *outputs, "</body></html>"])


__all__ = ["FORMAT", "VERSION", "drift_rows", "from_dict", "html_report", "markdown_report", "open_results",
           "output_rows", "results_from_json", "results_to_json", "save_results", "speed_rows", "to_dict"]
