"""Where the app finds checkpoints and the files that travel with them (one place, so tests can redirect it).

Layout (see the shipped ``models/`` folder): ``<name>.safetensors`` with ``<name>.gallery.npz`` (test images),
``<name>.metrics.jsonl`` (training curve) and a ``README.md`` model card beside them. A run folder written by
``train/`` (``best.safetensors``, ``last.safetensors``, ``metrics.jsonl``) works too.
"""

from __future__ import annotations

import functools
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nvp_core import RealNVP
from nvp_core.fastpath_choice import configure
from nvp_core.fileio import read_json_lines
from nvp_core.freezing import try_freezing, unfreeze

ENV_DIR = "NVP_MODELS_DIR"
REPO_ROOT = Path(__file__).resolve().parent.parent
# The Fashion-MNIST model is the one the app opens with when it is there.
PREFERRED = ("fashion_mnist", "digits")


def models_dir() -> Path:
    """The folder of bundled checkpoints: ``$NVP_MODELS_DIR`` when set, else ``<repo>/models``."""
    env = os.environ.get(ENV_DIR)
    return Path(env).expanduser() if env else REPO_ROOT / "models"


#: The batch the app's fast path is timed at: a decode of an interpolation path or a grid of samples.
APP_BATCH = 16
FROZEN_ENV = "NVP_APP_FROZEN"


def prepare_app_model(model: RealNVP) -> dict[str, Any]:
    """Makes a loaded model (eval mode, float32) the app's: its parameters fixed (shared read-only by every session),
    running the fast path measured for this machine and model (:func:`nvp_core.fastpath_choice.configure`, cached per
    machine; ``$NVP_FASTPATH`` overrides it) among the paths that draw the same pictures as float32 (within one
    grey level) and compute the same numbers (bits/dim, reconstruction error), checked on this model's weights, and
    frozen for inference where that keeps the pictures
    (:func:`nvp_core.freezing.try_freezing`; ``$NVP_APP_FROZEN=off`` keeps them eager). Returns what was chosen, to
    be shown with the model's details."""
    for p in model.parameters():
        p.requires_grad_(False)
    choice = configure(model, torch.device("cpu"), mode="infer", batch=APP_BATCH, same_pictures=True)
    frozen = {"frozen": False, "why": "$NVP_APP_FROZEN=off"}
    if os.environ.get(FROZEN_ENV, "").strip().lower() != "off":
        try:
            frozen = try_freezing(model, choice.path)
        except Exception as e:  # TorchScript is in maintenance mode: without it, the eager networks and the path stay
            unfreeze(model)
            frozen = {"frozen": False, "why": f"{type(e).__name__}: {e}"}
    return {**choice.to_dict(), "freezing": frozen}


def list_checkpoints(folder: Path | None = None) -> list[Path]:
    """Model checkpoints in ``folder`` (default :func:`models_dir`), preferred names first.

    Resume states (``*.state.safetensors``) are optimiser snapshots, not models, and are skipped. The listing is
    read again when the folder's modification time changes (the sidebar asks on every rerun, and each system call
    of a listing hands the GIL to other sessions under a class)."""
    folder = models_dir() if folder is None else folder
    try:
        info = folder.stat()
    except OSError:
        return []
    if not stat.S_ISDIR(info.st_mode):
        return []
    # A change within the file system's timestamp granularity could leave the time as it was: recent folders are
    # read every time.
    if time.time_ns() - info.st_mtime_ns < 2 * 10**9:
        return list(_listing(folder))
    return list(_kept_listing(str(folder), info.st_mtime_ns))


@functools.lru_cache(maxsize=16)
def _kept_listing(folder: str, mtime_ns: int) -> tuple[Path, ...]:
    return _listing(Path(folder))


