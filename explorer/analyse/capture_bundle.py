"""A capture file with the results derived from it: save them together, open them together.

Why above record: the results (head summaries, logit lens, token texts) are computed and typed
here in analyse, and a Capture no longer holds them, so saving asks for them explicitly and
opening hands them back beside the capture. explorer.record.capture_file writes and validates
the file; this module lays the results out in it (same names as files of earlier versions, so
those still open with their results).
"""
from __future__ import annotations

from pathlib import Path

import torch

from explorer.analyse.derived import Derived, HeadSummaries, LensResult
from explorer.record.capture_data import Capture
from explorer.record.capture_file import Extras, open_capture_with_extras, save_capture


def results_extras(capture: Capture, results: Derived | None) -> Extras:
    """The file's share of `results`: summary.*, lens.<k>.* tensors and their metadata."""
    if results is None:
        return Extras({}, {"vocab": {str(k): v for k, v in capture.vocab.items()}})
    tensors: dict[str, torch.Tensor] = {}
    meta: dict = {"vocab": {str(k): v for k, v in results.file_vocab(capture).items()},
                  "summary_layers": None, "lens": {}}
    s = results.summaries
    if s is not None:
        tensors.update({"summary.entropy": s.entropy, "summary.first_token": s.first_token,
                        "summary.lookback": s.lookback})
        meta["summary_layers"] = list(s.layers)
    for k, lens in sorted(results.lens.items()):
        tensors[f"lens.{k}.token_ids"] = lens.token_ids
        tensors[f"lens.{k}.probs"] = lens.probs
        meta["lens"][str(k)] = {"layers": list(lens.layers), "positions": list(lens.positions)}
    return Extras(tensors, meta)


def save_with_results(capture: Capture, path: str | Path, results: Derived | None,
                      include_attention: bool = True) -> None:
    """Write `capture` and the `results` derived from it (None: the capture alone)."""
    save_capture(capture, path, include_attention=include_attention, extras=results_extras(capture, results))


def open_with_results(path: str | Path) -> tuple[Capture, Derived]:
    """The capture of a file and the results saved with it (empty where none were).
    Raises CaptureFileError for anything that is not a valid capture file."""
    capture, extras = open_capture_with_extras(path)
    get, meta = extras.tensors.get, extras.meta
    results = Derived()
    if meta.get("summary_layers") is not None:
        results.summaries = HeadSummaries(list(meta["summary_layers"]), get("summary.entropy"),
                                          get("summary.first_token"), get("summary.lookback"))
    for k, lm in (meta.get("lens") or {}).items():
        results.lens[int(k)] = LensResult(list(lm["layers"]), list(lm["positions"]), get(f"lens.{k}.token_ids"),
                                          get(f"lens.{k}.probs"))
    return capture, results


def describe_capture(capture: Capture, results: Derived | None = None, top: int = 5) -> str:
    """A plain-text summary for the CLI: sizes, what was recorded (with the results saved beside it),
    the next-token guess, notable heads."""
    results = results or Derived()
    lines = [
        f"model: {capture.model_name}" + (f" ({capture.precision})" if capture.precision else ""),
        f"tokens: {capture.num_tokens}  layers: {capture.num_layers}  heads: {capture.num_heads} "
        f"(KV heads: {capture.num_kv_heads})  hidden: {capture.hidden_size}",
    ]
    preview = "".join(capture.token_texts[:40])
    lines.append("prompt: " + repr(preview + ("…" if capture.num_tokens > 40 else "")))
    parts = []
    if capture.embeddings is not None:
        parts.append("embeddings")
    if capture.residual is not None:
        n = len(capture.residual_layers)
        parts.append(f"residual ({n}/{capture.num_layers} layers)")
    if capture.norms:
        parts.append(f"norms ({len(capture.norms)})")
    if capture.attn_out_norm is not None:
        parts.append("attention/MLP output norms")
    if capture.attention is not None:
        parts.append(f"attention ({len(capture.attention.layers)}/{capture.num_layers} layers)")
    if results.summaries is not None:
        parts.append("head summaries")
    if capture.components is not None:
        parts.append("components (heads, MLPs)")
    if results.lens:
        parts.append(f"logit lens (k={sorted(results.lens)})")
    lines.append("recorded: " + ", ".join(parts))
    if capture.attention is not None:
        lines.append(capture.attention_placement())
    if capture.last_logits is not None:
        probs = torch.softmax(capture.last_logits.float(), -1)
        p, ids = probs.topk(min(top, probs.numel()))
        guess = ", ".join(f"{results.token_text(capture, int(i))!r} {float(q):.3f}" for q, i in zip(p, ids))
        lines.append(f"next token: {guess}")
    if results.summaries is not None:
        per = results.summaries.per_head()
        sink = per["first_token"]
        flat = int(sink.argmax())
        li, h = divmod(flat, sink.shape[1])
        lines.append(f"strongest first-token head: layer {results.summaries.layers[li]} head {h} "
                     f"({float(sink.max()):.2f} of attention on token 0)")
    for note in capture.notes:
        lines.append(f"note: {note}")
    return "\n".join(lines)


__all__ = ["describe_capture", "open_with_results", "results_extras", "save_with_results"]
