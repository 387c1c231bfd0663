"""Outsider image sets for out-of-distribution tests, made from numpy arrays in a model's format (uint8
``[N, C, H, W]``): handwritten digits prepared two ways, another data set, the model's own test images flipped
or inverted, black images and noise. Nothing is fetched from the network."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .idx import FASHION_MNIST_DIRS, IdxError, find_idx, read_idx
from .images import to_array

MNIST_SIDE = 28
MNIST_BOX = 20  # MNIST's digits were scaled to fit a 20×20 box, then centred by centre of mass in 28×28


class MissingDataError(LookupError):
    """A data set that is not available on this machine; the message says why and how to get it."""


@dataclass(frozen=True)
class Outsiders:
    """One set of outsider images: a short name, uint8 ``[N, C, H, W]`` in the model's format, and what it is."""

    name: str
    images: np.ndarray
    about: str


def sklearn_digits() -> np.ndarray:
    """scikit-learn's 1797 handwritten digits (shipped with it) as uint8 ``[N, 8, 8]`` in 0..255 (from 0..16)."""
    from sklearn.datasets import load_digits  # only the digit sets need scikit-learn's bundled data

    return np.rint(load_digits().images * (255.0 / 16.0)).astype(np.uint8)


def _resize(a: np.ndarray, width: int, height: int) -> np.ndarray:
    img = Image.fromarray(np.asarray(a, dtype=np.float32), mode="F")
    return np.asarray(img.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float64)


def centre_of_mass(a: np.ndarray) -> tuple[float, float]:
    """The (row, column) centre of mass of a non-negative 2-D array (its centre when all zero)."""
    a = np.asarray(a, dtype=np.float64)
    total = a.sum()
    if total <= 0:
        return (a.shape[0] - 1) / 2, (a.shape[1] - 1) / 2
    rows, cols = np.indices(a.shape)
    return float((rows * a).sum() / total), float((cols * a).sum() / total)


def mnist_style(digit: np.ndarray) -> np.ndarray:
    """One digit ``[h, w]`` (uint8, light on black) prepared as MNIST's were: its ink's bounding box scaled to fit
    a 20×20 box (aspect ratio kept, grey levels from the interpolation), placed in a black 28×28 image so that its
    centre of mass falls on the image's centre. uint8 ``[28, 28]``."""
    a = np.asarray(digit, dtype=np.float64)
    out = np.zeros((MNIST_SIDE, MNIST_SIDE), np.float64)
    ink_rows, ink_cols = np.nonzero(a > 0)
    if ink_rows.size == 0:
        return out.astype(np.uint8)
    a = a[ink_rows.min() : ink_rows.max() + 1, ink_cols.min() : ink_cols.max() + 1]
    scale = MNIST_BOX / max(a.shape)
    h, w = (max(1, round(n * scale)) for n in a.shape)
    box = np.clip(_resize(a, w, h), 0.0, 255.0)
    cy, cx = centre_of_mass(box)
    centre = (MNIST_SIDE - 1) / 2
    top = int(np.clip(round(centre - cy), 0, MNIST_SIDE - h))
    left = int(np.clip(round(centre - cx), 0, MNIST_SIDE - w))
    out[top : top + h, left : left + w] = box
    return np.rint(out).astype(np.uint8)


def enlarged(digit: np.ndarray, side: int = MNIST_SIDE) -> np.ndarray:
    """One digit ``[h, w]`` merely enlarged to ``side``×``side`` (bilinear), frame and all: the ink fills the
    picture edge to edge, unlike MNIST's. uint8 ``[side, side]``."""
    return np.rint(np.clip(_resize(digit, side, side), 0.0, 255.0)).astype(np.uint8)


def fit(images: np.ndarray, channels: int, size: int) -> np.ndarray:
    """Grey (``[N, H, W]``) or ``[N, C, H, W]`` uint8 images in a model's format ``[N, channels, size, size]``
    (centre-cropped and resized as uploads are, :func:`nvp_core.images.to_array`)."""
    x = images[:, None] if images.ndim == 3 else images
    if x.shape[1:] == (channels, size, size):
        return np.ascontiguousarray(x, dtype=np.uint8)
    pics = [Image.fromarray(im[0] if im.shape[0] == 1 else im.transpose(1, 2, 0)) for im in x]
    return np.stack([to_array(p, channels, size) for p in pics]) if pics else np.zeros((0, channels, size, size))


