"""Several answers decoded as one batch: a row joins at the next step and leaves the moment it ends.

Why our own loop and not transformers' continuous batching (`ContinuousBatchingManager`): that
engine runs its own background thread (every model call here belongs to the one worker thread,
which also runs captures between two steps), takes per request only temperature/top-k/top-p
(no repetition penalty, no per-request greedy or min_new_tokens), and needs its paged attention
(`paged|sdpa`/flash), not the attention functions this project registers for captures.

How. A new row is prefilled alone (batch of one, no padding: exactly the prompt's forward when it
is decoded alone), then its cache is merged into the running group: every layer's keys and values
are left-padded to a common length and concatenated on the batch axis, with a 2-D attention mask
that hides the padding. Each row keeps its own position ids, so rotary and absolute positions are
what they would be alone. A row that ends is removed from the cache at once and columns that only
held padding are trimmed. Caches that cannot be padded this way (sliding-window layers) stay one
group per row: still one worker, still interleaved, just not one forward.

Why attention runs row by row in a decode step: the linear layers, which read every weight and
cost most of a step, are batched; a padded attention, though, reduces over shifted columns and in
bf16 that alone changed the embedded model's greedy answer after a few tokens. So each row attends
over its own columns with the model's own attention function, exactly as it would alone, and a
greedy answer decoded in a batch is token for token the answer decoded alone. That holds where the
linear layers give each row the same result whatever the batch (measured on CPU, bf16 and fp32);
cuBLAS chooses its kernels by batch size, so on a GPU exactness cannot hold anyway, and there one
masked attention call serves all rows (`exact=False`, the default off CPU) instead of one per row.
"""
from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from explorer.model.generation_types import GenerateOptions
from explorer.model.prompts import PreparedPrompt


@dataclass(eq=False)
class Row:
    """One answer being decoded. `streamer` is anything with put(ids)/end() (transformers' streamers)."""

    prepared: PreparedPrompt
    options: GenerateOptions
    streamer: Any = None
    stop_event: threading.Event = field(default_factory=threading.Event)
    new: list[int] = field(default_factory=list)
    started: float | None = None   # perf_counter when its prefill began
    first: float | None = None     # ... when its first token was chosen
    finished: float | None = None
    peers: int = 0                 # most other rows it was decoded with at once
    error: BaseException | None = None
    done: bool = False

    def __post_init__(self) -> None:
        self.ids: list[int] = self.prepared.input_ids[0].tolist()   # prompt + generated so far
        self.position = len(self.ids)                               # position id of the next token

    @property
    def stopped(self) -> bool:
        return self.stop_event.is_set()


ROWWISE = "explorer_rowwise"
_ROWS = threading.local()     # .starts: each row's first real column; .inner: the model's attention function


def _rowwise_attention(module, query, key, value, attention_mask, **kwargs):
    """query (B, H, 1, D), key/value (B, Hkv, L, D): each row over its own columns, with no mask,
    through the model's own attention function (the call it gets when decoded alone)."""
    outs = [_ROWS.inner(module, query[i:i + 1], key[i:i + 1, :, s:], value[i:i + 1, :, s:], None, **kwargs)[0]
            for i, s in enumerate(_ROWS.starts)]
    return torch.cat(outs, dim=0), None          # (B, 1, H, D)


def _register_rowwise() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    if getattr(_register_rowwise, "done", False):
        return
    AttentionInterface.register(ROWWISE, _rowwise_attention)
    AttentionMaskInterface.register(ROWWISE, sdpa_mask)
    _register_rowwise.done = True


