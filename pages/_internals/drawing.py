"""Helpers every view uses: draw a cached figure, explain it, turn a click into a layer/head/token."""
from __future__ import annotations

from collections.abc import Callable

import plotly.graph_objects as go
import streamlit as st

from explorer.views.figures.attention import Outline
from explorer.views.readout import Readout
from explorer.views.teaching import EXPLANATIONS
from explorer.views.text import visible_whitespace
from pages._internals.on_screen import OnScreen
from pages._state import HEAD, LAYER, TOKEN, VIEW
from pages._state import INTERNALS as K

PLOTLY_CONFIG = {"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2}}


class Shown:
    """Figures and tables drawn in this fragment run, offered as downloads at the end."""

    def __init__(self, cur: OnScreen) -> None:
        self.cur = cur
        self.figures: list[tuple[str, go.Figure]] = []
        self.tables: list[tuple[str, Callable]] = []

    def figure(self, name: str, build: Callable[[], go.Figure], key: tuple | None = None,
               on_select: Callable | None = None, mark: Callable[[go.Figure], object] | None = None,
               as_html: Callable[[go.Figure], str | None] | None = None) -> go.Figure:
        """Draw a figure; `key` caches it per capture, `mark` then updates its selection outline.

        `as_html` may render the figure as plain HTML instead of a Plotly chart (it returns None to
        decline); the download still offers the interactive figure.
        """
        fig = self.cur.figure((name,) + key, build) if key is not None else build()
        if mark is not None:
            mark(fig)
        self.figures.append((name, fig))
        markup = as_html(fig) if as_html is not None else None
        if markup is not None:
            with st.container(key=K + "html_" + name):
                st.html(markup)
        else:
            st.plotly_chart(fig, key=K + "fig_" + name, config=PLOTLY_CONFIG,
                            on_select=on_select or "ignore", selection_mode="points")
        return fig

    def table(self, name: str, make) -> None:
        self.tables.append((name, make))


def outline_over(chart_key: str, outline: Outline | None) -> None:
    """Draw `outline` over the chart keyed `chart_key`, as CSS.

    Why CSS: the chart's spec stays byte-identical, so Streamlit keeps the drawn chart instead of
    remounting it (a remount draws a large Plotly figure twice); only this small style changes.
    The style's own container is hidden, so it takes no room.
    """
    holder = chart_key + "_outline"
    css = f".st-key-{holder} {{ display: none; }}"
    if outline is not None:
        m = outline.margin
        w, h = f"(100% - {m['l'] + m['r']}px)", f"(100% - {m['t'] + m['b']}px)"
        css += (f" .st-key-{chart_key} .stPlotlyChart {{ position: relative; }}"
                f" .st-key-{chart_key} .stPlotlyChart::after {{ content: ''; position: absolute; z-index: 2;"
                f" pointer-events: none; box-sizing: border-box; border: 2px solid {outline.color};"
                f" left: calc({m['l']}px + {w} * {outline.left:.5f}); width: calc({w} * {outline.right - outline.left:.5f});"
                f" top: calc({m['t']}px + {h} * {outline.top:.5f}); height: calc({h} * {outline.bottom - outline.top:.5f}); }}")
    with st.container(key=holder):
        st.markdown(f"<style>{css}</style>", unsafe_allow_html=True)


def explain(key: str) -> None:
    e = EXPLANATIONS[key]
    st.caption(f"**{e.title}.** {e.shows} *How to read it:* {e.read}")


def selected(chart_key: str) -> dict | None:
    state = st.session_state.get(chart_key)
    points = (state or {}).get("selection", {}).get("points") or []
    return points[0] if points else None


def point_values(value) -> list[int]:
    """customdata of a clicked point as ints: a list, a scalar, or a typed array ({"0": a, "1": b})."""
    if isinstance(value, dict):
        value = [value[k] for k in sorted(value, key=int)]
    if not isinstance(value, (list, tuple)):
        value = [value]
    return [int(v) for v in value]


def pick_head_from(chart_key: str, open_view: str | None = None) -> Callable[[], None]:
    """A click on a [layer, head] cell picks that head; `open_view` also switches to that view
    (the attribution chart's "click a head to open its attention map")."""
    def callback() -> None:
        point = selected(chart_key)
        if point and point.get("customdata") is not None:
            values = point_values(point["customdata"])
            if len(values) == 2:
                st.session_state[LAYER], st.session_state[HEAD] = values
                if open_view is not None:
                    st.session_state[VIEW] = open_view
    return callback


def pick_token_from(chart_key: str) -> Callable[[], None]:
    def callback() -> None:
        point = selected(chart_key)
        if point is not None and point.get("customdata") is not None:
            st.session_state[TOKEN] = point_values(point["customdata"])[0]
    return callback


def token_name(r: Readout, i: int) -> str:
    text = visible_whitespace(r.texts[i])
    return f"{i} · {text[:24]}"

