"""Readout: memoised, screen-sized views of one Capture, the one object the internals page reads.

Why a layer between Capture and figures: switching layer, head or token must not rerun the model
and should not recompute what an earlier switch already computed. A Readout wraps one capture and
memoises each derived view (LRU), so the page's fragment only pays for what changed. The views
themselves are plain functions in attention_data, residual_data, lens_data, tour_data and exports;
this class only names them, remembers them, and fixes the screen budget. No Streamlit, no Plotly.

Two things live beside the capture, never inside it: `results` (a Derived: head summaries, the
full logit lens, token texts the views decoded), which a saved file carries, and `run`, where
computations run. Every memoised view is computed through `run`: the app passes one that runs
it on the model worker (the lens applies the model's LM head, and on a GPU every computation on
the capture's tensors launches kernels, which a fresh page thread would pay cuDNN/cuBLAS set-up for).
"""
from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from explorer.analyse.attribution import direct_logit_attribution
from explorer.analyse.derived import Derived
from explorer.analyse.lens import ModelRef
from explorer.analyse.pca import Projection
from explorer.analyse.routes import attention_rows_from_store, build_routes
from explorer.record.capture_data import Capture
from explorer.views import attention_data, exports, lens_data, residual_data
from explorer.views.attention_data import AttentionView, Overview, TokenAttention
from explorer.views.lens_data import LENS_MAX_POSITIONS, LensWindow, Trajectory
from explorer.views.pooling import MAX_SIDE, OVERVIEW_TILE, Span, clip_window
from explorer.views.residual_data import NormRow, ResidualNorms
from explorer.views.tour_data import tour_facts

T = TypeVar("T")
Runner = Callable[[Callable[[], T]], T]
"""Runs a computation where the model's computations run and returns its result (the app: the
model worker, explorer/model/worker.py); a nested call from inside a computation runs in place."""


def run_here(fn: Callable[[], T]) -> T:
    """The default Runner: now, on the calling thread (scripts, tests, the CLI)."""
    return fn()


class Memo:
    """A small locked LRU: safe to share between a script run and a download thread (a value may
    rarely be computed twice, never stored inconsistently)."""

    def __init__(self, size: int) -> None:
        self._items: OrderedDict[tuple, Any] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key: tuple, compute: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = compute()
        with self._lock:
            self._items[key] = value
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return value

    def __contains__(self, key: tuple) -> bool:
        return key in self._items


