"""The model worker seen from real browsers: six sessions' answers stream together, what still
queues (a load) counts its place down, a closed tab stops its generation, and an idle server stays idle."""
import re
import time

import psutil
import pytest

from explorer.model.generation import GenerateOptions, conversation, generate
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


def longest_answers(pg) -> None:
    """The chat's max_new_tokens slider to its top (1024 instead of 128)."""
    pg.get_by_text("Generation settings").first.click()
    slider = pg.locator(".st-key-chat_max_new input[type='range']")
    slider.focus()
    slider.press("End")
    wait_idle(pg)
    pg.locator(".st-key-chat_max_new [data-testid='stSliderThumbValue']", has_text="1024").wait_for()
    pg.get_by_text("Generation settings").first.click()


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


STORIES = ["a lighthouse keeper", "a dragon who learns to cook", "a robot gardener", "a lost kitten",
           "a pirate who fears water", "a snowman in summer"]
PAGE_OPTIONS = GenerateOptions(max_new_tokens=128, repetition_penalty=1.1)   # the chat page's defaults

STATE_JS = ("() => { const m = document.querySelectorAll(\"" + MESSAGES + "\"); "
            "const running = !!document.querySelector(\"[data-test-script-state='running']\"); "
            "const body = m.length > 1 ? m[m.length - 1].querySelectorAll("
            "\"[data-testid='stMarkdownContainer'], [data-testid='stText']\") : []; "
            "const last = [...body].map(b => b.innerText).join(' '); "
            "const caption = [...document.querySelectorAll(\"[data-testid='stCaptionContainer']\")]"
            ".map(c => c.innerText).find(t => t.includes('tokens/s')) || ''; "
            "return {n: m.length, text: last, running: running, caption: caption}; }")


def words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z0-9']+", text)


@pytest.mark.timeout(1800)
def test_six_sessions_chat_at_once_each_streams_its_own_answer_none_waits_and_the_worker_ends_idle(
        fp32_server, browser, embedded_fp32):
    """Issue 17 item 6: the answers are decoded together, so every stream has begun before any ends;
    then each page stops its answer (a long story would take minutes on a shared CPU) and what it
    shows is the beginning of what its own prompt gives alone."""
    server = fp32_server
    pages = [open_chat(browser, server.url) for _ in STORIES]
    try:
        for pg, topic in zip(pages, STORIES, strict=True):
            ask(pg, f"Write a long story about {topic}.")
        first: dict[int, float] = {}
        done: dict[int, float] = {}
        t0 = time.monotonic()
        while len(first) < len(pages) and time.monotonic() - t0 < 900:
            for i, pg in enumerate(pages):
                state = pg.evaluate(STATE_JS)
                now = time.monotonic() - t0
                if state["n"] >= 2 and words(state["text"]) and i not in first:
                    first[i] = now
                if state["n"] >= 2 and state["caption"] and not state["running"] and i not in done:
                    done[i] = now
        assert len(first) == len(pages), f"only {sorted(first)} began streaming"
        assert not done, f"an answer ended before every other had begun: {first} {done}"
        assert server.worker().get("decoding", 0) >= 2 or server.worker().get("busy")
        t1 = time.monotonic()                     # a few words each, so each page's answer can be told apart
        while time.monotonic() - t1 < 600 and min(len(words(pg.evaluate(STATE_JS)["text"])) for pg in pages) < 4:
            time.sleep(0.5)
        for pg in pages:
            pg.locator(".st-key-chat_stop button").click()
        for i, pg in enumerate(pages):
            wait_idle(pg, 300_000)
            screenshot(pg, f"worker_six_sessions_{i}")
        shown = [words(pg.evaluate(STATE_JS)["text"].replace("⏹", "")) for pg in pages]   # the answer, not its avatar
        alone = [words(generate(embedded_fp32, conversation(f"Write a long story about {t}."),
                                GenerateOptions(max_new_tokens=8, repetition_penalty=1.1)).text) for t in STORIES]
        for i, (page_words, alone_words) in enumerate(zip(shown, alone, strict=True)):
            k = min(len(page_words) - 1, len(alone_words) - 1, 3)    # the last word shown may be cut
            assert k >= 1 and page_words[:k] == alone_words[:k], f"page {i} shows another answer: {page_words}"
        assert len({" ".join(a[:4]) for a in alone}) > 1                       # the prompts' answers differ
        assert until(lambda: (s := server.worker()) and not s["busy"] and s["queued"] == 0, timeout=30) is not None
    finally:
        for pg in pages:
            pg.context.close()


