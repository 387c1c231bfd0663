"""Interpolate: a path between two images' latents, with a separate weight per level."""

from __future__ import annotations

import numpy as np
import streamlit as st

from app import compute, player, state, widgets
from nvp_core.latent import interpolate

ctx = state.current()
model = ctx.model
L = model.num_levels
st.title("Interpolate")
st.caption(
    "Walk from image A to image B in latent space and decode every step. Each level has its own weight: "
    "0 keeps A's level, 1 moves it all the way to B — e.g. move the coarse levels and keep the fine ones."
)

ca, cb = st.columns(2, gap="large")
with ca:
    pa = widgets.image_input(ctx, "interp_a", "Image A", default_index=0)
with cb:
    pb = widgets.image_input(ctx, "interp_b", "Image B", default_index=widgets.other_class_index(ctx, 0))
if pa is None or pb is None:
    st.stop()
# Each image's latents are computed once (and shared with sessions that pick the same image): a page change
# or a rerun of the page then costs no model call until a new image is picked.
image_a, image_b = pa[0], pb[0]
za = widgets.memo(ctx, "interp_za", (widgets.digest(image_a),), lambda: compute.encode(model, image_a[None]))
zb = widgets.memo(ctx, "interp_zb", (widgets.digest(image_b),), lambda: compute.encode(model, image_b[None]))


def _set_weights(values: list[float]) -> None:
    for lv, v in enumerate(values, start=1):
        st.session_state[ctx.k(f"ip_w{lv}")] = v


# The path's settings live outside the fragment below: a weight move then reruns only the weight sliders and
# the results. Each element of a rerun is a message for which the browser renders the page again (~0.6 ms each,
# and ~0.35 ms per widget anywhere on the page), so a smaller fragment is a faster answer (bench/README.md).
c1, c2 = st.columns([1, 2])
with c1:
    method = st.radio(
        "Path",
        ["linear", "spherical"],
        horizontal=True,
        key=ctx.s("ip_method"),
        persist_state="session",
        help="spherical (slerp) keeps the latent norm, which stays near √d under the prior.",
    )
    assert method is not None  # a radio with options and no index=None always has a choice
    steps = st.slider("Frames", 3, 16, 9, key=ctx.s("ip_steps"), persist_state="session")
with c2:
    st.markdown("**Weight of each level** (0 = stay at A, 1 = go to B)")
    presets = {
        "all levels": [1.0] * L,
        "coarsest only": [0.0] * (L - 1) + [1.0],
        "finest only": [1.0] + [0.0] * (L - 1),
    }
    with st.container(horizontal=True):
        for name, values in presets.items():
            st.button(
                name,
                key=ctx.k(f"ip_preset_{name}"),
                on_click=_set_weights,
                args=(values,),
                help=f"weights {', '.join(f'{v:g}' for v in values)}",
            )


@st.fragment
def path_view(za: list, zb: list, key: str, method: str, steps: int) -> None:
    for lv in range(1, L + 1):
        # Defaults live in session state (not in the slider call) because the presets also set them.
        st.session_state.setdefault(ctx.s(f"ip_w{lv}"), 1.0)  # ctx.s first: a link's weight wins
    with st.container(horizontal=True, gap="medium"):  # one block where columns are L + 1
        weights = [
            st.slider(widgets.level_name(ctx, lv), 0.0, 1.0, step=0.05, key=ctx.s(f"ip_w{lv}"), persist_state="session")
            for lv in range(1, L + 1)
        ]

    def run() -> tuple[list, np.ndarray]:
        zpath = interpolate(za, zb, steps, method=method, level_weights=weights)
        # One batched inverse for every frame; a weight slider re-runs only the scales at and below its level.
        return zpath, widgets.decode_levels(ctx, "interp", (key, method, steps), weights, zpath)

    zpath, frames = widgets.memo(ctx, "interp", (key, method, steps, tuple(weights)), run)
    label = ", ".join(f"{w:g}" for w in weights)
    mosaic, width = widgets.mosaic(frames)
    # The strip, and the frames browsed and animated in the browser, are one element whose pictures come inside
    # it (no /media/ request); browsing frames needs no server round trip at all (app/player.py). Measured against
    # the strip as its own st.image: no faster per weight move (bench/README.md, history row 12).
    player.frame_player(
        frames,
        [f"frame {f}: t = {f / (steps - 1):.2f}" for f in range(steps)],
        strip=(mosaic, f"A → B in {steps} frames ({method}; level weights {label})", width),
    )
    widgets.result_downloads(
        ctx, "interpolation", mosaic, zpath, label="Strip", gif=frames, npz_name="path", weights=np.array(weights)
    )


path_view(za, zb, widgets.digest(pa[0], pb[0]), method, steps)
