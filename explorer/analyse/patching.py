"""Activation patching (causal tracing): which (layer, position) and which head carry the
difference between a clean and a corrupted prompt of the same token length.

Each patch copies one activation of the clean run into a run of the corrupted prompt and reads
the logit difference of the answer token against a second token (the foil) at the last position,
normalised so 0 is the corrupted run and 1 the clean one:

    score = (LD_patched − LD_corrupted) / (LD_clean − LD_corrupted),   LD = logit(answer) − logit(foil)

Sites: the residual stream after each layer at each position (L × T patches), and each head's
output at every position at once (L × H patches). Why every position for heads: a head moves
information between positions, so what it writes at the last position alone misses what it
wrote earlier for later heads to read; TransformerLens calls this "all positions" too.

Patches run batched: row b of one forward is the corrupted prompt carrying patch b (hooks with
a row each, record/intervention_hooks.py), as many rows as the memory budget allows. A patch
that copies exactly what the corrupted run holds (every position before the first token that
differs, in a causal model) is not run: its result is the corrupted run's, exactly.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from explorer.model.worker import RequestCancelled
from explorer.record.intervention_hooks import Activations, intervene_rows, last_logits, model_device, record_activations, sites_of
from explorer.record.interventions import BadIntervention, Patch

Progress = Callable[[int, int], None]         # (done, total) patches


@dataclass
class PatchingSetup:
    clean: torch.Tensor           # (T,) ids
    corrupt: torch.Tensor         # (T,) ids
    source: Activations           # the clean run's activations
    corrupt_logits: torch.Tensor  # (V,) float32
    answer: int
    foil: int
    corrupted: Activations | None = None   # the corrupted run's, to skip patches that copy what is there

    def unchanged(self, patch: Patch) -> bool:
        """Whether the patch would copy exactly what the corrupted run has there (a position before
        the first token that differs, in a causal model): its result is the corrupted run's."""
        if self.corrupted is None:
            return False
        at = slice(None) if patch.position is None else patch.position
        if patch.site == "resid":
            return torch.equal(self.source.resid[patch.layer, at], self.corrupted.resid[patch.layer, at])
        return torch.equal(self.source.z[patch.layer, at, patch.head], self.corrupted.z[patch.layer, at, patch.head])

    @property
    def clean_diff(self) -> float:
        return float(self.source.logits[self.answer] - self.source.logits[self.foil])

    @property
    def corrupt_diff(self) -> float:
        return float(self.corrupt_logits[self.answer] - self.corrupt_logits[self.foil])


@dataclass
class PatchingResult:
    site: str                     # "resid" (rows: layers, columns: positions) | "head" (columns: heads)
    scores: torch.Tensor          # (L, T) or (L, H) normalised logit difference
    diffs: torch.Tensor           # same shape, raw logit differences
    answer: int
    foil: int
    clean_diff: float
    corrupt_diff: float
    seconds: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"site": self.site, "scores": self.scores.tolist(), "logit_diffs": self.diffs.tolist(),
                "answer": self.answer, "foil": self.foil, "clean_logit_diff": self.clean_diff,
                "corrupt_logit_diff": self.corrupt_diff, "seconds": self.seconds, "notes": self.notes}


def as_ids(ids) -> torch.Tensor:
    return torch.as_tensor(ids, dtype=torch.long).reshape(-1)


def check_lengths(clean: torch.Tensor, corrupt: torch.Tensor) -> None:
    if clean.numel() != corrupt.numel():
        raise BadIntervention(f"The clean prompt has {clean.numel()} tokens and the corrupted one "
                              f"{corrupt.numel()}; patching needs the same token length (reword one of them).")
    if clean.numel() == 0:
        raise BadIntervention("The prompts are empty.")


def prepare(model: torch.nn.Module, clean, corrupt, answer: int | None = None,
            foil: int | None = None) -> PatchingSetup:
    """Run both prompts once. answer: default the clean run's top token; foil: default the
    corrupted run's top token (its second when that is the answer too)."""
    clean, corrupt = as_ids(clean), as_ids(corrupt)
    check_lengths(clean, corrupt)
    vocab = int(model.get_output_embeddings().weight.shape[0]) if model.get_output_embeddings() is not None else None
    for name, tok in (("answer", answer), ("second", foil)):
        if tok is not None and vocab is not None and not 0 <= int(tok) < vocab:
            raise BadIntervention(f"The {name} token id {tok} is outside the vocabulary (0 to {vocab - 1}).")
    source = record_activations(model, clean)
    corrupted = record_activations(model, corrupt)
    corrupt_logits = corrupted.logits
    answer = int(source.logits.argmax()) if answer is None else int(answer)
    if foil is None:
        top2 = corrupt_logits.topk(2).indices.tolist()
        foil = top2[1] if top2[0] == answer else top2[0]
    if int(foil) == answer:
        raise BadIntervention("The answer and the second token are the same token; pick another second token.")
    return PatchingSetup(clean, corrupt, source, corrupt_logits, answer, int(foil), corrupted)


