"""Attributes: directions between two sets' mean latents, applied per level."""

from __future__ import annotations

import re

import numpy as np
import streamlit as st

from app import compute, link, state, widgets
from nvp_core.images import ImageError, load_image, to_array
from nvp_core.latent import apply_direction, attribute_direction

ctx = state.current()
model = ctx.model
L = model.num_levels
st.title("Attributes")
st.caption(
    "A direction is the difference of two sets' mean latents, d = mean(z | to) − mean(z | from), per level. "
    "Adding s·d to an image's latents on the chosen levels only moves it towards the 'to' set."
)

g = state.gallery(ctx)
gl = state.gallery_latents(ctx)
modes = (["Class means"] if g is not None else []) + ["Your own sets"]
mode = st.radio("Direction from", modes, horizontal=True, key=ctx.s("at_mode"), persist_state="session")


def images_from(uploads: list, indices: str, key: str) -> list[np.ndarray]:
    out = []
    for up in uploads or []:
        try:
            out.append(to_array(load_image(up.getvalue()), ctx.channels, ctx.size, invert=ctx.dark_background))
        except ImageError as e:
            st.error(f"Skipped {up.name}: {e}")
    if indices.strip() and g is not None:
        for tok in indices.replace(";", ",").split(","):
            tok = tok.strip()
            # ASCII digits only, bounded length: str.isdigit() accepts '²', and int() refuses 5000-digit strings.
            if re.fullmatch(r"[0-9]{1,9}", tok) and int(tok) < len(g.images):
                out.append(np.array(g.images[int(tok)]))
            elif tok:
                st.error(f"'{tok}' is not a gallery index (0–{len(g.images) - 1})")
    return out


direction = None
if mode == "Class means" and g is not None and gl is not None:
    names = g.class_names
    present = [c for c in range(len(names)) if (gl.labels == c).any()]
    c1, c2 = st.columns(2)
    # Fashion-MNIST's classic example; other datasets start from their first two classes.
    i_from = names.index("Sneaker") if "Sneaker" in names and names.index("Sneaker") in present else present[0]
    i_to = names.index("Ankle boot") if "Ankle boot" in names and names.index("Ankle boot") in present else None
    if i_to is None:
        i_to = present[min(1, len(present) - 1)]
    src, dst = (
        col.selectbox(
            f"{end} class",
            present,
            index=present.index(default),
            format_func=lambda c: names[c],
            key=ctx.s(f"at_{end.lower()}"),
            persist_state="session",
        )
        for col, end, default in ((c1, "From", i_from), (c2, "To", i_to))
    )
    assert src is not None and dst is not None  # both lists hold every present class
    title = f"{names[src]} → {names[dst]}"
    direction = attribute_direction(
        gl.tensors(np.flatnonzero(gl.labels == dst)), gl.tensors(np.flatnonzero(gl.labels == src))
    )
else:
    c1, c2 = st.columns(2)
    sets = []
    for col, name in ((c1, "from"), (c2, "to")):
        with col:
            ups = st.file_uploader(
                f"Images of the '{name}' set",
                type=widgets.IMAGE_TYPES,
                accept_multiple_files=True,
                key=ctx.k(f"at_up_{name}"),
                max_upload_size=widgets.IMAGE_UPLOAD_MB,
            )
            idx = st.text_input(
                f"…and/or gallery indices for '{name}' (e.g. 3, 17, 42)",
                key=ctx.s(f"at_idx_{name}"),
                persist_state="session",
            )
            sets.append(images_from(ups, idx, name))
    if not sets[0] or not sets[1]:
        st.info("Give at least one image for each set.")
        st.stop()
    title = f"your set ({len(sets[0])}) → your set ({len(sets[1])})"
    direction = attribute_direction(compute.encode(model, np.stack(sets[1])), compute.encode(model, np.stack(sets[0])))

st.markdown(
    f"**Direction:** {title} · per-level norms: "
    + ", ".join(f"{widgets.level_name(ctx, lv)} {float(d.norm()):.1f}" for lv, d in enumerate(direction, 1))
)
left, right = st.columns([1, 2], gap="large")
with left:
    start = int(np.flatnonzero(g.labels == src)[0]) if mode == "Class means" and g is not None else 0
    picked = widgets.image_input(ctx, "at_img", "Image to edit", default_index=start)
if picked is None:
    st.stop()
z = compute.encode(model, picked[0][None])


@link.fragment
def edit_view(z: list, direction: list, key: str) -> None:
    c1, c2 = st.columns([1, 2])
    strength = c1.slider("Strength s", -2.0, 2.0, 1.0, 0.1, key=ctx.s("at_s"), persist_state="session")
    with c2:
        levels = widgets.level_picker(ctx, "at_levels", "Apply on levels")
    if not levels:
        st.warning("Choose at least one level.")
        return
    strengths = np.linspace(0.0, strength, 7).tolist()

    def run() -> tuple[np.ndarray, list]:
        zz = apply_direction(z, direction, strengths, levels=levels)
        return compute.decode(model, zz), zz

    frames, zz = widgets.memo(ctx, "attr", (key, strength, tuple(levels)), run)
    widgets.show_images([frames[0], frames[-1]], ["before", f"after (s = {strength:g})"], min_side=140)
    mosaic = widgets.strip(frames, "s = " + ", ".join(f"{s:.2g}" for s in strengths), cell=72)
    widgets.result_downloads(ctx, "attribute", mosaic, zz, label="Strip", strengths=np.array(strengths))


with right:
    edit_view(z, direction, widgets.digest(picked[0], *(d.numpy() for d in direction)))
