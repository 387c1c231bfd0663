"""Seeded 2-D toy data sets (numpy only), each roughly within [-4, 4]², for :class:`nvp_core.toy.ToyFlow`."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Maker = Callable[[np.random.Generator, int], np.ndarray]
EXTENT = 4.0  # every data set lies (almost entirely) in [-EXTENT, EXTENT]²


def two_moons(rng: np.random.Generator, n: int) -> np.ndarray:
    """Two interleaved half circles with a little noise."""
    upper = rng.random(n) < 0.5
    angle = rng.uniform(0.0, np.pi, n)
    x = np.where(upper, np.cos(angle), 1.0 - np.cos(angle))
    y = np.where(upper, np.sin(angle), 0.5 - np.sin(angle))
    pts = np.stack([x - 0.5, y - 0.25], axis=1) * 2.0
    return pts + rng.normal(0.0, 0.1, (n, 2))


def rings(rng: np.random.Generator, n: int) -> np.ndarray:
    """Three concentric rings of equal weight."""
    radius = rng.choice(np.array([1.0, 2.0, 3.0]), n)
    angle = rng.uniform(0.0, 2 * np.pi, n)
    pts = np.stack([np.cos(angle), np.sin(angle)], axis=1) * radius[:, None]
    return pts + rng.normal(0.0, 0.08, (n, 2))


def checkerboard(rng: np.random.Generator, n: int) -> np.ndarray:
    """Uniform on the dark squares of a 4×4 board over [-4, 4]²."""
    x = rng.uniform(-4.0, 4.0, n)
    column = np.floor((x + 4.0) / 2.0).clip(0, 3)
    row = column % 2 + 2 * rng.integers(0, 2, n)  # (row + column) even: a dark square
    y = -4.0 + 2.0 * row + rng.uniform(0.0, 2.0, n)
    return np.stack([x, y], axis=1)


def pinwheel(rng: np.random.Generator, n: int) -> np.ndarray:
    """Five curved arms (the pinwheel of Johnson et al., 2016)."""
    arms = 5
    arm = rng.integers(0, arms, n)
    radial = rng.normal(1.0, 0.3, n)
    tangential = rng.normal(0.0, 0.05, n)
    angle = arm * 2 * np.pi / arms + 0.25 * np.exp(radial)
    pts = np.stack(
        [radial * np.cos(angle) - tangential * np.sin(angle), radial * np.sin(angle) + tangential * np.cos(angle)],
        axis=1,
    )
    return pts * 1.6


def eight_gaussians(rng: np.random.Generator, n: int) -> np.ndarray:
    """Eight narrow Gaussians on a circle of radius 2.8."""
    centre = rng.integers(0, 8, n) * (2 * np.pi / 8)
    pts = np.stack([np.cos(centre), np.sin(centre)], axis=1) * 2.8
    return pts + rng.normal(0.0, 0.2, (n, 2))


DATASETS: dict[str, Maker] = {
    "two moons": two_moons,
    "rings": rings,
    "checkerboard": checkerboard,
    "pinwheel": pinwheel,
    "8 gaussians": eight_gaussians,
}


def make(name: str, n: int, seed: int = 0) -> np.ndarray:
    """``n`` points of data set ``name`` as float32 ``[n, 2]``, the same for the same seed."""
    if name not in DATASETS:
        raise ValueError(f"unknown toy data set {name!r}; choose one of {', '.join(DATASETS)}")
    if n < 1:
        raise ValueError(f"need at least one point, got {n}")
    return DATASETS[name](np.random.default_rng(seed), n).astype(np.float32)
