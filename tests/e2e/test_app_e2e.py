"""The app in a real browser (Debian chromium via Playwright) against `streamlit run`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from app_helpers import astronaut_png

from e2e.browser import exceptions, full_screenshot, image_with_caption, settle
from e2e.conftest import SCREENSHOTS
from e2e.server import ROOT

pytestmark = pytest.mark.e2e

PAGES = {
    "encode": "",
    "interpolate": "interpolate",
    "manifold": "manifold",
    "scales": "scales",
    "sample": "sample",
    "latent_map": "latent_map",
    "attributes": "attributes",
    "how_it_works": "how_it_works",
}


def test_encode_upload_photograph_shows_latents(page, app_url: str, tmp_path: Path) -> None:
    photo = tmp_path / "astronaut.png"
    photo.write_bytes(astronaut_png())
    page.goto(app_url)
    settle(page)
    page.locator('[data-testid="stRadio"]').filter(has_text="Image source").get_by_text("Upload", exact=True).click()
    settle(page)
    page.locator('[data-testid="stMain"] [data-testid="stFileUploaderDropzoneInput"]').first.set_input_files(str(photo))
    settle(page)
    image_with_caption(page, "x: astronaut.png").wait_for()
    image_with_caption(page, "f⁻¹(f(x))").wait_for()
    # One latent picture per level (in tabs) and the bits/dim histogram, all plain images.
    image_with_caption(page, "level 1 (finest)").wait_for(state="attached")
    image_with_caption(page, "bits/dim of test images").wait_for()
    assert not exceptions(page), exceptions(page)
    full_screenshot(page, SCREENSHOTS / "encode_astronaut.png")


def _move_and_time(page, slider_name: str, key: str, caption: str) -> float:
    """Presses ``key`` on a slider and returns the seconds until the image captioned ``caption`` changes."""
    img = image_with_caption(page, caption)
    before = img.get_attribute("src")
    thumb = page.locator(f'input[type="range"][aria-label="{slider_name}"]')
    thumb.focus()
    t0 = time.perf_counter()
    thumb.press(key)
    page.wait_for_function(
        """([cap, src]) => [...document.querySelectorAll('[data-testid="stImage"]')].some(b => {
               const c = b.querySelector('[data-testid="stImageCaption"]');
               const i = b.querySelector('img');
               return c && i && c.innerText.startsWith(cap) && i.getAttribute('src') !== src; })""",
        arg=[caption, before],
    )
    dt = time.perf_counter() - t0
    settle(page)
    assert img.get_attribute("src") != before or image_with_caption(page, caption).get_attribute("src") != before
    return dt


def test_interpolation_sliders_change_the_image(page, app_url: str) -> None:
    page.goto(f"{app_url}/interpolate")
    settle(page)
    image_with_caption(page, "frame ").wait_for()
    frame_s = [_move_and_time(page, "Frame", k, "frame ") for k in ("ArrowLeft", "ArrowRight", "ArrowLeft")]
    weight_s = [_move_and_time(page, "level 1 (finest)", k, "A → B") for k in ("ArrowLeft", "ArrowLeft")]
    assert not exceptions(page), exceptions(page)
    # Recorded for the report, not asserted (timing depends on the machine's load).
    out = ROOT / "artifacts" / "latency_e2e.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"frame_slider_s": frame_s, "level_weight_slider_s": weight_s}, indent=1))


@pytest.mark.parametrize("name", list(PAGES))
def test_every_page_without_exception_and_screenshot(page, app_url: str, name: str) -> None:
    page.goto(f"{app_url}/{PAGES[name]}")
    settle(page)
    assert page.locator('[data-testid="stMain"] h1').first.inner_text().strip()
    assert not exceptions(page), exceptions(page)
    full_screenshot(page, SCREENSHOTS / f"{name}.png")
    assert not exceptions(page), exceptions(page)


def test_latent_map_box_selection_shows_images(page, app_url: str) -> None:
    page.goto(f"{app_url}/latent_map")
    settle(page)
    drag = page.locator('[data-testid="stPlotlyChart"] .nsewdrag').first
    drag.wait_for()
    box = drag.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + 0.05 * box["width"], box["y"] + 0.05 * box["height"])
    page.mouse.down()
    page.mouse.move(box["x"] + 0.6 * box["width"], box["y"] + 0.6 * box["height"], steps=8)
    page.mouse.move(box["x"] + 0.95 * box["width"], box["y"] + 0.95 * box["height"], steps=8)
    page.mouse.up()
    settle(page)
    page.get_by_text("selected (showing up to 48)").wait_for()
    assert page.locator('[data-testid="stImage"]').count() >= 2  # neighbours strip and the selection
    assert not exceptions(page), exceptions(page)
    full_screenshot(page, SCREENSHOTS / "latent_map_selection.png")
