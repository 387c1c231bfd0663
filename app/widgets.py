"""Shared Streamlit pieces: the image picker, image rows, latent heatmaps, level pickers and downloads."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import plotly.graph_objects as go
import streamlit as st
import torch
from plotly.subplots import make_subplots
from torch import Tensor

from app import compute, state
from app.state import Ctx
from nvp_core.images import MAX_BYTES, ImageError, load_image, to_array

IMAGE_TYPES = ["png", "jpg", "jpeg", "gif", "webp", "bmp", "tif", "tiff"]
SOURCES = ["Gallery", "Upload", "Sample"]
IMAGE_UPLOAD_MB = MAX_BYTES // 2**20  # the image decoder's own limit: Streamlit refuses larger files before they arrive
MAX_CHANNELS_SHOWN = 16
T = TypeVar("T")
DIVERGING = "RdBu_r"  # blue < 0 < red, white at 0


def level_name(ctx: Ctx, level: int) -> str:
    """'level 1 (finest)' … 'level L (coarsest)'."""
    tag = " (finest)" if level == 1 else (" (coarsest)" if level == ctx.model.num_levels else "")
    return f"level {level}{tag}"


def level_range(first: int, last: int) -> str:
    """Levels ``first`` … ``last`` as people write them: "2", "1–3", or "none" when empty."""
    if last < first:
        return "none"
    return str(first) if first == last else f"{first}–{last}"


def image_input(
    ctx: Ctx,
    key: str,
    label: str,
    default_index: int = 0,
    default_source: str = "Gallery",
    preview: bool = True,
    horizontal: bool = True,
) -> state.Picked | None:
    """Lets the user pick an image: from the gallery, an upload (any common format), or a model sample.

    Returns ``(uint8 [C, H, W] in the model's format, a short description, its gallery index or 0)`` or ``None``
    (nothing yet, or an unusable file, which gets an ``st.error``)."""
    g = state.gallery(ctx)
    sources = SOURCES if g is not None else SOURCES[1:]
    # Without a gallery (e.g. a run folder) the page starts from a model sample rather than opening empty.
    default_source = default_source if g is not None else "Sample"
    src = st.radio(
        label,
        sources,
        index=sources.index(default_source) if default_source in sources else 0,
        horizontal=horizontal,  # False in narrow columns, where three options in a row wrap
        key=ctx.s(f"{key}:src"),
        persist_state="session",
    )
    if src == "Gallery" and g is not None:
        present = list(g.by_class)
        c1, c2 = st.columns([1, 1])
        cls = c1.selectbox(
            "Class",
            [-1, *present],
            key=ctx.s(f"{key}:cls"),
            persist_state="session",
            format_func=lambda c: "any" if c < 0 else (g.class_names[c] if c < len(g.class_names) else str(c)),
        )
        assert cls is not None  # a selectbox over a non-empty list with an index always returns an option
        pool = None if cls < 0 else g.by_class[cls]
        n = len(g.images) if pool is None else len(pool)
        name = "any" if cls < 0 else (g.class_names[cls] if cls < len(g.class_names) else str(cls))
        j = c2.number_input(
            f"Gallery image (0–{n - 1})" if cls < 0 else f"Gallery image (0–{n - 1} of the {n} {name} images)",
            0,
            n - 1,
            min(default_index, n - 1) if cls < 0 else 0,
            key=ctx.s(f"{key}:idx:{cls}"),
            persist_state="session",
            help="Test-split images that ship with the model."
            + ("" if cls < 0 else f" Numbered within the class: {n} of the gallery's {len(g.images)} images."),
        )
        idx = int(j) if pool is None else int(pool[int(j)])
        arr, desc = np.array(g.images[int(idx)]), f"gallery #{int(idx)} ({g.label_name(int(idx))})"
        if preview:
            picture(arr, 96, desc)
        return state.Picked(arr, desc, idx)
    if src == "Upload":
        up = st.file_uploader(
            f"An image file ({', '.join(IMAGE_TYPES[:5])}, …)",
            type=IMAGE_TYPES,
            key=ctx.k(f"{key}:up"),
            max_upload_size=IMAGE_UPLOAD_MB,
        )
        invert = st.checkbox(
            "Invert (light on dark, as in training)",
            value=ctx.dark_background,
            key=ctx.s(f"{key}:inv"),
            persist_state="session",
        )
        if up is None:
            st.info(f"Upload a photo or drawing: it is centre-cropped and resized to {ctx.size}×{ctx.size}.")
            return None
        try:
            img = load_image(up.getvalue())
            arr = to_array(img, ctx.channels, ctx.size, invert=invert)
        except ImageError as e:
            st.error(f"Cannot use {up.name}: {e}")
            return None
        desc = f"{up.name} ({img.width}×{img.height} {img.mode})"
        if preview:
            picture(arr, 96, desc)
        return state.Picked(arr, desc)
    c1, c2 = st.columns(2)
    # The default seed follows default_index, so the images of a multi-image page (A and B, corners) differ.
    seed = c1.number_input("Seed", 0, 2**31 - 1, default_index, key=ctx.s(f"{key}:seed"), persist_state="session")
    temp = c2.slider("Temperature", 0.0, 1.0, 0.7, 0.05, key=ctx.s(f"{key}:temp"), persist_state="session")
    gen = torch.Generator().manual_seed(int(seed))
    zs = ctx.model.sample_latents(1, float(temp), generator=gen)
    arr, desc = compute.decode(ctx.model, zs)[0], f"sample (seed {int(seed)}, T={temp:.2f})"
    if preview:
        picture(arr, 96, desc)
    return state.Picked(arr, desc)


def picture(image: np.ndarray | compute.Png, width: int, caption: str, where: object = st) -> None:
    """Shows a uint8 ``[C, H, W]`` image (or one already encoded) ``width`` CSS pixels wide. It is sent at its own
    resolution (a PNG of a few hundred bytes, made in well under a millisecond) and the browser enlarges it with
    nearest-neighbour (the page style set in ``streamlit_app.py``), so pixels stay crisp at no cost to the server.
    The browser gets these PNG bytes unchanged (lossless)."""
    pic = image if isinstance(image, compute.Png) else compute.png(image)
    # output_format="PNG": by default Streamlit re-encodes an image without alpha as JPEG, which shifts the
    # pixels (chroma subsampling turns the red/blue latents muddy). A width at least the image's keeps
    # Streamlit from resampling it, so these exact bytes are what the browser receives.
    where.image(pic.data, caption=caption, width=max(width, pic.width), output_format="PNG")  # type: ignore[attr-defined]


def show_images(images: Sequence[np.ndarray], captions: Sequence[str], min_side: int = 140) -> None:
    """A row of uint8 ``[C, H, W]`` images, enlarged crisply."""
    cols = st.columns(len(images))
    for col, img, cap in zip(cols, images, captions, strict=True):
        picture(img, min_side, cap, col)


def mosaic(frames: np.ndarray, ncol: int | None = None, cell: int = 0) -> tuple[np.ndarray, int]:
    """``[N, C, H, W]`` frames as one mosaic at native resolution, and the CSS width to show it at (``cell`` px
    per image; by default it fits ~900 px)."""
    ncol = max(1, min(ncol or len(frames), len(frames)))
    cell = cell or max(56, min(150, 900 // ncol))
    return compute.grid(frames, ncol), min(1000, ncol * cell)


def strip(frames: np.ndarray, caption: str, ncol: int | None = None, cell: int = 0) -> np.ndarray:
    """Shows ``[N, C, H, W]`` frames as one crisp mosaic (see :func:`mosaic`) and returns the mosaic."""
    grid, width = mosaic(frames, ncol, cell)
    picture(grid, width, caption)
    return grid


def level_picker(ctx: Ctx, key: str, label: str, default: Sequence[int] | None = None) -> list[int]:
    """A multiselect of levels (1-based), labelled finest … coarsest."""
    L = ctx.model.num_levels
    opts = list(range(1, L + 1))
    chosen = st.multiselect(
        label,
        opts,
        default=list(default) if default is not None else opts,
        key=ctx.s(key),
        persist_state="session",
        format_func=lambda lv: level_name(ctx, lv),
    )
    return sorted(chosen)


def latent_image(ctx: Ctx, z: Tensor, level: int, cell: int = 120) -> None:
    """One level's latents ``[C_l, h, w]`` as a single crisp image: a tile per channel (row-major), blue < 0,
    white = 0, red > 0 (scale symmetric about 0 up to the largest |z| shown)."""
    arr = z.detach().cpu().numpy()
    c = min(arr.shape[0], MAX_CHANNELS_SHOWN)
    ncol = compute.latent_columns(c, arr.shape[1])
    mosaic, lim = compute.latent_mosaic(arr, MAX_CHANNELS_SHOWN, ncol)
    width = min(1000, ncol * cell)
    picture(
        mosaic,
        width,
        f"{level_name(ctx, level)}: {arr.shape[0]}×{arr.shape[1]}×{arr.shape[2]}"
        + (f", first {c} channels" if c < arr.shape[0] else f", channels 0–{c - 1}")
        + f" left to right, top to bottom · blue −{lim:.2f} · white 0 · red +{lim:.2f}",
    )


def latent_heatmaps(ctx: Ctx, z: Tensor, level: int) -> go.Figure:
    """One level's latents ``[C_l, h, w]``: a heatmap per channel, diverging colours centred at 0."""
    arr = z.detach().cpu().numpy()
    c = min(arr.shape[0], MAX_CHANNELS_SHOWN)
    ncol = compute.latent_columns(c, arr.shape[1])
    nrow = math.ceil(c / ncol)
    lim = float(max(np.abs(arr[:c]).max(), 1e-6))
    fig = make_subplots(
        rows=nrow,
        cols=ncol,
        subplot_titles=[f"ch {i}" for i in range(c)],
        horizontal_spacing=0.02,
        vertical_spacing=0.08 if nrow > 1 else 0.0,
    )
    for i in range(c):
        r, q = divmod(i, ncol)
        fig.add_trace(
            go.Heatmap(
                z=arr[i],
                zmid=0.0,
                zmin=-lim,
                zmax=lim,
                colorscale=DIVERGING,
                showscale=i == 0,
                colorbar={"title": "z", "thickness": 12},
                hovertemplate="row %{y}, col %{x}: %{z:.3f}<extra></extra>",
            ),
            row=r + 1,
            col=q + 1,
        )
    for i in range(c):
        r, q = divmod(i, ncol)
        fig.update_yaxes(scaleanchor=f"x{i + 1 if i else ''}", row=r + 1, col=q + 1)
    fig.update_yaxes(autorange="reversed", showticklabels=False, constrain="domain")
    fig.update_xaxes(showticklabels=False, constrain="domain")
    cell = 150 if ncol <= 4 else 100
    fig.update_layout(
        width=ncol * cell + 90,
        height=nrow * cell + 50,
        margin={"l": 5, "r": 5, "t": 30, "b": 5},
        title=f"{level_name(ctx, level)}: {arr.shape[0]}×{arr.shape[1]}×{arr.shape[2]}"
        + (f" (first {c} of {arr.shape[0]} channels)" if c < arr.shape[0] else ""),
    )
    fig.update_annotations(font_size=10)
    return fig


def downloads(items: Sequence[tuple[str, Callable[[], bytes], str, str]], key: str) -> None:
    """A row of download buttons: ``(label, make_bytes, file name, mime)``; the bytes are only made when
    the button is clicked (so sliders do not pay for PNG/GIF/npz encoding). One horizontal container, not
    columns: a rerun sends one message per block, and columns cost one per column."""
    with st.container(horizontal=True):
        for label, make, name, mime in items:
            st.download_button(label, make, file_name=name, mime=mime, key=f"{key}:{name}", on_click="ignore")


def markdown_file(path: Path) -> None:
    """Shows a Markdown file (a model card) without HTML; its images that are files in the same folder are
    shown as pictures (PNG pixel for pixel, SVG byte for byte), other image links are named but not fetched."""
    text = path.read_text(encoding="utf-8", errors="replace")
    for part in compute.markdown_with_images(text):
        if isinstance(part, str):
            st.markdown(part)
            continue
        alt, target = part
        local = (path.parent / target).resolve()
        if "://" in target or local.parent != path.parent.resolve() or not local.is_file():
            st.caption(f"(image not shown: {alt or target})")
            continue
        if local.suffix.lower() == ".svg":
            _svg(local, alt or target)
            continue
        try:
            img = load_image(local.read_bytes())
        except ImageError as e:
            st.caption(f"(image {target} not shown: {e})")
            continue
        arr = np.asarray(img)
        arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        picture(np.ascontiguousarray(arr), arr.shape[2], alt or target)


SVG_MAX_BYTES = 4 * 2**20  # a learning curve is tens of kB


def _svg(path: Path, caption: str) -> None:
    """A card's SVG figure (e.g. the learning curve), its bytes unchanged: Streamlit sends it as a ``data:`` address
    of an ``<img>``, in which no script runs and nothing is fetched."""
    data = path.read_bytes()
    text = data.decode("utf-8", errors="replace")
    if len(data) > SVG_MAX_BYTES or "<svg" not in text[:4096] or "xmlns=" not in text[:4096]:
        st.caption(f"(image {path.name} not shown: not a standalone SVG under {SVG_MAX_BYTES >> 20} MB)")
        return
    st.image(text, caption=caption)


def result_downloads(
    ctx: Ctx,
    what: str,
    picture: np.ndarray | Callable[[], np.ndarray],
    latents: Sequence[Tensor] | Callable[[], Sequence[Tensor]],
    label: str = "Grid",
    gif: np.ndarray | Callable[[], np.ndarray] | None = None,
    min_side: int = 0,
    npz_name: str = "",
    **arrays: np.ndarray | Callable[[], np.ndarray],
) -> None:
    """The downloads under a result: the picture as PNG (enlarged ×4 with nearest-neighbour unless ``min_side``
    is given), optionally the frames ``gif`` as a looping GIF, and the latents (a list per level) with ``arrays``
    as ``.npz``. Each may be a function that makes it when the button is clicked (a result that changes without
    a rerun of this part of the page, or costs to make). Files are named ``<model>_<what>.png`` / ``.gif`` and
    ``<model>_<npz_name or what>.npz``."""
    stem = f"{ctx.name}_{what}"

    def png() -> bytes:
        pic = _made(picture)
        return compute.png_bytes(pic, min_side or 4 * pic.shape[1])

    items: list[tuple[str, Callable[[], bytes], str, str]] = [(f"{label} (PNG)", png, f"{stem}.png", "image/png")]
    if gif is not None:
        items.append(("Animation (GIF)", lambda: compute.gif_bytes(_made(gif)), f"{stem}.gif", "image/gif"))

    def npz() -> bytes:
        return compute.npz_bytes(_made(latents), **{name: _made(a) for name, a in arrays.items()})

    items.append(("Latents (.npz)", npz, f"{ctx.name}_{npz_name or what}.npz", "application/octet-stream"))
    downloads(items, key=ctx.k(f"{what}_dl"))


def _made(value: T | Callable[[], T]) -> T:
    return value() if callable(value) else value


def need_gallery(ctx: Ctx) -> state.GalleryLatents | None:
    """The encoded gallery, or ``None`` with an info message when the model has no gallery."""
    gl = state.gallery_latents(ctx)
    if gl is None:
        st.info("This model has no gallery (`<name>.gallery.npz` next to the checkpoint), so this part is off.")
    return gl


def memo(ctx: Ctx, name: str, key: tuple[object, ...], fn: Callable[[], T]) -> T:
    """The result of ``fn`` for ``key`` on this model: the session's last result when the model and ``key``
    are unchanged (a slider that only browses results never calls the model), else a result another session
    already computed (``state.shared_result``), else ``fn()``. The model's identity is part of the slot's key
    here, so no page can forget it: two models that share a gallery give equal ``key``s for different results."""
    slot = st.session_state.get(f"_memo:{name}")  # (key, value, model key)
    if slot is not None and slot[0] == key and slot[2] == ctx.results:
        return slot[1]
    value = state.shared_result(ctx, name, key, fn)
    st.session_state[f"_memo:{name}"] = (key, value, ctx.results)
    return value


def decode_levels(
    ctx: Ctx, name: str, key: tuple[object, ...], per_level: Sequence[float], zs: Sequence[Tensor]
) -> np.ndarray:
    """``compute.decode(ctx.model, zs)`` for latents whose level ``l`` is fixed by ``key`` and ``per_level[l-1]``
    (a weight or a temperature per level). A slider moves one level at a time: the levels above the highest one
    that moved since this session's last call keep their latents, so the inverse of their scales is memoised
    (``RealNVP.inverse_coarse``) and only the finer scales run. The same bytes as a whole decode (tested)."""
    L = ctx.model.num_levels
    values = tuple(per_level)
    before = st.session_state.get(ctx.k(f"_decoded:{name}"), values)
    moved = [lv for lv, (b, v) in enumerate(zip(before, values, strict=True), start=1) if b != v]
    k = min(max(moved, default=1), L - 1)  # 0 only for a one-level model: then everything is decoded
    st.session_state[ctx.k(f"_decoded:{name}")] = values
    h = memo(ctx, f"{name}_coarse", (*key, k, values[k:]), lambda: compute.decode_coarse(ctx.model, zs[k:]))
    return compute.decode_fine(ctx.model, h, zs[:k])


def digest(*arrays: np.ndarray) -> str:
    """A short content hash of arrays (memo keys)."""
    h = hashlib.blake2b(digest_size=8)
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def other_class_index(ctx: Ctx, index: int) -> int:
    """A gallery index whose class differs from image ``index``'s (a sensible default for image B)."""
    g = state.gallery(ctx)
    if g is None:
        return index + 1
    own = int(g.labels[index])
    firsts = [int(ids[0]) for c, ids in g.by_class.items() if c != own]
    return min(firsts) if firsts else min(index + 1, len(g.images) - 1)


def distinct_examples(ctx: Ctx, k: int) -> list[int]:
    """``k`` gallery indices, from different classes while there are enough (defaults for multi-image pages)."""
    g = state.gallery(ctx)
    if g is None:
        return list(range(k))
    firsts = [int(ids[0]) for ids in g.by_class.values()]
    rest = [i for i in range(len(g.images)) if i not in firsts]
    return (firsts + rest)[:k]
