"""The app's fast path is measured in the background: the first page runs at once on the model as loaded, then
every page runs on the prepared copy, with the reader's settings kept."""

from __future__ import annotations

import gc
import threading
from pathlib import Path

import pytest
import streamlit as st
import torch
from app_helpers import APP, TIMEOUT, by_label, make_fixture_model, problems
from streamlit.testing.v1 import AppTest

from app import state
from nvp_core.fastpath import Choice, FastPath
from nvp_core.resnet import ResNet


def _channels_last(model) -> bool:
    return all(m.memory_format == torch.channels_last for m in model.modules() if isinstance(m, ResNet))


def test_pages_run_before_the_choice_and_switch_to_it_keeping_the_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ckpt = make_fixture_model(tmp_path, "bg", 1, 12, 2)
    monkeypatch.setenv("NVP_MODELS_DIR", str(tmp_path))
    monkeypatch.setenv("NVP_RUNS_DIR", str(tmp_path))
    monkeypatch.setenv("NVP_LATENTS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("NVP_FASTPATH", raising=False)
    release = threading.Event()
    prepared_models = []

    def slow_choice(model):  # stands in for the measurement: takes as long as the test says
        assert release.wait(60)
        prepared_models.append(model)
        path = FastPath(None, True)
        path.apply(model)
        return {**Choice(path, "measured").to_dict(), "freezing": {"frozen": False}}

    monkeypatch.setattr(state.prepared, "load_or_make", lambda model, _path: slow_choice(model))
    st.cache_resource.clear()
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert not problems(at), problems(at)
    loaded_model, meta = state.app_model(ckpt)
    assert meta["fastpath"]["source"] == "being measured" and not _channels_last(loaded_model)
    by_label(at.number_input, "Gallery image").set_value(3).run()
    release.set()
    model, meta = state.app_model(ckpt, wait_s=60)
    assert model is prepared_models[0] and model is not loaded_model and _channels_last(model)
    assert meta["fastpath"]["path"] == "fp32-cl"
    assert gc.get_freeze_count() > 0  # what the server loaded is out of the full collections' way
    at.run()
    assert not problems(at), problems(at)
    assert by_label(at.number_input, "Gallery image").value == 3  # the reader's setting survived the switch
