"""Sample: a grid of samples with a temperature per level and a seed."""

from __future__ import annotations

import numpy as np
import streamlit as st
import torch

from app import compute, link, state, widgets
from nvp_core.latent import temperature_rows

# 3×3 by default: the grid's decode is the largest cost of a class's server, and nine larger samples show the variety.
GRID_SIDE = 3
CARD_TEMPERATURES = (1.0, 0.85, 0.7, 0.5)  # the trainer's default sample rows (train.config), as in the model card

ctx = state.current()
model = ctx.model
L = model.num_levels
st.title("Sample")
st.caption(
    "Draw z from the prior N(0, T²I) and decode x = f⁻¹(z). The temperature T scales each level's draw: lower T "
    "gives cleaner, more typical images; T = 1 is the model's true distribution."
)


def _new_seed() -> None:
    # A fresh, unpredictable seed each click; the seed shown stays the one that made the grid, so it can be noted.
    st.session_state[ctx.k("sa_seed")] = int(np.random.default_rng().integers(0, 2**31 - 1))


@link.fragment
def sample_view() -> None:
    c1, c2, c3 = st.columns([1, 1, 2])
    seed = c1.number_input("Seed", 0, 2**31 - 1, 0, key=ctx.s("sa_seed"), persist_state="session")
    c1.button("New seed", key=ctx.k("sa_new_seed"), on_click=_new_seed, help="Draws a random seed: another grid.")
    n = c2.slider("Grid side", 2, 10, GRID_SIDE, key=ctx.s("sa_n"), persist_state="session")
    with c3:
        tcols = st.columns(L)
        temps = [
            tcols[lv - 1].slider(
                f"T, {widgets.level_name(ctx, lv)}",
                0.0,
                1.2,
                0.8,
                0.05,
                key=ctx.s(f"sa_t{lv}"),
                persist_state="session",
            )
            for lv in range(1, L + 1)
        ]

    def run() -> tuple[np.ndarray, list]:
        # Level l's draw depends on the seed, the count and its own temperature only (each level's noise comes
        # from the generator in turn, then is scaled): a temperature slider re-runs only the finer scales.
        zs = model.sample_latents(n * n, temps, generator=torch.Generator().manual_seed(int(seed)))
        return widgets.decode_levels(ctx, "sample", (int(seed), n), temps, zs), zs

    frames, zs = widgets.memo(ctx, "sample", (int(seed), n, tuple(temps)), run)
    mosaic = widgets.strip(
        frames,
        f"{n * n} samples, seed {int(seed)}, T = {', '.join(f'{t:g}' for t in temps)}",
        ncol=n,
        cell=max(48, 640 // n),
    )
    widgets.result_downloads(ctx, "samples", mosaic, zs, temperatures=np.array(temps))

    rows_help = "One row per temperature, the same for every level: how T trades variety for clean shapes."
    if st.toggle("Rows of temperatures", key=ctx.s("sa_rows"), persist_state="session", help=rows_help):
        per_row = 10

        def rows() -> np.ndarray:
            gen = torch.Generator().manual_seed(int(seed))
            return compute.decode(model, temperature_rows(model.latent_shapes, CARD_TEMPERATURES, per_row, gen))

        grid = widgets.memo(ctx, "sample_rows", (int(seed),), rows)
        widgets.strip(
            grid,
            f"rows: T = {', '.join(f'{t:g}' for t in CARD_TEMPERATURES)} (top to bottom), seed {int(seed)}; "
            "with seed 0 these are the draws of the model card's sample grid",
            ncol=per_row,
            cell=64,
        )


sample_view()
