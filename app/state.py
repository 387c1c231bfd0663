"""The loaded model and everything cached per model (one place for Streamlit caching).

Cached values are shared by every session, so they are frozen: the model has ``requires_grad`` off and is
never modified after loading, and cached arrays are read-only. ``st.cache_resource`` is used for arrays too
(rather than ``st.cache_data``) so that nothing is pickled and large arrays are not copied on every rerun.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import logging
import os
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import numpy as np
import streamlit as st

from app import link, prepared
from app.compute import Histogram
from app.models import Gallery, GalleryError, gallery_path, load_gallery, prepare_app_model
from nvp_core import CheckpointError, RealNVP, load_model
from nvp_core import gallery_latents as gallery_latents_file
from nvp_core.fastpath import ENV_OVERRIDE
from nvp_core.gallery_latents import GalleryLatents

if TYPE_CHECKING:
    from sklearn.decomposition import PCA

T = TypeVar("T")
log = logging.getLogger(__name__)
MODEL_KEY = "nvp_model_path"
CURRENT_IMAGE = "nvp_current_image"
GALLERY_MAX_ENV = "NVP_APP_GALLERY_MAX"
OPENED_RUNS = "_opened_runs"  # run checkpoints this session opened from the Runs page (the sidebar lists them)


def stamp(path: Path) -> str:
    """Cache key of a file's version: the file (device and inode), size and modification time. One ``stat``: under
    a class every system call hands the GIL to another session's thread and waits to get it back."""
    s = path.stat()
    return f"{s.st_dev}:{s.st_ino}:{s.st_size}:{s.st_mtime_ns}"


class _Loaded:
    """A loaded model (eval mode, float32, parameters fixed) and its fast path. Preparing it takes seconds, so it
    runs in a background thread on a copy, from the disk cache or in a child process (:mod:`app.prepared`): until
    it is done, pages use the model as loaded (float32 NCHW, the reference every fast path is checked against),
    then the prepared copy. ``$NVP_FASTPATH`` naming a path prepares in this process at once. ``prepared`` is set
    once the choice is made (or failed: the model as loaded stays)."""

    def __init__(self, path: Path, model: RealNVP, meta: dict[str, Any]) -> None:
        for p in model.parameters():
            p.requires_grad_(False)
        self.current = model, {**meta, "fastpath": {"path": "fp32-nchw", "source": "being measured"}}
        self.prepared = threading.Event()
        if os.environ.get(ENV_OVERRIDE, "").strip() not in ("", "auto", "fp32", "bf16"):
            self._prepare(model, None)
        else:
            # Not a daemon: the interpreter waits for it at exit (seconds) rather than abort inside torch.
            threading.Thread(target=self._prepare, args=(copy.deepcopy(model), path), daemon=False).start()

    def _prepare(self, model: RealNVP, path: Path | None) -> None:
        try:
            # The measured fast path, same pictures and numbers as float32; made where the sessions' Python does not
            # hold up its thousands of torch calls when it can be (a child process), else here.
            chosen = (prepared.load_or_make(model, path) if path is not None else None) or prepare_app_model(model)
            self.current = model, {**self.current[1], "fastpath": chosen}  # one assignment: runs see either
        except Exception as e:  # a measurement that fails leaves the model as loaded: the reference path
            log.warning("fast path not chosen (%s: %s); the model runs as loaded", type(e).__name__, e)
        finally:
            _freeze_what_is_loaded()
            self.prepared.set()


_GC_FROZEN = threading.Event()


def _freeze_what_is_loaded() -> None:
    """Once per server, after its first model is ready: what is loaded by then (modules, the model, its graphs)
    lives as long as the server, so Python's full collections, which hold the GIL from every session while they
    scan, need not scan it again (``gc.freeze``)."""
    if not _GC_FROZEN.is_set():
        _GC_FROZEN.set()
        gc.collect()
        gc.freeze()


@st.cache_resource(show_spinner="Loading the model…", max_entries=6)
def _load(path: str, version: str) -> _Loaded:
    return _Loaded(Path(path), *load_model(path))


def app_model(path: Path, wait_s: float = 0.0) -> tuple[RealNVP, dict[str, Any]]:
    """The model object the app uses for ``path`` and its metadata; ``wait_s``: first wait up to that long for its
    fast path to be chosen."""
    loaded = _load(str(path), stamp(path))
    loaded.prepared.wait(wait_s)
    return loaded.current


def check_checkpoint(path: Path) -> str | None:
    """``None`` if ``path`` loads as a model, else the reason (for ``st.error``)."""
    try:
        _load(str(path), stamp(path))
    except CheckpointError as e:
        return str(e)
    except OSError as e:
        return f"{path.name}: cannot be read ({e.strerror or e})"
    return None


