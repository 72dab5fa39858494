"""Headless Chromium (the system's, driven by Playwright) against a real daemon.

The tests skip, saying why, only where Chromium or Playwright cannot be found. Every page
they visit is saved to ``artifacts/screenshots/`` (CI keeps that folder).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..stream_lab import StreamLab, stream_lab

SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"


def chromium_path() -> str | None:
    for candidate in (os.environ.get("SPECKLAB_CHROMIUM"), "chromium", "chromium-browser"):
        if candidate and (found := shutil.which(candidate)):
            return found
    return None


# Package scope, not session: Playwright's sync API keeps an event loop running in this thread
# while it is open, and the async tests after this package need the thread's loop free.
@pytest.fixture(scope="package")
def browser() -> Iterator[object]:
    executable = chromium_path()
    if executable is None:
        pytest.skip("no Chromium found: apt-get install chromium (or set SPECKLAB_CHROMIUM)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright is not installed: pip install -e '.[dev]'")
    with sync_playwright() as playwright:
        # --no-sandbox: CI containers run as root, where Chromium's sandbox refuses to start.
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StreamLab]:
    """A daemon with three virtual devkits, users ada and bob, and olga the observer."""
    directory = tmp_path_factory.mktemp("browser")
    with stream_lab(directory, "--virtual", "speck2fdevkit=3") as running:
        admin = {"Authorization": f"Bearer {running.tokens['admin']}"}
        url = running.daemon.url
        user = httpx.post(
            f"{url}/v1/users", json={"name": "olga", "role": "observer"}, headers=admin
        )
        assert user.status_code == 201, user.text
        token = httpx.post(
            f"{url}/v1/tokens", json={"name": "tests", "user_id": user.json()["id"]}, headers=admin
        )
        assert token.status_code == 201, token.text
        running.tokens["olga"] = token.json()["token"]
        yield running


def screenshot(page: object, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)  # type: ignore[attr-defined]


def sign_in(browser: object, lab: StreamLab, user: str, path: str = "") -> object:
    context = browser.new_context()  # type: ignore[attr-defined]
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.errors = errors
    page.goto(f"{lab.daemon.url}/{path}")
    page.fill("#token", lab.tokens[user])
    page.click("#sign-in button[type=submit]")
    page.wait_for_selector("#nav:not([hidden])")
    return page


def wait_for(page: object, condition: str, timeout_s: float = 60) -> None:
    """Until the JavaScript ``condition`` holds. Polled from here: Playwright's
    ``wait_for_function`` evaluates strings with ``eval``, which the pages' CSP forbids."""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(f"() => Boolean({condition})"):  # type: ignore[attr-defined]
        if time.monotonic() > deadline:
            state = page.evaluate("() => document.body.innerText")  # type: ignore[attr-defined]
            raise AssertionError(f"still not {condition}; the page shows:\n{state}")
        time.sleep(0.1)