@contextlib.contextmanager
def rowwise_attention(model: torch.nn.Module, starts: list[int]):
    """Decode with per-row attention where the model's attention is a registered function (sdpa,
    ours for captures); eager attention (module-local) keeps the masked batch instead."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    previous = model.config._attn_implementation
    inner = ALL_ATTENTION_FUNCTIONS.get(previous) if previous and previous != ROWWISE else None
    if inner is None:
        yield
        return
    _register_rowwise()
    _ROWS.starts, _ROWS.inner = starts, inner
    model.config._attn_implementation = ROWWISE
    try:
        yield
    finally:
        model.config._attn_implementation = previous
        _ROWS.starts = _ROWS.inner = None


def _mergeable(cache) -> bool:
    from transformers.cache_utils import DynamicLayer
    return all(type(layer) is DynamicLayer and layer.is_initialized for layer in cache.layers)


def _pad_left(t: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    missing = width - t.shape[dim]
    if missing == 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)


class Group:
    """Rows that share one cache: (B, heads, L, head_dim) per layer and a (B, L) mask, right-aligned."""

    def __init__(self, row: Row, cache, length: int, device: torch.device) -> None:
        self.rows = [row]
        self.cache = cache
        self.mask = torch.ones((1, length), dtype=torch.long, device=device)  # (B, L)
        self.mergeable = _mergeable(cache)

    @property
    def length(self) -> int:
        return self.mask.shape[1]

    def absorb(self, other: Group) -> None:
        width = max(self.length, other.length)
        for mine, theirs in zip(self.cache.layers, other.cache.layers, strict=True):
            mine.keys = torch.cat([_pad_left(mine.keys, width, 2), _pad_left(theirs.keys, width, 2)], dim=0)
            mine.values = torch.cat([_pad_left(mine.values, width, 2), _pad_left(theirs.values, width, 2)], dim=0)
        self.mask = torch.cat([_pad_left(self.mask, width, 1), _pad_left(other.mask, width, 1)], dim=0)
        self.rows.extend(other.rows)

    def keep(self, rows: list[Row]) -> None:
        """Drop every row not in `rows`, then the columns that are padding in every remaining row."""
        index = [i for i, r in enumerate(self.rows) if r in rows]
        if len(index) == len(self.rows):
            return
        self.rows = [self.rows[i] for i in index]
        if not index:
            return
        idx = torch.tensor(index, device=self.mask.device)
        mask = self.mask[idx]
        start = int(mask.any(dim=0).nonzero()[0])          # first column some row still uses
        self.mask = mask[:, start:]
        for layer in self.cache.layers:
            layer.keys = layer.keys[idx, :, start:]
            layer.values = layer.values[idx, :, start:]


def choose(row: Row, logits: torch.Tensor, stop: set[int]) -> int:
    """The next token of one row from its (V,) fp32 logits, with that row's own settings, in the
    order transformers' generate applies them: repetition penalty, min length, then the warpers."""
    opts = row.options
    scores = logits.clone()
    if opts.repetition_penalty != 1.0:
        seen = torch.tensor(sorted(set(row.ids)), device=scores.device)
        picked = scores[seen]
        scores[seen] = torch.where(picked < 0, picked * opts.repetition_penalty, picked / opts.repetition_penalty)
    if opts.min_new_tokens and len(row.new) < min(opts.min_new_tokens, row.prepared.max_new_tokens) and stop:
        scores[torch.tensor(sorted(stop), device=scores.device)] = -float("inf")
    if not opts.do_sample:
        return int(scores.argmax())
    from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper
    batch = scores[None]                                       # (1, V)
    ids = torch.tensor([row.ids], device=scores.device)        # (1, n)
    for warper in (TemperatureLogitsWarper(opts.temperature), TopKLogitsWarper(opts.top_k) if opts.top_k else None,
                   TopPLogitsWarper(opts.top_p) if opts.top_p < 1.0 else None):
        if warper is not None:
            batch = warper(ids, batch)
    return int(torch.multinomial(torch.softmax(batch, dim=-1), 1)[0, 0])


