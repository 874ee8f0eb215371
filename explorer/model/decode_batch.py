"""Several answers decoded as one batch: a row joins at the next step and leaves the moment it ends.

Why our own loop and not transformers' continuous batching (`ContinuousBatchingManager`): that
engine runs its own background thread (every model call here belongs to the one worker thread,
which also runs captures between two steps), takes per request only temperature/top-k/top-p
(no repetition penalty, no per-request greedy or min_new_tokens), and needs its paged attention
(`paged|sdpa`/flash), not the attention functions this project registers for captures.

How. The rows that joined since the last step are prefilled together in one left-padded forward
(up to `prefill_tokens` padded tokens a step, so a long prompt does not stall the running rows for
long; the rest join at the next step), with a 2-D mask that hides the padding and each row's own
position ids, so rotary and absolute positions are what they would be alone. Their cache then
merges into the running group: every layer's keys and values are left-padded to a common length
and concatenated on the batch axis. A row that ends is removed from the cache at once and columns
that only held padding are trimmed. Caches that cannot be padded this way (sliding-window layers)
stay one group per row, prefilled alone: still one worker, still interleaved, just not one forward.

Why attention runs row by row on CPU: the linear layers, which read every weight and cost most of
a step, are batched; a padded attention, though, reduces over shifted columns and in bf16 that
alone changed the embedded model's greedy answer after a few tokens. So each row attends over its
own columns (in a prefill, from its own first query too) with the model's own attention function,
exactly as it would alone, and a greedy answer decoded in a batch is token for token the answer
decoded alone. That holds where the linear layers give each row the same result whatever the batch
(measured on CPU in NF4, the default, and fp32; the embedded model in bf16 on CPU drifts after a few
dozen tokens in some rows, with or without the shared prefill); cuBLAS chooses its kernels by batch
size, so on a GPU exactness cannot hold anyway, and there one masked attention call serves all rows
(`exact=False`, the default off CPU). Eager attention (module-local, no registered function) keeps the masked batch in
decode and prefills each row alone.

A row may carry an edit (RowEdit: hooks on its own batch index, entered around each forward it is
in, indices recomputed as rows come and go), so an answer with heads off decodes beside plain ones
(explorer/record/row_interventions.py); only edits that change a position from that position alone
qualify, since a padded prefill and other rows share the forward.

Why no cuDNN attention in these forwards on a GPU: PyTorch keeps cuDNN's attention graphs in a
per-thread cache keyed by the exact shapes (batch, query and key lengths), and builds a missing
one for tens of milliseconds. A decode step's key length is new at every step and a class changes
the batch all the time, so nearly every step missed: one student through the worker decoded at 11
tok/s on an H200 where the same loop on shapes an earlier run had warmed did 27. Flash and
memory-efficient attention build nothing. (`cudnn_sdpa=True` keeps cuDNN, for the benchmark.)
"""
from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from explorer.model.decode_attention import no_cudnn_attention, pad_left, registered_attention, rowwise_attention
from explorer.model.decode_choose import choose, choose_all
from explorer.model.generation_types import GenerateOptions
from explorer.model.prompts import PreparedPrompt

PREFILL_TOKENS = {"cpu": 256, "cuda": 2048}   # padded prompt tokens prefilled in one step (others: cuda's)


class RowEdit(Protocol):
    """Hooks that change one row of a batched forward and leave every other row as it was
    (explorer/record/row_interventions.py: an answer with heads off, decoded beside other sessions'
    plain answers). Row-local changes only: nothing that reads other positions' padding or another run."""

    def check(self, model: torch.nn.Module) -> None:
        """Raise (one sentence) if the edit cannot apply to this model; called before the row joins."""

    def applied(self, model: torch.nn.Module, row: int) -> contextlib.AbstractContextManager:
        """A context in which every forward of `model` in this thread has the edit on batch row `row`."""


