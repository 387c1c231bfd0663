"""Entry point: ``streamlit run app/streamlit_app.py`` (or ``nvp-app``). Sidebar model picker + the pages."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

# Pages live in app/views/, not app/pages/: Streamlit treats a pages/ folder beside the entry script as a
# v1 multipage app and can then run a page without this script (no sidebar).
# `streamlit run` puts app/ on sys.path, not the repository; the pages import `app.*` and `nvp_core`.
_ROOT = Path(__file__).absolute().parent.parent  # not resolve(): a stat per folder on every rerun
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import streamlit as st  # noqa: E402
import torch  # noqa: E402
from streamlit.navigation.page import StreamlitPage  # noqa: E402

from app import compute, link, state, uploads  # noqa: E402
from app.models import list_checkpoints, models_dir  # noqa: E402
from nvp_core.likelihood import CONVENTION_SHORT  # noqa: E402

LINK_PROBLEM = "_link_problem"
PAGES_KEY = "_pages"
PAGES = [
    ("views/encode.py", "Encode", ":material/qr_code_scanner:"),
    ("views/interpolate.py", "Interpolate", ":material/swap_horiz:"),
    ("views/manifold.py", "Manifold", ":material/grid_view:"),
    ("views/scales.py", "Scales", ":material/layers:"),
    ("views/sample.py", "Sample", ":material/casino:"),
    ("views/latent_map.py", "Latent map", ":material/scatter_plot:"),
    ("views/attributes.py", "Attributes", ":material/tune:"),
    ("views/ood.py", "Out of distribution", ":material/radar:"),
    ("views/how_it_works.py", "How it works", ":material/school:"),
    ("views/runs.py", "Runs", ":material/monitoring:"),
    ("views/playground.py", "Playground", ":material/toys:"),
]


def _uploaded_checkpoint() -> Path | None:
    """Stores an uploaded ``.safetensors`` file (content-addressed) if it loads as a model; else explains why not."""
    up = st.file_uploader(
        "Or upload a checkpoint (.safetensors from train/)",
        key="ckpt_upload",
        help="Only .safetensors files saved by nvp_core are accepted; nothing is unpickled.",
        max_upload_size=uploads.MAX_CHECKPOINT_MB,
    )
    if up is None:
        return None
    data = up.getvalue()
    if not up.name.lower().endswith(".safetensors"):
        st.error(f"{up.name} is not a .safetensors checkpoint. Upload a model saved by train/ (nvp_core.save_model).")
        return None
    if len(data) > uploads.MAX_CHECKPOINT_MB * 2**20:
        st.error(f"{up.name} is larger than {uploads.MAX_CHECKPOINT_MB} MB.")
        return None
    path = uploads.store(data)  # content-addressed
    problem = state.check_checkpoint(path)
    if problem is not None:
        path.unlink(missing_ok=True)  # keep nothing that was refused
        st.error(f"Refused {up.name}: {problem.replace(path.name, up.name)}")
        return None
    uploads.admit(path)  # the folder stays within its bound: the oldest uploads go
    return path


def _label(path: Path) -> str:
    return path.name.removesuffix(".safetensors").replace("_", " ")


def sidebar() -> bool:
    """The model picker. Returns False when no usable model is available."""
    with st.sidebar:
        st.markdown("### Real NVP explorer")
        found = list_checkpoints()
        link.read(found)  # a shared link names the model and the page's settings
        uploaded = _uploaded_checkpoint_slot()
        opened = [Path(p) for p in st.session_state.get(state.OPENED_RUNS, []) if Path(p).is_file()]
        options = [str(p) for p in [*found, *opened]] + ([str(uploaded)] if uploaded else [])
        if not options:
            st.warning(f"No checkpoint found in {models_dir()}. Train one with `nvp-train`, or upload one.")
            return False
        labels = {str(p): _label(p) for p in found} | {str(p): f"run {p.parent.name}: {_label(p)}" for p in opened}
        if uploaded:
            up = st.session_state.get("ckpt_upload")
            labels[str(uploaded)] = f"uploaded: {up.name if up is not None else uploaded.name}"
        if uploaded and st.session_state.get("last_upload") != str(uploaded):
            # A newly uploaded checkpoint becomes the current model once; the user can switch back.
            st.session_state["last_upload"] = str(uploaded)
            st.session_state["model_choice"] = str(uploaded)
        if st.session_state.get("model_choice") not in options:
            st.session_state.pop("model_choice", None)
        chosen = st.selectbox("Model", options, format_func=lambda p: labels[p], key="model_choice")
        assert chosen is not None  # options is not empty (checked above)
        problem = state.check_checkpoint(Path(chosen))
        if problem is not None:
            st.error(problem)
            return False
        st.session_state[state.MODEL_KEY] = chosen
        ctx = state.current()
        link.write_model(ctx.path.name.removesuffix(".safetensors") if Path(chosen) in found else None)
        cfg = ctx.model.config
        bpd = ctx.meta.get("test_bpd")
        st.caption(
            f"{cfg.in_channels}×{cfg.image_size}×{cfg.image_size} images · {ctx.model.num_levels} levels · "
            f"{state.parameter_count(ctx) / 1e6:.2f} M parameters"
            + (f" · test {float(bpd):.3f} bits/dim ({CONVENTION_SHORT})" if isinstance(bpd, int | float) else "")
        )
        st.caption(
            "Dinh, Sohl-Dickstein & Bengio, *Density estimation using Real NVP*, ICLR 2017. Equation numbers in "
            "this app refer to that paper."
        )
    return True


def _uploaded_checkpoint_slot() -> Path | None:
    if not uploads.enabled():  # $NVP_APP_CHECKPOINT_UPLOADS=off: a public server takes no checkpoints
        return None
    with st.expander("Load another checkpoint", expanded=False):
        return _uploaded_checkpoint()


def _threads() -> int:
    """Torch threads for inference: ``$NVP_APP_THREADS``, else 1 on machines with 2 cores or fewer (more threads
    than free cores make small convolutions many times slower), else half the cores up to 4."""
    env = os.environ.get("NVP_APP_THREADS", "")
    if re.fullmatch(r"[0-9]{1,4}", env) and int(env) > 0:
        return int(env)
    cores = os.cpu_count() or 1
    return 1 if cores <= 2 else min(4, cores // 2)


def main() -> None:
    # The icon is a picture made here: a :material/…: or emoji icon makes the browser fetch it from a CDN.
    st.set_page_config(page_title="Real NVP explorer", page_icon=compute.icon_png(), layout="wide")
    # Pictures are sent at the model's resolution and enlarged by the browser: keep their pixels sharp.
    st.html("<style>[data-testid='stImage'] img { image-rendering: pixelated; }</style>")
    torch.set_grad_enabled(False)
    if torch.get_num_threads() != (threads := _threads()):
        torch.set_num_threads(threads)
    nav = st.navigation(_pages())
    link.whole_run(lambda: _page(nav) if sidebar() else _no_model())


def _pages() -> list[StreamlitPage]:
    # Made once per session (st.Page resolves its file and icon each time), not shared between sessions:
    # st.navigation marks the page it returns on the object itself.
    pages = st.session_state.get(PAGES_KEY)
    if pages is None:
        pages = [st.Page(p, title=t, icon=i, default=k == 0) for k, (p, t, i) in enumerate(PAGES)]
        st.session_state[PAGES_KEY] = pages
    return pages  # type: ignore[no-any-return]


def _no_model() -> None:
    st.title("Real NVP explorer")
    st.info("Pick or upload a model in the sidebar to start.")


def _page(nav: StreamlitPage) -> None:
    problem = st.session_state.pop(LINK_PROBLEM, None)
    if problem:
        st.warning(problem)
    try:
        nav.run()
    except Exception as e:
        names = link.drop_seeded()  # a link made for another model or edited by hand: back to the defaults
        if not names:
            raise
        st.session_state[LINK_PROBLEM] = (
            f"This link's settings ({', '.join(names)}) do not fit this model, so the defaults are shown "
            f"instead. ({type(e).__name__}: {e})"
        )
        st.rerun()


main()
