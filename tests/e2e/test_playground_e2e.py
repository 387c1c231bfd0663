"""The Playground page in a real browser: Train trains live (the step count rises without clicks) and its pictures
change; Pause stops it."""

from __future__ import annotations

import re

import pytest

from e2e.browser import PICTURE_CHANGED_JS, exceptions, full_screenshot, image_with_caption, settle
from e2e.conftest import SCREENSHOTS

pytestmark = pytest.mark.e2e

STEP_JS = """() => { const c = [...document.querySelectorAll('[data-testid="stCaptionContainer"]')]
    .map(e => e.innerText).find(t => /^step \\d+/.test(t)); return c ? parseInt(c.split(' ')[1]) : -1; }"""


def _step(page: object) -> int:
    return int(page.evaluate(STEP_JS))  # type: ignore[attr-defined]


def test_playground_trains_live_and_its_pictures_change(page, app_url: str) -> None:
    page.goto(f"{app_url}/playground")
    settle(page)
    assert page.locator('[data-testid="stMain"] h1').first.inner_text().strip() == "Playground"
    assert _step(page) == 0
    pictures = ("model samples", "log p(x)", "Generation z → x")
    before = {cap: image_with_caption(page, cap).get_attribute("src") for cap in pictures}
    assert all(before.values()), before
    page.get_by_role("button", name="Train").click()
    # No further clicks: the page's timer trains chunk after chunk and redraws.
    page.wait_for_function(f"() => ({STEP_JS})() > 0", timeout=120_000)
    first = _step(page)
    for cap, src in before.items():
        page.wait_for_function(PICTURE_CHANGED_JS, arg=[cap, src], timeout=120_000)
    page.wait_for_function(f"() => ({STEP_JS})() > {first}", timeout=120_000)
    assert page.get_by_text(re.compile(r"test log-likelihood -?\d")).count() >= 1
    assert not exceptions(page), exceptions(page)
    page.get_by_role("button", name="Pause").click()
    settle(page)
    paused = _step(page)
    page.wait_for_timeout(2500)
    assert _step(page) == paused  # paused: no more chunks
    full_screenshot(page, SCREENSHOTS / "playground.png")
    assert not exceptions(page), exceptions(page)
