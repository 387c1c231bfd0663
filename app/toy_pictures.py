"""Pictures of the Playground page (numpy + PIL, no charts): point clouds, the density heatmap and the layer-by-layer
panels of the paper's fig. 1. Drawn as images: they cost the browser nothing to redraw while a model trains."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from app.compute import DIVERGING_LUT, grid

DATA_RGB = np.array([31, 119, 180], np.float64)  # the data: blue
MODEL_RGB = np.array([214, 39, 40], np.float64)  # the model's samples: red
GRID_RGB = (150, 150, 150)
# A perceptually ordered dark-to-bright scale (viridis' anchors) for log p(x).
_VIRIDIS = np.array(
    [[68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142], [31, 158, 137],
     [53, 183, 121], [109, 205, 89], [180, 222, 44], [253, 231, 37]],
    dtype=np.float64,
)  # fmt: skip


def _lut(anchors: np.ndarray) -> np.ndarray:
    """256 colours linearly interpolated between ``anchors`` ``[K, 3]``: uint8 ``[256, 3]``."""
    t = np.linspace(0.0, len(anchors) - 1.0, 256)
    lo = np.minimum(np.floor(t).astype(np.intp), len(anchors) - 2)
    f = (t - lo)[:, None]
    return (anchors[lo] * (1.0 - f) + anchors[lo + 1] * f).round().astype(np.uint8)


SEQUENTIAL_LUT = _lut(_VIRIDIS)


def _chw(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB")).transpose(2, 0, 1).copy()


def _pixels(points: np.ndarray, extent: float, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Column, row (y up) and an inside-the-square mask of each point, for a square ``[-extent, extent]²``."""
    p = np.nan_to_num(np.asarray(points, np.float64), nan=1e9, posinf=1e9, neginf=-1e9)
    col = np.floor((p[:, 0] + extent) / (2 * extent) * size)
    row = np.floor((extent - p[:, 1]) / (2 * extent) * size)
    inside = (col >= 0) & (col < size) & (row >= 0) & (row < size)
    return col.clip(0, size - 1).astype(np.intp), row.clip(0, size - 1).astype(np.intp), inside


def scatter(points: np.ndarray, extent: float, size: int = 240, rgb: np.ndarray = DATA_RGB) -> np.ndarray:
    """Points as a shaded cloud on white (darker where points pile up): uint8 ``[3, size, size]``."""
    cell = 2  # each point covers 2×2 screen pixels
    n = size // cell
    col, row, inside = _pixels(points, extent, n)
    counts = np.zeros((n, n))
    np.add.at(counts, (row[inside], col[inside]), 1.0)
    shade = np.clip(counts / 3.0, 0.0, 1.0)[..., None]
    img = 255.0 - shade * (255.0 - rgb)
    img = np.repeat(np.repeat(img, cell, axis=0), cell, axis=1)
    _axes(img, size, extent)
    return img.round().astype(np.uint8).transpose(2, 0, 1).copy()


def _axes(img: np.ndarray, size: int, extent: float) -> None:
    """Faint lines through the origin, so that pictures of the same plane can be compared."""
    mid = int(round(size / 2))
    if extent > 0:
        img[mid, :, :] = np.minimum(img[mid, :, :], 225)
        img[:, mid, :] = np.minimum(img[:, mid, :], 225)


def density(log_p: np.ndarray, span: float = 10.0) -> tuple[np.ndarray, float]:
    """``log p`` on a grid ``[n, n]`` (row 0 at the top) as a heatmap uint8 ``[3, n, n]``: the brightest colour at
    the largest value, the darkest ``span`` nats below it or lower; and that largest value."""
    finite = log_p[np.isfinite(log_p)]
    top = float(finite.max()) if finite.size else 0.0
    t = np.clip((np.nan_to_num(log_p, nan=-np.inf, posinf=top) - (top - span)) / span, 0.0, 1.0)
    return SEQUENTIAL_LUT[np.rint(t * 255).astype(np.intp)].transpose(2, 0, 1).copy(), top


def point_colours(points: np.ndarray) -> np.ndarray:
    """A colour per point from where it starts (its first coordinate, on the diverging scale), so that a panel
    further along the flow shows where each part of the data went: uint8 ``[N, 3]``."""
    x = np.asarray(points, np.float64)[:, 0]
    lim = float(np.quantile(np.abs(x), 0.98)) if len(x) else 1.0
    t = np.clip(x / max(lim, 1e-9) * 0.5 + 0.5, 0.0, 1.0)
    return DIVERGING_LUT[np.rint(t * 255).astype(np.intp)]


def robust_extent(points: np.ndarray, floor: float = 1.0) -> float:
    """A half-width that holds ~99% of ``points`` with a margin (outliers do not shrink the picture)."""
    p = np.asarray(points, np.float64)
    p = p[np.isfinite(p).all(axis=1)] if p.size else p
    if not p.size:
        return floor
    return max(floor, 1.15 * float(np.quantile(np.abs(p), 0.99)))


