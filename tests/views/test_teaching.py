"""Teaching text: every view and figure the page draws is explained, the tour formats with a real
capture's numbers, and prompt text quoted in it cannot turn into Markdown."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from explorer.record.capture import capture
from explorer.views.readout import Readout
from explorer.views.teaching import EXPLANATIONS, GLOSSARY, TOUR, escape_markdown, render, visible_whitespace
from explorer.views.url_state import VIEWS
from tests.tiny_models import tiny_model

ROOT = Path(__file__).resolve().parents[2]
PAGE_PARTS = sorted((ROOT / "pages" / "_internals").glob("*.py"))


@pytest.fixture(scope="module")
def facts() -> dict:
    model = tiny_model("llama")
    cap = capture(model, None, list(range(3, 40)))
    return Readout(cap, model).tour_facts()


def test_every_view_and_every_explained_figure_of_the_page_has_text():
    used = set(re.findall(r'explain\("([a-z_]+)"\)', "".join(p.read_text() for p in PAGE_PARTS)))
    assert used, "the page no longer calls explain(...)"
    for key in set(VIEWS) | used:
        e = EXPLANATIONS[key]
        assert e.title and len(e.shows) > 40 and len(e.read) > 20, key


def test_no_explanation_silently_replaces_another():
    tree = ast.parse((ROOT / "explorer" / "views" / "teaching.py").read_text())
    table = next(n.value for n in tree.body if isinstance(n, ast.AnnAssign) and n.target.id == "EXPLANATIONS")
    keys = [k.value for k in table.keys]
    assert len(keys) == len(set(keys)), sorted(k for k in keys if keys.count(k) > 1)


def test_every_tour_step_formats_with_a_real_capture(facts):
    assert len(TOUR) >= 8 and len({s.key for s in TOUR}) == len(TOUR)
    for step in TOUR:
        text = render(step.body, facts)
        assert "{" not in text and "}" not in text, step.key
    quoted = render(TOUR[0].body, facts)
    assert str(facts["n_tokens"]) in quoted
    sinks = next(s for s in TOUR if s.key == "sinks")
    assert f"layer {facts['sink_layer']} head {facts['sink_head']}" in render(sinks.body, facts)


def test_missing_facts_show_as_a_question_mark():
    text = render("p = {prediction_prob:.0%}, layer {settle_layer}", {"settle_layer": None})
    assert text == "p = ?, layer ?"


def test_prompt_text_in_the_tour_cannot_become_markdown_or_html():
    out = render("from “{first_token}”", {"first_token": "**bold** [x](javascript:alert(1)) <b>:red[x]"})
    assert "**bold**" not in out and "](" not in out and "<b>" not in out
    assert escape_markdown("a_b") == "a\\_b"
    assert visible_whitespace(" the\n") == "␣the↵" and visible_whitespace("") == "∅"


def test_glossary_defines_the_words_the_views_use():
    assert len(GLOSSARY) >= 15
    for term in ("Residual stream", "Logit lens", "Attention sink", "Entropy", "PCA", "KV head"):
        assert any(t.startswith(term) for t in GLOSSARY), term
    assert all(len(v) > 20 for v in GLOSSARY.values())