@dataclass(frozen=True)
class Ctx:
    """The model a page works with, and where it came from."""

    path: Path
    key: str  # the checkpoint's version: widget keys
    model: RealNVP
    meta: dict[str, Any]
    results: str  # ``key`` and the model's fast path: what computed results are kept under
    # What this page visit found on disk (the gallery): looked up once per full run, as the model is, not per call.
    found: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def name(self) -> str:
        return str(self.meta.get("dataset") or self.path.name.removesuffix(".safetensors"))

    @property
    def channels(self) -> int:
        return self.model.config.in_channels

    @property
    def size(self) -> int:
        return self.model.config.image_size

    @property
    def dark_background(self) -> bool:
        """True when the gallery's images are mostly dark (e.g. Fashion-MNIST): uploads are then inverted."""
        g = gallery(self)
        return bool(g is not None and float(g.images.mean()) < 100.0)

    def k(self, name: str) -> str:
        """A widget key unique to this model (so a different model starts from fresh widgets)."""
        return f"{self.key}|{name}"

    def s(self, name: str) -> str:
        """The key of a *setting*: a widget whose value the page's link carries (:func:`app.link.setting`)."""
        return link.setting(self.k(name), name)


def current() -> Ctx:
    """The model chosen in the sidebar (``streamlit_app.py`` sets it before any page runs)."""
    path = Path(st.session_state[MODEL_KEY])
    version = stamp(path)
    model, meta = _load(str(path), version).current
    key = f"{path.name.removesuffix('.safetensors')}@{zlib.crc32(version.encode()):08x}"
    # The fast path is part of the results' key: what was computed before the switch to it is not mixed with what
    # follows (widget keys stay: a reader's settings survive the switch).
    fast = meta["fastpath"]["path"] + ("+frozen" if meta["fastpath"].get("freezing", {}).get("frozen") else "")
    return Ctx(path=path, key=key, model=model, meta=meta, results=key if fast == "fp32-nchw" else f"{key}+{fast}")


@st.cache_resource(show_spinner=False, max_entries=6)
def _parameter_count(key: str, _model: RealNVP) -> int:
    return sum(p.numel() for p in _model.parameters())


def parameter_count(ctx: Ctx) -> int:
    """The model's number of parameters, counted once per model (the sidebar shows it on every rerun)."""
    return _parameter_count(ctx.results, ctx.model)


def open_run_checkpoint(path: Path) -> None:
    """Makes a run's checkpoint this session's model; the sidebar lists it from then on."""
    opened = st.session_state.setdefault(OPENED_RUNS, [])
    if str(path) not in opened:
        opened.append(str(path))
    st.session_state["model_choice"] = str(path)


