"""Encode: an image → every level's latents, the exact reconstruction, and its bits/dim."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import streamlit as st

from app import compute, link, state, widgets
from nvp_core.likelihood import CONVENTION, CONVENTION_SHORT

ctx = state.current()
model = ctx.model
st.title("Encode")
st.caption(
    "The flow maps an image x to latents z = f(x) exactly and back with x = f⁻¹(z). With the multi-scale "
    "architecture, z is split into levels: half the dimensions are factored out after each scale."
)


def _analyse(image: np.ndarray, index: int) -> tuple[list, dict[str, float], float, float, int, np.ndarray]:
    # Latents and reconstruction on one arithmetic path, so the round trip's error is the flow's own.
    zs = compute.encode(model, image[None])
    # One definition of bits/dim (nvp_core.likelihood): the same number How it works and the histogram show, with
    # its terms from the same pass; a gallery image's are the gallery file's (computed once per model).
    known = state.gallery_bits(ctx, image, index)
    bpd, parts = known if known is not None else compute.bits_per_dim_and_breakdown(model, image, index)
    return zs, parts, bpd, *compute.reconstruction_error(model, image, zs)


def _round_trip(image: np.ndarray, desc: str, rec: np.ndarray, err: float, pix_err: int, bpd: float) -> None:
    shown = [image, rec]
    captions = [f"x: {desc}, as the model sees it ({ctx.channels}×{ctx.size}×{ctx.size})", "f⁻¹(f(x)): reconstruction"]
    if pix_err:  # an all-black picture would say "none" less clearly than words do
        shown.append(np.abs(rec.astype(int) - image.astype(int)).astype(np.uint8) * 255)
        captions.append("pixels that differ (white)")
    widgets.show_images(shown, captions)
    if not pix_err:
        st.caption("Pixels that differ between x and f⁻¹(f(x)): none, every pixel is reconstructed exactly.")
    c1, c2 = st.columns(2)
    with c1:
        st.metric("max |x − f⁻¹(f(x))|", f"{err:.1e}", help="On the model's continuous input in (0, 1).")
        exact = pix_err == 0
        st.badge(
            "exact after quantising: 0 pixels differ" if exact else f"max pixel difference {pix_err}/255",
            icon=":material/check_circle:" if exact else ":material/warning:",
            color="green" if exact else "orange",
        )
    c2.metric(
        "bits/dim",
        f"{bpd:.3f}",
        help=f"{CONVENTION}; the density p from the change of variables (eq. 3). The noise of gallery image #i is "
        "the one the model card's evaluation used for test image #i; uploads and samples get image #0's.",
    )
    c2.caption(f"bits/dim: {CONVENTION_SHORT}")


def _among_test_images(image_key: tuple[str, int], bpd: float) -> None:
    st.subheader("Where this image falls among test images")
    gl = widgets.need_gallery(ctx)
    if gl is None:
        return

    def picture() -> tuple[compute.Png, float, int]:
        # Zoom on the bulk (a few broken or blank images can sit at 30+ bits/dim), always showing this image.
        finite = gl.bpd[np.isfinite(gl.bpd)]
        lo, hi = np.percentile(finite, [0.5, 99.5]) if finite.size else (bpd, bpd)
        if math.isfinite(bpd):
            lo, hi = min(lo, bpd), max(hi, bpd)
        pad = 0.05 * (hi - lo + 1e-6)
        inside = gl.bpd[(gl.bpd >= lo - pad) & (gl.bpd <= hi + pad)]
        bars = state.histogram(ctx, "gallery bits/dim", inside, float(lo - pad), float(hi + pad))
        return compute.png(bars.with_marker(bpd)), float((gl.bpd < bpd).mean() * 100), len(gl.bpd) - len(inside)

    # Kept encoded, with its numbers: a page change shows them again without touching the gallery's arrays.
    hist, pct, outliers = widgets.memo(ctx, "encode_hist", (*image_key, len(gl.bpd)), picture)
    widgets.picture(hist, 600, f"bits/dim of test images ({CONVENTION_SHORT})")
    st.caption(
        f"{pct:.0f}% of {len(gl.bpd)} test images have fewer bits/dim (are more likely)"
        + (f"; {outliers} outliers are off the axis" if outliers else "")
        + ". Caution: a high "
        "likelihood does not mean an image *looks like* the data: flows often rate simple out-of-distribution "
        "images higher (Nalisnick et al., 2019)."
    )


def _latents(zs: list) -> None:
    st.subheader("Every level's latents")
    st.caption(
        "Each channel of each level as a heatmap: red > 0, blue < 0, white = 0. Under the prior every value is "
        "a standard normal draw, so a well-encoded image looks like noise of scale ~1; structure that remains "
        "shows what the model did not explain."
    )
    interactive = st.toggle(
        "Interactive heatmaps",
        key=ctx.s("enc_interactive"),
        persist_state="session",
        help="Charts that show the value under the cursor (slower to draw than the images).",
    )
    shapes = model.latent_shapes
    tabs = st.tabs([f"{widgets.level_name(ctx, lv)} · {'×'.join(map(str, s))}" for lv, s in enumerate(shapes, start=1)])
    for lv, (tab, z) in enumerate(zip(tabs, zs, strict=True), start=1):
        with tab:
            if interactive:
                st.plotly_chart(widgets.latent_heatmaps(ctx, z[0], lv), key=f"lat{lv}", width="content")
            else:
                widgets.latent_image(ctx, z[0], lv)


def _statistics(image_key: tuple[str, int], zs: list, parts: dict[str, float], bpd: float) -> None:
    st.subheader("Per-level statistics")
    # An Arrow table, made once per image: Streamlit sends it as it is (a list of rows goes through pandas each rerun).
    rows = widgets.memo(
        ctx, "encode_table", image_key, lambda: pa.Table.from_pylist(compute.level_table(model, zs, parts))
    )
    priors = sum(v for k, v in parts.items() if k.startswith("prior level"))
    st.dataframe(
        rows,
        hide_index=True,
        column_config={
            k: st.column_config.NumberColumn(format="%.3f")
            for k in ("mean", "std", "norm", "norm/√d", "prior bits/dim")
        },
    )
    st.caption(
        "prior bits/dim of level l: −log₂ N(z_l; 0, I)/D, of the latents of the dequantised image (the bits/dim's "
        "convention; the statistics are of the bin centres' latents shown above). The levels' terms add up to "
        f"{priors:.3f}; "
        f"the log-determinants of the layers and the +8 of the 1/256 bins make up the rest ({bpd - priors:+.3f}) "
        f"of the total {bpd:.3f} (see *How it works*)."
    )


# All of the page but its title is one fragment: picking another image reruns it alone, not the sidebar around it
# (under a class, every session's messages leave through the server's one event loop).
@link.fragment
def encode_view() -> None:
    left, right = st.columns([1, 2], gap="large")
    with left:
        picked = widgets.image_input(ctx, "encode", "Image source", default_index=0, preview=False)
    if picked is None:
        return
    image, desc, index = picked
    state.set_current_image(ctx, picked)
    # The model's results for this image (and gallery index, which fixes the bits/dim's noise): computed once, then
    # kept for this session's reruns and shared with other sessions that pick the same image, so moving between
    # pages or toggling a view costs no model call.
    image_key = (widgets.digest(image), index)
    zs, parts, bpd, err, pix_err, rec = widgets.memo(ctx, "encode", image_key, lambda: _analyse(image, index))
    with right:
        _round_trip(image, desc, rec, err, pix_err, bpd)
    _among_test_images(image_key, bpd)
    _latents(zs)
    _statistics(image_key, zs, parts, bpd)
    widgets.result_downloads(
        ctx, "reconstruction", rec, zs, label="Reconstruction", min_side=140, npz_name="latents", image=image[None]
    )


encode_view()