def _listing(folder: Path) -> tuple[Path, ...]:
    found = [p for p in folder.glob("*.safetensors") if not p.name.endswith(".state.safetensors")]

    def rank(p: Path) -> tuple[int, str]:
        stem = p.name.removesuffix(".safetensors")
        return (PREFERRED.index(stem) if stem in PREFERRED else len(PREFERRED), stem)

    return tuple(sorted(found, key=rank))


def find_checkpoint(stem: str, folder: Path | None = None) -> Path | None:
    """The checkpoint ``<stem>.safetensors`` among :func:`list_checkpoints`, or ``None``."""
    for p in list_checkpoints(folder):
        if p.name == f"{stem}.safetensors":
            return p
    return None


def _stem(ckpt: Path) -> str:
    return ckpt.name.removesuffix(".safetensors")


def gallery_path(ckpt: Path) -> Path | None:
    """``<stem>.gallery.npz`` next to the checkpoint, else ``gallery.npz`` in its folder."""
    for p in (ckpt.with_name(f"{_stem(ckpt)}.gallery.npz"), ckpt.with_name("gallery.npz")):
        if p.is_file():
            return p
    return None


def metrics_path(ckpt: Path) -> Path | None:
    """The training curve: ``<stem>.metrics.jsonl`` next to the checkpoint, else the run folder's ``metrics.jsonl``."""
    for p in (ckpt.with_name(f"{_stem(ckpt)}.metrics.jsonl"), ckpt.with_name("metrics.jsonl")):
        if p.is_file():
            return p
    return None


def model_card_path(ckpt: Path) -> Path | None:
    """``README.md`` in the checkpoint's folder (the model card), if any."""
    p = ckpt.with_name("README.md")
    return p if p.is_file() else None


@dataclass(frozen=True)
class Gallery:
    """Test-split images ``[N, C, H, W]`` uint8, labels ``[N]`` int64 and the class names."""

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]

    def label_name(self, i: int) -> str:
        k = int(self.labels[i])
        return self.class_names[k] if 0 <= k < len(self.class_names) else str(k)

    @functools.cached_property
    def by_class(self) -> dict[int, np.ndarray]:
        """Each class present (ascending) → the indices of its images, ascending. Computed once: the pages' image
        pickers ask on every rerun."""
        order = np.argsort(self.labels, kind="stable")
        order.setflags(write=False)  # shared by every session, as the gallery is
        classes, starts = np.unique(self.labels[order], return_index=True)
        return {int(c): order[a:b] for c, a, b in zip(classes, starts, [*starts[1:], len(order)], strict=True)}


class GalleryError(ValueError):
    """A gallery file that cannot be used; the message says why."""


def load_gallery(path: Path, channels: int, size: int) -> Gallery:
    """Reads a gallery ``.npz`` (never unpickles) and checks it matches the model's ``[C, size, size]``."""
    try:
        with np.load(path, allow_pickle=False) as f:
            images = np.asarray(f["images"])
            labels = np.asarray(f["labels"]).astype(np.int64) if "labels" in f else np.zeros(len(images), np.int64)
            names = [str(n) for n in f["class_names"]] if "class_names" in f else []
    except (OSError, ValueError, KeyError) as e:
        raise GalleryError(f"{path.name}: not a usable gallery ({e})") from None
    if images.ndim == 3:
        images = images[:, None]
    if images.dtype != np.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != (channels, size, size):
        raise GalleryError(
            f"{path.name}: images are {images.dtype} {list(images.shape)}, the model needs uint8 [N, {channels}, "
            f"{size}, {size}]"
        )
    if not names:
        names = [str(k) for k in range(int(labels.max()) + 1 if len(labels) else 0)]
    return Gallery(images=images, labels=labels, class_names=names)


def read_metrics(path: Path) -> list[dict[str, float]]:
    """The numeric fields of each JSON line of a metrics file (bad lines are skipped: a run may be writing)."""
    rows: list[dict[str, float]] = []
    for obj in read_json_lines(path):
        row = {k: float(v) for k, v in obj.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        if row:
            rows.append(row)
    return rows
