"""Chat messages in, token ids out: templates, the plain-text fallback, and the context limit.

Every way of generating (the worker's streamed answers, the API, the CLI) prepares its prompt
here, so the model sees the same prompt text whichever path asked."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from explorer.model.errors import GenerationError, clean_text
from explorer.model.loading import LoadedModel

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": str}


@dataclass
class PreparedPrompt:
    input_ids: torch.Tensor  # (1, T)
    attention_mask: torch.Tensor  # (1, T)
    text: str  # the prompt exactly as the model sees it
    max_new_tokens: int
    notices: list[str] = field(default_factory=list)


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
        except Exception:
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


def device_of(model: torch.nn.Module) -> torch.device:
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
    device = device_of(loaded.model)
    return PreparedPrompt(enc["input_ids"].to(device), enc["attention_mask"].to(device), text,
                          max_new_tokens, notices)


def pad_token_id(tokenizer) -> int | None:
    """The id a batch pads with: the tokenizer's pad token, else its (first) end-of-sequence token."""
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    eos = tokenizer.eos_token_id
    return eos[0] if isinstance(eos, list) else eos


def stop_ids(loaded: LoadedModel) -> set[int]:
    """The ids that end an answer: the generation config's end-of-sequence ids, else the tokenizer's."""
    cfg = getattr(loaded.model, "generation_config", None)
    eos = getattr(cfg, "eos_token_id", None)
    if eos is None:
        eos = loaded.tokenizer.eos_token_id
    if eos is None:
        return set()
    return {int(e) for e in eos} if isinstance(eos, (list, tuple)) else {int(eos)}


__all__ = ["Message", "PreparedPrompt", "conversation", "device_of", "pad_token_id", "prepare", "render_prompt",
           "stop_ids"]
