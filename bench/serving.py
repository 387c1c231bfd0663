"""What the two load tests share (``bench/load_test.py``: real browsers; ``bench/class_load.py``: Streamlit's
websocket protocol spoken directly): the server's CPU and memory from ``/proc``, the model under test (the
shipped one, else a small fixture), and the three operations every session replays — what each one asks
for and which picture caption shows that the server answered it."""

from __future__ import annotations

import os
from pathlib import Path

from app.launch import ROOT

OPERATIONS = ("encode", "interpolate", "sample")
PAGE_TITLES = {"encode": "Encode", "interpolate": "Interpolate", "sample": "Sample"}
# The widgets each operation moves (their labels on the page) and the interpolation's level-1 weights.
GALLERY_LABEL = "Gallery image"
WEIGHT_LABEL = "level 1 (finest)"
SEED_LABEL = "Seed"


def weights_with(weights: list[float], level: int, value: float) -> list[float]:
    """``weights`` (one per level, level 1 first) with level ``level``'s set to ``value``: what moving that
    level's slider in the path panel sends."""
    return [value if lv == level else w for lv, w in enumerate(weights, start=1)]


# ------------------------------------------------------------------------------------------- /proc


def rss_mb(pid: int) -> float:
    """Resident memory of a process (MB), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    """CPU seconds every core of the machine has spent busy (not idle or waiting on I/O) since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def percentile(xs: list[float], q: float) -> float:
    """``q`` in [0, 1], linear interpolation between order statistics; NaN when empty."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


# ------------------------------------------------------------------------------------------- models


def fixture_models(folder: Path) -> Path:
    """A small random Real NVP (1x16x16, 3 scales) with a gallery, for when no shipped model exists."""
    import numpy as np
    import torch

    from nvp_core import FlowConfig, RealNVP, save_model

    torch.manual_seed(0)
    model = RealNVP(FlowConfig(in_channels=1, image_size=16, num_scales=3, mid_channels=16, num_blocks=2))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("scale"):
                p.mul_(0.5)
            else:
                p.add_(0.05 * torch.randn_like(p))
    save_model(model.eval(), folder / "fixture.safetensors", {"dataset": "fixture", "class_names": ["a", "b"]})
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (200, 1, 16, 16), dtype=np.uint8)
    np.savez(folder / "fixture.gallery.npz", images=images, labels=np.arange(200) % 2,
             class_names=np.array(["a", "b"]))  # fmt: skip
    return folder


def models_under_test(models_dir: Path | None, tmp: Path) -> tuple[Path, Path, int]:
    """``(models folder, the checkpoint the app opens with, gallery size)``: ``models_dir``, else the shipped
    models, else a fixture model written to ``tmp``."""
    import numpy as np

    from app.models import gallery_path, list_checkpoints

    if models_dir is None:
        shipped = ROOT / "models"
        models_dir = shipped if list_checkpoints(shipped) else fixture_models(tmp)
    first = list_checkpoints(models_dir)[0]
    gp = gallery_path(first)
    return models_dir, first, len(np.load(gp)["labels"]) if gp else 1


# ------------------------------------------------------------------------------------------- operations


def encode_index(r: int, session: int, gallery_n: int) -> int:
    """The gallery image session ``session`` asks for in round ``r``: every session asks for different images,
    so that no result can come from another session's work."""
    return (7 * r + 97 * session + 1) % gallery_n


def sample_seed(r: int, session: int) -> int:
    return 1000 * session + r + 1


def weight_down(r: int) -> bool:
    """The level-1 weight goes 1 -> 0.95 -> 1 -> ... (down on even rounds)."""
    return r % 2 == 0


def expected_caption(op: str, r: int, session: int, gallery_n: int) -> tuple[str, str]:
    """``(prefix, text)``: a picture caption that starts with ``prefix`` and contains ``text`` shows the new
    result of ``op`` (the captions name what was computed)."""
    if op == "encode":
        return "x: gallery", f"#{encode_index(r, session, gallery_n)} "
    if op == "interpolate":
        return "A → B", "weights 0.95" if weight_down(r) else "weights 1,"
    return "", f"seed {sample_seed(r, session)}, T ="
