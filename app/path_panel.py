"""Interpolate's path panel: the path's settings (linear or spherical, the number of frames, a weight per level and
the presets that set them) and the decoded frames (the strip, one frame to browse, the loop) as one element in the
browser (a Streamlit components-v2 component, ``app/path_panel.js`` and ``.css``).

Why one element: a weight move reruns the page's fragment, and the browser renders the page again for every element
the rerun sends, so one element costs what a trivial one-slider app costs (bench/README.md measures it). Browsing frames
and the loop need no server at all. Every picture is the PNG of the model's pixels in a ``data:`` address (nothing
is fetched), every caption is set as text (no HTML is built from strings).

The settings live in session state under the page's link keys (``Ctx.s``: ``ip_method``, ``ip_steps``,
``ip_w<level>``). The browser sends all of them, numbered, as the trigger ``settings`` whenever one changes;
:func:`apply` checks them and writes them there before the fragment runs, and the number it applied goes back
with the next data so the browser never writes older settings into controls that have moved on. Once the
controls have been still for ``SETTLE_MS``, the trigger ``settled`` reruns the fragment to put the settings in the
page's link (:func:`settled`).
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from app import compute
from app.state import Ctx

METHODS = ("linear", "spherical")
STEPS = (3, 16)
DEFAULT_STEPS = 9
WEIGHT_STEP = 0.05
LOOP_MS = 120
#: How long the controls must be still before the settings go into the page's link (see :func:`settled`).
SETTLE_MS = 700
#: The browser-side selector of every picture caption the app shows: an ``st.image``'s and the panel's strip's.
CAPTION_SELECTOR = '[data-testid="stImageCaption"], .nvp-strip-caption'

_HERE = Path(__file__).parent
# Not isolated in a shadow root: its class names are its own (nvp-*), and the page's tests find its pictures.
_COMPONENT = st.components.v2.component(
    "nvp_path_panel",
    js=(_HERE / "path_panel.js").read_text(encoding="utf-8"),
    css=(_HERE / "path_panel.css").read_text(encoding="utf-8"),
    isolate_styles=False,
)


@dataclass(frozen=True)
class Settings:
    """What the path is: ``method`` (linear or spherical), ``steps`` frames, one weight in [0, 1] per level."""

    method: str
    steps: int
    weights: tuple[float, ...]


def parse(method: object, steps: object, weights: object, levels: int) -> Settings:
    """Checked settings from untrusted values (a link, the browser). Weights are put on the sliders' 0.05 grid,
    so equal paths have equal keys. Raises ``ValueError`` naming the first bad value."""
    if method not in METHODS:
        raise ValueError(f"path must be one of {', '.join(METHODS)}, got {method!r}")
    if isinstance(steps, bool) or not isinstance(steps, int | float) or steps != int(steps):
        raise ValueError(f"frames must be a whole number, got {steps!r}")
    if not STEPS[0] <= steps <= STEPS[1]:
        raise ValueError(f"frames must be from {STEPS[0]} to {STEPS[1]}, got {steps}")
    if not isinstance(weights, list | tuple) or len(weights) != levels:
        raise ValueError(f"need one weight for each of the {levels} levels, got {weights!r}")
    out = []
    for w in weights:
        if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w) or not 0 <= w <= 1:
            raise ValueError(f"a level weight must be a number from 0 to 1, got {w!r}")
        out.append(round(round(w / WEIGHT_STEP) * WEIGHT_STEP, 2))
    return Settings(str(method), int(steps), tuple(out))


def _names(levels: int) -> list[str]:
    return ["ip_method", "ip_steps"] + [f"ip_w{lv}" for lv in range(1, levels + 1)]


def read(ctx: Ctx, link: bool = True) -> Settings:
    """This session's settings (first from the page's link, if it has them; the defaults otherwise). ``link``:
    also seed them from the link and write them back to it (``False`` when they are known to be set, so that the
    page can show its pictures before the address bar changes). Raises ``ValueError`` for a link's value that
    does not fit (the app then shows the defaults)."""
    levels = ctx.model.num_levels
    defaults: list[object] = ["linear", DEFAULT_STEPS] + [1.0] * levels
    values = []
    for name, default in zip(_names(levels), defaults, strict=True):
        # ctx.s seeds the key from the link; the link takes its value (a default too) when the run ends
        key = ctx.s(name) if link else ctx.k(name)
        st.session_state.setdefault(key, default)
        values.append(st.session_state[key])
    return parse(values[0], values[1], values[2:], levels)


def write_link(ctx: Ctx) -> None:
    """Puts the session's settings into the page's link (``Ctx.s`` writes only what changed)."""
    for name in _names(ctx.model.num_levels):
        ctx.s(name)


def write(ctx: Ctx, settings: Settings) -> None:
    """Makes ``settings`` this session's (the link follows on the next run)."""
    values = [settings.method, settings.steps, *settings.weights]
    for name, value in zip(_names(len(settings.weights)), values, strict=True):
        st.session_state[ctx.k(name)] = value