class Readout:
    """Memoised, screen-sized views of one Capture.

    model, tokenizer: what made the capture, for the logit lens and for decoding the tokens the
    lens shows; held by weak reference (ModelRef), so a Readout kept in a session does not keep an
    unloaded model alive. A capture opened from a file has neither.
    results: what was derived from the capture before (a file's saved summaries and lens); new
    results are kept there too. run: where computations run (see Runner).
    """

    def __init__(self, capture: Capture, model=None, tokenizer=None, memo_size: int = 96,
                 max_side: int = MAX_SIDE, results: Derived | None = None, run: Runner | None = None):
        self.capture = capture
        self.results = results if results is not None else Derived()
        self.model_ref = ModelRef(model, tokenizer)
        self.max_side = max_side
        self._memo = Memo(memo_size)
        self._run = run or run_here

    def _cached(self, key: tuple, compute: Callable[[], Any]) -> Any:
        """The memoised value of `key`, computed through the runner on a miss."""
        return self._memo.get(key, lambda: self._run(compute))

    def is_cached(self, *key: Any) -> bool:
        return key in self._memo

    # ---- structure ------------------------------------------------------------------------
    @property
    def num_tokens(self) -> int:
        return self.capture.num_tokens

    @property
    def texts(self) -> list[str]:
        return self.capture.token_texts

    @property
    def attention_layers(self) -> list[int]:
        return self.capture.attention_layers

    @property
    def residual_layers(self) -> list[int]:
        return self.capture.residual_layers

    @property
    def view_layers(self) -> list[int]:
        """Layers a layer picker offers: those with attention, else those with a residual stream."""
        return self.attention_layers or self.residual_layers or list(range(self.capture.num_layers))

    @property
    def has_attention(self) -> bool:
        return bool(self.attention_layers)

    @property
    def is_pooled(self) -> bool:
        return self.num_tokens > self.max_side

    # ---- attention ------------------------------------------------------------------------
    def attention_view(self, layer: int, head: int, q_window: Span | None = None,
                       k_window: Span | None = None) -> AttentionView:
        return self._cached(("attention", layer, head, q_window, k_window), lambda: attention_data.attention_view(
            self.capture, layer, head, q_window, k_window, self.max_side))

    def overview(self, tile: int = OVERVIEW_TILE) -> Overview:
        return self._cached(("overview", tile), lambda: attention_data.overview(self.capture, tile))

    def summary_grids(self, token: int | None = None) -> dict[str, np.ndarray]:
        """Head summaries as (L, H) grids: means over queries, or at one query."""
        return self._cached(("summary_grids", token),
                            lambda: attention_data.summary_grids(self.capture, self.results, token))

    @property
    def summaries_ready(self) -> bool:
        return self.results.summaries is not None

    def token_attention(self, token: int, head: int | None = None) -> TokenAttention:
        return self._cached(("token_attention", token, head),
                            lambda: attention_data.token_attention(self.capture, token, head, self.max_side))

    # ---- residual stream, norms, embeddings -----------------------------------------------
    def residual_norms(self) -> ResidualNorms:
        return self._cached(("residual_norms",), lambda: residual_data.residual_norms(self.capture, self.max_side))

    def norm_rows(self) -> list[NormRow]:
        return self._cached(("norm_rows",), lambda: residual_data.norm_rows(self.capture))

    def contributions(self) -> tuple[np.ndarray, np.ndarray] | None:
        return self._cached(("contributions",), lambda: residual_data.contributions(self.capture))

    def projection(self, layer: int | None, drop_first: bool = False, normalise: bool = False) -> Projection:
        return self._cached(("pca", layer, drop_first, normalise),
                            lambda: residual_data.projection(self.capture, layer, drop_first, normalise))

    # ---- routes and direct logit attribution (part "components") ---------------------------
    def routes(self, token: int, threshold: float):
        """The information-flow routes graph into `token` (explorer.analyse.routes)."""
        cap = self.capture
        return self._cached(("routes", token, threshold), lambda: build_routes(
            cap.components, attention_rows_from_store(cap.attention), token, threshold, self.texts))

    def attribution(self, token: int):
        """Direct logit attribution of the prediction at `token` (explorer.analyse.attribution)."""
        return self._cached(("attribution", token), lambda: direct_logit_attribution(self.capture.components, token))

    # ---- logit lens -----------------------------------------------------------------------
    @property
    def lens_available(self) -> bool:
        return lens_data.lens_available(self.capture, self.results, self.model_ref)

    @property
    def lens_from_model(self) -> bool:
        """True when the model's head is at hand (a file can then carry the whole lens); reads no tensor."""
        return lens_data.model_lens_possible(self.capture, self.model_ref)

    def token_text(self, token_id: int) -> str:
        """Decoded text of a token id (kept in results, so a saved file shows it too)."""
        return lens_data.token_text(self.capture, self.results, self.model_ref, token_id)

    def node_lens(self, key: tuple, vector: Callable[[], Any], k: int = 5) -> list[tuple[str, float]] | None:
        """Top-k (text, probability) of the residual vector `vector()` through the LM head; None
        without the model. key names the vector (memoised)."""
        return self._cached(("node_lens", key, k),
                            lambda: lens_data.node_lens(self.capture, self.results, self.model_ref, vector(), k))

    def lens_window(self, start: int, stop: int, k: int = 3) -> LensWindow:
        """Top-k after every kept layer for positions [start, stop), at most LENS_MAX_POSITIONS."""
        start, stop = clip_window((start, stop), self.num_tokens, self.max_side)
        if stop - start > LENS_MAX_POSITIONS:
            start = stop - LENS_MAX_POSITIONS
        return self._cached(("lens", start, stop, k), lambda: lens_data.lens_window(
            self.capture, self.results, self.model_ref, start, stop, k))

    def trajectory(self, position: int) -> Trajectory:
        position = position % self.num_tokens
        return self._cached(("trajectory", position), lambda: lens_data.trajectory(
            self.capture, self.results, self.model_ref, position))

    # ---- the guided tour's numbers --------------------------------------------------------
    def tour_facts(self) -> dict[str, Any]:
        """Numbers the tour's text quotes, from this capture. Missing parts are simply absent."""
        return self._cached(("tour_facts",), self._tour_facts)

    def _tour_facts(self) -> dict[str, Any]:
        try:
            norms = self.residual_norms()
        except LookupError:
            norms = None
        final = None
        if self.lens_available and self.capture.residual is not None:
            with contextlib.suppress(LookupError):
                final = self.trajectory(self.num_tokens - 1)
        summaries = self.summary_grids() if self.has_attention else None
        return tour_facts(self.capture, norms, summaries, self.contributions(), final)

    # ---- files and tables ------------------------------------------------------------------
    def capture_file(self, include_lens: bool = True) -> bytes:
        """The capture file with every result derived so far (computed through the runner)."""
        return self._cached(("file", include_lens),
                            lambda: exports.capture_file_bytes(self.capture, self.results, self.model_ref, include_lens))

    def tokens_table(self) -> pd.DataFrame:
        return exports.tokens_table(self.capture)

    def head_table(self) -> pd.DataFrame:
        return exports.head_table(self.capture, self.summary_grids())

    def residual_table(self) -> pd.DataFrame:
        return exports.residual_table(self.residual_norms())

    def norm_table(self) -> pd.DataFrame:
        return exports.norm_table(self.norm_rows())

    def lens_table(self, window: LensWindow) -> pd.DataFrame:
        return exports.lens_table(window, self.texts)

    def projection_table(self, proj: Projection) -> pd.DataFrame:
        return exports.projection_table(proj, self.texts)


__all__ = ["Memo", "Readout", "Runner", "run_here"]
