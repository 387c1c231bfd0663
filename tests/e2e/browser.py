"""Small Playwright helpers for a Streamlit page: wait for reruns to finish, find images, take screenshots."""

from __future__ import annotations

import re
from pathlib import Path

from playwright.sync_api import Locator, Page

from app.path_panel import CAPTION_SELECTOR

IDLE_JS = """() => !!document.querySelector('[data-testid="stMain"] h1')
    && !document.querySelector('[data-testid="stStatusWidget"]')
    && !document.querySelector('[data-testid="stSkeleton"]')
    && !document.querySelector('[data-stale="true"]')"""


def settle(page: Page, timeout: float = 180_000) -> None:
    """Waits until the app is not running a script any more (checked twice, reruns can chain)."""
    page.wait_for_selector('[data-testid="stApp"]', timeout=timeout)
    for _ in range(2):
        page.wait_for_timeout(400)
        page.wait_for_function(IDLE_JS, timeout=timeout)


def exceptions(page: Page) -> list[str]:
    return page.locator('[data-testid="stException"]').all_inner_texts()


# A captioned picture: an st.image, or the strip of the path panel (app/path_panel.py).
PICTURES = '[data-testid="stImage"], figure.nvp-strip'

# True once a picture whose caption starts with ``cap`` shows another address than ``src``.
PICTURE_CHANGED_JS = f"""([cap, src]) => [...document.querySelectorAll({PICTURES!r})].some(b => {{
    const c = b.querySelector({CAPTION_SELECTOR!r}); const i = b.querySelector('img');
    return c && i && c.innerText.startsWith(cap) && i.getAttribute('src') !== src; }})"""


def image_with_caption(page: Page, prefix: str) -> Locator:
    """The ``<img>`` of the first picture (see ``PICTURES``) whose caption starts with ``prefix``."""
    box = page.locator(PICTURES).filter(
        # Anchored: Playwright's plain has_text is a trimmed, case-insensitive substring match.
        has=page.locator(CAPTION_SELECTOR, has_text=re.compile("^" + re.escape(prefix)))
    )
    return box.first.locator("img")


def full_screenshot(page: Page, path: Path) -> None:
    """Screenshot of the whole page: Streamlit scrolls inside its main block, so grow the viewport to fit."""
    path.parent.mkdir(parents=True, exist_ok=True)
    height = page.evaluate(
        """() => { const m = document.querySelector('[data-testid="stMain"]');
                   return Math.max(m ? m.scrollHeight : 0, document.body.scrollHeight); }"""
    )
    width = page.viewport_size["width"] if page.viewport_size else 1400
    page.set_viewport_size({"width": width, "height": min(int(height) + 40, 8000)})
    # Charts and tables draw lazily once visible: wait for every plotly chart's SVG, then let tables paint.
    page.wait_for_function(
        """() => [...document.querySelectorAll('[data-testid="stPlotlyChart"]')]
                   .every(c => c.querySelector('.main-svg'))""",
        timeout=60_000,
    )
    page.wait_for_timeout(1500)
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size({"width": width, "height": 1000})
