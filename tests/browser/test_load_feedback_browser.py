"""Loading and comparing as a new user sees them in Chromium at 1600×1000, with screenshots:
first-launch progress bar, a load error in the main area, the local-path refusal when served to
others, and a comparison's live status with Cancel."""
from __future__ import annotations

import pytest

from tests.browser.conftest import ARTIFACTS, served_app, wait_idle

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=False)


def test_first_launch_shows_conversion_and_loading_progress_in_the_page(browser, tmp_path):
    """A fresh cache: the embedded GGUF converts, then loads, with a bar in the main area."""
    with served_app(tmp_path / "server.log", {"EXPLORER_CACHE": str(tmp_path / "cache")}) as url:
        page = browser.new_context(viewport={"width": 1600, "height": 1000}).new_page()
        page.goto(f"{url}/")
        bar = page.locator("[data-testid='stMain'] [data-testid='stProgress']")
        bar.first.wait_for(timeout=300_000)
        page.get_by_text("Converting and de-quantizing GGUF tensors", exact=False).first.wait_for(timeout=300_000)
        page.wait_for_timeout(1500)
        shot(page, "load_progress_first_launch")
        page.get_by_text("Loading weights", exact=False).first.wait_for(timeout=300_000)
        shot(page, "load_progress_weights")
        wait_idle(page, 400_000)
        assert page.get_by_text("Loaded SmolLM2", exact=False).first.is_visible()
        page.context.close()


def test_load_error_stays_in_the_main_area_until_dismissed(app_url, page):
    page.goto(f"{app_url}/")
    page.get_by_text("Load time").first.wait_for(timeout=400_000)      # the model card: autoload has ended
    wait_idle(page, 300_000)
    page.get_by_text("Local folder or .gguf file").click()
    wait_idle(page)
    path = page.get_by_role("textbox", name="Path")
    path.fill("/no/such/model/folder")
    path.press("Enter")
    wait_idle(page)
    page.get_by_role("button", name="Load", exact=True).click()
    wait_idle(page)
    main_error = page.get_by_text("No such file or folder", exact=False)
    main_error.first.wait_for(timeout=300_000)
    sidebar = page.locator("[data-testid='stSidebar']").bounding_box()
    assert main_error.first.bounding_box()["x"] > sidebar["x"] + sidebar["width"]   # in the main area
    assert main_error.count() == 1                                                    # and only there
    shot(page, "load_error_main_area")
    page.get_by_role("button", name="Dismiss").click()
    wait_idle(page)
    main_error.first.wait_for(state="detached", timeout=30_000)  # the rerun's stale copy can linger a moment
    assert main_error.count() == 0


def test_local_paths_off_refuses_any_path_with_one_message(browser, tmp_path):
    env = {"EXPLORER_ALLOW_LOCAL_PATHS": "0", "EXPLORER_AUTOLOAD": "0"}
    with served_app(tmp_path / "server.log", env) as url:
        page = browser.new_context(viewport={"width": 1600, "height": 1000}).new_page()
        page.goto(f"{url}/")
        page.get_by_text("No model is loaded").wait_for(timeout=120_000)
        assert page.get_by_text("Local folder or .gguf file").count() == 0
        page.get_by_text("Hub id", exact=True).click()
        wait_idle(page)
        hub = page.get_by_role("textbox", name="Hub id")
        hub.fill("/etc/passwd")
        hub.press("Enter")
        wait_idle(page)
        page.get_by_role("button", name="Load", exact=True).click()
        wait_idle(page)
        page.get_by_text("Files and folders on the server are turned off here").wait_for()
        shot(page, "local_paths_off_refusal")
        page.context.close()


def test_compare_shows_live_status_and_cancel(app_url, page):
    page.goto(f"{app_url}/compare")
    page.get_by_role("heading", name="Compare models and precisions").wait_for(timeout=120_000)
    wait_idle(page)
    for name in ("nf4", "bf16"):                       # fp32 only: the fastest on a CPU
        page.get_by_role("button", name=f"Remove {name}").click()
        wait_idle(page)
    page.get_by_role("combobox", name="Precisions").click()
    page.get_by_role("option", name="fp32").click()
    page.keyboard.press("Escape")
    wait_idle(page)
    page.get_by_label("Prompts, one per line").fill("\n".join(f"Tell me fact number {i}." for i in range(30)))
    page.get_by_label("New tokens").fill("8")
    page.get_by_label("New tokens").press("Enter")
    wait_idle(page)
    page.get_by_text("Load the chat model again afterwards").click()
    wait_idle(page)
    page.get_by_role("button", name="Run comparison").click()
    page.get_by_text("prompt 2 of 30", exact=False).first.wait_for(timeout=600_000)
    shot(page, "compare_running_with_cancel")
    page.get_by_role("button", name="Cancel comparison").click()
    page.get_by_text("the results so far are below", exact=False).wait_for(timeout=300_000)
    wait_idle(page, 300_000)
    shot(page, "compare_cancelled")
    page.get_by_role("link", name="Load & chat").click()   # leave (same session), then come back
    page.get_by_role("button", name="Load", exact=True).wait_for()
    wait_idle(page, 300_000)
    page.get_by_role("link", name="Compare").click()
    page.get_by_role("heading", name="Compare models and precisions").wait_for()
    wait_idle(page)
    assert page.get_by_label("New tokens").input_value() == "8"
