"""Chat prompts in, streamed text out: templates, streaming with a timeout, batching, stopping.

The app generates on the model worker (explorer/model/worker.py) through `generate_streaming`,
which runs in the calling thread and hands text to a callback. `stream_generate` is the plain
Python API's iterator: it runs `generate` in a thread of its own per answer (fine for a script,
not for the app: on a GPU each new thread pays cuDNN's set-up again), and a `TextIteratorStreamer`
timeout turns a hung `generate` into an error instead of a caller that waits forever.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from explorer.model.errors import GenerationError, ModelReplaced, clean_text
from explorer.model.loading import LoadedModel, release_memory

__all__ = ["GenerationError", "ModelReplaced"]  # re-exported: callers catch them from here

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": str}


@dataclass
class GenerateOptions:
    max_new_tokens: int = 128
    do_sample: bool = False  # greedy when False; temperature/top_p/top_k apply only when sampling
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 50
    repetition_penalty: float = 1.0
    timeout_s: float = 120.0  # longest wait for the next token before the stream gives up
    min_new_tokens: int | None = None  # EOS cannot end the answer earlier (equal work when timing)

    def generate_kwargs(self) -> dict:
        kwargs: dict = dict(max_new_tokens=self.max_new_tokens, do_sample=self.do_sample,
                            repetition_penalty=self.repetition_penalty)
        if self.do_sample:
            kwargs.update(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)
        else:  # silence warnings from generation configs that ship sampling defaults
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if self.min_new_tokens:
            kwargs["min_new_tokens"] = min(self.min_new_tokens, self.max_new_tokens)
        return kwargs


@dataclass
class PreparedPrompt:
    input_ids: torch.Tensor  # (1, T)
    attention_mask: torch.Tensor  # (1, T)
    text: str  # the prompt exactly as the model sees it
    max_new_tokens: int
    notices: list[str] = field(default_factory=list)


@dataclass
class GenerationResult:
    text: str
    prompt_tokens: int
    new_tokens: int
    seconds: float
    time_to_first_token: float | None
    stopped: bool = False
    sequence_ids: list[int] = field(default_factory=list)  # prompt + generated, for a later capture
    notices: list[str] = field(default_factory=list)

    @property
    def tokens_per_second(self) -> float:
        decode = self.seconds - (self.time_to_first_token or 0.0)
        return (self.new_tokens - 1) / decode if self.new_tokens > 1 and decode > 0 else 0.0


def _merge_system(messages: list[Message]) -> list[Message]:
    """Fold a system message into the first user turn, for templates (Gemma's) that reject the role."""
    if not messages or messages[0]["role"] != "system":
        return messages
    system, rest = messages[0]["content"], list(messages[1:])
    if rest and rest[0]["role"] == "user":
        rest[0] = {"role": "user", "content": f"{system}\n\n{rest[0]['content']}"}
    else:
        rest.insert(0, {"role": "user", "content": system})
    return rest


def render_prompt(tokenizer, messages: list[Message]) -> tuple[str, list[str]]:
    """The prompt text for these messages: the chat template where there is one, plain text otherwise."""
    notices: list[str] = []
    if getattr(tokenizer, "chat_template", None):
        try:
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True), notices
        except Exception:  # noqa: BLE001 - jinja raises its own TemplateError for unsupported roles
            merged = _merge_system(messages)
            if merged is not messages:
                notices.append("This model's chat template has no system role: the system prompt was "
                               "merged into the first user message.")
                return tokenizer.apply_chat_template(merged, tokenize=False, add_generation_prompt=True), notices
            raise
    notices.append("This model has no chat template: the conversation is sent as plain text.")
    lines = [f"{m['role'].capitalize()}: {m['content']}" if m["role"] != "user" or len(messages) > 1
             else m["content"] for m in messages]
    text = "\n".join(lines)
    return (text + "\nAssistant:" if len(messages) > 1 else text), notices


def conversation(prompt: str, system_prompt: str | None = None,
                 history: list[Message] | None = None) -> list[Message]:
    messages: list[Message] = []
    if system_prompt and system_prompt.strip():
        messages.append({"role": "system", "content": system_prompt.strip()})
    messages.extend(history or [])
    messages.append({"role": "user", "content": prompt})
    return messages


def _device_of(model: torch.nn.Module) -> torch.device:
    return model.get_input_embeddings().weight.device


