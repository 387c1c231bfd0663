"""nvp_core.images: decoding user images and converting them to a model's input."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from nvp_core.images import ImageError, load_image, to_array


def _png(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def test_grayscale_and_colour_conversion() -> None:
    rgb = Image.new("RGB", (40, 20), (255, 0, 0))
    img = load_image(_png(rgb))
    assert img.mode == "RGB" and img.size == (40, 20)
    gray = to_array(img, channels=1, size=8)
    colour = to_array(img, channels=3, size=8)
    assert gray.shape == (1, 8, 8) and gray.dtype == np.uint8
    assert colour.shape == (3, 8, 8) and (colour[0] == 255).all() and (colour[1] == 0).all()
    assert (to_array(img, 1, 8, invert=True) == 255 - gray).all()


def test_centre_crop_keeps_the_middle() -> None:
    arr = np.zeros((10, 30), dtype=np.uint8)
    arr[:, 10:20] = 255  # a white square in the middle of a wide image
    out = to_array(Image.fromarray(arr), channels=1, size=10)
    assert out.min() > 200


def test_alpha_is_composited_on_white() -> None:
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    img = load_image(_png(rgba))
    assert img.mode == "RGB" and np.asarray(img).min() == 255


def test_sixteen_bit_is_scaled_to_eight() -> None:
    arr = np.full((4, 4), 65535, dtype=np.uint16)
    img = load_image(_png(Image.fromarray(arr)))
    assert img.mode == "L" and np.asarray(img).min() == 255


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "empty"),
        (b"this is text, not a picture", "not an image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 30, "truncated or corrupt|not an image"),
    ],
)
def test_bad_bytes_give_a_clear_error(data: bytes, match: str) -> None:
    with pytest.raises(ImageError, match=match):
        load_image(data)


def test_pixel_limit_is_checked_before_decoding() -> None:
    big = _png(Image.new("L", (3000, 3000)))
    with pytest.raises(ImageError, match="megapixels"):
        load_image(big, max_pixels=1_000_000)
    with pytest.raises(ImageError, match="limit is"):
        load_image(big, max_bytes=100)