@dataclass(eq=False)
class Row:
    """One answer being decoded. `streamer` is anything with put(ids)/end() (transformers' streamers);
    `edit`: hooks for this row alone, on at each forward it takes part in."""

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
    edit: RowEdit | None = None

    def __post_init__(self) -> None:
        self.ids: list[int] = self.prepared.input_ids[0].tolist()   # prompt + generated so far
        self.position = len(self.ids)                               # position id of the next token

    @property
    def stopped(self) -> bool:
        return self.stop_event.is_set()


class AllSet:
    """An event-like view of several events: set once every one of them is set. A forward shared by
    several rows (a prefill) or requests (a batched capture) is cancelled only when none of them
    still wants it; one stopped alone leaves after it."""

    def __init__(self, events: Iterable[threading.Event]) -> None:
        self.events = list(events)

    def is_set(self) -> bool:
        return all(e.is_set() for e in self.events)


def _mergeable(cache, filled: bool = True) -> bool:
    """Plain dynamic layers (no sliding window), filled by a forward unless `filled` is False."""
    from transformers.cache_utils import DynamicLayer
    return all(type(layer) is DynamicLayer and (layer.is_initialized or not filled) for layer in cache.layers)


class Group:
    """Rows that share one cache: (B, heads, L, head_dim) per layer and a (B, L) mask, right-aligned."""

    def __init__(self, rows: list[Row], cache, mask: torch.Tensor) -> None:
        self.rows = list(rows)
        self.cache = cache
        self.mask = mask                                      # (B, L): 1 real, 0 left padding
        self.mergeable = _mergeable(cache)

    @property
    def length(self) -> int:
        return self.mask.shape[1]

    def absorb(self, other: Group) -> None:
        width = max(self.length, other.length)
        for mine, theirs in zip(self.cache.layers, other.cache.layers, strict=True):
            mine.keys = torch.cat([pad_left(mine.keys, width, 2), pad_left(theirs.keys, width, 2)], dim=0)
            mine.values = torch.cat([pad_left(mine.values, width, 2), pad_left(theirs.values, width, 2)], dim=0)
        self.mask = torch.cat([pad_left(self.mask, width, 1), pad_left(other.mask, width, 1)], dim=0)
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


