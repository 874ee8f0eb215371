"""The internals page's shareable state, to and from URL query parameters.

Why a pure module: a shared link is untrusted input. Parsing it here (no Streamlit) lets tests
feed it garbage, and keeps the page to "read params, clamp to the capture, draw".
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

VIEWS: tuple[str, ...] = ("attention", "residual", "embeddings", "lens", "attribution", "intervene", "tour", "glossary")
SOURCES: tuple[str, ...] = ("text", "chat", "raw")
"""How `prompt` becomes tokens: plain text (tokenizer adds its special tokens), wrapped in the chat
template as one user message, or raw (already templated text, e.g. a captured conversation)."""

MAX_PROMPT_CHARS = 4000   # longer prompts are left out of the URL (browsers and proxies cut long URLs)
PARAMS: tuple[str, ...] = ("model", "precision", "prompt", "src", "layer", "head", "token", "view")
_PRECISION = re.compile(r"[a-z0-9_-]{1,16}")   # "nf4", "bf16", "int8", "nf4-dq": a name, never markup


@dataclass
class ViewState:
    """What a link reproduces. None means "not given": the page keeps its own default."""
    model: str | None = None
    precision: str | None = None      # the weights' precision the link was made with
    prompt: str | None = None
    source: str = "text"
    layer: int | None = None
    head: int | None = None
    token: int | None = None          # negative counts from the end (-1 = last token)
    view: str = "attention"
    problems: list[str] = field(default_factory=list, compare=False)   # what was ignored, in words

    def to_params(self) -> dict[str, str]:
        """Only what is set; a prompt too long for a URL is left out (the link still restores the view)."""
        out: dict[str, str] = {}
        if self.model:
            out["model"] = self.model
        if self.precision:
            out["precision"] = self.precision
        if self.prompt and len(self.prompt) <= MAX_PROMPT_CHARS:
            out["prompt"] = self.prompt
            if self.source != "text":
                out["src"] = self.source
        for name in ("layer", "head", "token"):
            value = getattr(self, name)
            if value is not None:
                out[name] = str(value)
        if self.view != "attention":
            out["view"] = self.view
        return out

    @classmethod
    def from_params(cls, params: Mapping[str, str | Sequence[str]]) -> ViewState:
        """Parse whatever a URL holds; anything malformed is dropped and listed in `problems`."""
        problems: list[str] = []

        def get(name: str) -> str | None:
            value = params.get(name)
            if value is None:
                return None
            if not isinstance(value, str):        # repeated parameter: the last one wins
                value = list(value)[-1] if list(value) else None
            return value

        def integer(name: str, allow_negative: bool = False) -> int | None:
            raw = get(name)
            if raw is None or raw == "":
                return None
            try:
                value = int(raw.strip())
            except ValueError:
                problems.append(f"{name}={raw[:20]!r} is not a whole number")
                return None
            if value < 0 and not allow_negative:
                problems.append(f"{name}={value} is negative")
                return None
            return value

        source = get("src") or "text"
        if source not in SOURCES:
            problems.append(f"src={source[:20]!r} is not one of {', '.join(SOURCES)}")
            source = "text"
        view = get("view") or "attention"
        if view not in VIEWS:
            problems.append(f"view={view[:20]!r} is not one of {', '.join(VIEWS)}")
            view = "attention"
        prompt = get("prompt")
        if prompt is not None and len(prompt) > MAX_PROMPT_CHARS:
            problems.append(f"the prompt in the link is longer than {MAX_PROMPT_CHARS} characters and was cut")
            prompt = prompt[:MAX_PROMPT_CHARS]
        precision = (get("precision") or "").strip().lower() or None
        if precision is not None and not _PRECISION.fullmatch(precision):
            problems.append(f"precision={precision[:20]!r} is not a precision name")
            precision = None
        return cls(model=get("model") or None, precision=precision, prompt=prompt or None, source=source,
                   layer=integer("layer"), head=integer("head"), token=integer("token", allow_negative=True),
                   view=view, problems=problems)

    def clamp(self, layers: Sequence[int], num_heads: int, num_tokens: int) -> ViewState:
        """Fit layer/head/token to a capture: nearest captured layer, heads and tokens in range.

        Why nearest and not "drop": a link made on a full capture should still open near the same
        place on a capture that kept fewer layers (memory budget).
        """
        layer = self.layer
        if layer is not None and layers:
            layer = min(layers, key=lambda l: (abs(l - layer), l))
        elif not layers:
            layer = None
        head = None if self.head is None or num_heads <= 0 else min(max(self.head, 0), num_heads - 1)
        token = self.token
        if token is not None and num_tokens > 0:
            token = token + num_tokens if token < 0 else token
            token = min(max(token, 0), num_tokens - 1)
        elif num_tokens <= 0:
            token = None
        return replace(self, layer=layer, head=head, token=token)


def link_mismatch(state: ViewState, model: str, precision: str | None) -> str | None:
    """What the loaded model lacks to reproduce the link: "model", "precision", or None.

    Why it matters: the same prompt on the same model in nf4 and in bf16 gives different attention
    and residuals; a link names both, and an unknown side (None) is not a mismatch.
    """
    if state.model and state.model != model:
        return "model"
    if state.precision and precision and state.precision != precision.lower():
        return "precision"
    return None


def changed_params(current: Mapping[str, str], wanted: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """What to set and what to delete so that the URL's known params equal `wanted`.

    Unknown params (other pages', tracking) are left alone; writing only differences keeps the
    browser history quiet when nothing changed.
    """
    to_set = {k: v for k, v in wanted.items() if current.get(k) != v}
    to_delete = [k for k in PARAMS if k in current and k not in wanted]
    return to_set, to_delete


__all__ = ["MAX_PROMPT_CHARS", "PARAMS", "SOURCES", "VIEWS", "ViewState", "changed_params", "link_mismatch"]
