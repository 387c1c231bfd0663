"""Safe decoding of user images and their conversion to a model's input (shared by the app and the trainer).

Untrusted bytes go through :func:`load_image`, which bounds file size and pixel count (decompression
bombs), takes the first frame of animations, applies the EXIF orientation and normalises the mode
(16-bit, CMYK, palette, alpha) to 8-bit ``L`` or ``RGB``. Every failure is an :class:`ImageError`
with a message that can be shown to a user as it is.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 40_000_000
# Larger images are reduced to this side right after decoding: consumers crop and resize to at most a few
# hundred pixels, and a full-size RGBA copy per conversion step would cost ~1 GB at the pixel limit.
MAX_SIDE = 4096
# Decoders that are exposed to untrusted bytes; the many rarer formats Pillow knows (EPS runs Ghostscript)
# are refused as "not an image format that can be read". (Multi-picture phone JPEGs open as JPEG.)
FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF", "PPM")


class ImageError(ValueError):
    """An input that is not a usable image; the message says why."""


def _read(source: bytes | str | os.PathLike[str], max_bytes: int) -> bytes:
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    else:
        path = Path(source)
        try:
            size = path.stat().st_size
        except OSError as e:
            raise ImageError(f"cannot read {path.name}: {e.strerror or e}") from None
        if size > max_bytes:
            raise ImageError(f"{path.name} is {size / 2**20:.1f} MB; the limit is {max_bytes / 2**20:.0f} MB")
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ImageError(f"cannot read {path.name}: {e.strerror or e}") from None
    if len(data) == 0:
        raise ImageError("the file is empty")
    if len(data) > max_bytes:
        raise ImageError(f"the file is {len(data) / 2**20:.1f} MB; the limit is {max_bytes / 2**20:.0f} MB")
    return data


def _flatten_alpha(img: Image.Image) -> Image.Image:
    # Transparent pixels have arbitrary colours underneath; composite on white, as a viewer shows them.
    rgba = img if img.mode == "RGBA" else img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _to_8bit(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        return Image.fromarray(np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        finite = np.isfinite(arr)  # the finite values span 0..255; NaN and -inf become 0, +inf 255
        lo, hi = (float(arr[finite].min()), float(arr[finite].max())) if finite.any() else (0.0, 0.0)
        arr = np.clip(np.where(finite, arr, np.where(arr > 0, hi, lo)), lo, hi)
        scaled = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        return Image.fromarray(np.rint(scaled).astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        return _flatten_alpha(img)
    if img.mode in ("1", "L"):
        return img.convert("L")
    return img.convert("RGB")


def load_image(
    source: bytes | str | os.PathLike[str], max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS
) -> Image.Image:
    """Decodes an image from bytes or a path into an 8-bit ``L`` or ``RGB`` PIL image.

    Refuses (with :class:`ImageError`): empty, oversized or non-image files, truncated or corrupt data,
    formats outside :data:`FORMATS`, and images with more than ``max_pixels`` pixels (checked from the
    header, before decoding). Images with a side over :data:`MAX_SIDE` are reduced to fit it (aspect kept).
    """
    data = _read(source, max_bytes)
    try:
        # No warnings.catch_warnings() here: it swaps process-wide state and is not thread-safe (the app decodes
        # in several sessions at once). Pillow raises DecompressionBombError above 2x its own limit; between
        # 1x and 2x it only warns, and our pixel check below refuses those images anyway (it is lower).
        img: Image.Image = Image.open(io.BytesIO(data), formats=FORMATS)
        w, h = img.size
        if w < 1 or h < 1:
            raise ImageError("the image has no pixels")
        if w * h > max_pixels:
            raise ImageError(f"the image is {w}×{h} pixels; the limit is {max_pixels / 1e6:.0f} megapixels")
        # An animation opens on its first frame; n_frames is not asked for: it would parse every frame
        # (slow on a file of thousands, and it raises on a corrupt later frame that is never shown).
        img.draft(None, (MAX_SIDE, MAX_SIDE))  # JPEG: libjpeg decodes at 1/2..1/8 scale; others: no-op
        img.load()
        img = ImageOps.exif_transpose(img) or img
        if max(img.size) > MAX_SIDE and not img.mode.startswith("I;16"):  # Pillow cannot resize I;16
            img.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
        return _to_8bit(img)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(
            f"the image declares far more pixels than the limit ({max_pixels / 1e6:.0f} megapixels): "
            "refused as a possible decompression bomb"
        ) from None
    except UnidentifiedImageError:
        raise ImageError(
            "this file is not an image format that can be read (PNG, JPEG, GIF, WebP, BMP, TIFF…)"
        ) from None
    except Exception as e:  # hostile bytes reach deep into the decoders, which can raise anything
        # (OSError, SyntaxError, EOFError, struct.error, and, found by fuzzing, TypeError and IndexError).
        raise ImageError(f"the image data is truncated or corrupt ({type(e).__name__})") from None


def to_array(img: Image.Image, channels: int, size: int, invert: bool = False) -> np.ndarray:
    """``[C, size, size]`` uint8: converts to ``channels`` (1: luminance, 3: RGB), centre-crops to a square,
    resizes with a Lanczos filter, and optionally inverts (for dark-background datasets such as
    Fashion-MNIST, whose objects are light on black)."""
    if channels not in (1, 3):
        raise ImageError(f"models with {channels} channels are not supported for images (use 1 or 3)")
    img = img.convert("L" if channels == 1 else "RGB")
    side = min(img.size)
    img = ImageOps.fit(img, (side, side), method=Image.Resampling.BOX, centering=(0.5, 0.5))
    img = img.resize((size, size), Image.Resampling.LANCZOS)
    arr = np.asarray(img, dtype=np.uint8)
    arr = arr[None] if channels == 1 else arr.transpose(2, 0, 1)
    if invert:
        arr = 255 - arr
    return np.ascontiguousarray(arr)
