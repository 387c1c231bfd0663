"""Latent map: the test set's latents projected by PCA, per level or all levels together."""

from __future__ import annotations

import numpy as np
import plotly
import plotly.graph_objects as go
import streamlit as st

from app import compute, state, widgets

NEIGHBOUR_COLUMNS = 6  # × 60 px: the strip fits its half of a 1400 px wide page

ctx = state.current()
model = ctx.model
L = model.num_levels
st.title("Latent map")
st.caption(
    "Each dot is a test image, placed by the two main directions (PCA) of its latents. Select dots with the "
    "box or lasso tool to see the images; the star is the image from the Encode page, ringed dots its nearest "
    "neighbours in the full latent space of the chosen levels."
)
gl = widgets.need_gallery(ctx)
g = state.gallery(ctx)
if gl is None or g is None:
    st.stop()

choices = ["all levels", *range(1, L + 1)]
c1, c2 = st.columns([2, 1])
choice = (
    c1.segmented_control(
        "Latents of",
        choices,
        default="all levels",
        key=ctx.s("lm_level"),
        persist_state="session",
        format_func=lambda c: c if isinstance(c, str) else widgets.level_name(ctx, c),
    )
    or "all levels"
)
k_nn = c2.slider("Neighbours", 1, 16, 8, key=ctx.s("lm_k"), persist_state="session")
levels = tuple(range(1, L + 1)) if choice == "all levels" else (int(choice),)
pca, pts = state.pca_projection(ctx.results, levels, gl)

cur = state.current_image(ctx)
assert cur is not None  # a gallery exists
cur_img, cur_desc, _ = cur
zc = compute.encode(model, cur_img[None])
feat = state.flat_latents([z.numpy() for z in zc], levels)
star = pca.transform(feat)[0]
dist = np.linalg.norm(state.flat_latents(list(gl.levels), levels) - feat, axis=1)
order = np.argsort(dist)
nn = order[dist[order] > 1e-6][:k_nn]  # the image itself (distance 0) is not its own neighbour

fig = go.Figure()
trace_points: list[np.ndarray] = []  # gallery indices of each trace's points, to read selections back
# Matplotlib's tab10: every class stays visible on white (Plotly's default gives two classes pale yellow/orange).
palette = plotly.colors.qualitative.D3
for c, name in enumerate(g.class_names):
    idx = np.flatnonzero(gl.labels == c)
    if len(idx):
        trace_points.append(idx)
        fig.add_trace(
            go.Scatter(
                x=pts[idx, 0],
                y=pts[idx, 1],
                mode="markers",
                name=name,
                customdata=idx,
                marker={"size": 6, "opacity": 0.8, "color": palette[c % len(palette)]},
                hovertemplate=f"{name} #%{{customdata}}<extra></extra>",
            )
        )
trace_points.append(nn)
fig.add_trace(
    go.Scatter(
        x=pts[nn, 0],
        y=pts[nn, 1],
        mode="markers",
        name="neighbours",
        customdata=nn,
        marker={"size": 13, "color": "rgba(0,0,0,0)", "line": {"width": 2, "color": "black"}},
        hoverinfo="skip",
    )
)
trace_points.append(np.array([], dtype=np.int64))  # your image: not a gallery point
fig.add_trace(
    go.Scatter(
        x=[star[0]],
        y=[star[1]],
        mode="markers",
        name="your image",
        marker={"symbol": "star", "size": 20, "color": "gold", "line": {"width": 1.5, "color": "black"}},
        hovertemplate="your image<extra></extra>",
    )
)
var = pca.explained_variance_ratio_
# Axes on the bulk of the points (and the star); outliers stay selectable by zooming out.
lo, hi = np.percentile(np.vstack([pts, star[None]]), [0.5, 99.5], axis=0)
lo, hi = np.minimum(lo, star), np.maximum(hi, star)
pad = 0.08 * (hi - lo + 1e-6)
off = int((np.any(pts < lo - pad, axis=1) | np.any(pts > hi + pad, axis=1)).sum())
fig.update_layout(
    height=560,
    dragmode="select",
    xaxis_range=[lo[0] - pad[0], hi[0] + pad[0]],
    yaxis_range=[lo[1] - pad[1], hi[1] + pad[1]],
    margin={"l": 10, "r": 10, "t": 30, "b": 10},
    xaxis_title=f"PC 1 ({100 * var[0]:.1f}% of variance)",
    yaxis_title=f"PC 2 ({100 * var[1]:.1f}%)",
    legend={"itemsizing": "constant"},
)
event = st.plotly_chart(fig, key=ctx.k("lm_chart"), on_select="rerun", selection_mode=("box", "lasso"))
n_gallery = len(gl.labels)  # a plain int: the function below does not see the check of gl above


def _selected_index(point: dict) -> int | None:
    """The gallery index of a selected point: its customdata, else its (trace, point) position."""
    if isinstance(point.get("customdata"), int | float):
        i = int(point["customdata"])
    else:
        curve, k = point.get("curve_number"), point.get("point_index", point.get("point_number"))
        if curve is None or k is None or not 0 <= curve < len(trace_points) or not 0 <= k < len(trace_points[curve]):
            return None
        i = int(trace_points[curve][k])
    return i if 0 <= i < n_gallery else None


left, right = st.columns(2, gap="large")
with left:
    st.markdown(f"**Your image** ({cur_desc}) **and its {k_nn} nearest neighbours**")
    widgets.strip(
        np.concatenate([cur_img[None], g.images[nn]]),
        "your image, then neighbours by distance",
        ncol=min(k_nn + 1, NEIGHBOUR_COLUMNS),  # fits half the page: nothing runs under the right column
        cell=60,
    )
with right:
    sel = event.selection.points if event is not None and hasattr(event, "selection") else []
    picked = sorted({i for p in sel if (i := _selected_index(p)) is not None})
    if picked:
        st.markdown(f"**{len(picked)} selected** (showing up to 48)")
        widgets.strip(
            g.images[picked[:48]],
            ", ".join(g.label_name(i) for i in picked[:6]) + ("…" if len(picked) > 6 else ""),
            ncol=8,
            cell=56,
        )
    else:
        st.info("Draw a box or lasso around some dots to see their images here.")
st.caption(
    f"{len(gl.labels)} test images; PCA of {state.flat_latents(list(gl.levels), levels).shape[1]} latent dimensions"
    + (f"; {off} outliers lie beyond the axes (double-click the chart to see all)." if off else ".")
    + f" PC 1 and PC 2 explain only {100 * (var[0] + var[1]):.1f}% of the variance: that is the lesson, not a flaw. "
    "A flow maps the data onto a standard normal prior, so its latents are nearly isotropic and no two directions "
    "hold much of their spread; classes still separate a little."
)
