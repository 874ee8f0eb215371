"""A real `streamlit run app.py` server and Debian's Chromium driven by Playwright.

The server is started once per test session on a free port and polled on /_stcore/health; the
browser is the system's /usr/bin/chromium, never one that a tool downloads.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chromium_path() -> str | None:
    return os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class Server:
    url: str
    pid: int
    worker_status: Path  # the model worker's status file (EXPLORER_WORKER_STATUS)

    def worker(self) -> dict:
        try:
            return json.loads(self.worker_status.read_text())
        except (OSError, ValueError):
            return {}


@contextlib.contextmanager
def served_process(log: Path, env_extra: dict[str, str] | None = None) -> Iterator[Server]:
    """A fresh `scripts/serve.py` server on a free port, as a user starts it (the project's
    .streamlit/config.toml applies: no file watcher); yields it once /_stcore/health answers."""
    port = _free_port()
    status = log.with_name(log.stem + "-worker.json")
    env = dict(os.environ, STREAMLIT_BROWSER_GATHER_USAGE_STATS="false", PYTHONUNBUFFERED="1",
               EXPLORER_WORKER_STATUS=str(status), **(env_extra or {}))
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "scripts" / "serve.py"), "--server.headless", "true",
             "--server.port", str(port), "--server.address", "127.0.0.1"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(proc, url, log)
        yield Server(url, proc.pid, status)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextlib.contextmanager
def served_app(log: Path, env_extra: dict[str, str] | None = None) -> Iterator[str]:
    """A fresh server's URL (see served_process)."""
    with served_process(log, env_extra) as server:
        yield server.url


def _wait_healthy(proc: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited early:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"streamlit did not become healthy:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def app_server(tmp_path_factory) -> Iterator[Server]:
    """A fresh server for each browser test module. Why not one for the whole session: the server
    now autoloads only while no model was ever chosen on it, so a module that loads, compares or
    unloads would leave the next module's first page without a model."""
    with served_process(tmp_path_factory.mktemp("streamlit") / "server.log") as server:
        yield server


@pytest.fixture(scope="module")
def app_url(app_server) -> str:
    return app_server.url


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    exe = chromium_path()
    if exe is None:
        pytest.fail("Debian's chromium is not installed; the README's test command installs it.")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def new_page(browser):
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    return pg


def screenshot(pg, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        pg.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    except Exception:  # noqa: BLE001 - a screenshot is a courtesy, not part of the verdict
        pass


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    yield pg
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        pg.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    except Exception:  # noqa: BLE001 - a screenshot is a courtesy, not part of the verdict
        pass
    context.close()


def wait_idle(page, timeout: float = 120_000) -> None:
    """Wait until the script run finished (Streamlit marks the app root with its script state)."""
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", timeout=timeout)


def click_until_shown(page, click, shown, tries: int = 3, each_ms: float = 15_000, last_ms: float = 30_000) -> None:
    """Call `click()` until `shown` (a locator) is visible and stays so once the page is idle. A click
    that lands while a rerun redraws the page, or while Plotly still moves a figure after its first
    draw, can be lost; a rerun that starts late can undo it (close an expander it opened)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for _ in range(tries):
        click()
        try:
            shown.wait_for(timeout=each_ms)
        except PlaywrightTimeout:
            wait_idle(page)
            continue
        page.wait_for_timeout(300)
        wait_idle(page)
        if shown.is_visible():
            return
    shown.wait_for(timeout=last_ms)


def open_with_model(page, app_url: str, path: str = "/internals") -> None:
    """Open the app, wait until the embedded model's card shows (the first visit may convert and load
    it), then go to `path`."""
    page.goto(f"{app_url}/")
    page.get_by_text("SmolLM2-135M-Instruct", exact=False).first.wait_for(timeout=300_000)
    wait_idle(page, 300_000)
    if path != "/":
        page.goto(f"{app_url}{path}")
        wait_idle(page)
