"""A frame player that runs in the browser: a scrubber over decoded frames and a looping animation of them.

Browsing frames that are already decoded needs no model, so it need not wait for the server either: the page
gets every frame once (as the PNG bytes the model's pixels make, in ``data:`` addresses, nothing fetched) and a
few lines of script swap them as the slider moves. A server round trip per frame was measured at ~70 ms in
chromium, against ~30 ms for a trivial Streamlit app; here a move costs one paint. The animation replaces an
animated GIF, whose palette encoding cost the server ~20 ms on every change of the path.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json

import numpy as np
import streamlit as st

from app import compute

_STYLE = """<style>
.nvp-player {display: flex; gap: 2.5rem; flex-wrap: wrap; align-items: flex-start; font-family: inherit;}
.nvp-player figure {margin: 0;}
.nvp-player .nvp-strip {flex-basis: 100%;}
.nvp-player .nvp-strip img {max-width: 100%; height: auto;}
.nvp-player img {image-rendering: pixelated; display: block;}
.nvp-player figcaption {font-size: 0.875rem; opacity: 0.6; margin-top: 0.25rem;}
.nvp-player label {display: block; font-size: 0.875rem; margin-bottom: 0.25rem;}
.nvp-player input[type=range] {width: 100%; accent-color: #ff4b4b;}
.nvp-player button {font: inherit; font-size: 0.8rem; margin-top: 0.25rem; padding: 0.1rem 0.6rem;
  border-radius: 0.5rem; border: 1px solid rgba(128, 128, 128, 0.4); background: transparent; color: inherit;}
</style>"""

# Runs once per distinct player (Streamlit re-inserts the HTML only when it changes). The interval stops itself
# when its player has left the page, so a rerun with new frames does not leave timers behind.
_SCRIPT = """<script>
(() => {
  const root = document.getElementById(%(id)s);
  if (!root || root.dataset.live) return;
  root.dataset.live = "1";
  const src = %(src)s, cap = %(cap)s;
  const img = root.querySelector(".nvp-frame"), fcap = root.querySelector(".nvp-frame-caption");
  const range = root.querySelector("input[type=range]");
  range.addEventListener("input", () => {
    const k = Number(range.value);
    img.src = src[k]; fcap.textContent = cap[k]; range.setAttribute("aria-valuetext", cap[k]);
  });
  const anim = root.querySelector(".nvp-anim"), button = root.querySelector("button");
  const order = src.map((_, k) => k).concat(src.map((_, k) => k).slice(1, -1).reverse());
  let i = 0, playing = !matchMedia("(prefers-reduced-motion: reduce)").matches;
  const show = () => { button.textContent = playing ? "pause" : "play"; };
  show();
  button.addEventListener("click", () => { playing = !playing; show(); });
  const timer = setInterval(() => {
    if (!root.isConnected) { clearInterval(timer); return; }
    if (playing) { i = (i + 1) %% order.length; anim.src = src[order[i]]; }
  }, %(ms)d);
})();
</script>"""


def _js(value: object) -> str:
    """JSON that is safe inside ``<script>`` (no ``</script>`` can end it early)."""
    return json.dumps(value).replace("<", "\\u003c")


def data_url(png: bytes) -> str:
    """PNG bytes as a ``data:`` address (the browser decodes exactly these bytes)."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def player_html(
    frames: np.ndarray,
    captions: list[str],
    width: int = 200,
    ms: int = 120,
    start: int = -1,
    strip: tuple[np.ndarray, str, int] | None = None,
) -> str:
    """The player's HTML for uint8 ``[N, C, H, W]`` frames: a picture of frame ``start`` (default: the middle)
    with a "Frame" slider under it, and beside it the frames looping there and back every ``ms`` milliseconds.
    ``strip``, ``(mosaic [C, H', W'], caption, css_width)``, puts a picture above them (the frames side by side).
    Every string in it is made here from numbers and the captions (escaped), so it carries no user input."""
    n = len(frames)
    if n < 2 or len(captions) != n:
        raise ValueError(f"need at least 2 frames and one caption each, got {n} frames, {len(captions)} captions")
    k = n // 2 if start < 0 else min(start, n - 1)
    src = [data_url(compute.png_bytes(f, compress_level=1)) for f in frames]
    uid = "nvp-player-" + hashlib.blake2b("".join(src).encode(), digest_size=6).hexdigest()
    w = max(width, frames.shape[3])
    esc = [html.escape(c) for c in captions]
    top = ""
    if strip is not None:
        mosaic, caption, css_width = strip
        # Here rather than st.image: one element less on the page and no /media/ request per weight move
        # (measured no faster, bench/README.md history row 12, and no slower; these bytes are the pixels).
        strip_src = data_url(compute.png_bytes(mosaic, compress_level=1))
        top = f"""<figure class="nvp-strip"><img class="nvp-strip-img" src="{strip_src}"
 width="{max(css_width, mosaic.shape[2])}" alt="all frames side by side">
<figcaption class="nvp-strip-caption">{html.escape(caption)}</figcaption></figure>
"""
    body = f"""<div class="nvp-player" id="{uid}">
{top}<figure style="width: {w}px"><img class="nvp-frame" src="{src[k]}" width="{w}" alt="decoded frame">
<figcaption class="nvp-frame-caption">{esc[k]}</figcaption>
<label for="{uid}-range">Frame</label>
<input type="range" id="{uid}-range" min="0" max="{n - 1}" step="1" value="{k}" aria-label="Frame"
 aria-valuetext="{esc[k]}"></figure>
<figure style="width: {w}px"><img class="nvp-anim" src="{src[0]}" width="{w}" alt="looping animation">
<figcaption>looping animation: A → B → A</figcaption><button type="button">pause</button></figure>
</div>"""
    script = _SCRIPT % {"id": json.dumps(uid), "src": json.dumps(src), "cap": _js(captions), "ms": ms}
    return _STYLE + body + script


def frame_player(
    frames: np.ndarray,
    captions: list[str],
    width: int = 200,
    ms: int = 120,
    strip: tuple[np.ndarray, str, int] | None = None,
) -> None:
    """Shows :func:`player_html` on the page (its script is ours alone, see there)."""
    st.html(player_html(frames, captions, width, ms, strip=strip), unsafe_allow_javascript=True)
