"""Scales: what each level carries — resample the finer levels, and mix levels of two images."""

from __future__ import annotations

import numpy as np
import streamlit as st
import torch

from app import compute, link, state, widgets
from nvp_core.latent import resample_finer, swap_levels

ctx = state.current()
model = ctx.model
L = model.num_levels
st.title("Scales")
st.caption(
    "Level 1 holds the finest details (half of all dimensions), the last level the coarsest structure. "
    "Keep the coarse levels of an image and draw the finer ones afresh from the prior (the paper's appendix D): "
    "what survives in every draw is what the kept levels encode."
)

left, right = st.columns([1, 2], gap="large")
with left:
    picked = widgets.image_input(ctx, "sc", "Image")
if picked is None:
    st.stop()
image = picked[0]
z = compute.encode(model, image[None])
with right:
    st.markdown("**Columns of the grid below, left to right**")
    st.dataframe(
        [
            {
                "kept levels": widgets.level_range(k, L),
                "share of dims kept": f"{100 * f:.1f}%",
                "drawn afresh": widgets.level_range(1, k - 1),
            }
            for k, f in compute.keep_fractions(model)
        ],
        hide_index=True,
    )


@link.fragment
def resample_view(z: list, key: str) -> None:
    c1, c2, c3 = st.columns(3)
    temp = c1.slider("Temperature of the new draws", 0.0, 1.0, 0.7, 0.05, key=ctx.s("sc_t"), persist_state="session")
    draws = c2.slider("Draws (rows)", 1, 8, 4, key=ctx.s("sc_n"), persist_state="session")
    seed = c3.number_input("Seed", 0, 2**31 - 1, 0, key=ctx.s("sc_seed"), persist_state="session")
    fracs = compute.keep_fractions(model)  # keep_from = 1 (everything) .. L+1 (nothing)

    def run() -> tuple[np.ndarray, list]:
        gen = torch.Generator().manual_seed(int(seed))
        cols = [resample_finer(z, k, draws, temp, generator=gen) for k, _ in fracs]
        # One batch, row-major (draw, column): one inverse call for the whole grid.
        batch = [torch.stack([c[lv] for c in cols], dim=1).flatten(0, 1) for lv in range(L)]
        return compute.decode(model, batch), batch

    frames, batch = widgets.memo(ctx, "scales", (key, temp, draws, int(seed)), run)
    heads = " | ".join(f"{100 * f:.0f}% kept" for _, f in fracs)
    caption = f"columns: {heads} (kept levels: {', '.join(widgets.level_range(k, L) for k, _ in fracs)})"
    mosaic = widgets.strip(frames, caption, ncol=len(fracs), cell=110)
    widgets.result_downloads(ctx, "scales", mosaic, batch)


resample_view(z, widgets.digest(image))

st.subheader("Mix levels of two images")
st.caption("Coarse levels from A, fine levels from B: column j takes levels 1…j from B and the rest from A.")
other = widgets.image_input(ctx, "sc_b", "Image B (fine levels)", default_index=widgets.other_class_index(ctx, 0))
if other is not None:
    zb = compute.encode(model, other[0][None])
    mixes = [swap_levels(z, zb, list(range(1, j + 1))) for j in range(0, L + 1)]
    batch = [torch.cat([m[lv] for m in mixes]) for lv in range(L)]
    frames = compute.decode(model, batch)
    labels = ["A"] + [f"{widgets.level_range(1, j)} from B" for j in range(1, L)] + ["B (all levels)"]
    mix = widgets.strip(frames, " | ".join(labels), cell=120)
    widgets.result_downloads(ctx, "mix", mix, batch, label="Mix")
