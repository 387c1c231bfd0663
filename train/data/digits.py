"""``digits``: scikit-learn's 8x8 handwritten digits (1,797 images, no download)."""

from __future__ import annotations

import numpy as np

from .base import DIGIT_CLASSES, Splits, fixed_split, from_arrays


def load_digits(test_fraction: float) -> Splits:
    from sklearn.datasets import load_digits as sklearn_digits  # an optional dependency, needed only here

    bunch = sklearn_digits()
    # 0..16 intensities -> 0..255.
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    labels = bunch.target.astype(np.int64)
    tr, te = fixed_split(len(images), test_fraction)
    return from_arrays("digits", images[tr], labels[tr], images[te], labels[te], DIGIT_CLASSES)
