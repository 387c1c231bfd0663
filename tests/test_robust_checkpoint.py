"""Checkpoints whose header asks for too much: the config inside a .safetensors file is untrusted, and a few
hundred bytes of it must not make the loader (the app's upload, the model picker) allocate a huge model,
spend minutes building one, or build huge masks. Each is refused with a clear message, in bounded memory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from nvp_core import CheckpointError, FlowConfig, RealNVP, load_model, read_header, save_model
from nvp_core.checkpoint import FORMAT

ROOT = Path(__file__).resolve().parents[1]
SMALL = FlowConfig(in_channels=1, image_size=8, num_scales=2, mid_channels=4, num_blocks=1)


def _with_config(src: Path, dst: Path, **changes: object) -> Path:
    """``src``'s tensors under a header whose config has ``changes``."""
    meta = read_header(src)
    config = {**json.loads(meta["config"]), **changes}
    save_file(load_file(str(src)), str(dst), metadata={**meta, "config": json.dumps(config)})
    return dst


@pytest.fixture
def small(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    return save_model(RealNVP(SMALL), tmp_path / "small.safetensors")


def _tiny_file_with(path: Path, **config: object) -> Path:
    cfg = FlowConfig(**{**SMALL.to_dict(), **config})
    save_file({"w": torch.zeros(1)}, str(path), metadata={"format": FORMAT, "config": cfg.to_json(), "metadata": "{}"})
    return path


_PROBE = """
import resource, sys
# A cap on the address space turns an attempt to allocate a huge model into a quick failure, not an OOM kill.
resource.setrlimit(resource.RLIMIT_AS, (8 * 2**30, 8 * 2**30))
from nvp_core import CheckpointError, load_model
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
for p in sys.argv[1:]:
    try:
        load_model(p)
        print("LOADED", p)
    except CheckpointError as e:
        print("REFUSED", str(e).replace(chr(10), " "))
print("DELTA_MB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base)
"""


@pytest.mark.timeout(300)
def test_oversized_configs_are_refused_before_anything_is_allocated(small: Path, tmp_path: Path) -> None:
    files = [
        _tiny_file_with(tmp_path / "wide.safetensors", mid_channels=8192, num_blocks=8),  # ~300 G weights
        _tiny_file_with(tmp_path / "deep.safetensors", num_blocks=200_000),  # minutes of module construction
        _with_config(small, tmp_path / "wide_names_ok.safetensors", mid_channels=8192),  # the right names
        _with_config(small, tmp_path / "huge_masks.safetensors", image_size=2**15),  # 4 GB per mask
    ]
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, *map(str, files)], cwd=ROOT, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    refused = [line for line in lines if line.startswith("REFUSED")]
    assert len(refused) == len(files), proc.stdout
    assert "does not fit the 1 tensors" in refused[0] and "does not fit the 1 tensors" in refused[1]
    assert "has shape" in refused[2] and "GB of masks" in refused[3], refused
    delta = float(lines[-1].split()[1])
    assert delta < 200, f"peak memory grew by {delta:.0f} MB while refusing"


def test_a_valid_checkpoint_still_loads_exactly(small: Path) -> None:
    model, _ = load_model(small)
    torch.manual_seed(0)
    reference = RealNVP(SMALL)
    for (k, a), (_, b) in zip(model.state_dict().items(), reference.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def test_a_too_deep_config_is_refused_quickly_in_process(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not fit"):
        load_model(_tiny_file_with(tmp_path / "deep.safetensors", num_blocks=10**7))


@pytest.mark.timeout(300)
def test_an_oversized_checkpoint_uploaded_to_the_app_gets_an_error(small: Path, tmp_path: Path, monkeypatch) -> None:
    from app_helpers import APP, TIMEOUT, by_label
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("NVP_MODELS_DIR", str(small.parent))
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    wide = _tiny_file_with(tmp_path / "wide.safetensors", mid_channels=8192, num_blocks=8).read_bytes()
    by_label(at.sidebar.file_uploader, "checkpoint").set_value(("wide.safetensors", wide, "")).run()
    assert not at.exception, [e.message for e in at.exception]
    assert any("Refused wide.safetensors" in e.value and "does not fit" in e.value for e in at.error)
