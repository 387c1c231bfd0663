"""How it works: masks, squeeze, the architecture, log-dets, bits/dim by level, invertibility, model card."""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
import streamlit as st
import torch

from app import compute, state, widgets
from app.models import metrics_path, model_card_path, read_metrics
from nvp_core.base import standard_normal_logprob
from nvp_core.likelihood import CONVENTION, fixed_noise_dequantize
from nvp_core.masks import channel_mask, checkerboard_mask
from nvp_core.squeeze import Squeeze

ctx = state.current()
model = ctx.model
cfg = model.config
L = model.num_levels
st.title("How it works")
cur = state.current_image(ctx)
if cur is None:
    sample = compute.decode(model, model.sample_latents(1, 0.7, torch.Generator().manual_seed(0)))[0]
    cur = state.Picked(sample, "a sample")
image, desc, index = cur
st.caption(f"Everything below uses the current image ({desc}); change it on the Encode page.")

# --- 1. change of variables ----------------------------------------------------------------------
st.header("1 · An exact, invertible map")
st.markdown(
    "Real NVP learns a bijection z = f(x) between images and latents with a simple prior p_Z = N(0, I). "
    "The density of an image follows from the change of variables (eq. 3):"
)
st.latex(r"\log p_X(x) = \log p_Z\big(f(x)\big) + \log\left|\det \frac{\partial f(x)}{\partial x^{T}}\right|")
st.markdown(
    "f is a stack of **affine coupling layers** (eqs. 7–9): a binary mask b keeps part of the input fixed and "
    "uses it to scale and shift the rest, so the Jacobian is triangular and its log-determinant is just Σ s."
)
st.latex(
    r"y = b \odot x + (1-b) \odot \big(x \odot e^{\,s(b \odot x)} + t(b \odot x)\big), \qquad "
    r"x = b \odot y + (1-b) \odot \big(y - t(b \odot y)\big) \odot e^{-s(b \odot y)}"
)
st.markdown("The inverse needs only s and t of the *unchanged* part, so s and t can be any network (here ResNets).")

