"""Streamlit-free glue between images (uint8 numpy) and the flow (float32 tensors). All the mathematics is
in ``nvp_core``; this module only batches, converts and packages. Everything runs under
``torch.inference_mode()`` and never changes the model."""

from __future__ import annotations

import functools
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from nvp_core import RealNVP, dequantize, gallery_latents
from nvp_core.latent import level_stats
from nvp_core.likelihood import fixed_noise_bits_per_dim, fixed_noise_bits_per_dim_and_breakdown

Latents = list[Tensor]
BATCH = 64


def model_input(images: np.ndarray) -> Tensor:
    """uint8 ``[B, C, H, W]`` → float32 in (0, 1) at the bin centres ``(x + 0.5) / 256`` (deterministic)."""
    return dequantize(torch.from_numpy(np.array(images, dtype=np.uint8)), noise=False)


def to_uint8(x: Tensor) -> np.ndarray:
    """Model output ``[B, C, H, W]`` in (0, 1) → uint8 (the 1/256 bin each value falls in). Four torch calls: under
    a class each call hands the GIL to another session and waits to win it back."""
    x = x if x.dtype == torch.float32 else x.float()
    return (x * 256.0).floor_().clamp_(0, 255).to(torch.uint8).numpy(force=True)


def encode(model: RealNVP, images: np.ndarray) -> Latents:
    """uint8 ``[B, C, H, W]`` → latents (list of L tensors ``[B, *latent_shapes[l]]``), in batches."""
    return gallery_latents.encode_uint8(model, images)


def _float32(zs: Sequence[Tensor]) -> list[Tensor]:
    return [z if z.dtype == torch.float32 else z.float() for z in zs]  # a call only where one is needed


@torch.inference_mode()
def decode(model: RealNVP, zs: Sequence[Tensor]) -> np.ndarray:
    """Latents ``[B, ...]`` per level → uint8 images ``[B, C, H, W]`` with one inverse call."""
    return to_uint8(model.inverse(_float32(zs)))


@torch.inference_mode()
def decode_coarse(model: RealNVP, zs_coarse: Sequence[Tensor]) -> Tensor:
    """The state after the inverse of the scales of ``zs_coarse``'s levels (see ``RealNVP.inverse_coarse``)."""
    return model.inverse_coarse(_float32(zs_coarse))


@torch.inference_mode()
def decode_fine(model: RealNVP, h: Tensor, zs_fine: Sequence[Tensor]) -> np.ndarray:
    """The rest of :func:`decode` from :func:`decode_coarse`'s state: only the scales of ``zs_fine``'s levels
    run. ``decode_fine(m, decode_coarse(m, zs[k:]), zs[:k])`` is the same bytes as ``decode(m, zs)``."""
    return to_uint8(model.inverse_fine(h, _float32(zs_fine)))


def bits_per_dim(model: RealNVP, images: np.ndarray, first_index: int = 0) -> np.ndarray:
    """``[B]`` bits/dim of uint8 images ``[B, C, H, W]`` under the one convention every page shows
    (``nvp_core.likelihood.CONVENTION``; ``first_index``: the first image's gallery index, 0 for any other)."""
    return fixed_noise_bits_per_dim(model, torch.from_numpy(np.array(images, dtype=np.uint8)), first_index).numpy()


@torch.inference_mode()
def encode_with_bpd(model: RealNVP, images: np.ndarray, first_index: int = 0) -> tuple[Latents, np.ndarray]:
    """Latents (of the bin centres, as :func:`encode`) and bits/dim ``[B]`` (:func:`bits_per_dim`) of uint8
    images."""
    return encode(model, images), bits_per_dim(model, images, first_index)


@torch.inference_mode()
def reconstruction_error(
    model: RealNVP, image: np.ndarray, zs: Sequence[Tensor] | None = None
) -> tuple[float, int, np.ndarray]:
    """``max |f⁻¹(f(x)) − x|`` on the model's continuous input, the max pixel difference after
    quantising, and the reconstruction (uint8 ``[C, H, W]``) of one uint8 image ``[C, H, W]``.
    ``zs``: the image's latents (``[1, ...]`` per level) when already computed, saving a forward pass."""
    x = model_input(image[None])
    if zs is None:
        zs, _ = model(x)
    x_rec = model.inverse(zs)
    rec = to_uint8(x_rec)[0]
    return float((x_rec - x).abs().max()), int(np.abs(rec.astype(int) - image.astype(int)).max()), rec


