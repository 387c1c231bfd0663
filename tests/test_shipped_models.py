"""The models that ship in models/: they load, their gallery matches the contract, and their bits/dim on
the bundled gallery agrees with the checkpoint's metadata and the model card."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nvp_core import load_model
from train.config import TrainConfig
from train.export import gallery_bits_per_dim

MODELS = Path(__file__).resolve().parents[1] / "models"
META_KEYS = {"dataset", "image_size", "channels", "class_names", "epoch", "step", "test_bpd", "train_time_s",
             "hardware", "preset", "command"}  # fmt: skip


@pytest.mark.parametrize(("name", "classes", "size"), [("fashion_mnist", 10, 28), ("digits", 10, 8)])
def test_shipped_model(name, classes, size):
    path = MODELS / f"{name}.safetensors"
    if not path.exists():
        pytest.skip(f"{path.name} is not in models/ yet")
    model, meta = load_model(path)
    assert set(meta) >= META_KEYS, META_KEYS - set(meta)
    assert model.config.image_size == meta["image_size"] == size and model.config.in_channels == meta["channels"]
    assert len(meta["class_names"]) == classes
    recipe = TrainConfig.from_dict(meta["train_config"])  # an older trainer's keys are upgraded
    assert recipe.flow_config(meta["channels"], size) == model.config
    # Every version stays in the history: 12 MiB holds the 5.3M-parameter Fashion-MNIST model in float16.
    assert path.stat().st_size < 12 * 1024 * 1024, "keep the shipped model small"

    with np.load(MODELS / f"{name}.gallery.npz", allow_pickle=False) as g:
        images, labels, class_names = g["images"], g["labels"], list(g["class_names"])
    assert images.dtype == np.uint8 and images.shape[1:] == (meta["channels"], size, size)
    assert labels.dtype == np.int64 and labels.shape == (len(images),)
    assert class_names == meta["class_names"]
    assert set(np.unique(labels)) == set(range(classes))

    bpd = gallery_bits_per_dim(model, images)
    assert bpd == pytest.approx(meta["gallery_bpd"], abs=0.01)
    # The gallery is a sample of the test split: its value is close to the full test value.
    assert bpd == pytest.approx(meta["test_bpd"], abs=0.1)
    card = (MODELS / "README.md").read_text()
    assert f"{meta['test_bpd']:.3f}" in card, "the model card must state the test bits/dim"
    parameters = sum(p.numel() for p in model.parameters())
    assert f"**{parameters:,}**" in card, "the model card must state the parameter count"
    assert f"step {meta['step']:,}" in card, "the model card must name the best checkpoint's step"

    x = model.sample(4, temperature=0.7, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(x).all()
    lines = (MODELS / f"{name}.metrics.jsonl").read_text().splitlines()
    last = json.loads(lines[-1])
    held = "validation_bpd" if "validation_bpd" in last else "test_bpd"  # a run with a validation split curves that
    assert last[held] >= meta[held] - 0.05


def test_score_reproduces_the_cards_figure_in_one_command(capsys):
    from train.score import main

    _, meta = load_model(MODELS / "digits.safetensors")
    assert main([str(MODELS / "digits.safetensors")]) == 0
    out = capsys.readouterr().out
    bpd = json.loads(out.splitlines()[-1])["test_bpd"]
    # The card's figure was measured on the float32 weights; the file stores float16 ones only where that moves
    # bits/dim by < 1e-3 (train.export). The digits gallery is the whole test split, measured on the stored weights.
    assert bpd == pytest.approx(meta["test_bpd"], abs=1e-3)
    assert bpd == pytest.approx(meta["gallery_bpd"], abs=1e-5)
    assert "on 359 test images" in out


@pytest.mark.parametrize("bad", ["missing.safetensors", "README.md"])
def test_score_refuses_what_is_not_a_checkpoint(bad, capsys):
    from train.score import main

    assert main([str(MODELS / bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