class DecodeBatch:
    """The rows being decoded on one model. Not thread-safe: one thread (the worker's) calls it."""

    def __init__(self, model: torch.nn.Module, stop: set[int], exact: bool | None = None,
                 prefill_tokens: int | None = None, cudnn_sdpa: bool = False) -> None:
        from transformers import DynamicCache
        self.model = model
        self.stop = stop
        self._cache_class = DynamicCache
        self.pending: list[Row] = []
        self.groups: list[Group] = []
        self.device = model.get_input_embeddings().weight.device
        self.exact = self.device.type == "cpu" if exact is None else exact   # per-row attention (see above)
        self.prefill_tokens = prefill_tokens or PREFILL_TOKENS.get(self.device.type, PREFILL_TOKENS["cuda"])
        self.cudnn_sdpa = cudnn_sdpa
        self._pads = _mergeable(self._new_cache(), filled=False)      # can rows share one cache?

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
        """One decode step of every running row, then one prefill of the rows that joined (as many as
        `prefill_tokens` allows); returns the rows that ended in this step. `prefill_guard(rows)` is a
        context for that long forward (cancel), given an event-like AllSet of the rows' stop events."""
        ended: list[Row] = self._leave_stopped()
        with torch.inference_mode(), no_cudnn_attention(self.device, keep=self.cudnn_sdpa):
            for group in list(self.groups):
                ended += self._decode(group)
            for rows in self._joining():
                ended += self._prefill(rows, prefill_guard)
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
    def _new_cache(self):
        return self._cache_class(config=self.model.config)

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

    def _joining(self) -> list[list[Row]]:
        """The pending rows prefilled in this step, first come first: at least one, then as many as
        keep the padded prompt tokens (rows × longest prompt) within `prefill_tokens`; as one forward
        where rows can share a cache (and, when exact, attend row by row), else one forward each."""
        take, longest = 0, 0
        for row in self.pending:
            longest = max(longest, row.prepared.input_ids.shape[1])
            if take and (take + 1) * longest > self.prefill_tokens:
                break
            take += 1
        joining, self.pending = self.pending[:take], self.pending[take:]
        together = self._pads and not (self.exact and registered_attention(self.model) is None)
        return [joining] if together and joining else [[row] for row in joining]

    def _prefill(self, rows: list[Row], guard) -> list[Row]:
        """One left-padded forward of these rows' prompts; they become one group."""
        now = time.perf_counter()
        for row in rows:
            row.started = now
        lengths = [row.prepared.input_ids.shape[1] for row in rows]
        width = max(lengths)
        mask = torch.tensor([[0] * (width - n) + [1] * n for n in lengths], device=self.device)    # (B, T)
        ids = torch.cat([pad_left(row.prepared.input_ids.to(self.device), width, 1) for row in rows])  # (B, T)
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)                                            # (B, T)
        cache = self._new_cache()
        cancel = guard(AllSet(r.stop_event for r in rows)) if guard is not None else contextlib.nullcontext()
        rowwise = (rowwise_attention(self.model, [width - n for n in lengths]) if self.exact and len(rows) > 1
                   else contextlib.nullcontext())
        try:
            with cancel, rowwise, self._edits(rows):
                out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                                 use_cache=True, cache_position=torch.arange(width, device=self.device))
            logits = out.logits[:, -1].float()                                                       # (B, V)
            del out
        except Exception as exc:  # noqa: BLE001 - these rows fail, the others go on
            for row in rows:
                self._end(row, exc)
            return list(rows)
        group = Group(rows, cache, mask)
        self.groups.append(group)
        return self._choose(group, logits)

    def _decode(self, group: Group) -> list[Row]:
        rows = group.rows
        length = group.length
        input_ids = torch.tensor([[r.ids[-1]] for r in rows], device=self.device)          # (B, 1)
        positions = torch.tensor([[r.position] for r in rows], device=self.device)         # (B, 1)
        group.mask = torch.cat([group.mask, group.mask.new_ones((len(rows), 1))], dim=1)  # (B, L+1)
        for row in rows:
            row.position += 1
        try:
            starts = (group.mask == 0).sum(dim=1).tolist() if self.exact else []   # left padding of each row
            with rowwise_attention(self.model, starts) if self.exact else contextlib.nullcontext(), self._edits(rows):
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
        return self._choose(group, logits)

    def _edits(self, rows: list[Row]) -> contextlib.ExitStack:
        """Each edited row's hooks, on its own batch index, for one forward (indices change as rows leave)."""
        stack = contextlib.ExitStack()
        try:
            for index, row in enumerate(rows):
                if row.edit is not None:
                    stack.enter_context(row.edit.applied(self.model, index))
        except BaseException:
            stack.close()
            raise
        return stack

    def _choose(self, group: Group, logits: torch.Tensor) -> list[Row]:
        """Every row's next token from (B, V) logits, recorded; the rows that finished leave the group."""
        rows = group.rows
        try:
            tokens = choose_all(rows, logits, self.stop)
        except Exception as exc:  # noqa: BLE001 - a broken choice fails this group's rows, not the batch
            tokens = [None] * len(rows)
            for row in rows:
                row.error = exc
        ended = [row for row, token in zip(rows, tokens, strict=True) if token is None or self._take(row, token)]
        if ended:
            group.keep([r for r in rows if r not in ended])
            if not group.rows:
                self.groups.remove(group)
            for row in ended:
                self._end(row, row.error)
        return ended

    def _take(self, row: Row, token: int) -> bool:
        """Record a row's next token; True when the row is finished."""
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


__all__ = ["DecodeBatch", "Group", "AllSet", "Row", "RowEdit", "choose", "choose_all", "decode_all"]
