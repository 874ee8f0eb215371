"""The app in a real browser: it loads the embedded model and streams an answer to a prompt."""
import re

import pytest

from tests.browser.conftest import wait_idle

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_chat_streams_an_answer_from_the_embedded_model(app_url, page):
    page.goto(f"{app_url}/")  # the default page lives at the root URL
    page.get_by_text("SmolLM2-135M-Instruct", exact=False).first.wait_for(timeout=300_000)
    wait_idle(page, 300_000)
    # the model card names the precision (hidden copies, e.g. a closed list's options, do not count)
    page.get_by_text(re.compile(r"\bnf4\b")).filter(visible=True).first.wait_for(timeout=60_000)
    box = page.get_by_test_id("stChatInputTextArea")
    box.fill("What is the capital of France?")
    box.press("Enter")
    answer = page.locator("[data-testid='stChatMessage']").nth(1)
    answer.wait_for(timeout=60_000)
    # streaming: text grows while the script is still running, before the stats line appears
    page.wait_for_function(
        "() => { const m = document.querySelectorAll(\"[data-testid='stChatMessage']\"); "
        "const running = document.querySelector(\"[data-test-script-state='running']\"); "
        "return running && m.length > 1 && m[1].innerText.trim().length > 0; }", timeout=300_000)
    wait_idle(page, 400_000)
    text = page.locator("[data-testid='stChatMessage']").nth(1).inner_text()
    assert "Paris" in text
    assert page.get_by_text(re.compile(r"tokens/s")).first.is_visible()