class DecodeBatch:
    """The rows being decoded on one model. Not thread-safe: one thread (the worker's) calls it."""

    def __init__(self, model: torch.nn.Module, stop: set[int], exact: bool | None = None) -> None:
        from transformers import DynamicCache
        self.model = model
        self.stop = stop
        self._cache_class = DynamicCache
        self.pending: list[Row] = []
        self.groups: list[Group] = []
        self.device = model.get_input_embeddings().weight.device
        self.exact = self.device.type == "cpu" if exact is None else exact   # per-row attention (see above)

    @property
    def rows(self) -> list[Row]:
        return self.pending + [r for g in self.groups for r in g.rows]

    @property
    def active(self) -> bool:
        return bool(self.pending or self.groups)

    def add(self, row: Row) -> None:
        if row.streamer is not None:
            row.streamer.put(row.prepared.input_ids.cpu())   # streamers skip the prompt they are first given
        self.pending.append(row)

    def step(self, prefill_guard=None) -> list[Row]:
        """One decode step of every running row, then the prefill of every row that joined; returns
        the rows that ended in this step. `prefill_guard(row)` is a context for a long forward (cancel)."""
        ended: list[Row] = self._leave_stopped()
        with torch.inference_mode():
            for group in list(self.groups):
                ended += self._decode(group)
            joined, self.pending = self.pending, []
            for row in joined:
                ended += self._prefill(row, prefill_guard)
        self._merge()
        width = sum(len(g.rows) for g in self.groups)
        for group in self.groups:
            for row in group.rows:
                row.peers = max(row.peers, width - 1)
        return ended

    def fail_all(self, exc: BaseException) -> list[Row]:
        rows = self.rows
        self.pending, self.groups = [], []
        for row in rows:
            self._end(row, exc)
        return rows

    # ------------------------------------------------------------------ inside
    def _leave_stopped(self) -> list[Row]:
        ended = [r for r in self.rows if r.stopped]
        if ended:
            self.pending = [r for r in self.pending if not r.stopped]
            for group in self.groups:
                group.keep([r for r in group.rows if not r.stopped])
            self.groups = [g for g in self.groups if g.rows]
            for row in ended:
                self._end(row)
        return ended

    def _prefill(self, row: Row, guard) -> list[Row]:
        row.started = time.perf_counter()
        ids = row.prepared.input_ids                                      # (1, T)
        length = ids.shape[1]
        cache = self._cache_class(config=self.model.config)
        try:
            with guard(row) if guard is not None else contextlib.nullcontext():
                out = self.model(input_ids=ids, attention_mask=torch.ones_like(ids),
                                 position_ids=torch.arange(length, device=self.device)[None],
                                 past_key_values=cache, use_cache=True,
                                 cache_position=torch.arange(length, device=self.device))
            logits = out.logits[0, -1].float()                               # (V,)
            del out
            group = Group(row, cache, length, self.device)
            if self._take(row, logits):
                self._end(row)
                return [row]
        except Exception as exc:  # noqa: BLE001 - this row fails, the others go on
            self._end(row, exc)
            return [row]
        self.groups.append(group)
        return []

    def _decode(self, group: Group) -> list[Row]:
        rows = group.rows
        length = group.length
        input_ids = torch.tensor([[r.ids[-1]] for r in rows], device=self.device)          # (B, 1)
        positions = torch.tensor([[r.position] for r in rows], device=self.device)         # (B, 1)
        group.mask = torch.cat([group.mask, group.mask.new_ones((len(rows), 1))], dim=1)  # (B, L+1)
        starts = (group.mask == 0).sum(dim=1).tolist()        # left padding of each row
        try:
            with rowwise_attention(self.model, starts) if self.exact else contextlib.nullcontext():
                out = self.model(input_ids=input_ids, attention_mask=group.mask, position_ids=positions,
                                 past_key_values=group.cache, use_cache=True,
                                 cache_position=torch.tensor([length], device=self.device))
            logits = out.logits[:, -1].float()                                             # (B, V)
            del out
        except Exception as exc:  # noqa: BLE001 - a failed forward fails its group's rows
            self.groups.remove(group)
            for row in rows:
                self._end(row, exc)
            return list(rows)
        ended = []
        for i, row in enumerate(rows):
            row.position += 1
            try:
                finished = self._take(row, logits[i])
            except Exception as exc:  # noqa: BLE001 - e.g. a bad sampling setting: that row only
                row.error = exc
                finished = True
            if finished:
                ended.append(row)
        if ended:
            group.keep([r for r in rows if r not in ended])
            if not group.rows:
                self.groups.remove(group)
            for row in ended:
                self._end(row, row.error)
        return ended

    def _take(self, row: Row, logits: torch.Tensor) -> bool:
        """Choose and record a row's next token; True when the row is finished."""
        token = choose(row, logits, self.stop)
        if row.first is None:
            row.first = time.perf_counter()
        row.new.append(token)
        row.ids.append(token)
        if row.streamer is not None:
            row.streamer.put(torch.tensor([token]))
        return token in self.stop or len(row.new) >= row.prepared.max_new_tokens or row.stopped

    def _merge(self) -> None:
        merged: list[Group] = []
        target = None
        for group in self.groups:
            if group.mergeable and target is not None:
                target.absorb(group)
                continue
            if group.mergeable:
                target = group
            merged.append(group)
        self.groups = merged

    def _end(self, row: Row, error: BaseException | None = None) -> None:
        row.done = True
        row.error = error if error is not None else row.error
        row.finished = time.perf_counter()
        if row.streamer is not None:
            try:
                row.streamer.end()
            except Exception:  # noqa: BLE001 - a streamer's failure must not break the batch
                pass


def decode_all(batch: DecodeBatch, rows: list[Row], guard=None) -> None:
    """Decode these rows together until every one has ended (the API's and the CLI's path)."""
    for row in rows:
        batch.add(row)
    while batch.active:
        batch.step(guard)


__all__ = ["DecodeBatch", "Group", "Row", "choose", "decode_all"]
