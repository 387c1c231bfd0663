"""``folder:PATH`` datasets: every image under a folder (recursively), with a held-out split.

Top-level sub-folders, when there are several, become the class labels. Unreadable files are skipped
and counted, never fatal.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .base import DataError, Splits, fixed_split

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
DEFAULT_SIZE = 32


def list_images(root: Path) -> list[Path]:
    """Files under ``root`` with an image suffix, sorted (hidden files and folders excluded)."""
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def load_folder(root: Path, image_size: int, channels: int, test_fraction: float) -> Splits:
    """Decodes every image under ``root`` to ``uint8 [C, size, size]`` (centre crop + resize).

    ``channels`` 0: 1 if every image is grayscale, else 3. ``image_size`` 0: 32. The split is fixed
    (seed 0): ``test_fraction`` of the images, at least one, are held out.
    """
    from nvp_core.images import ImageError, load_image, to_array

    if not root.is_dir():
        raise DataError(f"folder dataset: {root} is not a folder (use --dataset folder:PATH with a folder of images)")
    files = list_images(root)
    size = image_size or DEFAULT_SIZE
    arrays: list[np.ndarray] = []
    kept: list[Path] = []
    gray = True
    skipped = 0
    for path in files:
        try:
            img = load_image(path)
            arrays.append(to_array(img, 3, size))
        except ImageError:
            skipped += 1
            continue
        gray = gray and img.mode == "L"
        kept.append(path)
    if len(arrays) < 2:
        raise DataError(
            f"folder dataset: found {len(arrays)} readable image(s) under {root} ({skipped} unreadable skipped); "
            f"need at least 2 (suffixes: {', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    x = np.stack(arrays)
    if channels == 1 or (channels == 0 and gray):
        # Grayscale images were expanded to three equal channels; luminance keeps them exact.
        x = np.rint(x.astype(np.float32).transpose(0, 2, 3, 1) @ np.array([0.299, 0.587, 0.114]))[:, None]
        x = x.clip(0, 255).astype(np.uint8)
    tops = [p.relative_to(root).parts for p in kept]
    class_names = sorted({parts[0] for parts in tops if len(parts) > 1})
    if len(class_names) > 1:
        index = {name: i for i, name in enumerate(class_names)}
        labels = np.array([index.get(parts[0], -1) if len(parts) > 1 else -1 for parts in tops], dtype=np.int64)
    else:
        class_names, labels = [], -np.ones(len(kept), dtype=np.int64)
    tr, te = fixed_split(len(x), test_fraction)
    to_t = torch.from_numpy
    name = f"folder:{root}"
    return Splits(
        name, to_t(x[tr].copy()), to_t(x[te].copy()), to_t(labels[tr]), to_t(labels[te]), class_names, skipped=skipped
    )
