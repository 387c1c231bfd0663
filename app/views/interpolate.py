"""Interpolate: a path between two images' latents, with a separate weight per level."""

from __future__ import annotations

import numpy as np
import streamlit as st

from app import compute, link, path_panel, state, widgets
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


# Every setting of the path lives in one browser element inside the fragment below (app/path_panel.py): a change
# reruns only the fragment, and the browser draws one element instead of nine (bench/README.md). A link's
# settings are checked here, on the page's first run, so that a bad one gets the app's warning and the defaults.
path_panel.read(ctx)
presets = {"all levels": [1.0] * L, "coarsest only": [0.0] * (L - 1) + [1.0], "finest only": [1.0] + [0.0] * (L - 1)}
level_names = [widgets.level_name(ctx, lv) for lv in range(1, L + 1)]


@link.fragment
def path_view(za: list, zb: list, key: str) -> None:
    settings = path_panel.read(ctx, link=False)  # the page's run has read the link
    method, steps, weights = settings.method, settings.steps, list(settings.weights)

    def run() -> tuple[list, np.ndarray]:
        zpath = interpolate(za, zb, steps, method=method, level_weights=weights)
        # One batched inverse for every frame; a weight move re-runs only the scales at and below its level.
        return zpath, widgets.decode_levels(ctx, "interp", (key, method, steps), weights, zpath)

    zpath, frames = widgets.memo(ctx, "interp", (key, method, steps, tuple(weights)), run)
    label = ", ".join(f"{w:g}" for w in weights)
    mosaic, width = widgets.mosaic(frames)
    strip = (mosaic, f"A → B in {steps} frames ({method}; level weights {label})", width)
    path_panel.show(ctx, path_panel.payload(ctx, settings, frames, strip, presets, level_names))
    latest.update(mosaic=mosaic, zpath=zpath, frames=frames, weights=np.array(weights))
    # The link takes the settings once the panel's controls are still (or with the page's whole run): the
    # browser's update of the address bar and its history is work each move's picture need not wait for.
    if path_panel.settled(ctx):
        path_panel.write_link(ctx)


# The downloads sit outside the fragment (a weight move does not send them again) and make their bytes when
# clicked, from the path the fragment showed last: what is on screen.
latest: dict = st.session_state.setdefault(ctx.k("_interp_latest"), {})
path_view(za, zb, widgets.digest(pa[0], pb[0]))
widgets.result_downloads(
    ctx,
    "interpolation",
    lambda: latest["mosaic"],
    lambda: latest["zpath"],
    label="Strip",
    gif=lambda: latest["frames"],
    npz_name="path",
    weights=lambda: latest["weights"],
)
