"""Manifold: the paper's eq. 19 grid through four images, on chosen levels."""

from __future__ import annotations

import numpy as np
import streamlit as st

from app import compute, link, state, widgets
from nvp_core.latent import manifold

ctx = state.current()
model = ctx.model
st.title("Manifold")
st.caption(
    "Four images sit at the corners; every cell decodes "
    "z = cos φ (cos φ′ z₁ + sin φ′ z₂) + sin φ (cos φ′ z₃ + sin φ′ z₄) "
    "with φ, φ′ ∈ [0, π/2] (the paper's eq. 19). Levels left out keep z₁."
)
corners = []
cols = st.columns(4)
start = widgets.distinct_examples(ctx, 4)
names = ["top left (z₁)", "top right (z₂)", "bottom left (z₃)", "bottom right (z₄)"]
for i, col in enumerate(cols):
    with col:
        corners.append(widgets.image_input(ctx, f"mf{i}", names[i], default_index=start[i], horizontal=False))
picked = [c for c in corners if c is not None]
if len(picked) < 4:
    st.stop()
zs4 = [compute.encode(model, c.image[None]) for c in picked]


@link.fragment
def grid_view(zs4: list[compute.Latents], key: str) -> None:
    z1, z2, z3, z4 = zs4
    c1, c2 = st.columns([1, 2])
    n = c1.slider("Grid size n", 3, 12, 7, key=ctx.s("mf_n"), persist_state="session")
    with c2:
        levels = widgets.level_picker(ctx, "mf_levels", "Levels that follow the manifold")
    if not levels:
        st.warning("Choose at least one level.")
        return
    frames = widgets.memo(
        ctx,
        "manifold",
        (key, n, tuple(levels)),
        lambda: compute.decode(model, manifold(z1, z2, z3, z4, n, levels=levels)),
    )
    caption = (
        f"Manifold, {n}×{n}, on levels {', '.join(map(str, levels))}: rows φ = 0 … π/2 (top to bottom), "
        "columns φ′ = 0 … π/2 (left to right)"
    )
    mosaic = widgets.strip(frames, caption, ncol=n, cell=max(48, 640 // n))
    widgets.result_downloads(
        ctx, "manifold", mosaic, lambda: manifold(z1, z2, z3, z4, n, levels=levels), levels=np.array(levels)
    )


grid_view(zs4, widgets.digest(*(c.image for c in picked)))
