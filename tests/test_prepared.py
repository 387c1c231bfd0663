"""The app's preparation of a model is made once per checkpoint and machine in a child process and kept on disk:
the server loads what the child wrote (the same pictures as preparing in-process), a kept preparation is loaded
without a child, and a broken one or a failing child never breaks the app."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch
from app_helpers import make_fixture_model

from app import prepared
from app.models import prepare_app_model
from nvp_core import load_model
from nvp_core.freezing import is_frozen


@pytest.fixture
def ckpt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(prepared.ENV_CACHE, str(tmp_path / "prepared"))
    monkeypatch.delenv("NVP_FASTPATH", raising=False)
    return make_fixture_model(tmp_path, "prep", 1, 12, 2)


def _decoded(model: torch.nn.Module) -> torch.Tensor:
    zs = model.sample_latents(4, 0.7, torch.Generator().manual_seed(0))  # type: ignore[operator]
    with torch.inference_mode():
        return model.inverse(zs)  # type: ignore[operator]


def test_the_child_prepares_and_the_server_loads_it(ckpt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, _ = load_model(ckpt)
    report = prepared.load_or_make(model, ckpt)
    assert report is not None and report["freezing"]["frozen"] and is_frozen(model)
    assert "kept on disk" in report["source"] and (prepared.cache_folder(ckpt) / "report.json").is_file()
    here, _ = load_model(ckpt)
    assert prepare_app_model(here)["path"] == report["path"]
    torch.testing.assert_close(_decoded(model), _decoded(here), rtol=0, atol=1e-5)  # traced in another process

    def no_child(*_a: object, **_k: object) -> None:
        raise AssertionError("a kept preparation needs no child")

    monkeypatch.setattr(subprocess, "run", no_child)
    again, _ = load_model(ckpt)
    assert prepared.load_or_make(again, ckpt) == report and torch.equal(_decoded(again), _decoded(model))


def test_a_broken_preparation_is_made_again_and_a_failing_child_leaves_the_model_as_loaded(
    ckpt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = prepared.cache_folder(ckpt)
    folder.mkdir(parents=True)
    (folder / "report.json").write_text('{"path": "fp32-cl", "freezing": {"frozen": true}}')  # graphs missing
    model, _ = load_model(ckpt)
    assert prepared.load(model, folder) is None and not is_frozen(model)
    report = prepared.load_or_make(model, ckpt)
    assert report is not None and is_frozen(model) and (folder / "encode.pt").is_file()

    other = make_fixture_model(ckpt.parent, "other", 1, 12, 2, seed=3)
    monkeypatch.setattr(prepared.sys, "executable", str(ckpt.parent / "no-python"))
    model, _ = load_model(other)
    assert prepared.load_or_make(model, other) is None and not is_frozen(model)


def test_a_preparation_is_kept_per_checkpoint_machine_and_code(ckpt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = prepared.cache_folder(ckpt)
    assert prepared.cache_folder(ckpt) == folder
    assert prepared.cache_folder(make_fixture_model(ckpt.parent, "other", 1, 12, 2, seed=3)) != folder
    monkeypatch.setattr(prepared, "_code_digest", lambda: "the flow's code changed")
    assert prepared.cache_folder(ckpt) != folder