def prepare(loaded: LoadedModel, messages: list[Message], max_new_tokens: int) -> PreparedPrompt:
    """Validate and tokenize one conversation, and keep it inside the model's context window."""
    loaded.ensure_current()
    if not messages or not isinstance(messages[-1].get("content"), str) or not messages[-1]["content"].strip():
        raise GenerationError("The prompt is empty: type something to send.")
    tokenizer = loaded.tokenizer
    try:
        text, notices = render_prompt(tokenizer, messages)
        text.encode("utf-8")
        enc = tokenizer(text, return_tensors="pt", add_special_tokens=not getattr(tokenizer, "chat_template", None))
    except UnicodeEncodeError:
        raise GenerationError("The prompt is not valid text (it holds bytes that are not UTF-8).") from None
    except Exception as exc:  # noqa: BLE001 - a template or tokenizer that chokes on this input
        loaded.ensure_current()
        raise GenerationError(f"The prompt could not be prepared for this model: {type(exc).__name__}: "
                              f"{clean_text(str(exc))[:200]}") from None
    n_prompt = enc["input_ids"].shape[1]
    limit = loaded.context_length
    if limit is not None:
        if n_prompt >= limit:
            raise GenerationError(f"The prompt is {n_prompt} tokens long, but this model's context holds "
                                  f"{limit}. Shorten the prompt or clear the history.")
        if n_prompt + max_new_tokens > limit:
            max_new_tokens = limit - n_prompt
            notices.append(f"Only {max_new_tokens} new tokens fit in the context of {limit}.")
    device = _device_of(loaded.model)
    return PreparedPrompt(enc["input_ids"].to(device), enc["attention_mask"].to(device), text,
                          max_new_tokens, notices)


def pad_token_id(tokenizer) -> int | None:
    """The id generate pads with: the tokenizer's pad token, else its (first) end-of-sequence token."""
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    eos = tokenizer.eos_token_id
    return eos[0] if isinstance(eos, list) else eos


