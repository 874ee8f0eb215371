"""A class captures at once: captures sent from several tabs while the worker is busy share one
batched forward, and each tab shows its own prompt's capture (Chromium, the real server)."""
from __future__ import annotations

import re
import time

import pytest

from tests.browser.conftest import new_page, open_with_model, screenshot, wait_idle
from tests.browser.test_internals_browser import wait_for_titles

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PROMPTS = {"apple": "Why do apples fall from the tree?", "river": "Where does the river meet the sea?",
           "violin": "How does a violin make its sound?"}


def _send(page, text: str) -> None:
    page.get_by_label("Or capture a prompt without generating").fill(text)
    page.get_by_role("button", name="Capture this prompt").click()


def test_captures_sent_while_the_worker_is_busy_share_one_forward_and_each_tab_shows_its_own(app_server, browser):
    pages = [new_page(browser) for _ in range(1 + len(PROMPTS))]
    try:
        for pg in pages:
            open_with_model(pg, app_server.url)
        # a long capture keeps the worker busy while the class sends its own
        _send(pages[0], " ".join(["The quick brown fox jumps over the lazy dog."] * 250))
        deadline = time.time() + 60
        while app_server.worker().get("running") != "call" and time.time() < deadline:
            time.sleep(0.05)
        assert app_server.worker().get("running") == "call"
        for pg, text in zip(pages[1:], PROMPTS.values()):
            _send(pg, text)
        for pg in pages:
            pg.wait_for_timeout(300)
            wait_idle(pg, 300_000)
        for pg, (word, _text) in zip(pages[1:], PROMPTS.items()):
            pg.get_by_text(re.compile(r"Captured \d+ tokens × 30 layers")).first.wait_for(timeout=60_000)
            strip = "".join(pg.locator(".st-key-internals_strip text").all_text_contents())
            assert word in strip and not any(w in strip for w in PROMPTS if w != word)
            screenshot(pg, f"shared_capture_{word}")
        screenshot(pages[0], "shared_capture_long")
        # a capture from the shared forward drives the views that read the most of it
        shared = pages[1]
        shared.set_viewport_size({"width": 1600, "height": 2400})
        for view, wanted in (("Attribution", ["Information-flow routes into position", "Direct contribution to the logit"]),
                             ("Logit lens", ["Logit lens: top next-token guess"])):
            shared.get_by_role("radio", name=view, exact=True).click()
            wait_for_titles(shared, wanted)
            wait_idle(shared)
            assert shared.locator("[data-testid='stException']").count() == 0
            screenshot(shared, f"shared_capture_{view.split()[0].lower()}")
        status = app_server.worker()
        assert status.get("shared_most", 1) >= 2, status        # the class's captures shared a forward
        assert status.get("queued") == 0
    finally:
        for pg in pages:
            pg.context.close()
