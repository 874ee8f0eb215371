"""The public generation API (`stream_generate`, `generate`, `generate_batch`), thin over one core.

Every answer, streamed in the app, batched, or printed by the CLI, is a `Row` of a `DecodeBatch`
(explorer/model/decode_batch.py); this module turns rows into results and failures into one
sentence. The app does not call these: its answers join the model worker's shared batch
(explorer/model/worker.py), where rows of several sessions are decoded together.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import torch

from explorer.model.decode_batch import DecodeBatch, Row, RowEdit, decode_all
from explorer.model.errors import ExplorerError, GenerationError, ModelReplaced, clean_text
from explorer.model.generation_types import GenerateOptions, GenerationResult
from explorer.model.loading import LoadedModel, release_memory
from explorer.model.prompts import Message, PreparedPrompt, conversation, pad_token_id, prepare, render_prompt, stop_ids

__all__ = ["GenerateOptions", "GenerationError", "GenerationResult", "ModelReplaced", "PreparedPrompt",
           "conversation", "generate", "generate_batch", "pad_token_id", "prepare", "render_prompt",
           "stream_generate"]


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or "out of memory" in str(exc).lower()


def generation_error(loaded: LoadedModel, exc: BaseException) -> BaseException:
    """One mapping of a failed row to what the caller sees: a replaced model first (ensure_current
    raises), our own typed errors as they are, out of memory (freed, so the model stays usable),
    then anything else, cleaned to one sentence."""
    loaded.ensure_current()
    if isinstance(exc, ExplorerError):
        return exc
    if _is_oom(exc):
        release_memory()
        return GenerationError("Out of memory during generation: try fewer new tokens or a shorter prompt. "
                               "The model is still loaded.")
    return GenerationError(f"Generation failed: {type(exc).__name__}: {clean_text(str(exc))[:300]}")


def result_of(loaded: LoadedModel, row: Row, submitted: float | None = None) -> GenerationResult:
    """A finished row as a result; its error raised instead, as a message."""
    if row.error is not None:
        raise generation_error(loaded, row.error) from None
    loaded.ensure_current()
    started = row.started if row.started is not None else (row.finished or time.perf_counter())
    end = row.finished or time.perf_counter()
    return GenerationResult(
        text=loaded.tokenizer.decode(row.new, skip_special_tokens=True),
        prompt_tokens=int(row.prepared.input_ids.shape[1]), new_tokens=len(row.new), seconds=end - started,
        time_to_first_token=None if row.first is None else row.first - started, stopped=row.stopped,
        sequence_ids=list(row.ids), notices=list(row.prepared.notices),
        queued_seconds=0.0 if submitted is None else max(started - submitted, 0.0), shared_with=row.peers)


def new_batch(loaded: LoadedModel) -> DecodeBatch:
    return DecodeBatch(loaded.model, stop_ids(loaded))


def text_streamer(tokenizer, on_text: Callable[[str], None]):
    """A streamer (put/end) that hands each finished piece of text to `on_text` in the decoding
    thread: transformers' TextStreamer decides where a piece of text is complete (words, UTF-8)."""
    from transformers import TextStreamer

    class CallbackStreamer(TextStreamer):
        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            if text:
                on_text(text)

    return CallbackStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)


class GenerationStream:
    """Iterate to receive text chunks as they are produced; `result` holds the statistics afterwards.

    Decodes in the iterating thread (a batch of one through the same core as the worker), so there
    is no second thread to hang; `stop_event` ends it between two tokens."""

    def __init__(self, loaded: LoadedModel, messages: list[Message], options: GenerateOptions,
                 stop_event: threading.Event | None = None) -> None:
        self.loaded = loaded
        self.options = options
        self.stop_event = stop_event or threading.Event()
        self.prepared = prepare(loaded, messages, options.max_new_tokens)
        self.result: GenerationResult | None = None

    def __iter__(self) -> Iterator[str]:
        pieces: list[str] = []
        row = Row(self.prepared, self.options, text_streamer(self.loaded.tokenizer, pieces.append), self.stop_event)
        batch = new_batch(self.loaded)
        batch.add(row)
        while batch.active:
            batch.step()
            while pieces:
                yield pieces.pop(0)
        self.result = result_of(self.loaded, row)


def stream_generate(loaded: LoadedModel, messages: list[Message], options: GenerateOptions | None = None,
                    stop_event: threading.Event | None = None) -> GenerationStream:
    return GenerationStream(loaded, messages, options or GenerateOptions(), stop_event)


def generate(loaded: LoadedModel, messages: list[Message], options: GenerateOptions | None = None,
             streamer=None, edit: RowEdit | None = None) -> GenerationResult:
    """One answer, not streamed. streamer: anything with put/end (e.g. a per-token clock);
    edit: hooks on this answer's row (explorer/record/row_interventions.py)."""
    options = options or GenerateOptions()
    if edit is not None:
        edit.check(loaded.model)
    row = Row(prepare(loaded, messages, options.max_new_tokens), options, streamer, edit=edit)
    decode_all(new_batch(loaded), [row])
    return result_of(loaded, row)


def generate_batch(loaded: LoadedModel, conversations: list[list[Message]],
                   options: GenerateOptions | None = None,
                   edits: list[RowEdit | None] | None = None) -> list[GenerationResult]:
    """Several conversations decoded together in one batch; each row ends on its own.
    edits: per conversation, hooks on its row alone (None: plain), each checked before any forward."""
    options = options or GenerateOptions()
    if not conversations:
        raise GenerationError("No conversations to generate.")
    edits = list(edits) if edits is not None else [None] * len(conversations)
    if len(edits) != len(conversations):
        raise GenerationError(f"{len(edits)} edits for {len(conversations)} conversations.")
    for edit in edits:
        if edit is not None:
            edit.check(loaded.model)
    rows = [Row(prepare(loaded, messages, options.max_new_tokens), options, edit=edit)
            for messages, edit in zip(conversations, edits, strict=True)]
    decode_all(new_batch(loaded), rows)
    return [result_of(loaded, row) for row in rows]
