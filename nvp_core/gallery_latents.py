"""The gallery's latents and bits/dim: what the app needs once per model (Encode's histogram, the latent map, the
attribute directions, Encode's bits/dim of a gallery image), computed once and kept in a file keyed by the
checkpoint's and the gallery's content.

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
from .likelihood import dequantize, fixed_noise_bits_per_dim_and_breakdown
from .model import RealNVP

FORMAT = 2
BATCH = 64
#: Gallery images whose latents the app uses (its histogram, latent map and class means); ``train.export`` ships
#: their latents and the bits/dim of the whole gallery, which Encode reads instead of computing a gallery image's.
DEFAULT_COUNT = 1000
ENV_CACHE = "NVP_LATENTS_CACHE"


@dataclass(frozen=True)
class GalleryLatents:
    """Gallery images encoded: the latents per level of the first ``encoded`` images (``[encoded, ...]`` arrays,
    level 1 first), and the bits/dim, labels and bits/dim terms (``nvp_core.likelihood.fixed_noise_breakdown``'s
    names) of all ``len(self)`` images (``[N]`` each): a file can hold the bits/dim of more images than it holds
    latents for."""

    levels: list[np.ndarray]
    bpd: np.ndarray
    labels: np.ndarray
    parts: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.bpd)

    @property
    def encoded(self) -> int:
        return len(self.levels[0]) if self.levels else 0

    def tensors(self, idx: np.ndarray | slice | None = None) -> list[torch.Tensor]:
        sel = slice(None) if idx is None else idx
        return [torch.from_numpy(np.array(z[sel])) for z in self.levels]

    def head(self, n: int) -> GalleryLatents:
        """The first ``n`` images, ``n <= encoded`` (views of the same arrays)."""
        if n > self.encoded:
            raise ValueError(f"the latents of {self.encoded} images are here, not {n}")
        return GalleryLatents(
            [z[:n] for z in self.levels], self.bpd[:n], self.labels[:n], {k: v[:n] for k, v in self.parts.items()}
        )

    def bits(self, i: int) -> tuple[float, dict[str, float]]:
        """Image ``i``'s bits/dim and its terms, as Encode computes them for it."""
        return float(self.bpd[i]), {k: float(v[i]) for k, v in self.parts.items()}

    def frozen(self) -> GalleryLatents:
        """The same arrays made read-only (sessions share them)."""
        for a in (*self.levels, self.bpd, self.labels, *self.parts.values()):
            a.setflags(write=False)
        return self


@torch.inference_mode()
def encode_uint8(model: RealNVP, images: np.ndarray) -> list[torch.Tensor]:
    """uint8 ``[B, C, H, W]`` → latents of the bin centres ``(x + 0.5) / 256``, one tensor per level, in batches."""
    x = torch.from_numpy(np.array(images, dtype=np.uint8))
    parts = [model(dequantize(x[i : i + BATCH], noise=False))[0] for i in range(0, len(x), BATCH)]
    if len(parts) == 1:  # one batch (the app's single image): no copies
        return parts[0]
    return [torch.cat([p[lv] for p in parts]) for lv in range(model.num_levels)]


def compute(model: RealNVP, images: np.ndarray, labels: np.ndarray, latents: int | None = None) -> GalleryLatents:
    """Encodes uint8 gallery images: latents (of the bin centres) of the first ``latents`` images (default all),
    bits/dim by the app's one convention, with its terms from the same pass, of every image."""
    n = len(images) if latents is None else min(latents, len(images))
    zs = encode_uint8(model, images[:n])
    bpd, parts = fixed_noise_bits_per_dim_and_breakdown(model, torch.from_numpy(np.array(images, dtype=np.uint8)))
    return GalleryLatents(
        [z.numpy() for z in zs], bpd.numpy(), np.array(labels), {k: v.numpy() for k, v in parts.items()}
    )


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
    arrays.update(
        part_names=np.array(json.dumps(list(gl.parts))), **{f"part_{i}": v for i, v in enumerate(gl.parts.values())}
    )

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    return atomic_write(path, write)


def load(path: Path, k: dict[str, Any], n: int) -> GalleryLatents | None:
    """Everything the file holds if it exists, is readable, has key ``k`` and the latents of ``n`` images or more."""
    try:
        with np.load(path, allow_pickle=False) as f:
            if json.loads(str(f["key"])) != k:
                return None
            levels = [f[f"level_{i + 1}"] for i in range(sum(name.startswith("level_") for name in f.files))]
            bpd, labels = f["bpd"], f["labels"]
            parts = {str(name): f[f"part_{i}"] for i, name in enumerate(json.loads(str(f["part_names"])))}
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile):
        return None
    if not levels or any(len(a) != len(bpd) for a in (labels, *parts.values())):
        return None
    if any(len(z) != len(levels[0]) for z in levels) or not n <= len(levels[0]) <= len(bpd):
        return None
    return GalleryLatents(levels, bpd, labels, parts)
