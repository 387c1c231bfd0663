"""AppTest tests of the Out-of-distribution page on the bundled Fashion-MNIST model (and a model with no gallery)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from app_helpers import (
    APP,
    SHIPPED,
    TIMEOUT,
    by_label,
    image_urls,
    make_fixture_model,
    plotly_specs,
    png_bytes,
    problems,
)
from streamlit.testing.v1 import AppTest

PAGE = "views/ood.py"
N = 24  # images per set: the page's numbers, cheaply


def _open(monkeypatch: pytest.MonkeyPatch, models: Path, stem: str) -> AppTest:
    monkeypatch.setenv("NVP_MODELS_DIR", str(models))
    monkeypatch.setenv("NVP_RUNS_DIR", str(models))
    monkeypatch.setenv("NVP_APP_OOD_MAX", str(N))
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    choice = at.selectbox(key="model_choice")
    if not str(choice.value).endswith(f"{stem}.safetensors"):
        choice.set_value(str(models / f"{stem}.safetensors")).run()
    at.switch_page(PAGE).run()
    assert not problems(at), problems(at)
    return at


def _text(at: AppTest) -> str:
    return "\n".join([m.value for m in at.markdown] + [c.value for c in at.caption])


@pytest.mark.skipif(not (SHIPPED / "fashion_mnist.safetensors").is_file(), reason="no bundled model")
def test_page_shows_auroc_for_each_set_and_the_link_keeps_the_set(monkeypatch: pytest.MonkeyPatch) -> None:
    at = _open(monkeypatch, SHIPPED, "fashion_mnist")
    assert at.title[0].value == "Out of distribution"
    found = re.findall(r"AUROC (0\.\d\d|1\.00)", _text(at))
    assert len(found) >= 2, _text(at)
    table = at.dataframe[0].value
    assert list(table["set"])[0] == "test images" and "digits, MNIST-style" in list(table["set"])
    assert "Fashion-MNIST" not in list(table["set"])  # not an outsider of its own model
    rows = table.set_index("set")
    assert (
        rows.loc["black", "mean bits/dim"]
        < rows.loc["test images", "mean bits/dim"]
        < rows.loc["uniform noise", "mean bits/dim"]
    )
    assert (table["images"] <= N).all()
    # Both preparations of the digits are shown, and the histogram compares the test images with the chosen set.
    assert any(c.startswith("digits, MNIST-style: mean") for c in image_urls(at))
    assert any(c.startswith("digits, enlarged: mean") for c in image_urls(at))
    names = [t["name"] for t in plotly_specs(at)[0]["data"]]
    assert names[0].startswith("test images") and names[1].startswith(str(by_label(at.selectbox, "Outsider set").value))
    by_label(at.selectbox, "Outsider set").set_value("black").run()
    assert not problems(at)
    assert "black" in str(at.query_params.get("ood_set"))
    assert plotly_specs(at)[0]["data"][1]["name"].startswith("black")
    assert rows.loc["test images", "AUROC by bits/dim"] == 0.5  # the reference row: a coin toss, not an empty cell
    black = rows.loc["black", "AUROC by bits/dim"]
    assert f"AUROC {black:.2f}" in _text(at)


@pytest.mark.skipif(not (SHIPPED / "fashion_mnist.safetensors").is_file(), reason="no bundled model")
def test_uploads_are_scored_and_a_bad_one_gets_a_message(monkeypatch: pytest.MonkeyPatch) -> None:
    at = _open(monkeypatch, SHIPPED, "fashion_mnist")
    shirt = png_bytes(np.full((28, 28), 30, np.uint8))
    files = [("flat.png", shirt, "image/png"), ("notes.png", b"not an image", "image/png")]
    by_label(at.file_uploader, "Your images").set_value(files).run()  # type: ignore[attr-defined]
    assert not at.exception, [e.message for e in at.exception]
    assert any("Cannot use notes.png" in e.value for e in at.error)
    scored = at.dataframe[0].value
    assert list(scored["image"]) == ["flat.png"] and np.isfinite(scored["bits/dim"][0])
    lines = plotly_specs(at)[0]["layout"].get("shapes", [])
    assert len(lines) == 1 and lines[0]["x0"] == pytest.approx(scored["bits/dim"][0])


def test_a_model_without_a_gallery_gets_a_message(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    make_fixture_model(tmp_path / "src", "grey8", 1, 8, 2)
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "grey8.safetensors").write_bytes((tmp_path / "src" / "grey8.safetensors").read_bytes())
    at = _open(monkeypatch, bare, "grey8")
    assert any("no gallery" in i.value for i in at.info) and not at.get("plotly_chart")