def bits_per_dim_and_breakdown(model: RealNVP, image: np.ndarray, index: int = 0) -> tuple[float, dict[str, float]]:
    """:func:`bits_per_dim` of one uint8 image ``[C, H, W]`` (``index``: its gallery index, 0 for any other image)
    and its terms (``nvp_core.likelihood.fixed_noise_breakdown``), from one pass of the flow: the same number as
    :func:`bits_per_dim`, to the bit."""
    images = torch.from_numpy(np.array(image[None], dtype=np.uint8))
    bpd, parts = fixed_noise_bits_per_dim_and_breakdown(model, images, index)
    return float(bpd[0]), {k: float(v[0]) for k, v in parts.items()}


def level_table(model: RealNVP, zs: Sequence[Tensor], parts: dict[str, float]) -> list[dict[str, object]]:
    """Per-level statistics of the first example (``nvp_core.latent.level_stats``) with the level's
    prior term of the bits/dim and its share of the total."""
    total = sum(parts.values())
    rows: list[dict[str, object]] = []
    for row, shape in zip(level_stats(zs), model.latent_shapes, strict=True):
        prior = parts.get(f"prior level {row['level']}", float("nan"))
        rows.append(
            {
                "level": f"{row['level']}"
                + (" (finest)" if row["level"] == 1 else "")
                + (" (coarsest)" if row["level"] == model.num_levels and model.num_levels > 1 else ""),
                "shape": "×".join(map(str, shape)),
                "dims": row["dims"],
                "share of dims": f"{100 * row['dims'] / model.dim:.1f}%",
                "mean": row["mean"],
                "std": row["std"],
                "norm": row["norm"],
                "norm/√d": row["norm_per_sqrt_dim"],
                "prior bits/dim": prior,
                "share of bits/dim": f"{100 * prior / total:.1f}%" if total else "–",
            }
        )
    return rows


def keep_fractions(model: RealNVP) -> list[tuple[int, float]]:
    """``(keep_from, fraction of dimensions kept)`` for keep_from = 1 .. L+1 (appendix D columns)."""
    dims = [math.prod(s) for s in model.latent_shapes]
    return [(k, sum(dims[k - 1 :]) / model.dim) for k in range(1, model.num_levels + 2)]


_MD_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def markdown_with_images(text: str) -> list[str | tuple[str, str]]:
    """Splits Markdown into text chunks and ``(alt text, target)`` for each image reference ``![alt](target)``.
    The page shows a model card's local images itself: a relative link would make the browser ask the app's
    server for a file it does not serve."""
    out: list[str | tuple[str, str]] = []
    pos = 0
    for m in _MD_IMAGE.finditer(text):
        if text[pos : m.start()].strip():
            out.append(text[pos : m.start()])
        out.append((m.group(1), m.group(2)))
        pos = m.end()
    if text[pos:].strip():
        out.append(text[pos:])
    return out


