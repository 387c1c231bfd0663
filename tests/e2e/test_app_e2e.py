"""The app in a real browser (Debian chromium via Playwright) against `streamlit run`."""

from __future__ import annotations

import base64
import io
import json
import time
from pathlib import Path
from urllib.parse import urljoin

import numpy as np
import pytest
import torch
from app_helpers import astronaut_png
from PIL import Image

from app import compute, state
from app.models import list_checkpoints, load_gallery
from e2e.browser import PICTURE_CHANGED_JS, exceptions, full_screenshot, image_with_caption, settle
from e2e.conftest import SCREENSHOTS, Network
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
    "runs": "runs",
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
    page.wait_for_function(PICTURE_CHANGED_JS, arg=[caption, before])
    dt = time.perf_counter() - t0
    settle(page)
    assert img.get_attribute("src") != before or image_with_caption(page, caption).get_attribute("src") != before
    return dt


def _scrub_and_time(page, key: str) -> float:
    """Presses ``key`` on the frame player's slider; seconds until its picture changes (browser only)."""
    img = page.locator(".nvp-player .nvp-frame")
    before = img.get_attribute("src")
    thumb = page.locator('.nvp-player input[type="range"][aria-label="Frame"]')
    thumb.focus()
    t0 = time.perf_counter()
    thumb.press(key)
    page.wait_for_function("(s) => document.querySelector('.nvp-player .nvp-frame').getAttribute('src') !== s",
                           arg=before)  # fmt: skip
    return time.perf_counter() - t0


def _data_pixels(src: str) -> np.ndarray:
    assert src.startswith("data:image/png;base64,"), src[:40]
    arr = np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))))
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def test_interpolation_sliders_change_the_image(page, app_url: str) -> None:
    page.goto(f"{app_url}/interpolate")
    settle(page)
    page.locator(".nvp-player .nvp-frame").wait_for()
    frame_s = [_scrub_and_time(page, k) for k in ("ArrowLeft", "ArrowRight", "ArrowLeft")]
    weight_s = [_move_and_time(page, "level 1 (finest)", k, "A → B") for k in ("ArrowLeft", "ArrowLeft")]
    assert not exceptions(page), exceptions(page)
    # Recorded for the report, not asserted (timing depends on the machine's load).
    out = ROOT / "artifacts" / "latency_e2e.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"frame_slider_s": frame_s, "level_weight_slider_s": weight_s}, indent=1))


def test_the_frame_player_shows_the_strips_frames_byte_for_byte(page, network: Network, app_url: str) -> None:
    """The player browses frames in the browser: each frame it shows, scrubbed from first to last, is the
    strip's frame to the pixel (PNG in a ``data:`` address, nothing fetched), with its caption, and the
    animation plays."""
    page.goto(f"{app_url}/interpolate")
    settle(page)
    thumb = page.locator('.nvp-player input[type="range"][aria-label="Frame"]')
    steps = int(thumb.get_attribute("max")) + 1
    thumb.focus()
    thumb.press("Home")
    shown = []
    for k in range(steps):
        caption = page.locator(".nvp-player .nvp-frame-caption").inner_text()
        assert caption.startswith(f"frame {k}: t = "), caption
        shown.append(_data_pixels(page.locator(".nvp-player .nvp-frame").get_attribute("src")))
        thumb.press("ArrowRight")
    strip = _served_pixels(page, app_url, f"A → B in {steps} frames")
    np.testing.assert_array_equal(compute.grid(np.stack(shown), steps), strip)
    anim = page.locator(".nvp-player .nvp-anim")
    first = anim.get_attribute("src")
    page.wait_for_function("(s) => document.querySelector('.nvp-player .nvp-anim').getAttribute('src') !== s",
                           arg=first)  # fmt: skip
    assert not network.offsite, network.offsite
    assert not exceptions(page), exceptions(page)