def batch_rows(model: torch.nn.Module, length: int, budget_bytes: int | None = None, most: int = 256) -> int:
    """How many patched copies of a `length`-token prompt one forward runs: activations of a row
    (residual, MLP, attention scores, at 4 bytes) within a quarter of free GPU memory, or 1 GiB on a CPU."""
    device = model_device(model)
    if budget_bytes is None:
        budget_bytes = torch.cuda.mem_get_info(device)[0] // 4 if device.type == "cuda" else 1 << 30
    c = model.config
    hidden = int(getattr(c, "hidden_size", None) or getattr(c, "n_embd", 0))
    inter = int(getattr(c, "intermediate_size", None) or 4 * hidden)
    heads = int(getattr(c, "num_attention_heads", None) or getattr(c, "n_head", 1))
    per_row = length * (6 * hidden + 3 * inter + 2 * heads * length) * 4
    return max(1, min(most, budget_bytes // max(per_row, 1)))


def run_patches(model: torch.nn.Module, setup: PatchingSetup, patches: list[Patch], rows: int | None = None,
                progress: Progress | None = None, cancel: threading.Event | None = None) -> torch.Tensor:
    """(len(patches),) logit differences; `cancel` is checked between batches (RequestCancelled).
    A patch that would copy what the corrupted run already has is not run: its result is that run's."""
    n, t = len(patches), setup.corrupt.numel()
    rows = rows or batch_rows(model, t)
    out = torch.full((n,), setup.corrupt_diff)
    todo = [i for i, p in enumerate(patches) if not setup.unchanged(p)]
    ids = setup.corrupt.to(model_device(model))
    for start in range(0, len(todo), rows):
        if cancel is not None and cancel.is_set():
            raise RequestCancelled("Patching cancelled.")
        chunk = todo[start:start + rows]
        plan = [(patches[i], row) for row, i in enumerate(chunk)]
        with intervene_rows(model, plan, setup.source, t):
            logits = last_logits(model, ids.expand(len(chunk), t))                  # (b, V)
        out[chunk] = (logits[:, setup.answer] - logits[:, setup.foil]).cpu()
        if progress is not None:
            progress(n - len(todo) + min(start + rows, len(todo)), n)
    if progress is not None and not todo:
        progress(n, n)
    return out


def _result(site: str, setup: PatchingSetup, diffs: torch.Tensor, seconds: float) -> PatchingResult:
    span = setup.clean_diff - setup.corrupt_diff
    notes = []
    if abs(span) < 1e-6:
        notes.append("the clean and corrupted runs give the same logit difference, so nothing can be normalised; "
                     "pick prompts that change the answer")
        span = float("nan")
    return PatchingResult(site, (diffs - setup.corrupt_diff) / span, diffs, setup.answer, setup.foil,
                          setup.clean_diff, setup.corrupt_diff, seconds, notes)


def patch_residual(model, setup: PatchingSetup, rows: int | None = None, progress: Progress | None = None,
                   cancel: threading.Event | None = None) -> PatchingResult:
    """Scores (L, T): the residual after layer l at position p from the clean run."""
    start = time.perf_counter()
    n_layers, t = len(sites_of(model).layers), setup.corrupt.numel()
    patches = [Patch("resid", layer, pos) for layer in range(n_layers) for pos in range(t)]
    diffs = run_patches(model, setup, patches, rows, progress, cancel).reshape(n_layers, t)
    return _result("resid", setup, diffs, time.perf_counter() - start)


def patch_heads(model, setup: PatchingSetup, rows: int | None = None, progress: Progress | None = None,
                cancel: threading.Event | None = None) -> PatchingResult:
    """Scores (L, H): head h of layer l at every position from the clean run."""
    start = time.perf_counter()
    sites = sites_of(model)
    n_layers, n_heads = len(sites.layers), sites.n_heads
    patches = [Patch("head", layer, None, head) for layer in range(n_layers) for head in range(n_heads)]
    diffs = run_patches(model, setup, patches, rows, progress, cancel).reshape(n_layers, n_heads)
    return _result("head", setup, diffs, time.perf_counter() - start)


__all__ = ["PatchingResult", "PatchingSetup", "batch_rows", "check_lengths", "patch_heads", "patch_residual",
           "prepare", "run_patches"]
