"""The one boundary between what can go wrong and what a person reads.

Every way in (the loader, generation and capture, the capture-file opener, each CLI subcommand, the
app's pages) raises one of these typed errors, and every way out shows `user_message(exc)`: plain
words, no ANSI codes, no traceback, and never a token the process knows. Tests assert the type, so
a message can be reworded without breaking them, and a caller can react to the kind (a replaced
model asks to run again; a refused pickle names the operator switch).
"""
from __future__ import annotations

import re
import threading

from explorer.model.switches import env_tokens
from explorer.model.visible_text import show_hidden


class ExplorerError(RuntimeError):
    """A problem the user can act on; the message is meant to be shown as is."""


# --------------------------------------------------------------------------- loading


class LoadError(ExplorerError):
    """A load failed; the resident model (if any) is still there."""


class BadConfig(LoadError):
    """A LoadConfig field has a value outside its choices."""


class AttentionUnavailable(BadConfig):
    """The attention implementation asked for cannot run on this machine (e.g. flash_attention_2 on a CPU)."""


class BadSource(LoadError):
    """The source is not a preset, a valid hub id, or an existing folder / .gguf file."""


class NoNetwork(LoadError):
    """The hub cannot be reached and the model is not in the local cache."""


class HubError(LoadError):
    """The hub answered with a server error (5xx) or something unexpected."""


class UnknownRepo(LoadError):
    """No such repository on the hub (or it is private and the token has no access)."""


class GatedRepo(LoadError):
    """The repository is gated and the token has not been granted access."""


class BadToken(LoadError):
    """The hub rejected the token itself (401)."""


class TokenizerError(LoadError):
    """The model's tokenizer files are missing or cannot be read."""


class NotCausal(LoadError):
    """The model is not a causal (decoder) language model, so it cannot generate text."""


class PickleRefused(LoadError):
    """Only pickle weights were found; they are refused unless the operator allows them."""


class RemoteCodeRefused(LoadError):
    """The model needs code shipped with it; refused unless the operator allows it."""


class BadWeights(LoadError):
    """Weights are missing, truncated, corrupt, or do not fit the architecture in the config."""


class FileTooLarge(LoadError):
    """A config or tokenizer file is over the size read before checking (explorer/model/read_limits.py)."""


class BadConfigFile(LoadError):
    """config.json is not valid JSON, or nests deeper than read_limits allows."""


class OutOfMemory(LoadError):
    """Not enough memory to hold the model."""


class NoModelLoaded(ExplorerError):
    """No model is resident now, so nothing can run on one: a model call found none, or a failed load
    could not bring the previous model back (RestoreFailed). One class for the one meaning, so a
    caller catches it once whichever way it came about."""

    def __init__(self, message: str = "No model is loaded.") -> None:
        super().__init__(message)


class RestoreFailed(NoModelLoaded, LoadError):
    """A load failed after the resident model was given up, and bringing that model back failed too:
    unlike every other LoadError, nothing is resident now."""


# --------------------------------------------------------------------------- using a model


class GenerationError(ExplorerError):
    """A generation or capture problem the user can act on."""


class ModelReplaced(GenerationError):
    """The model a request was made with was replaced or unloaded meanwhile."""

    def __init__(self, message: str = "The model changed while this was running; run it again.") -> None:
        super().__init__(message)


class BadPrompt(GenerationError, ValueError):
    """A prompt that cannot be tokenized or run (ValueError too, for callers that caught the old one)."""


class TokenOutOfVocabulary(BadPrompt):
    """A token id outside the model's embedding table."""


class BadMessages(BadPrompt):
    """Chat messages that are not a list of {role, content} with text content."""


class BadText(BadPrompt):
    """Text that is not valid Unicode (a lone surrogate)."""


class CaptureFileError(ExplorerError, ValueError):
    """A capture file is not one this version can open (damaged, foreign, or from a newer version)."""


class OutputError(ExplorerError):
    """An output path that cannot or must not be written (missing folder, not a regular file, no permission)."""


class BadArgument(ExplorerError):
    """A command-line argument or a form value that cannot be used."""


# --------------------------------------------------------------------------- secrets


class Secret:
    """A token that never shows itself: repr and str are masked, and `dataclasses.asdict` keeps the
    wrapper (it is not a dataclass and deep-copies to itself), so no dump or log can expand it.
    Every Secret made is remembered, so `user_message` can scrub it from any text."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = str(value)
        _remember(self._value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo) -> Secret:
        return self

    def __reduce__(self):  # pickling would write the value out
        raise TypeError("a Secret cannot be pickled")


def as_secret(value: str | Secret | None) -> Secret | None:
    if value is None or isinstance(value, Secret):
        return value or None
    return Secret(value) if str(value) else None


def reveal(value: str | Secret | None) -> str | None:
    if isinstance(value, Secret):
        return value.reveal() or None
    return value or None


_known_lock = threading.Lock()
_known: set[str] = set()


def _remember(value: str) -> None:
    if len(value) >= 4:  # scrubbing a one-letter "token" would mangle every message
        with _known_lock:
            _known.add(value)


def known_tokens() -> list[str]:
    """Every token this process knows: Secrets made so far and the environment's, longest first."""
    with _known_lock:
        tokens = set(_known)
    tokens.update(v for v in env_tokens() if len(v) >= 4)
    return sorted(tokens, key=len, reverse=True)


def env_token() -> Secret | None:
    """The environment's hub token (explorer/model/switches.py reads it), as a Secret."""
    tokens = env_tokens()
    return Secret(tokens[0]) if tokens else None


# --------------------------------------------------------------------------- messages

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07]*(\x07|\x1b\\)|\x1b[@-Z\\-_]")
MAX_MESSAGE = 600


def clean_text(text: str, extra_secrets: tuple[str, ...] = ()) -> str:
    """Strip terminal escape codes, show other hidden characters as ⟨U+XXXX⟩ (the rule in
    visible_text), and replace every known token with ***."""
    text = show_hidden(_ANSI.sub("", text))
    for token in sorted({*known_tokens(), *(s for s in extra_secrets if s)}, key=len, reverse=True):
        text = text.replace(token, "***")
    return text


def user_message(exc: BaseException, extra_secrets: tuple[str, ...] = ()) -> str:
    """What a person reads for `exc`: the typed error's own sentence, or a one-line summary of an
    unexpected one (its type and first line, never a traceback), cleaned and scrubbed."""
    if isinstance(exc, ExplorerError):
        text = str(exc)
    else:
        first = next((line for line in str(exc).splitlines() if line.strip()), "")
        text = f"Unexpected error ({type(exc).__name__}){': ' + first if first else ''}"
    text = clean_text(text, extra_secrets).strip()
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE - 1] + "…"
