"""Datasets as in-memory ``uint8`` tensors ``[N, C, H, W]`` with a train and a test split.

``load_dataset(name, ...)`` understands ``fashion-mnist``, ``mnist``, ``cifar10``, ``celeba``, ``digits`` and
``folder:PATH``. Every problem (missing files, no network, no torchvision) is a :class:`DataError` whose
message names the fix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from nvp_core.images import to_array

from .idx import IdxError, find_idx, read_idx

FASHION_MNIST_DIRS = (Path("/usr/share/datasets/fashion-mnist"),)
FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
DIGIT_CLASSES = [str(i) for i in range(10)]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
DATASETS = ("fashion-mnist", "mnist", "cifar10", "celeba", "digits", "folder:PATH")
# The paper flips horizontally for CIFAR-10 and CelebA only.
_FLIP_BY_DEFAULT = {"cifar10", "celeba"}


class DataError(ValueError):
    """A dataset that cannot be loaded; the message says how to fix it."""


@dataclass
class Splits:
    """A dataset in memory. Images ``uint8 [N, C, H, W]``, labels ``int64 [N]`` (``-1`` where unknown)."""

    name: str
    train: torch.Tensor
    test: torch.Tensor
    train_labels: torch.Tensor
    test_labels: torch.Tensor
    class_names: list[str] = field(default_factory=list)
    flip: bool = False
    skipped: int = 0  # unreadable files (folder datasets)
    # Training images held out to choose checkpoints (never trained on); empty: the run chooses on the test set.
    validation: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.uint8))
    validation_labels: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.int64))

    @property
    def channels(self) -> int:
        return int(self.train.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train.shape[2])


def default_cache_dir() -> Path:
    """Where torchvision downloads go when no ``--data-dir`` is given."""
    return Path(os.environ.get("NVP_DATA", Path.home() / ".cache" / "nvp-explorer" / "datasets"))


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    image_size: int = 0,
    channels: int = 0,
    flip: bool | None = None,
    test_fraction: float = 0.1,
    validation_images: int = 0,
) -> Splits:
    """Loads ``name`` and converts it to ``channels`` and ``image_size`` (``0``: keep the dataset's own), with
    ``validation_images`` training images held out (:func:`hold_out_validation`)."""
    data_dir = Path(data_dir).expanduser() if data_dir else None
    if name.startswith("folder:"):
        from .folder import load_folder

        splits = load_folder(Path(name[len("folder:") :]).expanduser(), image_size, channels, test_fraction)
    elif name == "fashion-mnist":
        splits = _fashion_mnist(data_dir)
    elif name == "digits":
        splits = _digits(test_fraction)
    elif name in ("mnist", "cifar10", "celeba"):
        from .torchvision_data import load_torchvision

        splits = load_torchvision(name, data_dir or default_cache_dir())
    else:
        raise DataError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    splits.flip = (name in _FLIP_BY_DEFAULT) if flip is None else flip
    return convert(hold_out_validation(splits, validation_images), channels, image_size)


def _fashion_mnist(data_dir: Path | None) -> Splits:
    folders = [data_dir] if data_dir else list(FASHION_MNIST_DIRS)
    for folder in folders:
        paths = [
            find_idx(folder, f"{p}-{k}") for p in ("train", "t10k") for k in ("images-idx3-ubyte", "labels-idx1-ubyte")
        ]
        if all(paths):
            try:
                x_tr, y_tr, x_te, y_te = (read_idx(p) for p in paths)  # type: ignore[arg-type]
            except IdxError as e:
                raise DataError(f"Fashion-MNIST: {e}") from None
            return _from_arrays("fashion-mnist", x_tr, y_tr, x_te, y_te, FASHION_CLASSES)
    where = f"--data-dir {data_dir}" if data_dir else " or ".join(str(f) for f in FASHION_MNIST_DIRS)
    try:
        from .torchvision_data import load_torchvision

        return load_torchvision("fashion-mnist", data_dir or default_cache_dir())
    except DataError as e:
        raise DataError(
            f"Fashion-MNIST not found in {where} (expected train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
            f"t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]). Fix: install Debian's package "
            f"(sudo apt install dataset-fashion-mnist), or pass --data-dir DIR with those files. ({e})"
        ) from None


def _digits(test_fraction: float) -> Splits:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # 0..16 intensities -> 0..255.
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    labels = bunch.target.astype(np.int64)
    tr, te = fixed_split(len(images), test_fraction)
    return _from_arrays("digits", images[tr], labels[tr], images[te], labels[te], DIGIT_CLASSES)


def _from_arrays(
    name: str, x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, y_te: np.ndarray, classes: list[str]
) -> Splits:
    """Grayscale ``[N, H, W]`` or channels-last ``[N, H, W, C]`` arrays -> :class:`Splits`."""

    def images(x: np.ndarray) -> torch.Tensor:
        x = np.asarray(x, dtype=np.uint8)
        x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
        return torch.from_numpy(np.ascontiguousarray(x))

    def labels(y: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(y, dtype=np.int64).copy())

    return Splits(name, images(x_tr), images(x_te), labels(y_tr), labels(y_te), list(classes))


def convert(splits: Splits, channels: int, image_size: int) -> Splits:
    """Converts both splits to ``channels`` (1 or 3) and ``image_size`` (resampled with Lanczos); 0 keeps."""
    if channels not in (0, 1, 3):
        raise DataError(f"--channels must be 1 or 3, got {channels}")
    if image_size < 0:
        raise DataError(f"--image-size must be positive, got {image_size}")
    for attr in ("train", "test", "validation"):
        x = getattr(splits, attr)
        if len(x) == 0:
            continue
        if channels and x.shape[1] != channels:
            x = x.expand(-1, 3, -1, -1).contiguous() if channels == 3 else _luma(x)
        if image_size and x.shape[2] != image_size:
            x = resize(x, image_size)
        setattr(splits, attr, x)
    return splits


def _luma(x: torch.Tensor) -> torch.Tensor:
    """RGB ``uint8 [N, 3, H, W]`` -> grayscale ``[N, 1, H, W]`` (ITU-R 601 weights, as PIL's ``L``)."""
    w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (x.float() * w).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """``uint8 [N, C, H, W]`` -> ``[N, C, size, size]``, channel by channel, with the app's own crop and resize
    (:func:`nvp_core.images.to_array`: centre crop to a square, then Lanczos), so training and uploads match."""
    out = np.empty((x.shape[0], x.shape[1], size, size), dtype=np.uint8)
    arr = x.numpy()
    for i in range(arr.shape[0]):
        for c in range(arr.shape[1]):
            out[i, c] = to_array(Image.fromarray(arr[i, c]), 1, size)[0]
    return torch.from_numpy(out)


def fixed_split(n: int, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """``(train indices, test indices)`` of ``n`` items: a fixed permutation (seed 0), independent of the training
    seed, so test numbers stay comparable between runs; at least one test item."""
    order = np.random.default_rng(0).permutation(n)
    n_test = max(1, int(round(n * test_fraction)))
    return order[n_test:], order[:n_test]


def validation_indices(n_train: int, n_validation: int) -> np.ndarray:
    """The training-set indices held out for validation: the first ``n_validation`` of a fixed permutation
    (``numpy.random.default_rng(0).permutation(n_train)``), independent of the training seed, in that order."""
    return np.random.default_rng(0).permutation(n_train)[:n_validation]


def hold_out_validation(splits: Splits, n: int) -> Splits:
    """Moves ``n`` training images (:func:`validation_indices`) to ``splits.validation``; the rest keep their
    order. ``n = 0`` holds nothing out."""
    if n <= 0:
        return splits
    if n >= len(splits.train):
        raise DataError(f"--validation-images {n}: the training split has only {len(splits.train)} images")
    held = torch.from_numpy(validation_indices(len(splits.train), n))
    keep = torch.ones(len(splits.train), dtype=torch.bool)
    keep[held] = False
    splits.validation, splits.validation_labels = splits.train[held], splits.train_labels[held]
    splits.train, splits.train_labels = splits.train[keep], splits.train_labels[keep]
    return splits
