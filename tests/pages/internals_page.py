"""The Internals page opened on a given capture, and what its AppTests read off it (one helper for all of them)."""
from __future__ import annotations

import base64
import html
import json
import re
import struct
from pathlib import Path

from streamlit.testing.v1 import AppTest

from explorer.analyse.derived import Derived
from explorer.record.capture import Capture
from explorer.views.readout import Readout

PAGE = str(Path(__file__).resolve().parents[2] / "pages" / "internals.py")


def page_with(cap: Capture, view: str = "attention", *, model=None, origin: str = "test prompt",
              prompt: str | None = "x", answer_start: int | None = None, results: Derived | None = None) -> AppTest:
    """The page run once with `cap` on screen at layer 1, head 0, the last token, in `view`;
    `results`: what was derived from it beforehand (a file's, as open_with_results hands them back)."""
    from pages import _state
    from pages._internals.on_screen import OnScreen

    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state[_state.ON_SCREEN] = OnScreen(Readout(cap, model, results=results), prompt, "text", origin, answer_start=answer_start)
    at.session_state[_state.LAYER] = 1
    at.session_state[_state.HEAD] = 0
    at.session_state[_state.TOKEN] = cap.num_tokens - 1
    at.session_state[_state.LINK_READ] = True
    at.session_state[_state.VIEW] = view
    return at.run()


def specs(at: AppTest) -> dict[str, dict]:
    """Figures on the page by their title (the first line of it); a large attention map drawn as
    HTML appears as {"html": its markup}."""
    out = {}
    for el in at.get("plotly_chart"):
        spec = json.loads(el.proto.spec)
        title = spec["layout"].get("title", {}).get("text", "")
        out[title.split("<br>")[0]] = spec
    for el in at.get("html"):
        found = re.search(r'class="attention-map-image" data-title="([^"]*)"', el.value)
        if found:
            out[html.unescape(found.group(1))] = {"html": el.value}
    return out


def png_size(markup: str) -> tuple[int, int]:
    """(rows, columns) of the first PNG in the markup, read from its header."""
    data = base64.b64decode(re.search(r'src="data:image/png;base64,([^"]+)"', markup).group(1))
    width, height = struct.unpack(">II", data[16:24])
    return height, width


def shape(spec: dict, trace: int = 0) -> tuple[int, ...]:
    if "html" in spec:                                           # drawn as a picture, one pixel per cell
        return png_size(spec["html"])
    if spec["data"][trace].get("type") == "image":               # a large map travels as a PNG
        meta = spec["layout"]["meta"]
        return (meta["rows"], meta["cols"])
    z = spec["data"][trace]["z"]
    if isinstance(z, dict):
        return tuple(int(s) for s in str(z["shape"]).split(","))
    return (len(z), len(z[0]))


def title_starting(at: AppTest, prefix: str) -> str:
    found = [t for t in specs(at) if t.startswith(prefix)]
    assert found, f"no figure titled {prefix!r}; have {list(specs(at))}"
    return found[0]