# --- 2. masks and squeeze ------------------------------------------------------------------------
st.header("2 · Masks and squeeze, on your image")
x = image.astype(np.float32)
b = checkerboard_mask(cfg.image_size, cfg.image_size, 0)[0].numpy()  # [1, H, W]
gray = np.full_like(x, 128.0)
shown_b = np.where(b > 0, x, gray).astype(np.uint8)
shown_nb = np.where(b > 0, gray, x).astype(np.uint8)
widgets.show_images(
    [image, (b * 255).astype(np.uint8).repeat(ctx.channels, 0), shown_b, shown_nb],
    ["x", "checkerboard mask b", "b ⊙ x: conditions (fixed)", "(1−b) ⊙ x: gets scaled and shifted"],
    min_side=120,
)
sq, _ = Squeeze()(torch.from_numpy(x)[None])  # [1, 4C, H/2, W/2]
subs = sq[0].reshape(ctx.channels, 4, cfg.image_size // 2, cfg.image_size // 2).permute(1, 0, 2, 3)
cm = channel_mask(4 * ctx.channels, 0)[0, :, 0, 0].numpy()
st.markdown(
    f"**Squeeze** turns each 2×2 block into 4 channels: {ctx.channels}×{cfg.image_size}×{cfg.image_size} → "
    f"{4 * ctx.channels}×{cfg.image_size // 2}×{cfg.image_size // 2} (log-det 0). The **channel mask** then fixes "
    f"the first {int(cm.sum())} channels and transforms the other {int((1 - cm).sum())}."
)
widgets.show_images(
    [s.numpy().astype(np.uint8) for s in subs],
    [f"offset {divmod(k, 2)}" for k in range(4)],
    min_side=96,
)
st.caption(
    "After the channel couplings, half of the channels are factored out as a latent level and the rest go to the "
    "next, coarser scale (sec. 3.6): level 1 holds half the dimensions, level 2 a quarter, and so on."
)

# --- 3. architecture -----------------------------------------------------------------------------
st.header("3 · The architecture of this model")
# The dequantised image of the bits/dim's one convention, so the total below is the Encode page's number.
xin = fixed_noise_dequantize(torch.from_numpy(image[None]), index)
with torch.inference_mode():
    zs_trace, layer_rows = model.trace_layers(xin)  # nvp_core walks the layers; this page only displays them
rows = [
    {
        "scale": str(r.scale) if r.scale else "",
        "layer": r.layer,
        "input": "×".join(map(str, r.input)),
        "output": "×".join(map(str, r.output)),
        "parameters": r.parameters,
        "log-det (nats)": float(r.logdet[0]),
    }
    for r in layer_rows
]
total_params = sum(p.numel() for p in model.parameters())
st.dataframe(  # tall enough for a scale's layers at a glance (the default shows ~8 rows)
    rows,
    hide_index=True,
    height=min(35 * (len(rows) + 1) + 3, 640),
    column_config={"log-det (nats)": st.column_config.NumberColumn(format="%.2f")},
)
st.caption(
    f"{total_params:,} parameters · {cfg.num_scales} scales · s,t ResNets with {cfg.num_blocks} "
    f"{'block' if cfg.num_blocks == 1 else 'blocks'}, width {cfg.mid_channels} growing ×{cfg.width_growth} per squeeze"
    + (f" up to {cfg.max_mid_channels}" if cfg.max_mid_channels else "")
    + f" · the layers' log-dets add up to {sum(float(r.logdet[0]) for r in layer_rows):.2f} nats, "
    "log|det ∂f/∂x| of the whole flow for this image"
)

# --- 4. log-det waterfall ------------------------------------------------------------------------
st.header("4 · Where the bits go")
D = model.dim
to_bits = 1.0 / (D * math.log(2.0))
prior = [float(-standard_normal_logprob(z)[0]) * to_bits for z in zs_trace]
# One bar per scale (its layers are in the table above): ~45 per-layer bars would be unreadable.
by_scale: dict[int, float] = {}
for r in layer_rows:
    by_scale[r.scale] = by_scale.get(r.scale, 0.0) - float(r.logdet[0]) * to_bits
names = (
    [layer_rows[0].layer if s == 0 else f"scale {s} layers" for s in by_scale]
    + [f"prior, {widgets.level_name(ctx, lv)}" for lv in range(1, L + 1)]
    + ["+8 (1/256 bins)"]
)
vals = list(by_scale.values()) + prior + [8.0]
total = sum(vals)
fig = go.Figure(
    go.Waterfall(
        x=[*names, "bits/dim"],
        y=[*vals, total],
        measure=["relative"] * len(vals) + ["total"],
        text=[f"{v:+.3f}" for v in vals] + [f"{total:.3f}"],
        textposition="outside",
        increasing={"marker": {"color": "#d62728"}},
        decreasing={"marker": {"color": "#2ca02c"}},
        totals={"marker": {"color": "#1f77b4"}},
        hovertemplate="%{x}: %{y:+.3f} bits/dim<extra></extra>",
    )
)
fig.update_layout(
    height=460,
    margin={"l": 10, "r": 10, "t": 30, "b": 10},
    yaxis_title="bits/dim",
    showlegend=False,
    xaxis={"tickangle": 0 if len(names) <= 8 else -30},
)
st.plotly_chart(fig, key="waterfall")
bpd = float(compute.bits_per_dim(model, image[None], index)[0])
st.metric("bits/dim of this image", f"{bpd:.3f}", help=CONVENTION)
st.caption(
    f"bits/dim = (−log p_Z(z) − Σ log-dets)/(D ln 2) + 8, scale by scale ({CONVENTION}; the same number as on the "
    "Encode page; each layer's log-det is in the table above). Green bars expand volume (log-det > 0) and so lower "
    "the bits; red ones cost bits."
)
c1, c2 = st.columns(2)
with c1:
    st.markdown("**bits/dim split by level** (prior term of each level)")
    bars = go.Figure(
        go.Bar(
            x=[widgets.level_name(ctx, lv) for lv in range(1, L + 1)],
            y=prior,
            marker_color="#8da0cb",
            text=[f"{p:.3f}" for p in prior],
            textposition="auto",
        )
    )
    bars.update_layout(height=280, margin={"l": 10, "r": 10, "t": 10, "b": 10}, yaxis_title="bits/dim")
    st.plotly_chart(bars, key="bylevel")
with c2:
    st.markdown("**Invertibility, level by level**")
    with torch.inference_mode():
        x_back = model.inverse(zs_trace)
        z_again, _ = model(x_back)
    inv_rows = [
        {
            "level": widgets.level_name(ctx, lv),
            "shape": "×".join(map(str, z.shape[1:])),
            "max |z − f(f⁻¹(z))|": float((z - z2).abs().max()),
        }
        for lv, (z, z2) in enumerate(zip(zs_trace, z_again, strict=True), start=1)
    ]
    st.dataframe(
        inv_rows, hide_index=True, column_config={"max |z − f(f⁻¹(z))|": st.column_config.NumberColumn(format="%.1e")}
    )
    st.caption(
        f"and the image ({'×'.join(map(str, xin.shape[1:]))}): max |x − f⁻¹(f(x))| = "
        f"{float((x_back - xin).abs().max()):.1e}. Errors are float32 rounding, not approximation: the inverse is "
        "computed exactly (eq. 8)."
    )

# --- 5. the model card and training ---------------------------------------------------------------
st.header("5 · This model")
mp = metrics_path(ctx.path)
if mp is not None:
    rows_m = read_metrics(mp)
    keys = sorted({k for r in rows_m for k in r if ("bpd" in k or "bits" in k)}) or sorted(
        {k for r in rows_m for k in r if "loss" in k}
    )
    xkey = "step" if all("step" in r for r in rows_m) else ("epoch" if all("epoch" in r for r in rows_m) else None)
    if rows_m and keys:
        curve = go.Figure()
        for k in keys:
            pts = [(r.get(xkey, i) if xkey else i, r[k]) for i, r in enumerate(rows_m) if k in r]
            curve.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers", name=k))
        curve.update_layout(
            height=300,
            margin={"l": 10, "r": 10, "t": 10, "b": 10},
            xaxis_title=xkey or "record",
            yaxis_title="bits/dim" if any("bpd" in k or "bits" in k for k in keys) else "loss",
        )
        st.markdown(f"**Training curves** ({mp.name})")
        st.plotly_chart(curve, key="curves")
else:
    st.caption("No metrics.jsonl next to this checkpoint, so no training curves.")
with st.expander("Checkpoint metadata"):
    st.json({"file": ctx.path.name, "config": cfg.to_dict(), **ctx.meta}, expanded=1)
card = model_card_path(ctx.path)
if card is not None:
    with st.expander("Model card (README.md)", expanded=False):
        widgets.markdown_file(card)