def upside_down(images: np.ndarray) -> np.ndarray:
    """uint8 ``[N, C, H, W]`` flipped top to bottom."""
    return np.ascontiguousarray(images[:, :, ::-1, :])


def inverted(images: np.ndarray) -> np.ndarray:
    """uint8 ``[N, C, H, W]`` as negatives, 255 − x."""
    return (255 - images.astype(np.int16)).astype(np.uint8)


def black(n: int, channels: int, size: int) -> np.ndarray:
    return np.zeros((n, channels, size, size), np.uint8)


def uniform_noise(n: int, channels: int, size: int, seed: int = 0) -> np.ndarray:
    """Every value drawn uniformly from 0..255 (``seed`` fixes the draw)."""
    return np.random.default_rng(seed).integers(0, 256, (n, channels, size, size), dtype=np.uint8)


def fashion_mnist_test(folders: tuple[Path, ...] = FASHION_MNIST_DIRS) -> np.ndarray:
    """Fashion-MNIST's 10000 test images, uint8 ``[N, 28, 28]``, from its IDX files (Debian's package)."""
    for folder in folders:
        path = find_idx(folder, "t10k-images-idx3-ubyte")
        if path is not None:
            try:
                return read_idx(path)
            except IdxError as e:
                raise MissingDataError(f"Fashion-MNIST's test images cannot be read: {e}") from None
    where = " or ".join(str(f) for f in folders)
    raise MissingDataError(
        f"Fashion-MNIST is not on this machine (looked in {where}); install Debian's dataset-fashion-mnist package."
    )


def data_root() -> Path:
    """Where the trainer keeps data sets fetched by torchvision (``$NVP_DATA``)."""
    return Path(os.environ.get("NVP_DATA", Path.home() / ".cache" / "nvp-explorer" / "datasets"))


def mnist_test(root: Path | None = None) -> np.ndarray:
    """MNIST's test images, uint8 ``[N, 28, 28]``, from a copy torchvision already downloaded under ``root``
    (default :func:`data_root`); never downloads."""
    root = data_root() if root is None else root
    try:
        import torchvision
    except ImportError:
        raise MissingDataError("MNIST itself needs torchvision, which is not installed here.") from None
    try:
        return torchvision.datasets.MNIST(str(root), train=False, download=False).data.numpy()
    except (OSError, RuntimeError):
        raise MissingDataError(
            f"MNIST is not downloaded under {root}; `nvp-train --dataset mnist` fetches it once (needs a network)."
        ) from None


def outsider_sets(own: np.ndarray, dataset: str, n: int, seed: int = 0) -> tuple[list[Outsiders], list[str]]:
    """The outsider sets for a model of ``dataset`` whose test images are ``own`` (uint8 ``[N, C, H, W]``), at most
    ``n`` images each, and a note for each set that is not available here."""
    _, c, size, _ = own.shape
    own = own[:n]
    sets: list[Outsiders] = []
    notes: list[str] = []
    if dataset != "digits":
        digits = sklearn_digits()[:n]
        sets.append(
            Outsiders(
                "digits, MNIST-style",
                fit(np.stack([mnist_style(d) for d in digits]), c, size),
                "scikit-learn's 8×8 digits prepared as MNIST was: scaled into a 20×20 box, centred by centre of "
                "mass in 28×28 on black",
            )
        )
        sets.append(
            Outsiders(
                "digits, enlarged",
                fit(np.stack([enlarged(d) for d in digits]), c, size),
                "the same digits merely enlarged to 28×28: the ink fills the frame",
            )
        )
    for name, loader in (("Fashion-MNIST", fashion_mnist_test), ("MNIST", mnist_test)):
        if dataset.replace("_", "-") == name.lower():
            continue
        try:
            sets.append(Outsiders(name, fit(loader()[:n], c, size), f"{name}'s test images, in the model's format"))
        except MissingDataError as e:
            notes.append(str(e))
    sets += [
        Outsiders("upside down", upside_down(own), "the model's own test images flipped top to bottom"),
        Outsiders("inverted", inverted(own), "the model's own test images as negatives (255 − x)"),
        Outsiders("black", black(len(own), c, size), "constant black images"),
        Outsiders("uniform noise", uniform_noise(len(own), c, size, seed), "every value uniform in 0..255"),
    ]
    return sets, notes