def test_the_path_panel_keeps_focus_presets_and_quick_moves_and_downloads_what_it_shows(
    page, network: Network, app_url: str
) -> None:
    """Interpolate's settings are one browser element (app/path_panel.js): a weight slider keeps the keyboard
    focus across the reruns it causes; four quick presses end at the fourth value, not an older answer; a preset
    button sets every weight and draws that path; the path's radio works; the loop stops for reduced motion; and
    the downloads, which live outside
    the panel's fragment, hand out the path on screen (the PNG is the shown strip enlarged ×4)."""
    page.goto(f"{app_url}/interpolate")
    settle(page)
    thumb = page.locator('.nvp-panel input[type="range"][aria-label="level 1 (finest)"]')
    thumb.focus()
    for _ in range(4):
        thumb.press("ArrowLeft")  # no wait: the presses overtake the server's answers
    settle(page)
    page.wait_for_function("() => document.querySelector('.nvp-strip-caption').innerText.includes('weights 0.8,')")
    assert thumb.input_value() == "0.8"
    assert page.evaluate("() => document.activeElement.getAttribute('aria-label')") == "level 1 (finest)"
    thumb.press("ArrowRight")
    page.wait_for_function("() => document.querySelector('.nvp-strip-caption').innerText.includes('weights 0.85,')")

    page.get_by_role("button", name="coarsest only").click()
    page.wait_for_function("() => /weights (0, )+1\\)$/.test(document.querySelector('.nvp-strip-caption').innerText)")
    values = page.locator('.nvp-panel input[type="range"][aria-label^="level"]').evaluate_all(
        "els => els.map(e => e.value)"
    )
    assert values[-1] == "1" and set(values[:-1]) == {"0"}, values
    page.get_by_label("spherical").check()
    page.wait_for_function("() => document.querySelector('.nvp-strip-caption').innerText.includes('(spherical;')")
    settle(page)

    # The loop stops when the reader asks for reduced motion, also after the panel was built.
    page.emulate_media(reduced_motion="reduce")
    page.wait_for_function("() => document.querySelector('.nvp-player button').textContent === 'play'")
    anim = page.locator(".nvp-anim").get_attribute("src")
    page.wait_for_timeout(600)  # five periods of the loop
    assert page.locator(".nvp-anim").get_attribute("src") == anim

    shown = _data_pixels(page.locator(".nvp-strip-img").get_attribute("src"))
    with page.expect_download() as got:
        page.get_by_role("button", name="Strip (PNG)").click()
    png = np.asarray(Image.open(got.value.path()))
    png = png[None] if png.ndim == 2 else png.transpose(2, 0, 1)
    np.testing.assert_array_equal(png[:, ::4, ::4], shown)
    assert png.shape[1:] == (4 * shown.shape[1], 4 * shown.shape[2])
    assert not network.offsite, network.offsite
    assert not exceptions(page), exceptions(page)


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


def _served_pixels(page, app_url: str, caption: str) -> np.ndarray:
    """The pixels the browser received for the picture captioned ``caption``, as uint8 ``[C, H, W]``."""
    img = image_with_caption(page, caption)
    img.wait_for(state="attached")
    src = img.get_attribute("src")
    if src.startswith("data:"):  # the path panel's strip: the bytes came inside the page's message
        return _data_pixels(src)
    resp = page.request.get(urljoin(app_url + "/", src))
    assert resp.headers["content-type"] == "image/png", resp.headers["content-type"]
    arr = np.asarray(Image.open(io.BytesIO(resp.body())))
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def test_pictures_arrive_as_png_with_the_decoded_pixels(
    page, network: Network, app_url: str, e2e_models_dir: Path
) -> None:
    """Streamlit re-encodes images without alpha as JPEG unless told otherwise: the reconstruction and the
    latent heatmaps must reach the browser as PNG with exactly the pixels nvp_core computes."""
    page.goto(app_url)
    settle(page)
    ckpt = list_checkpoints(e2e_models_dir)[0]  # the model the app opens with
    model, _ = state.app_model(ckpt, wait_s=120)  # as the app loads it: the same fast path and rounding
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the app does on this machine: the same float rounding
    try:
        image = load_gallery(ckpt.parent / f"{ckpt.stem}.gallery.npz", model.config.in_channels,
                             model.config.image_size).images[0]  # fmt: skip
        zs = compute.encode(model, image[None])
        _, _, rec = compute.reconstruction_error(model, image, zs)
        mosaic, _ = compute.latent_mosaic(zs[0][0].numpy(), 16)
    finally:
        torch.set_num_threads(threads)
    assert np.array_equal(_served_pixels(page, app_url, "f⁻¹(f(x))"), rec)
    assert np.array_equal(_served_pixels(page, app_url, "x: gallery #0"), image)
    assert np.array_equal(_served_pixels(page, app_url, "level 1 (finest)"), mosaic)
    assert network.images, "no image responses were recorded"
    assert not network.not_lossless(), network.not_lossless()
    assert not network.offsite, network.offsite
    assert not exceptions(page), exceptions(page)


