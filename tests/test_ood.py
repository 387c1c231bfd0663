"""nvp_core.ood and nvp_core.ood_sets: AUROC, PNG complexity, the corrected score and the outsider sets."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from nvp_core.idx import FASHION_MNIST_DIRS
from nvp_core.ood import auroc, corrected, png_complexities, png_complexity
from nvp_core.ood_sets import (
    MNIST_BOX,
    MissingDataError,
    centre_of_mass,
    enlarged,
    fashion_mnist_test,
    fit,
    inverted,
    mnist_style,
    outsider_sets,
    sklearn_digits,
    uniform_noise,
    upside_down,
)


def _pairs(a: np.ndarray, b: np.ndarray) -> float:
    """AUROC by counting every (insider, outsider) pair: outsider higher 1, a tie 1/2."""
    wins = [1.0 if o > i else 0.5 if o == i else 0.0 for i, o in itertools.product(a, b)]
    return sum(wins) / len(wins)


@pytest.mark.parametrize("seed", range(5))
def test_auroc_is_the_pair_count_with_ties_and_sklearns(seed: int) -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    a = rng.integers(0, 6, 40).astype(float)  # few values: many ties
    b = rng.integers(1, 8, 25).astype(float)
    assert auroc(a, b) == pytest.approx(_pairs(a, b))
    labels = np.r_[np.zeros(len(a)), np.ones(len(b))]
    assert auroc(a, b) == pytest.approx(roc_auc_score(labels, np.r_[a, b]))


def test_auroc_ends_and_symmetry() -> None:
    a, b = np.arange(10.0), np.arange(10.0) + 100
    assert auroc(a, b) == 1.0 and auroc(b, a) == 0.0 and auroc(a, a) == 0.5
    x, y = np.random.default_rng(1).normal(size=(2, 30))
    assert auroc(x, y) + auroc(y, x) == pytest.approx(1.0)
    assert auroc(np.array([1.0, 2.0]), np.array([np.nan])) == 1.0  # unscorable counts as most outlying
    with pytest.raises(ValueError, match="both sets"):
        auroc(np.array([]), b)


def test_complexity_orders_black_below_digits_below_noise() -> None:
    black = np.zeros((1, 28, 28), np.uint8)
    digit = mnist_style(sklearn_digits()[0])[None]
    noise = uniform_noise(1, 1, 28)[0]
    cb, cd, cn = png_complexity(black), png_complexity(digit), png_complexity(noise)
    assert 0 < cb < cd < cn
    assert cn > 8.0  # noise does not compress: the file is bigger than the raw bytes
    rgb = uniform_noise(3, 3, 8, seed=2)
    assert png_complexities(rgb).shape == (3,) and png_complexities(rgb).dtype == np.float64
    with pytest.raises(ValueError):
        png_complexity(np.zeros((2, 4, 4), np.uint8))


def test_corrected_is_bits_per_dim_minus_complexity() -> None:
    assert corrected(np.array([3.0, 1.0]), np.array([0.5, 2.0])).tolist() == [2.5, -1.0]


def test_mnist_style_fits_a_20_box_centred_by_mass() -> None:
    digits = sklearn_digits()
    assert digits.dtype == np.uint8 and digits.shape[1:] == (8, 8) and digits.max() == 255
    for d in digits[:50]:
        out = mnist_style(d)
        assert out.shape == (28, 28) and out.dtype == np.uint8
        rows, cols = np.nonzero(out)
        h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert max(h, w) <= MNIST_BOX and max(h, w) >= MNIST_BOX - 2  # interpolation may fade the outermost edge
        cy, cx = centre_of_mass(out)
        assert abs(cy - 13.5) <= 0.75 and abs(cx - 13.5) <= 0.75
        assert out[:4].max() == 0 or out[-4:].max() == 0  # a black border, as in MNIST


def test_mnist_style_keeps_the_aspect_ratio() -> None:
    bar = np.zeros((8, 8), np.uint8)
    bar[1:7, 3:5] = 255  # 6 tall, 2 wide
    out = mnist_style(bar)
    rows, cols = np.nonzero(out > 127)
    h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    assert h == pytest.approx(20, abs=1) and w == pytest.approx(20 * 2 / 6, abs=1.5)
    assert mnist_style(np.zeros((8, 8), np.uint8)).max() == 0


def test_enlarged_fills_the_frame() -> None:
    d = sklearn_digits()[0]
    out = enlarged(d)
    assert out.shape == (28, 28) and out.dtype == np.uint8
    rows, cols = np.nonzero(out)
    assert rows.max() - rows.min() + 1 > 20 or cols.max() - cols.min() + 1 > 20


def test_flips_inversions_and_fit() -> None:
    x = uniform_noise(4, 1, 6, seed=3)
    assert np.array_equal(upside_down(x)[:, :, 0], x[:, :, -1])
    assert np.array_equal(upside_down(upside_down(x)), x)
    assert np.array_equal(inverted(x).astype(int), 255 - x.astype(int)) and inverted(x).dtype == np.uint8
    grey = np.stack([mnist_style(d) for d in sklearn_digits()[:3]])
    assert fit(grey, 1, 28).shape == (3, 1, 28, 28)
    small = fit(grey, 3, 12)
    assert small.shape == (3, 3, 12, 12) and small.dtype == np.uint8
    assert np.array_equal(small[:, 0], small[:, 2])  # grey in every channel


@pytest.mark.parametrize(("dataset", "c", "size"), [("fashion-mnist", 1, 28), ("digits", 1, 8), ("cifar10", 3, 16)])
def test_outsider_sets_are_in_the_models_format(dataset: str, c: int, size: int) -> None:
    own = uniform_noise(12, c, size, seed=4)
    sets, notes = outsider_sets(own, dataset, 10)
    names = [s.name for s in sets]
    assert ("digits, MNIST-style" in names) == (dataset != "digits")
    assert "Fashion-MNIST" not in names if dataset == "fashion-mnist" else True
    for s in sets:
        assert s.images.dtype == np.uint8 and s.images.shape[1:] == (c, size, size), s.name
        assert 0 < len(s.images) <= 10
    assert all(isinstance(n, str) and n for n in notes)
    assert np.array_equal(next(s for s in sets if s.name == "inverted").images, 255 - own[:10])


def test_missing_fashion_mnist_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(MissingDataError, match=str(tmp_path)):
        fashion_mnist_test((tmp_path,))


@pytest.mark.skipif(not any(d.is_dir() for d in FASHION_MNIST_DIRS), reason="Fashion-MNIST is not installed")
def test_fashion_mnist_is_the_digit_models_outsider() -> None:
    sets, _ = outsider_sets(uniform_noise(5, 1, 8), "digits", 5)
    fm = next(s for s in sets if s.name == "Fashion-MNIST")
    assert fm.images.shape == (5, 1, 8, 8) and fm.images.max() > 0


def test_scoring_in_batches_gives_the_numbers_of_one_pass() -> None:
    import torch

    from nvp_core import FlowConfig, RealNVP
    from nvp_core.likelihood import fixed_noise_bits_per_dim
    from nvp_core.ood import score_images

    torch.manual_seed(0)
    model = RealNVP(FlowConfig(in_channels=1, image_size=8, num_scales=2, mid_channels=8, num_blocks=1)).eval()
    images = uniform_noise(7, 1, 8, seed=5)
    bpd, cx = score_images(model, images, batch=3)
    whole = fixed_noise_bits_per_dim(model, torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(bpd, whole, rtol=1e-6)
    assert bpd.shape == cx.shape == (7,) and np.array_equal(cx, png_complexities(images))
