"""Helpers for the app tests: small fixture checkpoints (grey and colour), AppTest plumbing, test images."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from app.path_panel import pictures
from nvp_core import FlowConfig, RealNVP, save_model

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "app" / "streamlit_app.py"
SHIPPED = ROOT / "models"
PAGES = [
    "encode", "interpolate", "manifold", "scales", "sample", "latent_map", "attributes", "ood", "playground",
    "how_it_works", "runs",
]  # fmt: skip
TIMEOUT = 300.0


def make_fixture_model(folder: Path, stem: str, channels: int, size: int, scales: int, seed: int = 0) -> Path:
    """A small, randomly perturbed (non-identity) Real NVP saved as ``<stem>.safetensors`` with a gallery of
    smooth random images (two classes) and a short metrics file, the layout the shipped models use."""
    torch.manual_seed(seed)
    model = RealNVP(FlowConfig(in_channels=channels, image_size=size, num_scales=scales, mid_channels=8, num_blocks=1))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".g"):
                p.add_(0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith("scale"):
                p.mul_(0.5)
            else:
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    model.eval()
    folder.mkdir(parents=True, exist_ok=True)
    names = ["blob", "ring"]
    ckpt = save_model(model, folder / f"{stem}.safetensors", {"dataset": stem, "class_names": names, "test_bpd": 5.0})
    rng = np.random.default_rng(seed)
    n = 40
    yy, xx = np.mgrid[0:size, 0:size] / max(1, size - 1) - 0.5
    imgs = np.empty((n, channels, size, size), np.uint8)
    labels = np.arange(n) % 2
    for i in range(n):
        r = np.hypot(yy - rng.uniform(-0.2, 0.2), xx - rng.uniform(-0.2, 0.2))
        base = np.exp(-(r**2) / 0.05) if labels[i] == 0 else np.exp(-((r - 0.3) ** 2) / 0.01)
        for c in range(channels):
            imgs[i, c] = np.clip(255 * base * rng.uniform(0.6, 1.0) + rng.normal(0, 8, base.shape), 0, 255)
    np.savez(folder / f"{stem}.gallery.npz", images=imgs, labels=labels.astype(np.int64), class_names=np.array(names))
    with open(folder / f"{stem}.metrics.jsonl", "w") as f:
        for step in range(1, 4):
            f.write(
                json.dumps(
                    {"step": step * 10, "epoch": step, "train_bpd": 6 - step * 0.3, "test_bpd": 6.1 - step * 0.3}
                )
            )
            f.write("\n")
    return ckpt


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def astronaut_png() -> bytes:
    """scikit-image's astronaut photograph (512×512 RGB) as PNG bytes."""
    from skimage import data

    return png_bytes(data.astronaut())


def by_label(widgets: object, text: str) -> object:
    """The widget labelled ``text``, else the first whose label contains ``text``."""
    ws = list(widgets)  # type: ignore[call-overload]
    for w in ws:
        if getattr(w, "label", None) == text:
            return w
    for w in ws:
        if text in (getattr(w, "label", "") or ""):
            return w
    raise AssertionError(f"no widget with a label containing {text!r}")


def image_urls(at: object) -> dict[str, list[str]]:
    """Caption → addresses of every picture on the page: the media URL of each ``st.image`` and the ``data:``
    address of the path panel's strip and frames (app/path_panel.py). Both change when the pixels do."""
    out: dict[str, list[str]] = {}
    for im in at.image:  # type: ignore[attr-defined]
        for url, cap in zip(im.value, im.captions, strict=True):
            out.setdefault(cap, []).append(url)
    for el in at.get("bidi_component"):  # type: ignore[attr-defined]
        for src, cap in pictures(el.proto.json):
            out.setdefault(cap, []).append(src)
    return out


def panel_data(at: object) -> dict:
    """The data the page's one path panel (app/path_panel.py) got: its settings and pictures."""
    els = at.get("bidi_component")  # type: ignore[attr-defined]
    assert len(els) == 1, f"{len(els)} path panels"
    return json.loads(els[0].proto.json)


def plotly_specs(at: object) -> list[dict]:
    """The JSON specs of every plotly chart on the page."""
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]  # type: ignore[attr-defined]


def problems(at: object) -> list[str]:
    """Exceptions and errors shown on the page (should be none)."""
    return [e.message for e in at.exception] + [e.value for e in at.error]  # type: ignore[attr-defined]


def plotly_array(value: object) -> np.ndarray:
    """A data array from a plotly JSON spec: a plain (nested) list, or plotly's typed-array encoding
    ``{"dtype": "f4", "bdata": base64, "shape": "h, w"}``."""
    if isinstance(value, dict) and "bdata" in value:
        arr = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        shape = value.get("shape")
        if shape:
            arr = arr.reshape([int(s) for s in str(shape).split(",")])
        return arr.astype(np.float64)
    return np.asarray(value, dtype=np.float64)


def record_latent_images(monkeypatch: object) -> list[np.ndarray]:
    """Records the latents (``[C_l, h, w]``) of every latent image the app draws (``compute.latent_mosaic``
    is wrapped; AppTest runs the pages in this process). Cleared by the caller between runs."""
    from app import compute

    seen: list[np.ndarray] = []
    real = compute.latent_mosaic

    def wrapped(z: np.ndarray, *args: object, **kwargs: object) -> tuple[np.ndarray, float]:
        seen.append(np.array(z, copy=True))
        return real(z, *args, **kwargs)

    monkeypatch.setattr(compute, "latent_mosaic", wrapped)  # type: ignore[attr-defined]
    return seen