def test_a_shared_link_opens_the_same_view_in_a_fresh_browser(page, browser, app_url: str) -> None:
    """Settings live in the address bar: the link copied after moving sliders, opened in a new browser context
    (no shared session), shows the same strip, pixel for pixel."""
    page.goto(f"{app_url}/interpolate")
    settle(page)
    image_with_caption(page, "A → B").wait_for()
    _move_and_time(page, "Frames", "ArrowLeft", "A → B")  # 9 → 8 frames
    _move_and_time(page, "level 1 (finest)", "ArrowLeft", "A → B")  # weight 1 → 0.95
    page.wait_for_function("() => location.search.includes('ip_steps=8') && location.search.includes('ip_w1=0.95')")
    link = page.url
    caption = page.locator(".nvp-player .nvp-strip-caption").inner_text()
    assert "8 frames" in caption and "0.95" in caption, caption
    shown = _served_pixels(page, app_url, "A → B in 8 frames")
    other = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        fresh = other.new_page()
        fresh.set_default_timeout(60_000)
        fresh.goto(link)
        settle(fresh)
        np.testing.assert_array_equal(_served_pixels(fresh, app_url, "A → B in 8 frames"), shown)
        assert not exceptions(fresh), exceptions(fresh)
    finally:
        other.close()


def test_the_back_button_steps_back_through_the_views_and_then_leaves_the_page(page, app_url: str) -> None:
    """Every change of a page's settings is one entry of the browser's history (the link holds the view): Back
    shows the view before the change, pictures and controls included, and after the page's first view it leaves
    for the page the reader came from, as the reader left it; Forward comes back. Opening a page is at most two
    entries (Streamlit's for the page change, and the page's settings in one update), not one per setting."""
    caption = "() => document.querySelector('.nvp-strip-caption')?.innerText || ''"

    def wait_for_weights(text: str) -> None:
        page.wait_for_function(f"() => ({caption})().includes('level weights {text})')")
        settle(page)

    index = page.locator("[data-testid=stNumberInput] input").first  # Encode's gallery image
    page.goto(f"{app_url}/")  # Encode, the default page
    settle(page)
    index.fill("5")
    index.press("Enter")
    settle(page)
    page.wait_for_function("() => location.search.includes('idx%3A-1=5')")
    before = page.evaluate("history.length")
    page.locator("[data-testid=stSidebarNav] a", has_text="Interpolate").click()
    wait_for_weights("1, 1, 1")
    opened = page.evaluate("history.length")
    assert opened - before <= 2  # Streamlit's entry for the page change, and the page's settings in one update
    thumb = page.locator('.nvp-panel input[type="range"][aria-label="level 1 (finest)"]')
    for weights in ("0.95, 1, 1", "0.9, 1, 1"):
        thumb.focus()
        thumb.press("ArrowLeft")
        wait_for_weights(weights)
        page.wait_for_function(f"() => location.search.includes('ip_w1={weights.split(',')[0]}&')")
    assert page.evaluate("history.length") == opened + 2  # one entry per change, once the controls are still
    for _ in range(3):  # a quick gesture of three presses is one change
        thumb.press("ArrowLeft")
    wait_for_weights("0.75, 1, 1")
    page.wait_for_function("() => location.search.includes('ip_w1=0.75&')")
    settle(page)
    assert page.evaluate("history.length") == opened + 3
    page.go_back()
    wait_for_weights("0.9, 1, 1")

    page.go_back()
    wait_for_weights("0.95, 1, 1")
    assert thumb.input_value() == "0.95" and "ip_w1=0.95" in page.url
    page.go_back()
    wait_for_weights("1, 1, 1")
    assert thumb.input_value() == "1"
    for _ in range(2):  # the page's first view, then the page before it
        if page.locator("h1", has_text="Encode").count():
            break
        page.go_back()
        settle(page)
    page.locator("h1", has_text="Encode").wait_for()
    shows = "(v) => document.querySelector('[data-testid=stNumberInput] input')?.value === v"
    page.wait_for_function(shows, arg="5")  # the other page's view as it was left
    settle(page)
    page.go_forward()
    settle(page)
    page.locator("h1", has_text="Interpolate").wait_for()
    assert not exceptions(page), exceptions(page)
