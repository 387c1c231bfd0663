"""Slider latency of the running app, release → new image, in Debian chromium (a measurement, not a test).

    .venv/bin/python tests/e2e/latency.py [MODELS_DIR] [--moves 10]

Starts ``streamlit run`` on a free port, opens Interpolate and presses arrow keys on two sliders: "Frame"
(the frame player's, which browses decoded frames in the browser: app/player.py) and "level 1 (finest)" (a
server rerun that re-decodes every frame in one inverse call).
Prints the median and 90th percentile, and the server-side compute of one weight change, as JSON. With
``--baseline`` it also times a trivial Streamlit app (one slider and one image in a fragment): the floor that
Streamlit and the browser set on this machine at its current load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from playwright.sync_api import sync_playwright  # noqa: E402

from e2e.browser import image_with_caption, settle  # noqa: E402
from e2e.conftest import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from e2e.server import streamlit_server  # noqa: E402

CHANGED_JS = """([cap, src]) => [...document.querySelectorAll('[data-testid="stImage"]')].some(b => {
    const c = b.querySelector('[data-testid="stImageCaption"]'); const i = b.querySelector('img');
    return c && i && c.innerText.startsWith(cap) && i.getAttribute('src') !== src; })"""


PLAYER_CHANGED_JS = "([, src]) => document.querySelector('.nvp-player .nvp-frame').getAttribute('src') !== src"


def moves(page: object, slider: str, caption: str, n: int, player: bool = False) -> list[float]:
    """Seconds from each key press on ``slider`` to a new picture: the ``st.image`` captioned ``caption``, or
    with ``player`` the frame player's picture."""
    out = []
    for k in range(n):
        if player:
            img = page.locator(".nvp-player .nvp-frame")  # type: ignore[attr-defined]
            thumb = page.locator(f'.nvp-player input[type="range"][aria-label="{slider}"]')  # type: ignore[attr-defined]
        else:
            img = image_with_caption(page, caption)  # type: ignore[arg-type]
            thumb = page.locator(f'input[type="range"][aria-label="{slider}"]')  # type: ignore[attr-defined]
        before = img.get_attribute("src")
        thumb.focus()
        t0 = time.perf_counter()
        thumb.press("ArrowLeft" if k % 2 == 0 else "ArrowRight")
        changed = PLAYER_CHANGED_JS if player else CHANGED_JS
        page.wait_for_function(changed, arg=[caption, before], timeout=60_000)  # type: ignore[attr-defined]
        out.append(time.perf_counter() - t0)
        settle(page)  # type: ignore[arg-type]
    return out


def server_compute(models_dir: Path) -> dict[str, float]:
    """Median seconds of the work behind one level-weight change (interpolate + one batched decode)."""
    import torch

    from app import compute
    from app.models import gallery_path, list_checkpoints, load_gallery
    from nvp_core import load_model
    from nvp_core.latent import interpolate

    torch.set_num_threads(1)
    ckpt = list_checkpoints(models_dir)[0]
    model, _ = load_model(ckpt)
    g = load_gallery(gallery_path(ckpt), model.config.in_channels, model.config.image_size)
    za, zb = compute.encode(model, g.images[:1]), compute.encode(model, g.images[1:2])
    times = []
    for _ in range(8):
        t0 = time.perf_counter()
        compute.decode(model, interpolate(za, zb, 9, level_weights=[0.5] + [1.0] * (model.num_levels - 1)))
        times.append(time.perf_counter() - t0)
    return {"model": ckpt.name, "decode_9_frames_s": statistics.median(times[1:])}


BASELINE_APP = """
import numpy as np, streamlit as st
from PIL import Image
st.title("baseline")
@st.fragment
def f():
    k = st.slider("Frame", 0, 8, 4)
    img = Image.fromarray(np.full((28, 28), k * 30, np.uint8)).resize((200, 200))
    st.image(img, caption=f"frame {k}", output_format="PNG")
f()
"""


def baseline(browser: object, n: int) -> dict[str, object]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        app = Path(tmp) / "baseline.py"
        app.write_text(BASELINE_APP)
        with streamlit_server(app=app) as url:
            page = browser.new_page()  # type: ignore[attr-defined]
            page.goto(url)
            settle(page)
            moves(page, "Frame", "frame ", 2)
            ts = moves(page, "Frame", "frame ", n)
            page.close()
    return {"median_s": statistics.median(ts), "p90_s": sorted(ts)[int(0.9 * (len(ts) - 1))]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models_dir", nargs="?", default=str(ROOT / "models"))
    ap.add_argument("--moves", type=int, default=10)
    ap.add_argument("--baseline", action="store_true", help="also time a trivial Streamlit app")
    args = ap.parse_args()
    models_dir = Path(args.models_dir)
    result: dict[str, object] = {"load_average": os.getloadavg(), "server": server_compute(models_dir)}
    env = {"NVP_MODELS_DIR": str(models_dir), "NVP_APP_GALLERY_MAX": "200"}
    with streamlit_server(env) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{url}/interpolate")
        settle(page)
        moves(page, "Frame", "frame ", 2, player=True)  # warm-up
        for name, slider, caption in (("frame", "Frame", "frame "), ("level_weight", "level 1 (finest)", "A → B")):
            ts = moves(page, slider, caption, args.moves, player=name == "frame")
            result[name] = {
                "median_s": statistics.median(ts),
                "p90_s": sorted(ts)[int(0.9 * (len(ts) - 1))],
                "all_s": [round(t, 3) for t in ts],
            }
        if args.baseline:
            result["baseline_trivial_app"] = baseline(browser, args.moves)
        browser.close()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