def apply(ctx: Ctx) -> None:
    """The panel's callback: the settings the browser sent become the session's. Anything that does not parse
    (only a hand-made message can send it) is dropped, and the page stays as it was."""
    event = st.session_state.get(ctx.k("ip_panel"), {}).get("settings")
    if not isinstance(event, dict):
        return
    try:
        settings = parse(event.get("method"), event.get("steps"), event.get("weights"), ctx.model.num_levels)
        seq = int(event.get("seq", 0))
    except (ValueError, TypeError, OverflowError):
        return
    write(ctx, settings)
    st.session_state[ctx.k("ip_seq")] = max(seq, st.session_state.get(ctx.k("ip_seq"), 0))


def data_url(png: bytes) -> str:
    """PNG bytes as a ``data:`` address (the browser decodes exactly these bytes)."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def payload(
    ctx: Ctx,
    settings: Settings,
    frames: np.ndarray,
    strip: tuple[np.ndarray, str, int],
    presets: dict[str, list[float]],
    level_names: list[str],
    width: int = 200,
) -> dict[str, Any]:
    """The panel's data (JSON): the settings and their limits, and uint8 ``[N, C, H, W]`` ``frames`` with the
    ``strip`` ``(mosaic [C, H', W'], caption, css_width)`` as PNG ``data:`` addresses. Raises ``ValueError``
    unless there is one frame per step."""
    n = len(frames)
    if n < 2 or n != settings.steps:
        raise ValueError(f"need {settings.steps} frames (at least 2), got {n}")
    mosaic, caption, css_width = strip
    return {
        "seq": st.session_state.get(ctx.k("ip_seq"), 0),
        "settings": {"method": settings.method, "steps": settings.steps, "weights": list(settings.weights)},
        "methods": list(METHODS),
        "limits": {"steps": list(STEPS), "weight_step": WEIGHT_STEP},
        "levels": level_names,
        "presets": [[name, values] for name, values in presets.items()],
        "help": {
            "method": "spherical (slerp) keeps the latent norm, which stays near √d under the prior.",
            "weights": "Weight of each level (0 = stay at A, 1 = go to B)",
        },
        "frames": [data_url(compute.png(f).data) for f in frames],  # kept encoded: a rerun does not encode them
        "captions": [f"frame {f}: t = {f / (n - 1):.2f}" for f in range(n)],
        "strip": {
            "src": data_url(compute.png(mosaic).data),
            "caption": caption,
            "width": max(css_width, mosaic.shape[2]),
        },
        "width": max(width, frames.shape[3]),
        "ms": LOOP_MS,
        "settle_ms": SETTLE_MS,
    }


def pictures(data_json: str) -> list[tuple[str, str]]:
    """``(data: address, caption)`` of the strip and of each frame in :func:`payload`'s data as JSON (what the
    server sends; the browser shows exactly these); empty for anything else."""
    data = json.loads(data_json or "null")
    if not isinstance(data, dict) or "strip" not in data:
        return []
    strip = data["strip"]
    return [(strip["src"], strip["caption"]), *zip(data["frames"], data["captions"], strict=True)]


def show(ctx: Ctx, data: dict[str, Any]) -> None:
    """Puts the panel on the page with :func:`payload`'s ``data``; its changes go through :func:`apply`."""
    _COMPONENT(key=ctx.k("ip_panel"), data=data, on_settings_change=lambda: apply(ctx), on_settled_change=_ignore)


def _ignore() -> None:
    """The ``settled`` trigger needs no callback: :func:`settled` reads it during the rerun it causes."""


def settled(ctx: Ctx) -> bool:
    """Whether this run answers the panel's ``settled`` trigger: its controls have been still for ``SETTLE_MS``
    since the last change, so the page's link takes the settings now (:func:`write_link`). Writing it on every
    change instead made each move wait for the browser's address-bar update and history entry (bench/README.md),
    and made the Back button step through every key press of a gesture."""
    return st.session_state.get(ctx.k("ip_panel"), {}).get("settled") is not None