@pytest.mark.timeout(1800)
def test_an_answer_with_heads_off_is_decoded_beside_another_tabs_answer(fp32_server, browser):
    """A teacher's "Answer again with heads … off" joins the worker's decode batch as a row of its
    own: while it is answered, a student's story in another tab keeps streaming (two rows decode
    together, no call runs alone), and the teacher sees both answers side by side."""
    server = fp32_server
    teacher = open_chat(browser, server.url)
    student = open_chat(browser, server.url)
    try:
        teacher.set_viewport_size({"width": 1600, "height": 2600})
        teacher.goto(f"{server.url}/internals")
        wait_idle(teacher, 300_000)
        ask(teacher, "Tell me a story about a cat.")          # a long answer: its rerun with heads off overlaps the story
        teacher.wait_for_timeout(300)
        wait_idle(teacher, 300_000)
        teacher.get_by_text(re.compile(r"Captured \d+ tokens")).first.wait_for(timeout=400_000)   # the turn
        wait_idle(teacher, 300_000)
        teacher.get_by_role("radio", name="Intervene", exact=True).click()
        run = teacher.get_by_role("button", name="Run with these interventions")   # the attribution's top heads
        run.wait_for(timeout=300_000)
        wait_idle(teacher)
        run.click()
        teacher.locator('[data-testid="stMetric"]', has_text="with interventions").first.wait_for(timeout=300_000)
        again = teacher.get_by_role("button", name=re.compile(r"^Answer again with heads? "))
        again.wait_for(timeout=300_000)                                    # the chat panel offers them
        wait_idle(teacher)

        longest_answers(student)
        ask(student, "Write a long story about a lighthouse keeper.")
        wait_streaming(student)
        again.click()
        pair = teacher.locator(".st-key-chat_ablation_pair")
        samples: list[tuple[int, str | None, int]] = []          # (rows decoding, what runs alone, student's words)
        t0 = time.monotonic()
        while not pair.count() and time.monotonic() - t0 < 600:
            status = server.worker()
            samples.append((status.get("decoding", 0), status.get("running"),
                            len(words(student.evaluate(STATE_JS)["text"]))))
            time.sleep(0.2)
        pair.wait_for(timeout=60_000)
        wait_idle(teacher, 300_000)
        assert max(d for d, _, _ in samples) >= 2, samples           # the student's row and the teacher's
        assert all(r in (None, "stream") for _, r, _ in samples), samples   # never a call that pauses the batch
        assert samples[-1][2] > samples[0][2], samples               # the story grew meanwhile
        text = pair.inner_text()
        assert "Plain answer" in text and "off" in text, text
        pair.scroll_into_view_if_needed()
        screenshot(teacher, "worker_heads_off_beside_a_student")
        student.locator(".st-key-chat_stop button").click()
        wait_idle(student, 300_000)
        screenshot(student, "worker_student_while_heads_off")
        assert until(lambda: (s := server.worker()) and not s["busy"] and s["queued"] == 0, timeout=60) is not None
    finally:
        teacher.context.close()
        student.context.close()


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


@pytest.mark.timeout(1800)
def test_four_loads_at_once_the_last_page_counts_its_place_down(fp32_server, browser):
    """Issue 21 item 4: chat answers no longer queue, loads still run one at a time (after the decode
    batch). With an answer decoding, four pages click Load: the last sees 4, 3, 2, 1 ahead, refreshed
    while it waits, once the answer is stopped, and then its own load."""
    server = fp32_server
    chat = open_chat(browser, server.url)
    pages = [open_chat(browser, server.url) for _ in range(4)]
    try:
        for pg in pages:
            pick_option(pg, ".st-key-load_precision", PRECISION)
        longest_answers(chat)          # the answer must outlast four clicks on a busy 2-core machine
        ask(chat, "Write a long story about a lighthouse keeper and the sea.")
        wait_streaming(chat)                                  # the batch is decoding: loads wait for it
        for pg in pages:
            pg.locator(".st-key-load_button button").click()
        last = pages[-1]
        last.get_by_text("Queued: 4 ahead", exact=False).first.wait_for(timeout=300_000)
        chat.locator(".st-key-chat_stop button").click()      # the batch ends; the loads run one by one
        for ahead in (3, 2, 1):
            last.get_by_text(f"Queued: {ahead} ahead", exact=False).first.wait_for(timeout=300_000)
        screenshot(last, "worker_load_queue_counted_down")
        last.get_by_text(re.compile(rf"Loaded .* \({PRECISION}\)")).first.wait_for(timeout=300_000)
        assert until(lambda: (s := server.worker()) and not s["busy"] and s["queued"] == 0, timeout=60) is not None
    finally:
        for pg in [chat, *pages]:
            pg.context.close()