def _frozen(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


@st.cache_resource(show_spinner=False, max_entries=6)
def _gallery(path: str, version: str, channels: int, size: int) -> Gallery | str:
    try:
        g = load_gallery(Path(path), channels, size)
    except GalleryError as e:
        return str(e)
    return Gallery(images=_frozen(g.images), labels=_frozen(g.labels), class_names=g.class_names)


def _gallery_file(ctx: Ctx) -> tuple[Path | None, Gallery | str | None]:
    if "gallery" not in ctx.found:
        p = gallery_path(ctx.path)
        ctx.found["gallery"] = (p, None if p is None else _gallery(str(p), stamp(p), ctx.channels, ctx.size))
    return ctx.found["gallery"]  # type: ignore[no-any-return]


def gallery(ctx: Ctx) -> Gallery | None:
    """The checkpoint's gallery of test images, or ``None`` (with a warning) when absent or unusable."""
    g = _gallery_file(ctx)[1]
    if g is None:
        return None
    if isinstance(g, str):
        st.warning(g)
        return None
    return g


def gallery_limit() -> int:
    """How many gallery images are encoded for the histogram, the latent map and the class means."""
    default = gallery_latents_file.DEFAULT_COUNT
    try:
        return max(10, int(os.environ.get(GALLERY_MAX_ENV, str(default))))
    except ValueError:
        return default


@st.cache_resource(show_spinner=False, max_entries=6)
def _gallery_latents(
    model_key: str, ckpt: str, gallery_file: str, n: int, _model: RealNVP, _images: np.ndarray, _labels: np.ndarray
) -> tuple[GalleryLatents, GalleryLatents]:
    """The first ``n`` images, and everything the file holds (the bits/dim of more images, for Encode): read from
    the file shipped with the model or from the disk cache, else the first ``n`` computed once and cached on disk."""
    k = gallery_latents_file.key(Path(ckpt), Path(gallery_file))
    for path in (gallery_latents_file.shipped_path(Path(ckpt)), gallery_latents_file.cache_path(k)):
        found = gallery_latents_file.load(path, k, n)
        if found is not None:
            found = found.frozen()
            return found.head(n), found
    with st.spinner(f"Encoding {n} gallery images (once per model; kept on disk for the next start)…"):
        gl = gallery_latents_file.compute(_model, _images[:n], _labels[:n])
    with contextlib.suppress(OSError):  # a read-only home: computed again at the next start
        gallery_latents_file.save(gallery_latents_file.cache_path(k), gl, k)
    return gl.frozen(), gl


def _encoded_gallery(ctx: Ctx) -> tuple[Gallery, tuple[GalleryLatents, GalleryLatents]] | None:
    g = gallery(ctx)
    p = _gallery_file(ctx)[0]
    if g is None or p is None:
        return None
    if "encoded" not in ctx.found:
        n = min(len(g.images), gallery_limit())
        ctx.found["encoded"] = _gallery_latents(ctx.results, str(ctx.path), str(p), n, ctx.model, g.images, g.labels)
    return g, ctx.found["encoded"]


def gallery_latents(ctx: Ctx) -> GalleryLatents | None:
    """The first :func:`gallery_limit` gallery images encoded, or ``None`` when the model has no gallery."""
    found = _encoded_gallery(ctx)
    return None if found is None else found[1][0]


def gallery_bits(ctx: Ctx, image: np.ndarray, index: int) -> tuple[float, dict[str, float]] | None:
    """The bits/dim and its terms of ``image`` when it is gallery image ``index`` and the gallery's file holds them
    (the histogram's numbers), else ``None``: the page computes them."""
    found = _encoded_gallery(ctx)
    if found is None:
        return None
    g, (_, every) = found
    if not 0 <= index < min(len(g.images), len(every)) or not np.array_equal(g.images[index], image):
        return None
    return every.bits(index)


@st.cache_resource(show_spinner=False, max_entries=24)
def pca_projection(key: str, levels: tuple[int, ...], _gl: GalleryLatents) -> tuple[PCA, np.ndarray]:
    """A 2-D PCA of the gallery latents of ``levels`` (flattened and concatenated; fitted without the 1% of
    largest norm) and every projected point ``[N, 2]``."""
    feats = flat_latents(_gl.levels, levels)
    # Fit on the bulk: a handful of badly-modelled images (huge latents) would otherwise own PC 1.
    norms = np.linalg.norm(feats, axis=1)
    bulk = feats[norms <= np.quantile(norms, 0.99)] if len(feats) >= 20 else feats
    from sklearn.decomposition import PCA  # imported here: it takes seconds, and only the latent map needs it

    pca = PCA(n_components=2, random_state=0).fit(bulk)
    return pca, _frozen(pca.transform(feats))


@st.cache_resource(show_spinner=False, max_entries=12)
def _histogram(model_key: str, name: str, lo: float, hi: float, n: int, _values: np.ndarray) -> Histogram:
    return Histogram(_values, lo, hi)


def histogram(ctx: Ctx, name: str, values: np.ndarray, lo: float, hi: float) -> Histogram:
    """The histogram of the model's ``values`` (named ``name``) on ``[lo, hi]``, drawn once for every session and
    image: an image's picture only adds its marker."""
    return _histogram(ctx.results, name, lo, hi, len(values), values)


def flat_latents(levels_arrays: list[np.ndarray], levels: tuple[int, ...]) -> np.ndarray:
    """``[N, d]``: the chosen levels (1-based) flattened and concatenated."""
    return np.concatenate([levels_arrays[lv - 1].reshape(len(levels_arrays[0]), -1) for lv in levels], axis=1)


SHARED_RESULTS = 32  # decoded grids and paths kept for all sessions (each a few MB at most)


@st.cache_resource(show_spinner=False, max_entries=SHARED_RESULTS)
def _result_slot(model_key: str, name: str, key: tuple[object, ...]) -> dict[str, Any]:
    return {"lock": threading.Lock()}


def shared_result(ctx: Ctx, name: str, key: tuple[object, ...], fn: Callable[[], T]) -> T:
    """``fn()``, computed once for every session that asks for the same ``name`` and ``key`` on this model
    (e.g. a class opening the Sample page on the default seed): the last ``SHARED_RESULTS`` results are kept.
    Arrays in the result are made read-only, since sessions share them."""
    slot = _result_slot(ctx.results, name, key)
    with slot["lock"]:  # a second session asking meanwhile waits for the first one's result
        if "value" not in slot:
            value = fn()
            for item in value if isinstance(value, tuple) else (value,):
                if isinstance(item, np.ndarray):
                    item.setflags(write=False)
            slot["value"] = value
    return slot["value"]


class Picked(NamedTuple):
    """An image a page works with: uint8 ``[C, H, W]``, a short description, and its gallery index (the index
    that fixes its dequantisation noise for the bits/dim; 0 for uploads and samples). The field is not named
    ``index``: that would shadow the tuple's ``index`` method."""

    image: np.ndarray
    desc: str
    gallery_index: int = 0


def set_current_image(ctx: Ctx, picked: Picked) -> None:
    """Remembers the Encode page's image so that other pages can use it."""
    st.session_state[CURRENT_IMAGE] = (ctx.key, picked)


def current_image(ctx: Ctx) -> Picked | None:
    """The Encode page's image for this model, else the first gallery image, else ``None``."""
    saved = st.session_state.get(CURRENT_IMAGE)
    if saved and saved[0] == ctx.key:
        return saved[1]
    g = gallery(ctx)
    if g is not None and len(g.images):
        return Picked(np.array(g.images[0]), f"gallery #0 ({g.label_name(0)})", 0)
    return None
