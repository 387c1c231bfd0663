"""The browser-side frame player (app/player.py): the frames it carries are the PNG bytes of the decoded
frames, its captions cannot escape their place, and bad input is refused."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
from PIL import Image

from app import compute
from app.player import player_html


def _frames(n: int, c: int = 1, side: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, c, side, side), dtype=np.uint8)


def _script_sources(html: str) -> list[str]:
    m = re.search(r"const src = (\[.*?\]), cap", html)
    assert m, "no frame list in the player's script"
    return re.findall(r'"(data:image/png;base64,[A-Za-z0-9+/=]+)"', m.group(1))


@pytest.mark.parametrize("channels", [1, 3])
def test_the_player_carries_every_frame_as_its_exact_png(channels: int) -> None:
    frames = _frames(5, channels)
    html = player_html(frames, [f"frame {k}" for k in range(5)])
    srcs = _script_sources(html)
    assert len(srcs) == 5
    for frame, src in zip(frames, srcs, strict=True):
        png = base64.b64decode(src.split(",", 1)[1])
        assert png == compute.png_bytes(frame, compress_level=1)
        pixels = np.asarray(Image.open(io.BytesIO(png)))
        assert np.array_equal(pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1), frame)
    # The picture shown first is the middle frame, with its caption and a slider set to it.
    assert f'class="nvp-frame" src="{srcs[2]}"' in html
    assert ">frame 2</figcaption>" in html and 'value="2" aria-label="Frame"' in html and 'max="4"' in html


def test_players_with_different_frames_get_different_ids_and_captions_are_escaped() -> None:
    a = player_html(_frames(3, seed=1), ["a", "b", "c"])
    b = player_html(_frames(3, seed=2), ["a", "b", "c"])
    ids = {re.search(r'id="(nvp-player-[0-9a-f]+)"', h).group(1) for h in (a, b)}  # type: ignore[union-attr]
    assert len(ids) == 2
    evil = player_html(_frames(2), ["ok", "</script><b>x</b>"])  # the middle frame, 1, is shown first
    script = evil.split("<script>", 1)[1]
    assert script.count("</script>") == 1, "a caption closed the script early"
    assert "&lt;/script&gt;&lt;b&gt;" in evil.split("<script>", 1)[0]


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 2 frames"):
        player_html(_frames(1), ["only"])
    with pytest.raises(ValueError, match="one caption each"):
        player_html(_frames(3), ["a", "b"])


def test_the_strip_above_the_player_is_the_mosaic_png_with_an_escaped_caption() -> None:
    frames = _frames(4, 3)
    mosaic = compute.grid(frames, 4)
    html = player_html(frames, list("abcd"), strip=(mosaic, "A → B <i>", 400))
    m = re.search(r'class="nvp-strip-img" src="data:image/png;base64,([A-Za-z0-9+/=]+)"\s+width="(\d+)"', html)
    assert m, "no strip picture"
    assert base64.b64decode(m.group(1)) == compute.png_bytes(mosaic, compress_level=1)
    assert m.group(2) == "400"
    assert '<figcaption class="nvp-strip-caption">A → B &lt;i&gt;</figcaption>' in html
    # It comes before the frame and is not one of the frames the script browses.
    assert html.index("nvp-strip-img") < html.index('class="nvp-frame"') and len(_script_sources(html)) == 4
