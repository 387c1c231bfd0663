"""The gallery's latents and bits/dim: what the app needs once per model (Encode's histogram, the latent map, the
attribute directions), computed once and kept in a file keyed by the checkpoint's and the gallery's content.

``train.export`` ships the file beside the model (``<name>.latents.npz``); for any other checkpoint (a run, an
upload) the app computes it on first need and keeps it in ``user_cache_dir()/latents/``. A file whose key does not
match (another checkpoint, another gallery, an older format) is ignored, never trusted. An image's latents and
bits/dim do not depend on the others (eval mode; its dequantisation noise depends on its index only), so a file
of ``N`` images serves any first ``n <= N``.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .fileio import atomic_write, file_digest, user_cache_dir
from .likelihood import dequantize, fixed_noise_bits_per_dim
from .model import RealNVP

FORMAT = 1
BATCH = 64
#: Gallery images the app encodes (its histogram, latent map and class means); the shipped file holds as many.
DEFAULT_COUNT = 1000
ENV_CACHE = "NVP_LATENTS_CACHE"


@dataclass(frozen=True)
class GalleryLatents:
    """The first ``n`` gallery images encoded: latents per level (``[n, ...]`` arrays, level 1 first), bits/dim."""

    levels: list[np.ndarray]
    bpd: np.ndarray
    labels: np.ndarray

    def tensors(self, idx: np.ndarray | slice | None = None) -> list[torch.Tensor]:
        sel = slice(None) if idx is None else idx
        return [torch.from_numpy(np.array(z[sel])) for z in self.levels]

    def frozen(self) -> GalleryLatents:
        """The same arrays made read-only (sessions share them)."""
        for a in (*self.levels, self.bpd, self.labels):
            a.setflags(write=False)
        return self


@torch.inference_mode()
def encode_uint8(model: RealNVP, images: np.ndarray) -> list[torch.Tensor]:
    """uint8 ``[B, C, H, W]`` → latents of the bin centres ``(x + 0.5) / 256``, one tensor per level, in batches."""
    x = torch.from_numpy(np.array(images, dtype=np.uint8))
    parts = [model(dequantize(x[i : i + BATCH], noise=False))[0] for i in range(0, len(x), BATCH)]
    return [torch.cat([p[lv] for p in parts]) for lv in range(model.num_levels)]


def compute(model: RealNVP, images: np.ndarray, labels: np.ndarray) -> GalleryLatents:
    """Encodes uint8 gallery images (latents of the bin centres; bits/dim by the app's one convention)."""
    zs = encode_uint8(model, images)
    bpd = fixed_noise_bits_per_dim(model, torch.from_numpy(np.array(images, dtype=np.uint8)))
    return GalleryLatents([z.numpy() for z in zs], bpd.numpy(), np.array(labels))


def key(checkpoint: Path, gallery: Path) -> dict[str, Any]:
    """What the file's content depends on: the format and both files' content."""
    return {"format": FORMAT, "checkpoint": file_digest(checkpoint), "gallery": file_digest(gallery)}


def shipped_path(checkpoint: Path) -> Path:
    """``<name>.latents.npz`` beside ``<name>.safetensors``."""
    return checkpoint.with_name(checkpoint.name.removesuffix(".safetensors") + ".latents.npz")


def cache_path(k: dict[str, Any]) -> Path:
    """The disk cache's file for key ``k`` (``$NVP_LATENTS_CACHE`` or ``user_cache_dir()/latents``)."""
    env = os.environ.get(ENV_CACHE)
    folder = Path(env).expanduser() if env else user_cache_dir() / "latents"
    return folder / f"{k['checkpoint'][:32]}-{k['gallery'][:16]}.npz"


def save(path: Path, gl: GalleryLatents, k: dict[str, Any]) -> Path:
    """Writes ``gl`` with its key (atomically; plain arrays, nothing pickled)."""
    arrays: dict[str, Any] = {f"level_{i + 1}": z for i, z in enumerate(gl.levels)}
    arrays.update(key=np.array(json.dumps(k, sort_keys=True)), bpd=gl.bpd, labels=gl.labels)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    return atomic_write(path, write)


def load(path: Path, k: dict[str, Any], n: int) -> GalleryLatents | None:
    """The first ``n`` images' latents if the file exists, is readable, has key ``k`` and ``n`` images or more."""
    try:
        with np.load(path, allow_pickle=False) as f:
            if json.loads(str(f["key"])) != k:
                return None
            levels = [f[f"level_{i + 1}"] for i in range(sum(name.startswith("level_") for name in f.files))]
            bpd, labels = f["bpd"], f["labels"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    if not levels or any(len(a) != len(bpd) for a in (*levels, labels)) or len(bpd) < n:
        return None
    return GalleryLatents([np.array(z[:n]) for z in levels], np.array(bpd[:n]), np.array(labels[:n]))