class _StopOnEvent:
    """A StoppingCriteria that lets the UI's stop button end a generation between two tokens."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids, scores, **kwargs) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


def _generation_error(loaded, exc: Exception, oom_message: str, failed: str) -> GenerationError:
    """One mapping of a failed `generate` to a message: a replaced model first (ensure_current
    raises), then out of memory (freed, so the model stays usable), then anything else, cleaned."""
    loaded.ensure_current()
    if _is_oom(exc):
        release_memory()
        return GenerationError(oom_message)
    return GenerationError(f"{failed}: {type(exc).__name__}: {clean_text(str(exc))[:300]}")


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or "out of memory" in str(exc).lower()


class GenerationStream:
    """Iterate to receive text chunks as they are produced; `result` holds the statistics afterwards.

    The worker thread only calls `model.generate`; any exception there is re-raised in the
    consumer's thread as a GenerationError, and a stalled stream times out.
    """

    def __init__(self, loaded: LoadedModel, messages: list[Message], options: GenerateOptions,
                 stop_event: threading.Event | None = None) -> None:
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        self.options = options
        self.loaded = loaded
        self.stop_event = stop_event or threading.Event()
        self.prepared = prepare(loaded, messages, options.max_new_tokens)
        self.tokenizer = loaded.tokenizer
        self.streamer = TextIteratorStreamer(loaded.tokenizer, skip_prompt=True, skip_special_tokens=True,
                                             timeout=options.timeout_s)
        self.result: GenerationResult | None = None
        self._error: BaseException | None = None
        self._output: torch.Tensor | None = None
        kwargs = options.generate_kwargs()
        kwargs.update(input_ids=self.prepared.input_ids, attention_mask=self.prepared.attention_mask,
                      max_new_tokens=self.prepared.max_new_tokens, streamer=self.streamer,
                      pad_token_id=pad_token_id(loaded.tokenizer),
                      stopping_criteria=StoppingCriteriaList([_StopOnEvent(self.stop_event)]))
        self._thread = threading.Thread(target=self._run, args=(loaded.model, kwargs), daemon=True)

    def _run(self, model, kwargs) -> None:
        try:
            with torch.inference_mode():
                self._output = model.generate(**kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer thread
            self._error = exc
            self.streamer.end()

    def __iter__(self) -> Iterator[str]:
        from queue import Empty

        start = time.perf_counter()
        first: float | None = None
        pieces: list[str] = []
        self._thread.start()
        try:
            for chunk in self.streamer:
                if chunk and first is None:
                    first = time.perf_counter() - start
                pieces.append(chunk)
                yield chunk
        except Empty:
            self.stop_event.set()
            raise GenerationError(f"No token arrived for {self.options.timeout_s:.0f} s: generation stopped. "
                                  "The model may be too slow for this prompt on this machine.") from None
        self._thread.join(timeout=self.options.timeout_s)
        self.loaded.ensure_current()
        if self._error is not None:
            error = self._error
            if _is_oom(error):
                release_memory()
                raise GenerationError("Out of memory during generation: try fewer new tokens or a shorter "
                                      "prompt. The model is still loaded.") from None
            raise GenerationError(f"Generation failed: {type(error).__name__}: {clean_text(str(error))[:300]}") from None
        seconds = time.perf_counter() - start
        ids = self._output[0].tolist() if self._output is not None else []
        n_prompt = self.prepared.input_ids.shape[1]
        self.result = GenerationResult(
            text="".join(pieces), prompt_tokens=n_prompt, new_tokens=max(len(ids) - n_prompt, 0),
            seconds=seconds, time_to_first_token=first, stopped=self.stop_event.is_set(),
            sequence_ids=ids, notices=list(self.prepared.notices))


def _callback_streamer(tokenizer, on_text: Callable[[str], None]):
    """A generate() streamer that hands each finished piece of text to `on_text` in the thread that
    runs generate (the model worker's): no second thread, no queue of its own. `.first` is when
    the first piece arrived (perf_counter)."""
    from transformers import TextStreamer

    class CallbackStreamer(TextStreamer):
        first: float | None = None

        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            if text:
                if self.first is None:
                    self.first = time.perf_counter()
                on_text(text)

    return CallbackStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)


def generate_streaming(loaded: LoadedModel, prepared: PreparedPrompt, options: GenerateOptions,
                       on_text: Callable[[str], None], stop_event: threading.Event | None = None) -> GenerationResult:
    """Generate in the calling thread, handing text to `on_text` as it forms; `stop_event` ends it
    between two tokens. The model worker calls this; errors come back as GenerationError."""
    from transformers import StoppingCriteriaList

    loaded.ensure_current()
    stop_event = stop_event or threading.Event()
    streamer = _callback_streamer(loaded.tokenizer, on_text)
    kwargs = options.generate_kwargs()
    kwargs.update(input_ids=prepared.input_ids, attention_mask=prepared.attention_mask,
                  max_new_tokens=prepared.max_new_tokens, streamer=streamer,
                  pad_token_id=pad_token_id(loaded.tokenizer),
                  stopping_criteria=StoppingCriteriaList([_StopOnEvent(stop_event)]))
    start = time.perf_counter()
    try:
        with torch.inference_mode():
            out = loaded.model.generate(**kwargs)
    except Exception as exc:  # noqa: BLE001 - a message for the page; the model stays usable
        if stop_event.is_set():
            raise                           # cancelled mid-forward (see explorer.model.worker): as is
        loaded.ensure_current()
        if _is_oom(exc):
            release_memory()
            raise GenerationError("Out of memory during generation: try fewer new tokens or a shorter "
                                  "prompt. The model is still loaded.") from None
        raise GenerationError(f"Generation failed: {type(exc).__name__}: {clean_text(str(exc))[:300]}") from None
    loaded.ensure_current()
    seconds = time.perf_counter() - start
    ids = out[0].tolist()
    n_prompt = prepared.input_ids.shape[1]
    new = ids[n_prompt:]
    return GenerationResult(
        text=loaded.tokenizer.decode(new, skip_special_tokens=True), prompt_tokens=n_prompt,
        new_tokens=len(new), seconds=seconds,
        time_to_first_token=None if streamer.first is None else streamer.first - start,
        stopped=stop_event.is_set(), sequence_ids=ids, notices=list(prepared.notices))


def stream_generate(loaded: LoadedModel, messages: list[Message], options: GenerateOptions | None = None,
                    stop_event: threading.Event | None = None) -> GenerationStream:
    return GenerationStream(loaded, messages, options or GenerateOptions(), stop_event)


def generate(loaded: LoadedModel, messages: list[Message], options: GenerateOptions | None = None,
             streamer=None) -> GenerationResult:
    """Plain, non-streamed generation: the baseline that streaming is measured against, and what
    the comparison times. streamer: anything with put/end (e.g. a per-token clock), handed to generate."""
    options = options or GenerateOptions()
    prepared = prepare(loaded, messages, options.max_new_tokens)
    kwargs = options.generate_kwargs()
    kwargs["max_new_tokens"] = prepared.max_new_tokens
    if "min_new_tokens" in kwargs:
        kwargs["min_new_tokens"] = min(kwargs["min_new_tokens"], prepared.max_new_tokens)
    if streamer is not None:
        kwargs["streamer"] = streamer
    start = time.perf_counter()
    try:
        with torch.inference_mode():
            out = loaded.model.generate(input_ids=prepared.input_ids, attention_mask=prepared.attention_mask,
                                        pad_token_id=pad_token_id(loaded.tokenizer), **kwargs)
    except Exception as exc:  # noqa: BLE001
        raise _generation_error(loaded, exc, "Out of memory during generation. The model is still loaded.",
                                "Generation failed") from None
    loaded.ensure_current()
    seconds = time.perf_counter() - start
    n_prompt = prepared.input_ids.shape[1]
    new = out[0, n_prompt:]
    return GenerationResult(text=loaded.tokenizer.decode(new, skip_special_tokens=True), prompt_tokens=n_prompt,
                            new_tokens=int(new.shape[0]), seconds=seconds, time_to_first_token=None,
                            sequence_ids=out[0].tolist(), notices=prepared.notices)


def _left_padded(tokenizer, texts: list[str], pad_id: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, W) ids and mask, every row ending at its prompt. Padded here rather than by the tokenizer,
    whose `padding_side` and `pad_token` belong to every session sharing it and are never changed."""
    special = not getattr(tokenizer, "chat_template", None)
    rows = [tokenizer(t, add_special_tokens=special)["input_ids"] for t in texts]
    width = max(len(r) for r in rows)
    fill = 0 if pad_id is None else pad_id
    ids = torch.tensor([[fill] * (width - len(r)) + list(r) for r in rows], dtype=torch.long)  # (B, W)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long)  # (B, W)
    return ids, mask


def generate_batch(loaded: LoadedModel, conversations: list[list[Message]],
                   options: GenerateOptions | None = None) -> list[GenerationResult]:
    """Several conversations in one batched `generate` call, left-padded so every row ends at the prompt."""
    options = options or GenerateOptions()
    if not conversations:
        raise GenerationError("No conversations to generate.")
    tokenizer = loaded.tokenizer
    texts, notices = [], []
    for messages in conversations:
        prepared = prepare(loaded, messages, options.max_new_tokens)  # validates each one
        texts.append(prepared.text)
        notices.append(prepared.notices)
    pad_id = pad_token_id(tokenizer)
    enc = dict(zip(("input_ids", "attention_mask"), _left_padded(tokenizer, texts, pad_id)))
    device = _device_of(loaded.model)
    kwargs = options.generate_kwargs()
    limit = loaded.context_length
    width = enc["input_ids"].shape[1]
    if limit is not None:
        kwargs["max_new_tokens"] = max(1, min(options.max_new_tokens, limit - width))
    start = time.perf_counter()
    try:
        with torch.inference_mode():
            out = loaded.model.generate(input_ids=enc["input_ids"].to(device),
                                        attention_mask=enc["attention_mask"].to(device),
                                        pad_token_id=pad_id, **kwargs)
    except Exception as exc:  # noqa: BLE001
        raise _generation_error(loaded, exc, "Out of memory during batched generation: try fewer conversations.",
                                "Batched generation failed") from None
    loaded.ensure_current()
    seconds = time.perf_counter() - start
    results = []
    for row, mask, note in zip(out, enc["attention_mask"], notices):
        new = row[width:]
        eos = tokenizer.eos_token_id
        stops = {pad_id} | (set(eos) if isinstance(eos, list) else {eos})
        n_new = next((i + 1 for i, t in enumerate(new.tolist()) if t in stops), int(new.shape[0]))
        results.append(GenerationResult(
            text=tokenizer.decode(new, skip_special_tokens=True), prompt_tokens=int(mask.sum()),
            new_tokens=n_new, seconds=seconds, time_to_first_token=None,
            sequence_ids=row[width - int(mask.sum()):width + n_new].tolist(), notices=note))
    return results