def panel(
    points: np.ndarray,
    colours: np.ndarray,
    lines: np.ndarray,
    title: str,
    subtitle: str,
    size: int = 180,
) -> np.ndarray:
    """One stage of the flow: grid lines ``[L, P, 2]`` (grey), the points coloured by where they started, a title
    and a subtitle (e.g. the layer's log-det): uint8 ``[3, size + 34, size]``."""
    extent = robust_extent(points)
    head = 34
    img = Image.new("RGB", (size, size + head), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=11)
    scale = size / (2 * extent)
    for line in np.asarray(lines, np.float64):
        ok = np.isfinite(line).all(axis=1) & (np.abs(line) < 1e6).all(axis=1)
        xy = [(float((x + extent) * scale), float(head + (extent - y) * scale)) for x, y in line[ok]]
        if len(xy) > 1:
            draw.line(xy, fill=GRID_RGB, width=1)
    arr = np.asarray(img).copy()
    col, row, inside = _pixels(points, extent, size)
    for dy in (0, 1):
        for dx in (0, 1):
            r, c = (row + dy).clip(0, size - 1), (col + dx).clip(0, size - 1)
            arr[head + r[inside], c[inside]] = colours[inside]
    img = Image.fromarray(arr)
    draw = ImageDraw.Draw(img)
    draw.text((size / 2, 2), title, fill=(30, 30, 30), font=font, anchor="ma")
    draw.text((size / 2, 17), subtitle, fill=(90, 90, 90), font=font, anchor="ma")
    draw.rectangle([0, head, size - 1, size + head - 1], outline=(200, 200, 200))
    return _chw(img)


def panels_row(pictures: Sequence[np.ndarray], ncol: int = 6) -> np.ndarray:
    """Panels of one size as one mosaic (one picture for the browser): uint8 ``[3, H, W]``."""
    return grid(np.stack(list(pictures)), ncol=ncol, pad=4)


def grid_lines(extent: float, count: int = 9, points: int = 60) -> np.ndarray:
    """``count`` horizontal and ``count`` vertical lines across ``[-extent, extent]²``, ``points`` each:
    ``[2 * count, points, 2]`` float32."""
    ticks = np.linspace(-extent, extent, count)
    along = np.linspace(-extent, extent, points)
    horizontal = np.stack(np.broadcast_arrays(along[None, :], ticks[:, None]), axis=-1)
    vertical = np.stack(np.broadcast_arrays(ticks[:, None], along[None, :]), axis=-1)
    return np.concatenate([horizontal, vertical]).astype(np.float32)


def mesh(extent: float, n: int) -> np.ndarray:
    """The centres of an ``n×n`` raster over ``[-extent, extent]²``, row 0 at the top: ``[n * n, 2]`` float32."""
    c = (np.arange(n) + 0.5) / n * 2 * extent - extent
    xx, yy = np.meshgrid(c, c[::-1])
    return np.stack([xx.ravel(), yy.ravel()], axis=1).astype(np.float32)


def loss_curve(steps: np.ndarray, losses: np.ndarray, size: tuple[int, int] = (240, 240)) -> np.ndarray:
    """The training loss against the step as a line on labelled axes: uint8 ``[3, H, W]`` (``size`` = W, H). A
    picture rather than a chart: many sessions redraw it while they train."""
    w, h = size
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=11)
    left, right, top, bottom = 34, w - 8, 22, h - 30
    x = np.asarray(steps, np.float64)
    y = np.asarray(losses, np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    draw.text((w / 2, 3), "training loss -log p (nats/point)", fill=(30, 30, 30), font=font, anchor="ma")
    draw.rectangle([left, top, right, bottom], outline=(200, 200, 200))
    if len(x):
        lo, hi = (float(v) for v in np.quantile(y, [0.0, 0.98]))  # a first loss far above the rest: off the top
        hi = hi if hi > lo else lo + 1.0
        x0, x1 = float(x.min()), float(max(x.max(), x.min() + 1))
        keep = np.unique(np.linspace(0, len(x) - 1, min(len(x), 2 * (right - left))).astype(np.intp))
        px = left + (x[keep] - x0) / (x1 - x0) * (right - left)
        py = bottom - (np.clip(y[keep], lo, hi) - lo) / (hi - lo) * (bottom - top)
        draw.line(list(zip(px.tolist(), py.tolist(), strict=True)), fill=(31, 119, 180), width=1)
        for v, yy in ((hi, top), (lo, bottom)):
            draw.text((left - 3, yy), f"{v:.2f}", fill=(90, 90, 90), font=font, anchor="rm")
        draw.text((left, bottom + 4), f"{int(x0)}", fill=(90, 90, 90), font=font, anchor="la")
        draw.text((right, bottom + 4), f"{int(x1)}", fill=(90, 90, 90), font=font, anchor="ra")
    draw.text((w / 2, h - 3), "step", fill=(90, 90, 90), font=font, anchor="md")
    return _chw(img)
