"""save_model / load_model: bit-identical round trips, and refusal of anything else."""

from __future__ import annotations

import json
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from flow_helpers import nontrivial_model
from safetensors.torch import save_file

from nvp_core import CheckpointError, FlowConfig, RealNVP, load_model, read_header, save_model

CFG = FlowConfig(in_channels=1, image_size=8, num_scales=2, mid_channels=4, num_blocks=1)


@pytest.fixture
def model() -> RealNVP:
    return nontrivial_model(CFG, dtype=torch.float32, strength=0.5)


def test_save_then_load_gives_bit_identical_outputs(model: RealNVP, tmp_path: Path) -> None:
    path = save_model(model, tmp_path / "m.safetensors", metadata={"dataset": "digits", "epoch": 3})
    loaded, meta = load_model(path)
    assert meta == {"dataset": "digits", "epoch": 3}
    assert loaded.config == model.config and not loaded.training
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        (za, la), (zb, lb) = model(x), loaded(x)
        assert all(torch.equal(a, b) for a, b in zip(za, zb, strict=True)) and torch.equal(la, lb)
        assert torch.equal(model.inverse(za), loaded.inverse(za))
    assert not list(tmp_path.glob("*.tmp")), "the temporary file must be renamed away"


def test_half_storage_loads_as_float32(model: RealNVP, tmp_path: Path) -> None:
    full = save_model(model, tmp_path / "full.safetensors")
    half = save_model(model, tmp_path / "half.safetensors", half=True)
    assert half.stat().st_size < 0.75 * full.stat().st_size  # the JSON header is not halved
    loaded, _ = load_model(half)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded.log_prob(x), model.log_prob(x), rtol=1e-2, atol=1e-1)


def test_config_round_trips_through_json() -> None:
    cfg = FlowConfig(in_channels=3, image_size=32, num_scales=2, max_mid_channels=128)
    assert FlowConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="unknown field"):
        FlowConfig.from_dict({**cfg.to_dict(), "bogus": 1})


def test_a_pickle_is_refused_and_its_payload_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, (f"touch {marker}",))

    blob = pickle.dumps({"state_dict": Payload()}, protocol=2)
    for name in ("model.pt", "model.pkl", "model.safetensors"):
        path = tmp_path / name
        path.write_bytes(blob)
        with pytest.raises(CheckpointError, match="not a .safetensors checkpoint.*pickle"):
            load_model(path)
    # A torch.save zip archive too.
    torch.save({"x": torch.zeros(1)}, tmp_path / "zip.safetensors")
    with pytest.raises(CheckpointError, match="not a .safetensors checkpoint"):
        load_model(tmp_path / "zip.safetensors")
    assert not marker.exists()


def test_truncated_file_is_refused(model: RealNVP, tmp_path: Path) -> None:
    path = save_model(model, tmp_path / "m.safetensors")
    data = path.read_bytes()
    for cut in (4, 100, len(data) // 2, len(data) - 10):
        bad = tmp_path / f"cut{cut}.safetensors"
        bad.write_bytes(data[:cut])
        with pytest.raises(CheckpointError):
            load_model(bad)


def test_foreign_safetensors_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="not a model saved by nvp_core"):
        load_model(path)


def _rewrite(src: Path, dst: Path, tensors_fn: object = None, config: dict | None = None) -> Path:
    from safetensors.torch import load_file

    meta = read_header(src)
    tensors = load_file(str(src))
    if tensors_fn is not None:
        tensors = tensors_fn(tensors)  # type: ignore[operator]
    if config is not None:
        meta = {**meta, "config": json.dumps(config)}
    save_file(tensors, str(dst), metadata=meta)
    return dst


def test_missing_and_misshaped_tensors_are_named(model: RealNVP, tmp_path: Path) -> None:
    src = save_model(model, tmp_path / "m.safetensors")
    key = next(iter(model.state_dict()))

    def drop(t: dict) -> dict:
        return {k: v for k, v in t.items() if k != key}

    def reshape(t: dict) -> dict:
        return {**t, key: torch.zeros(7)}

    with pytest.raises(CheckpointError, match="missing 1"):
        load_model(_rewrite(src, tmp_path / "a.safetensors", drop))
    with pytest.raises(CheckpointError, match=f"tensor {key} has shape"):
        load_model(_rewrite(src, tmp_path / "b.safetensors", reshape))


def test_config_that_does_not_fit_is_refused(model: RealNVP, tmp_path: Path) -> None:
    src = save_model(model, tmp_path / "m.safetensors")
    bad_size = {**CFG.to_dict(), "image_size": 9}
    with pytest.raises(CheckpointError, match="config does not build a model.*divisible"):
        load_model(_rewrite(src, tmp_path / "a.safetensors", config=bad_size))
    other = {**CFG.to_dict(), "mid_channels": 6}
    with pytest.raises(CheckpointError, match="has shape"):
        load_model(_rewrite(src, tmp_path / "b.safetensors", config=other))


def test_loading_never_imports_the_compiler(model: RealNVP, tmp_path: Path) -> None:
    # The shape check builds the model on the meta device, whose arithmetic kernels import torch._dynamo:
    # seconds of a server's first page. Construction only fills and copies there.
    path = save_model(model, tmp_path / "m.safetensors")
    code = f"import sys; import nvp_core; nvp_core.load_model({str(path)!r}); print('torch._dynamo' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert done.stdout.strip() == "False"


def test_header_with_absurd_length_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "huge.safetensors"
    path.write_bytes(struct.pack("<Q", 2**60) + b"{}")
    with pytest.raises(CheckpointError, match="not a .safetensors checkpoint"):
        load_model(path)
    with pytest.raises(CheckpointError, match="no such file"):
        load_model(tmp_path / "absent.safetensors")


def test_saved_files_get_the_usual_permissions(model: RealNVP, tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        path = save_model(model, tmp_path / "m.safetensors")
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644
