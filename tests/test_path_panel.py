"""Interpolate's path panel (app/path_panel.py): the settings the browser sends are checked before they are used,
and the pictures it gets are the PNG bytes of the decoded frames, in order, with their captions as data."""

from __future__ import annotations

import base64
import io
import json
import math

import numpy as np
import pytest
from PIL import Image

from app import compute
from app.path_panel import Settings, parse, payload


def _frames(n: int, c: int = 1, side: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, c, side, side), dtype=np.uint8)


def _pixels(src: str) -> np.ndarray:
    png = base64.b64decode(src.split(",", 1)[1])
    a = np.asarray(Image.open(io.BytesIO(png)))
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def test_settings_are_parsed_onto_the_sliders_grid() -> None:
    s = parse("spherical", 5.0, [0.95000001, 0, 1, 0.3333], 4)
    assert s == Settings("spherical", 5, (0.95, 0.0, 1.0, 0.35))
    assert isinstance(s.steps, int) and all(isinstance(w, float) for w in s.weights)


@pytest.mark.parametrize(
    ("method", "steps", "weights", "message"),
    [
        ("cubic", 9, [1, 1], "path must be one of linear, spherical"),
        (None, 9, [1, 1], "path must be"),
        ("linear", 2, [1, 1], "frames must be from 3 to 16"),
        ("linear", 17, [1, 1], "frames must be from 3 to 16"),
        ("linear", 9.5, [1, 1], "whole number"),
        ("linear", "9", [1, 1], "whole number"),
        ("linear", True, [1, 1], "whole number"),
        ("linear", 9, [1], "one weight for each of the 2 levels"),
        ("linear", 9, "11", "one weight for each"),
        ("linear", 9, [1, 1.5], "from 0 to 1"),
        ("linear", 9, [1, -0.05], "from 0 to 1"),
        ("linear", 9, [1, math.nan], "from 0 to 1"),
        ("linear", 9, [1, "1"], "from 0 to 1"),
        ("linear", 9, [1, False], "from 0 to 1"),
    ],
)
def test_bad_settings_are_refused_with_a_message(method: object, steps: object, weights: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse(method, steps, weights, 2)


@pytest.mark.parametrize("channels", [1, 3])
def test_the_panel_carries_every_frame_and_the_strip_as_their_exact_png(
    monkeypatch: pytest.MonkeyPatch, channels: int
) -> None:
    import streamlit as st

    monkeypatch.setattr(st, "session_state", {})  # payload reads the last applied number from session state
    frames = _frames(5, channels)
    mosaic = compute.grid(frames, 5)
    settings = Settings("linear", 5, (1.0, 0.5))

    class Ctx:
        def k(self, name: str) -> str:
            return f"m|{name}"

    data = payload(Ctx(), settings, frames, (mosaic, "A → B <i>", 400), {"all": [1.0, 1.0]}, ["l1", "l2"])  # type: ignore[arg-type]
    json.dumps(data)  # what the component gets is JSON
    assert data["settings"] == {"method": "linear", "steps": 5, "weights": [1.0, 0.5]} and data["seq"] == 0
    assert len(data["frames"]) == 5
    for frame, src in zip(frames, data["frames"], strict=True):
        assert base64.b64decode(src.split(",", 1)[1]) == compute.png_bytes(frame, compress_level=1)
        assert np.array_equal(_pixels(src), frame)
    assert np.array_equal(_pixels(data["strip"]["src"]), mosaic)
    # Captions are data, set as text in the browser: markup in them stays text.
    assert data["strip"]["caption"] == "A → B <i>" and data["captions"][0] == "frame 0: t = 0.00"
    assert data["captions"][-1] == "frame 4: t = 1.00" and data["strip"]["width"] == max(400, mosaic.shape[2])
    with pytest.raises(ValueError, match="need 4 frames"):
        payload(Ctx(), Settings("linear", 4, (1.0, 1.0)), frames, (mosaic, "", 400), {}, [])  # type: ignore[arg-type]
