"""A corpus of hostile and odd image files, generated in memory (nothing is downloaded).

Each :class:`Case` carries the file's bytes, a file name (the suffix is what an upload or a folder
would show, which may lie), and what :func:`nvp_core.images.load_image` must do with it: ``"ok"``
(decoded, with a ``check`` on the decoded image) or ``"error"`` (one :class:`ImageError`).

Large declared sizes are built from hand-written PNG/JPEG headers and 1-bit rows, so generating the
whole corpus takes well under a second and a few megabytes.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache

import numpy as np
from PIL import Image

Check = Callable[[Image.Image], None]


@dataclass(frozen=True)
class Case:
    """One hostile input: ``expect`` is ``"ok"`` or ``"error"``; ``check`` validates a decoded image."""

    name: str
    filename: str
    data: bytes = field(repr=False)
    expect: str
    check: Check | None = field(default=None, repr=False, compare=False)
    heavy: bool = False  # declares a huge image: also checked for bounded memory


def _save(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _chunk(kind: bytes, payload: bytes, crc: int | None = None) -> bytes:
    crc = zlib.crc32(kind + payload) if crc is None else crc
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc & 0xFFFFFFFF)


def _png_1bit(width: int, height: int, rows: int | None = None) -> bytes:
    """A 1-bit grayscale PNG declaring ``width`` x ``height``; only ``rows`` rows of (zero) data are written
    when given (a tiny file that declares a huge image), else all of them (a genuine, valid bomb)."""
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    comp = zlib.compressobj(1)
    n = height if rows is None else rows
    body = bytearray()
    block = row * max(1, min(n, 4096))
    done = 0
    while done < n:
        k = min(n - done, len(block) // len(row))
        body += comp.compress(block[: k * len(row)])
        done += k
    body += comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", bytes(body)) + _chunk(b"IEND", b"")


def _jpeg_with_declared_size(width: int, height: int) -> bytes:
    """A small valid JPEG whose SOF header is patched to declare ``width`` x ``height``."""
    data = bytearray(_save(Image.new("L", (16, 16), 128), "JPEG"))
    i = 2
    while i < len(data):
        marker = data[i + 1]
        length = struct.unpack(">H", data[i + 2 : i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            struct.pack_into(">HH", data, i + 5, height, width)
            return bytes(data)
        i += 2 + length
    raise AssertionError("no SOF marker")


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    out, i = [], 8
    while i < len(data):
        (n,) = struct.unpack(">I", data[i : i + 4])
        out.append((data[i + 4 : i + 8], data[i + 8 : i + 8 + n]))
        i += 12 + n
    return out


def _png_insert(data: bytes, extra: bytes) -> bytes:
    """Inserts raw chunk bytes right after IHDR."""
    (n,) = struct.unpack(">I", data[8:12])
    at = 8 + 12 + n
    return data[:at] + extra + data[at:]


def _halves(w: int, h: int, left: int, right: int, mode: str = "L") -> Image.Image:
    arr = np.full((h, w), right, dtype=np.uint8)
    arr[:, : w // 2] = left
    return Image.fromarray(arr, mode=mode) if mode == "L" else Image.fromarray(arr).convert(mode)


# ---------------------------------------------------------------- checks on decoded images


def _mode_size(mode: str, size: tuple[int, int]) -> Check:
    def check(img: Image.Image) -> None:
        assert img.mode == mode, f"mode {img.mode}, expected {mode}"
        assert img.size == size, f"size {img.size}, expected {size}"

    return check


def _colour(mode: str, size: tuple[int, int], rgb: tuple[int, ...], tol: int = 3) -> Check:
    def check(img: Image.Image) -> None:
        _mode_size(mode, size)(img)
        arr = np.asarray(img, dtype=np.int16).reshape(size[1], size[0], -1)
        diff = np.abs(arr - np.array(rgb, dtype=np.int16)).max()
        assert diff <= tol, f"pixels differ from {rgb} by up to {diff}: e.g. {arr[0, 0].tolist()}"

    return check


def _rotated_exif(img: Image.Image) -> None:
    # Stored 40 wide x 20 high, dark left half; EXIF orientation 6 = rotate 90° clockwise to display,
    # so the displayed image is 20 x 40 with the dark half on top.
    assert img.size == (20, 40), f"EXIF rotation not applied: size {img.size}"
    arr = np.asarray(img.convert("L"), dtype=np.float64)
    top, bottom = arr[:20].mean(), arr[20:].mean()
    assert top < 60 and bottom > 190, f"rotated the wrong way: top mean {top:.0f}, bottom mean {bottom:.0f}"


def _palette_transparency(img: Image.Image) -> None:
    # Index 0 (black) is transparent: composited on white. Index 1 (red) stays red.
    _mode_size("RGB", (8, 8))(img)
    arr = np.asarray(img)
    assert (arr[:, :4] == 255).all(), f"transparent pixels should be white, got {arr[0, 0].tolist()}"
    assert (arr[:, 4:] == [255, 0, 0]).all(), f"opaque pixels changed: {arr[0, 7].tolist()}"


def _rgba_half_alpha(img: Image.Image) -> None:
    # Opaque black left half; 50% transparent black right half over white -> mid grey.
    _mode_size("RGB", (8, 8))(img)
    arr = np.asarray(img, dtype=np.int16)
    assert (arr[:, :4] == 0).all()
    assert (np.abs(arr[:, 4:] - 128) <= 2).all(), f"alpha not composited: {arr[0, 7].tolist()}"


def _float_tiff(img: Image.Image) -> None:
    # [NaN, -inf, 0, 1, +inf]: finite values span 0..255, NaN and -inf are black, +inf white.
    _mode_size("L", (5, 1))(img)
    assert np.asarray(img)[0].tolist() == [0, 0, 0, 255, 255], np.asarray(img)[0].tolist()


def _sixteen_bit(img: Image.Image) -> None:
    _mode_size("L", (6, 4))(img)
    arr = np.asarray(img)
    assert arr[0, 0] == 0 and arr[0, -1] == 255, f"16-bit range not mapped to 0..255: {arr[0].tolist()}"
    assert 120 <= arr[0, 2] <= 135, f"mid value {arr[0, 2]} (expected ~128 for 32768)"


# ---------------------------------------------------------------- the corpus


@cache
def corpus() -> tuple[Case, ...]:
    """Every case, built once per process."""
    cases: list[Case] = []

    def add(
        name: str, filename: str, data: bytes, expect: str, check: Check | None = None, heavy: bool = False
    ) -> None:
        cases.append(Case(name, filename, data, expect, check, heavy))

    png = _save(_halves(16, 16, 0, 255), "PNG")
    noisy = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    noisy_png = _save(Image.fromarray(noisy), "PNG")  # incompressible: a cut lands inside the pixel data
    jpeg = _save(_halves(64, 64, 0, 255).convert("RGB"), "JPEG", quality=90)

    # Broken or not images at all.
    add("zero_bytes", "empty.png", b"", "error")
    add("truncated_png", "cut.png", noisy_png[: len(noisy_png) // 2], "error")
    add("truncated_png_header", "cut2.png", png[:20], "error")
    add("truncated_jpeg", "cut.jpg", jpeg[: len(jpeg) // 3], "error")
    add("text_named_png", "notes.png", b"Dear diary,\nthis is not a picture.\n" * 20, "error")
    add("html_named_jpg", "page.jpg", b"<!doctype html><html><body><img src=x onerror=alert(1)></body></html>", "error")
    add("png_bad_crc", "crc.png", _png_insert(png, _chunk(b"tEXt", b"k\x00v", crc=0xDEADBEEF)), "error")
    # Pillow ignores unknown chunks, critical or not: the pixels are intact, so it decodes.
    add("png_bogus_critical_chunk", "crit.png", _png_insert(png, _chunk(b"BOGS", b"\x00" * 16)), "ok",
        _mode_size("L", (16, 16)))  # fmt: skip
    # A zTXt chunk that inflates to 8 MB of text (8x Pillow's text limit): refused, never inflated in full.
    ztxt = b"comment\x00\x00" + zlib.compress(b"A" * (8 * 2**20), 9)
    add("png_text_chunk_bomb", "ztxt.png", _png_insert(png, _chunk(b"zTXt", ztxt)), "error", heavy=True)
    # A chunk that declares 2 GB of payload in a 100-byte file.
    add("png_huge_chunk_length", "len.png", _png_insert(png, struct.pack(">I", 0x7FFFFFF0) + b"teXt" + b"\0" * 8),
        "error")  # fmt: skip

    # Decompression bombs and huge declared sizes (refused from the header, before decoding).
    add("bomb_declared_100k", "bomb.png", _png_1bit(100_000, 100_000, rows=64), "error", heavy=True)
    add("bomb_valid_64mp", "bomb64.png", _png_1bit(8_000, 8_000), "error", heavy=True)
    add("png_20000x20000", "huge.png", _png_1bit(20_000, 20_000), "error", heavy=True)
    add("jpeg_declares_60000x60000", "huge.jpg", _jpeg_with_declared_size(60_000, 60_000), "error", heavy=True)
    gif_big = bytearray(_save(Image.new("L", (4, 4)), "GIF"))
    struct.pack_into("<HH", gif_big, 6, 65535, 65535)  # logical screen
    add("gif_declares_65535x65535", "huge.gif", bytes(gif_big), "error", heavy=True)

    # Odd but legitimate images: converted as documented.
    add("one_pixel", "dot.png", _save(Image.new("RGB", (1, 1), (10, 200, 30)), "PNG"), "ok",
        _colour("RGB", (1, 1), (10, 200, 30), tol=0))  # fmt: skip
    add("one_by_4000", "strip.png", _save(Image.new("L", (1, 4000), 77), "PNG"), "ok", _colour("L", (1, 4000), (77,)))
    sixteen = np.array([[0, 16384, 32768, 49152, 60000, 65535]] * 4, dtype=np.uint16)
    add("gray_16bit", "g16.png", _save(Image.fromarray(sixteen), "PNG"), "ok", _sixteen_bit)
    cmyk = Image.new("CMYK", (8, 8), (255, 0, 0, 0))  # pure cyan
    add("cmyk_jpeg", "cmyk.jpg", _save(cmyk, "JPEG", quality=95), "ok", _colour("RGB", (8, 8), (0, 255, 255), tol=8))
    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.paste(1, (4, 0, 8, 8))
    add("palette_transparency", "pal.png", _save(pal, "PNG", transparency=0), "ok", _palette_transparency)
    rgba = Image.new("RGBA", (8, 8), (0, 0, 0, 255))
    rgba.paste((0, 0, 0, 127), (4, 0, 8, 8))
    add("rgba", "rgba.png", _save(rgba, "PNG"), "ok", _rgba_half_alpha)
    la = Image.new("LA", (5, 5), (0, 0))
    add("gray_alpha_transparent", "la.png", _save(la, "PNG"), "ok", _colour("RGB", (5, 5), (255, 255, 255), tol=0))
    frames = [Image.new("P", (10, 6), i) for i in range(3)]
    for f in frames:
        f.putpalette([0, 0, 255, 0, 255, 0, 255, 0, 0] + [0] * 759)
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    add("animated_gif", "anim.gif", gif.getvalue(), "ok", _colour("RGB", (10, 6), (0, 0, 255), tol=0))
    # Cut inside the last frame's image descriptor: the first frame is intact and is what is shown
    # (asking Pillow for n_frames here raised IndexError, found by fuzzing).
    cut = gif.getvalue().rfind(b"\x2c\x00\x00\x00\x00") + 4
    add("animated_gif_truncated_last_frame", "cut.gif", gif.getvalue()[:cut], "ok",
        _colour("RGB", (10, 6), (0, 0, 255), tol=0))  # fmt: skip
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° CW to display
    phone = _save(_halves(40, 20, 0, 255).convert("RGB"), "JPEG", quality=95, exif=exif.tobytes())
    add("exif_rotated_jpeg", "phone.jpg", phone, "ok", _rotated_exif)
    mpo = io.BytesIO()  # a multi-picture JPEG, as phones write: opens as the first picture
    Image.new("RGB", (8, 6), (250, 250, 0)).save(mpo, "MPO", save_all=True, append_images=[Image.new("RGB", (8, 6))])
    add("mpo_phone_jpeg", "stereo.jpg", mpo.getvalue(), "ok", _colour("RGB", (8, 6), (250, 250, 0), tol=6))
    add("ppm", "x.ppm", _save(Image.new("RGB", (3, 2), (5, 6, 7)), "PPM"), "ok", _colour("RGB", (3, 2), (5, 6, 7), 0))
    add("eps_refused", "x.eps", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n", "error")
    ico = _save(Image.new("RGB", (16, 16)), "ICO")
    add("ico_not_in_allowlist", "favicon.png", ico, "error")
    add("webp", "x.webp", _save(Image.new("RGB", (12, 9), (200, 40, 40)), "WEBP", lossless=True), "ok",
        _colour("RGB", (12, 9), (200, 40, 40), tol=0))  # fmt: skip
    add("bmp", "x.bmp", _save(Image.new("RGB", (7, 5), (1, 2, 3)), "BMP"), "ok", _colour("RGB", (7, 5), (1, 2, 3), 0))
    add("bmp_1bit", "mono.bmp", _save(Image.new("1", (9, 9), 1), "BMP"), "ok", _colour("L", (9, 9), (255,), tol=0))
    add("tiff", "x.tif", _save(Image.new("RGB", (6, 6), (9, 99, 199)), "TIFF"), "ok",
        _colour("RGB", (6, 6), (9, 99, 199), tol=0))  # fmt: skip
    flt = np.array([[np.nan, -np.inf, 0.0, 1.0, np.inf]], dtype=np.float32)
    add("tiff_float_nan_inf", "f.tif", _save(Image.fromarray(flt, mode="F"), "TIFF"), "ok", _float_tiff)
    add("png_bogus_ancillary_chunk", "anc.png", _png_insert(png, _chunk(b"boGS", b"\x01" * 32)), "ok",
        _mode_size("L", (16, 16)))  # fmt: skip
    return tuple(cases)


def by_name(name: str) -> Case:
    """The case called ``name``."""
    return next(c for c in corpus() if c.name == name)
