"""Out of distribution: the likelihood paradox. Bits/dim of the model's test images against outsider sets, AUROC by
bits/dim and by the complexity-corrected score, and the reader's own images scored."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from app import ood_compute, state, widgets
from app.ood_compute import Scored
from nvp_core.images import ImageError, load_image, to_array
from nvp_core.likelihood import CONVENTION_SHORT
from nvp_core.ood import auroc, corrected, png_complexity, score_images

MAX_UPLOADS = 12
SCORES = ["bits/dim", "bits/dim − complexity"]
DIGITS = ("digits, MNIST-style", "digits, enlarged")

ctx = state.current()
st.title("Out of distribution")
st.caption(
    "A likelihood model seems to come with an outlier detector for free: an image the model finds unlikely (many "
    "bits/dim) should not be from its data. It does not work that way. Below, the model's own test images are "
    "compared with images it never saw."
)

scored = ood_compute.scored_sets(ctx)
if scored is None:
    st.info("This model has no gallery (`<name>.gallery.npz` next to the checkpoint): there are no test images to "
            "compare outsiders with.")  # fmt: skip
    st.stop()
sets, notes = scored
own, outsiders = sets[0], {s.name: s for s in sets[1:]}


def _score(s: Scored, by: str) -> np.ndarray:
    return s.bpd if by == SCORES[0] else s.score


c1, c2 = st.columns([1, 1])
chosen_name = c1.selectbox("Outsider set", list(outsiders), key=ctx.s("ood_set"), persist_state="session")
by = c2.radio("Histogram of", SCORES, horizontal=True, key=ctx.s("ood_score"), persist_state="session")
assert chosen_name is not None and by is not None  # options are never empty
chosen = outsiders[chosen_name]
a_bpd, a_cor = auroc(own.bpd, chosen.bpd), auroc(own.score, chosen.score)
st.markdown(
    f"**{chosen.name}** ({chosen.about}): **AUROC {a_bpd:.2f}** by bits/dim, **AUROC {a_cor:.2f}** by bits/dim − "
    "complexity."
)
st.caption(
    "AUROC: the chance that a random outsider scores higher than a random test image. 0.5 is a coin toss; "
    "1 would flag every outsider; below 0.5 the model finds the outsiders *more* likely than its own data."
)
chart = st.container()  # filled once the uploads below are scored, so that they are marked on it


def _uploads() -> list[tuple[str, np.ndarray, float, float]]:
    """The reader's images in the model's format (converted as Encode converts uploads), with bits/dim and
    complexity; an unusable file gets a message."""
    ups = st.file_uploader(
        f"Your images ({', '.join(widgets.IMAGE_TYPES[:5])}, …): each is scored and marked on the histogram",
        type=widgets.IMAGE_TYPES,
        accept_multiple_files=True,
        key=ctx.k("ood:up"),
        max_upload_size=widgets.IMAGE_UPLOAD_MB,
    )
    invert = st.checkbox(
        "Invert (light on dark, as in training)", value=ctx.dark_background, key=ctx.s("ood_inv"),
        persist_state="session",
    )  # fmt: skip
    if len(ups) > MAX_UPLOADS:
        st.warning(f"{len(ups)} files: the first {MAX_UPLOADS} are scored.")
    out = []
    for k, up in enumerate(ups[:MAX_UPLOADS]):
        try:
            arr = to_array(load_image(up.getvalue()), ctx.channels, ctx.size, invert=bool(invert))
        except ImageError as e:
            st.error(f"Cannot use {up.name}: {e}")
            continue

        def score(arr: np.ndarray = arr) -> tuple[float, float]:
            bpd, _ = score_images(ctx.model, arr[None])
            return float(bpd[0]), png_complexity(arr)

        bpd, cx = widgets.memo(ctx, f"ood_up:{k}", (widgets.digest(arr),), score)
        out.append((up.name, arr, bpd, cx))
    return out


def _histogram(uploads: list[tuple[str, np.ndarray, float, float]]) -> go.Figure:
    a, b = _score(own, by), _score(chosen, by)
    marks = [(name, bpd if by == SCORES[0] else bpd - cx) for name, _, bpd, cx in uploads]
    values = np.concatenate([a, b, [v for _, v in marks]])
    values = values[np.isfinite(values)]
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    bins = {"start": lo, "end": hi + 1e-9, "size": max((hi - lo) / 60, 1e-3)}
    fig = go.Figure()
    for s, v, colour in ((own, a, "#4c78a8"), (chosen, b, "#e45756")):
        fig.add_trace(
            go.Histogram(
                x=v[np.isfinite(v)], name=f"{s.name} ({len(v)})", xbins=bins, histnorm="percent", opacity=0.6,
                marker_color=colour,
            )
        )  # fmt: skip
    for name, v in marks:
        if np.isfinite(v):
            fig.add_vline(x=v, line_color="#222", line_dash="dot", annotation_text=name, annotation_textangle=-90)
    fig.update_layout(
        barmode="overlay",
        height=320,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        xaxis_title=f"{by} ({CONVENTION_SHORT})" if by == SCORES[0] else "bits/dim − PNG complexity (bits/dim)",
        yaxis_title="% of the set",
        legend={"orientation": "h", "y": 1.12},
    )
    return fig


def _table() -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for s in sets:
        rows.append(
            {
                "set": s.name,
                "images": len(s.bpd),
                "mean bits/dim": float(np.mean(s.bpd)),
                "mean complexity": float(np.mean(s.complexity)),
                # The test images against themselves give 0.5 (ties count half): the coin toss the others are read by.
                "AUROC by bits/dim": auroc(own.bpd, s.bpd),
                "AUROC by bits/dim − complexity": auroc(own.score, s.score),
            }
        )
    return rows


def _upload_rows(uploads: list[tuple[str, np.ndarray, float, float]]) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    top = float(np.quantile(own.score, 0.95))
    for name, _, bpd, cx in uploads:
        s = float(corrected(np.array([bpd]), np.array([cx]))[0])
        rows.append(
            {
                "image": name,
                "bits/dim": bpd,
                "complexity": cx,
                "bits/dim − complexity": s,
                "test images with more bits/dim": f"{100 * float((own.bpd > bpd).mean()):.0f}%",
                "by the corrected score": "outlying (above 95% of test images)" if s > top else "like the test images",
            }
        )
    return rows


st.subheader("Your images")
uploads = _uploads()
if uploads:
    widgets.show_images([u[1] for u in uploads], [f"{u[0]}, as scored" for u in uploads], min_side=96)
    st.dataframe(
        _upload_rows(uploads),
        hide_index=True,
        column_config={k: st.column_config.NumberColumn(format="%.3f") for k in SCORES + ["complexity"]},
    )

with chart:
    st.plotly_chart(_histogram(uploads), key="ood_hist")
    widgets.strip(chosen.images[:16], f"{chosen.name}: the first 16 of {len(chosen.images)}, as the model scored them")

st.subheader("Every set")
st.dataframe(
    _table(),
    hide_index=True,
    column_config={
        "mean bits/dim": st.column_config.NumberColumn(format="%.2f"),
        "mean complexity": st.column_config.NumberColumn(format="%.2f", help="PNG file bits per value"),
        "AUROC by bits/dim": st.column_config.NumberColumn(format="%.2f"),
        "AUROC by bits/dim − complexity": st.column_config.NumberColumn(format="%.2f"),
    },
)
st.caption(
    f"{len(own.bpd)} images per set at most ({ood_compute.OOD_MAX_ENV}); bits/dim: {CONVENTION_SHORT}; complexity: "
    "the image's PNG file at the strongest compression, in bits per value."
)
for note in notes:
    st.info(note)

if all(d in outsiders for d in DIGITS):
    st.subheader("One set of digits, two preparations")
    d1, d2 = st.columns(2)
    for col, name in zip((d1, d2), DIGITS, strict=True):
        s = outsiders[name]
        with col:
            widgets.strip(
                s.images[:8],
                f"{name}: mean {np.mean(s.bpd):.2f} bits/dim, AUROC {auroc(own.bpd, s.bpd):.2f}",
                cell=56,  # eight side by side fit half the page
            )
    st.markdown(
        "The same scikit-learn digits, framed two ways. MNIST's digits were scaled into a 20×20 box and centred by "
        "their centre of mass in a 28×28 black image: thin strokes in a wide black border, as simple as images "
        "come, and the border is what Fashion-MNIST's images have too. Merely enlarged, the 8×8 digit fills the "
        "whole frame with blurry grey ink: more to explain, and unlike anything in the model's data. Whether "
        '"MNIST" fools the model depends on this preparation, not on the digits.'
    )

st.subheader("Why")
st.markdown(
    "- **Nalisnick et al., *Do deep generative models know what they don't know?*, ICLR 2019**: flows, "
    "VAEs and autoregressive models trained on Fashion-MNIST give MNIST *higher* likelihood than their own test "
    "set (CIFAR-10 models do so for SVHN). Most of the bits/dim is how hard an image is to compress, whatever "
    "its content.\n"
    "- **Kirichenko, Izmailov & Wilson, *Why normalizing flows fail to detect out-of-distribution data*, NeurIPS "
    "2020**: the coupling layers learn local pixel correlations and generic image statistics (smooth areas, a "
    "dark background), not what the objects are, so a simpler image is a likelier one.\n"
    "- **Serrà et al., *Input complexity and out-of-distribution detection with likelihood-based generative "
    "models*, ICLR 2020**: subtract a generic compressor's code length L(x) (here PNG) from the bits/dim. "
    "S(x) = bits/dim − L(x) asks how much *worse* the model does than a compressor that knows nothing of the "
    "data; constant images and simple digits then stand out.\n\n"
    "Black images take almost no bits, noise takes the most: the raw bits/dim sorts images by complexity first. "
    "The corrected score separates most sets, yet not all: upside-down clothes are as complex as upright ones."
)
