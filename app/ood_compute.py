"""The Out-of-distribution page's numbers: the model's test images and each outsider set scored once per model
(bits/dim, PNG complexity), shared read-only by every session. The mathematics is ``nvp_core.ood``."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import streamlit as st

from app import state
from app.state import Ctx
from nvp_core import RealNVP
from nvp_core.ood import corrected, score_images
from nvp_core.ood_sets import outsider_sets

OOD_MAX_ENV = "NVP_APP_OOD_MAX"
OOD_MAX = 300
OWN = "test images"


def ood_limit() -> int:
    """Images scored per set: ``$NVP_APP_OOD_MAX``, else 300 (at least 10)."""
    try:
        return max(10, int(os.environ.get(OOD_MAX_ENV, str(OOD_MAX))))
    except ValueError:
        return OOD_MAX


@dataclass(frozen=True)
class Scored:
    """One set's images (uint8 ``[N, C, H, W]``, read-only) with their bits/dim and PNG complexity ``[N]``."""

    name: str
    about: str
    images: np.ndarray
    bpd: np.ndarray
    complexity: np.ndarray

    @property
    def score(self) -> np.ndarray:
        """The complexity-corrected score, bits/dim − complexity."""
        return corrected(self.bpd, self.complexity)


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


@st.cache_resource(show_spinner="Scoring the test images and the outsider sets (once per model)…", max_entries=4)
def _scored(key: str, _model: RealNVP, _images: np.ndarray, dataset: str, n: int) -> tuple[list[Scored], list[str]]:
    sets, notes = outsider_sets(np.asarray(_images), dataset, n)
    out = []
    for name, about, images in [(OWN, "the model's own test images (its gallery)", _images[:n])] + [
        (s.name, s.about, s.images) for s in sets
    ]:
        bpd, complexity = score_images(_model, np.asarray(images))
        out.append(Scored(name, about, _frozen(images), _frozen(bpd), _frozen(complexity)))
    return out, notes


def scored_sets(ctx: Ctx) -> tuple[list[Scored], list[str]] | None:
    """The test images first, then each outsider set, scored; and a note per set not available here. ``None``
    when the model has no gallery."""
    g = state.gallery(ctx)
    if g is None or not len(g.images):
        return None
    return _scored(ctx.results, ctx.model, g.images, ctx.name, ood_limit())
