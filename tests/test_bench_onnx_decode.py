"""bench.onnx_decode: says what to install when ONNX Runtime is missing; where it is installed, the exported s,t
ResNets decode the same pictures as the model they came from."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from app_helpers import make_fixture_model

from app.compute import to_uint8
from bench import onnx_decode
from nvp_core import load_model


def test_without_onnxruntime_it_says_what_to_install(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # an import of it now raises ImportError
    assert onnx_decode.main(["--batches", "1"]) == 2
    assert onnx_decode.MISSING in capsys.readouterr().err


def test_the_exported_nets_decode_the_same_pictures(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model, _ = load_model(make_fixture_model(tmp_path, "grey8", 1, 8, 2))
    on_ort = onnx_decode.on_onnxruntime(model, batch=3, threads=1)
    assert not any(isinstance(m, torch.nn.Conv2d) for m in on_ort.modules())
    want, got = onnx_decode.decode(model, 3), onnx_decode.decode(on_ort, 3)
    assert (got - want).abs().max() < 1e-4
    assert abs(to_uint8(got).astype(int) - to_uint8(want).astype(int)).max() <= 1
