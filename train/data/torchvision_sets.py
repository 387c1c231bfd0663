"""Datasets fetched through torchvision (optional dependency; needs a network for the first download)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .base import CIFAR10_CLASSES, DIGIT_CLASSES, FASHION_CLASSES, DataError, Splits, from_arrays

CELEBA_CROP = 148  # the paper's central crop of the 178x218 aligned faces, then resized to 64 (sec. 4.1)
CELEBA_SIZE = 64


def _torchvision() -> Any:
    try:
        import torchvision
    except ImportError:
        raise DataError(
            "this dataset is fetched through torchvision, which is not installed. Fix: "
            "pip install torchvision (matching your torch build), and make sure a network is reachable for the "
            "first download; offline, use --dataset fashion-mnist, digits or folder:PATH"
        ) from None
    return torchvision


def load_torchvision(name: str, root: Path) -> Splits:
    """``mnist``, ``fashion-mnist``, ``cifar10`` or ``celeba`` via torchvision, downloaded into ``root``."""
    tv = _torchvision()
    root.mkdir(parents=True, exist_ok=True)
    try:
        if name in ("mnist", "fashion-mnist"):
            cls = tv.datasets.MNIST if name == "mnist" else tv.datasets.FashionMNIST
            tr, te = cls(str(root), train=True, download=True), cls(str(root), train=False, download=True)
            classes = DIGIT_CLASSES if name == "mnist" else FASHION_CLASSES
            return from_arrays(name, tr.data.numpy(), tr.targets.numpy(), te.data.numpy(), te.targets.numpy(), classes)
        if name == "cifar10":
            tr = tv.datasets.CIFAR10(str(root), train=True, download=True)
            te = tv.datasets.CIFAR10(str(root), train=False, download=True)
            return from_arrays(name, tr.data, np.array(tr.targets), te.data, np.array(te.targets), CIFAR10_CLASSES)
        if name == "celeba":
            return _celeba(tv, root)
    except (OSError, RuntimeError) as e:
        raise DataError(
            f"{name}: torchvision could not download or read it into {root} ({e}). Fix: connect to a network, or "
            f"put the files there yourself (see torchvision's documentation) and pass --data-dir {root}"
        ) from None
    raise DataError(f"{name}: not a torchvision dataset known here")


def _celeba(tv: Any, root: Path) -> Splits:
    t = tv.transforms
    transform = t.Compose([t.CenterCrop(CELEBA_CROP), t.Resize(CELEBA_SIZE)])

    def arrays(split: str) -> np.ndarray:
        ds = tv.datasets.CelebA(str(root), split=split, download=True, transform=transform)
        return np.stack([np.asarray(ds[i][0].convert("RGB")) for i in range(len(ds))])

    x_tr, x_te = arrays("train"), arrays("test")
    return from_arrays("celeba", x_tr, -np.ones(len(x_tr)), x_te, -np.ones(len(x_te)), [])
