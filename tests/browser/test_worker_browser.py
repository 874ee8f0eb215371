"""The model worker seen from real browsers: two sessions share it fairly, the second is told its
place in the queue, a closed tab stops its generation, and an idle server stays idle."""
import re
import time

import psutil
import pytest

from tests.browser.conftest import new_page, screenshot, served_process, wait_idle

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PRECISION = "fp32"
"""These tests need an answer to move token by token in well under a second: the default NF4 with bf16
compute takes 5-10 s per token on a busy CPU without native bf16, and a stop can only land between two
tokens. So the module runs its own server and loads fp32 there once."""

MESSAGES = "[data-testid='stChatMessage']"


def open_chat(browser, url: str):
    pg = new_page(browser)
    pg.goto(f"{url}/")
    pg.get_by_text("SmolLM2-135M-Instruct", exact=False).first.wait_for(timeout=300_000)
    wait_idle(pg, 300_000)
    return pg


def pick_option(pg, selectbox: str, name: str, tries: int = 4) -> None:
    """Open a selectbox and pick an option. On a loaded machine a click that lands while the page is
    still settling after its first run can leave the list closed: open it again rather than fail."""
    option = pg.get_by_role("option", name=name, exact=True)
    for attempt in range(tries):
        pg.locator(selectbox).click()
        try:
            option.wait_for(timeout=15_000)
            break
        except Exception:
            if attempt == tries - 1:
                raise
            pg.keyboard.press("Escape")
    option.click()


@pytest.fixture(scope="module")
def fp32_server(browser, tmp_path_factory):
    """A server of this module's own (the shared one keeps its NF4 model for the other tests), with
    fp32 loaded through the page: the load is a worker request too."""
    with served_process(tmp_path_factory.mktemp("worker") / "server.log", {"EXPLORER_AUTOLOAD": "0"}) as server:
        pg = new_page(browser)
        try:
            pg.goto(f"{server.url}/")
            wait_idle(pg, 300_000)
            pick_option(pg, ".st-key-load_precision", PRECISION)
            pg.locator(".st-key-load_button button").click()
            pg.get_by_text(re.compile(rf"Loaded .* \({PRECISION}\)")).first.wait_for(timeout=300_000)
            wait_idle(pg, 300_000)
        finally:
            pg.context.close()
        yield server


def ask(pg, prompt: str) -> None:
    box = pg.get_by_test_id("stChatInputTextArea")
    box.fill(prompt)
    box.press("Enter")


def wait_streaming(pg, timeout: float = 300_000) -> None:
    """Until the answer's own text grows while the script still runs (a message's avatar is text too,
    so the answer's markdown is what is read)."""
    pg.wait_for_function(
        "() => { const m = document.querySelectorAll(\"" + MESSAGES + "\"); "
        "const running = document.querySelector(\"[data-test-script-state='running']\"); "
        "const last = m.length > 1 ? m[m.length - 1].querySelector(\"[data-testid='stMarkdownContainer']\") : null; "
        "return running && last && last.innerText.trim().length > 0; }", timeout=timeout)


def until(predicate, timeout: float, step: float = 0.1) -> float | None:
    """Seconds until predicate() held, or None if it never did."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(step)
    return None


def test_two_sessions_chat_at_once_each_gets_its_own_answer_and_the_second_sees_its_queue_place(
        fp32_server, browser):
    app_server = fp32_server
    a, b = open_chat(browser, app_server.url), open_chat(browser, app_server.url)
    try:
        ask(a, "Write a long story about a lighthouse keeper and the sea.")
        wait_streaming(a)
        ask(b, "What is the capital of France?")
        b.get_by_text(re.compile(r"Queued: 1 ahead")).wait_for(timeout=60_000)
        screenshot(b, "worker_second_session_queued")
        assert app_server.worker()["queued"] == 1
        a.locator(".st-key-chat_stop button").click()          # a's answer ends; b's starts
        wait_idle(a, 120_000)
        wait_idle(b, 400_000)
        screenshot(b, "worker_second_session_answered")
        a_msgs = a.locator(MESSAGES).all_inner_texts()
        b_msgs = b.locator(MESSAGES).all_inner_texts()
        assert "lighthouse" in a_msgs[0] and "France" not in " ".join(a_msgs)
        assert "France" in b_msgs[0] and "lighthouse" not in " ".join(b_msgs)
        assert "Paris" in b_msgs[1]
        assert a_msgs[1].strip() and a_msgs[1] != b_msgs[1]
        assert b.get_by_text(re.compile(r"tokens/s")).first.is_visible()
    finally:
        a.context.close()
        b.context.close()


def test_closing_the_tab_mid_answer_leaves_the_worker_idle_within_5_s(fp32_server, browser):
    app_server = fp32_server
    pg = open_chat(browser, app_server.url)
    ask(pg, "Write a long story about a dragon who learns to cook.")
    wait_streaming(pg)
    assert app_server.worker()["busy"], "the answer is being generated"
    pg.context.close()
    seconds = until(lambda: (s := app_server.worker()) and not s["busy"] and s["queued"] == 0, timeout=30)
    assert seconds is not None and seconds <= 5.0, f"worker still busy {seconds} s after the tab closed"


def test_an_idle_server_with_a_loaded_model_uses_under_2_percent_of_a_core(fp32_server, browser):
    app_server = fp32_server
    pg = open_chat(browser, app_server.url)                   # model loaded, one open tab, no activity
    try:
        assert until(lambda: not app_server.worker().get("busy", True), timeout=60) is not None
        time.sleep(5)
        proc = psutil.Process(app_server.pid)
        before, t0 = proc.cpu_times(), time.monotonic()
        time.sleep(60)
        after, seconds = proc.cpu_times(), time.monotonic() - t0
        used = (after.user - before.user) + (after.system - before.system)
        assert used / seconds < 0.02, f"idle server used {100 * used / seconds:.1f}% of a core"
    finally:
        pg.context.close()