# --- pictures and downloads ------------------------------------------------------------------------
def grid(images: np.ndarray, ncol: int, pad: int = 1, pad_value: int = 255) -> np.ndarray:
    """uint8 ``[N, C, H, W]`` → one uint8 ``[C, H', W']`` mosaic with ``ncol`` columns."""
    n, c, h, w = images.shape
    ncol = max(1, min(ncol, n))
    nrow = -(-n // ncol)
    out = np.full((c, nrow * (h + pad) + pad, ncol * (w + pad) + pad), pad_value, np.uint8)
    for k in range(n):
        r, q = divmod(k, ncol)
        y, x = pad + r * (h + pad), pad + q * (w + pad)
        out[:, y : y + h, x : x + w] = images[k]
    return out


def to_pil(image: np.ndarray, min_side: int = 0) -> Image.Image:
    """uint8 ``[C, H, W]`` (C = 1 or 3) → PIL image, enlarged by an integer factor with nearest-neighbour
    so that small images stay crisp (``min_side``: smallest side wanted)."""
    arr = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
    img = Image.fromarray(np.ascontiguousarray(arr), mode="L" if image.shape[0] == 1 else "RGB")
    factor = max(1, -(-min_side // min(img.size))) if min_side else 1
    return img.resize((img.width * factor, img.height * factor), Image.Resampling.NEAREST) if factor > 1 else img


# ColorBrewer's 11-class RdBu, reversed: blue for negative values, near-white at 0, red for positive.
_RDBU_R = np.array(
    [
        [5, 48, 97], [33, 102, 172], [67, 147, 195], [146, 197, 222], [209, 229, 240], [247, 247, 247],
        [253, 219, 199], [244, 165, 130], [214, 96, 77], [178, 24, 43], [103, 0, 31],
    ],
    dtype=np.float64,
)  # fmt: skip
# 256-entry lookup table interpolated between the anchors (index 0 ↔ −lim, 255 ↔ +lim).
DIVERGING_LUT = (
    np.stack([np.interp(np.linspace(0, 10, 256), np.arange(11), _RDBU_R[:, c]) for c in range(3)], axis=1)
    .round()
    .astype(np.uint8)
)


def diverging_colors(values: np.ndarray, lim: float) -> np.ndarray:
    """Any array of reals → uint8 RGB ``[..., 3]`` on the diverging scale, ``±lim`` at the ends (clipped)."""
    t = np.clip(np.nan_to_num(values / max(lim, 1e-12), nan=0.0) * 0.5 + 0.5, 0.0, 1.0)
    return DIVERGING_LUT[np.rint(t * 255).astype(np.intp)]


def latent_columns(channels: int, side: int) -> int:
    """Tiles per row when showing ``channels`` maps of ``side``×``side``: 4, or 8 for maps of 4×4 or smaller."""
    return min(channels, 4 if side > 4 else 8)


def latent_mosaic(z: np.ndarray, max_channels: int = 16, ncol: int = 0, lim: float = 0.0) -> tuple[np.ndarray, float]:
    """One level's latents ``[C_l, h, w]`` → an RGB mosaic uint8 ``[3, H', W']`` of its first ``max_channels``
    channels (row-major, ``ncol`` per row; default 4, or 8 for maps of 4×4 or smaller) on a diverging
    colour scale symmetric about 0, and the scale's limit (``lim``, default the largest ``|z|`` shown).

    Drawn as one image, not as a chart per channel: it costs a millisecond to build and next to nothing
    for the browser to show, which keeps pages responsive with many sessions."""
    c = min(z.shape[0], max_channels)
    shown = z[:c]
    finite = np.abs(shown[np.isfinite(shown)])
    lim = float(lim) if lim > 0 else max(float(finite.max(initial=0.0)), 1e-6)
    tiles = diverging_colors(shown, lim).transpose(0, 3, 1, 2)  # [c, 3, h, w]
    ncol = ncol or latent_columns(c, z.shape[1])
    return grid(tiles, ncol, pad=max(1, z.shape[1] // 8)), lim


class Histogram:
    """A histogram of ``values`` on ``[lo, hi]`` (``bins`` bars) with a labelled x axis, drawn once as a picture
    (``size`` = W, H); :meth:`with_marker` adds one image's red line and label to a copy. A picture rather than a
    chart: it costs the browser nothing to show, and the bars are drawn once per gallery rather than per image."""

    def __init__(
        self, values: np.ndarray, lo: float, hi: float, bins: int = 40, size: tuple[int, int] = (600, 190)
    ) -> None:
        from PIL import ImageDraw, ImageFont

        w, h = size
        self._font = ImageFont.load_default(size=12)
        self._left, self._right, self._top, self._bottom = 10, w - 10, 22, h - 40  # plot area
        values = np.asarray(values, dtype=np.float64)
        values = values[np.isfinite(values)]  # an image the model rates at ±inf bits/dim has no bar to go in
        if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
            span = values if values.size else np.array([0.0])
            lo, hi = float(span.min()) - 0.5, float(span.max()) + 0.5
        self.lo, self.hi = float(lo), float(hi)
        counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
        self.top_count = max(int(counts.max()), 1)
        img = Image.new("RGB", size, "white")
        draw = ImageDraw.Draw(img)
        left, right, top, bottom = self._left, self._right, self._top, self._bottom
        for c, a, b in zip(counts, edges[:-1], edges[1:], strict=True):
            if c:
                y = bottom - c / self.top_count * (bottom - top)
                draw.rectangle([self._x(a) + 0.5, y, self._x(b) - 0.5, bottom], fill=(141, 160, 203))
        draw.line([left, bottom, right, bottom], fill=(80, 80, 80))
        for i, t in enumerate(np.linspace(lo, hi, 6)):
            x = self._x(t)
            draw.line([x, bottom, x, bottom + 4], fill=(80, 80, 80))
            anchor = "la" if i == 0 else ("ra" if i == 5 else "ma")  # the end labels stay inside the picture
            draw.text((x, bottom + 6), f"{t:.2f}", fill=(60, 60, 60), font=self._font, anchor=anchor)
        draw.text((w / 2, h - 3), "bits/dim", fill=(60, 60, 60), font=self._font, anchor="md")
        self._bars = img

    def _x(self, v: float) -> float:
        return self._left + (v - self.lo) / (self.hi - self.lo) * (self._right - self._left)

    def with_marker(self, marker: float) -> np.ndarray:
        """The histogram with a red line and label at ``marker`` (at the axis's end when beyond it; none when NaN),
        as RGB uint8 ``[3, H, W]``."""
        from PIL import ImageDraw

        img = self._bars.copy()
        draw = ImageDraw.Draw(img)
        left, right, top, bottom = self._left, self._right, self._top, self._bottom
        xm = self._x(float(np.clip(marker, self.lo, self.hi))) if not np.isnan(marker) else (left + right) / 2
        tallest = f"tallest bar: {self.top_count} images"  # on the side away from the marker's label
        grey = (100, 100, 100)
        if xm > (left + right) / 2:
            draw.text((left, 4), tallest, fill=grey, font=self._font, anchor="la")
        else:
            draw.text((right, 4), tallest, fill=grey, font=self._font, anchor="ra")
        if not np.isnan(marker):
            draw.line([xm, top - 6, xm, bottom], fill=(214, 39, 40), width=3)
            anchor = "la" if xm <= left + 40 else ("ra" if xm >= right - 40 else "ma")  # keep the label inside
            draw.text((xm, 4), "this image", fill=(214, 39, 40), font=self._font, anchor=anchor)
        return np.asarray(img).transpose(2, 0, 1).copy()


@functools.cache  # the same bytes on every rerun: made once
def icon_png(side: int = 32, tiles: int = 4) -> bytes:
    """The page icon: a red/blue checkerboard (a coupling mask), as RGBA PNG bytes. Made here rather than
    named as a ``:material/…:`` icon or an emoji, whose favicons the browser fetches from a CDN; the alpha
    channel makes Streamlit keep it a PNG."""
    cell = side // tiles
    yy, xx = np.mgrid[0:side, 0:side] // cell
    rgb = np.where(((yy + xx) % 2 == 0)[..., None], DIVERGING_LUT[20], DIVERGING_LUT[235])
    rgba = np.concatenate([rgb, np.full((side, side, 1), 255, np.uint8)], axis=2).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(buf, format="PNG")
    return buf.getvalue()


def png_bytes(image: np.ndarray, min_side: int = 0, compress_level: int = 6) -> bytes:
    """uint8 ``[C, H, W]`` → PNG file bytes (``compress_level`` 1 is fastest: for pictures on screen)."""
    buf = io.BytesIO()
    to_pil(image, min_side).save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


@dataclass(frozen=True)
class Png:
    """A picture encoded once, to be shown again without drawing or encoding it: its PNG bytes and own width."""

    data: bytes
    width: int


#: Pictures up to this many pixels' bytes are kept encoded (:func:`png`): a latent map, a sample grid, a path.
PNG_KEPT_BYTES = 16 * 1024


def png(image: np.ndarray) -> Png:
    """uint8 ``[C, H, W]`` → :class:`Png` (fast compression: a picture on screen). Small pictures are kept encoded,
    keyed by their pixels, for every session: a rerun that shows them again (a page change, another session on the
    same image) does not encode them again, and an encode hands the GIL to the other sessions' threads."""
    if image.nbytes > PNG_KEPT_BYTES:
        return Png(png_bytes(image, compress_level=1), int(image.shape[2]))
    return _kept_png(np.ascontiguousarray(image, dtype=np.uint8).tobytes(), tuple(image.shape))


@functools.lru_cache(maxsize=512)  # at most ~10 MB
def _kept_png(pixels: bytes, shape: tuple[int, ...]) -> Png:
    return Png(png_bytes(np.frombuffer(pixels, np.uint8).reshape(shape), compress_level=1), shape[2])


def gif_bytes(frames: np.ndarray, min_side: int = 112, ms: int = 120, boomerang: bool = True) -> bytes:
    """uint8 ``[N, C, H, W]`` frames → looping animated GIF bytes (there and back when ``boomerang``)."""
    seq = list(frames) + (list(frames[-2:0:-1]) if boomerang else [])
    pics = [to_pil(f, min_side).convert("RGB" if f.shape[0] == 3 else "L") for f in seq]
    buf = io.BytesIO()
    pics[0].save(buf, format="GIF", save_all=True, append_images=pics[1:], duration=ms, loop=0)
    return buf.getvalue()


def npz_bytes(zs: Sequence[Tensor] | None = None, **arrays: np.ndarray) -> bytes:
    """Latents (as ``level_1`` .. ``level_L``) and any other arrays → ``.npz`` bytes (no pickles)."""
    # Any: numpy's stubs type savez's **kwds as if they could fill its allow_pickle: bool (numpy >= 2.1)
    data: dict[str, Any] = {f"level_{i}": z.detach().cpu().numpy() for i, z in enumerate(zs or [], start=1)}
    data.update(arrays)
    buf = io.BytesIO()
    np.savez_compressed(buf, **data)
    return buf.getvalue()
