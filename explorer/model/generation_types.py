"""What an answer is asked with and what comes back: one meaning for every way of generating."""
from __future__ import annotations

from dataclasses import dataclass, field


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


@dataclass
class GenerationResult:
    text: str
    prompt_tokens: int
    new_tokens: int
    seconds: float                     # from the row's prefill to its last token (not the time queued)
    time_to_first_token: float | None  # from the row's prefill, not from the request
    stopped: bool = False
    sequence_ids: list[int] = field(default_factory=list)  # prompt + generated, for a later capture
    notices: list[str] = field(default_factory=list)
    queued_seconds: float = 0.0        # from the request to the row's prefill (the queue, the batch's step)
    shared_with: int = 0               # most other answers decoded in the same batch at once

    @property
    def tokens_per_second(self) -> float:
        decode = self.seconds - (self.time_to_first_token or 0.0)
        return (self.new_tokens - 1) / decode if self.new_tokens > 1 and decode > 0 else 0.0


__all__ = ["GenerateOptions", "GenerationResult"]
