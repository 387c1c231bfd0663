"""Turns a finished run into the shipped model files (the contract between ``train/`` and ``app/``)::

    models/<name>.safetensors     the best checkpoint (float16 storage when evaluation is unchanged)
    models/<name>.gallery.npz     images uint8 [N, C, H, W], labels int64 [N], class_names — test split
    models/<name>.metrics.jsonl   the run's metrics
    models/<name>.samples.png     the run's latest sample grid
    models/<name>.latents.npz     the gallery's latents and bits/dim, so the app starts without encoding it

``python -m train.export --run runs/fashion_mnist --name fashion_mnist`` (see ``--help``);
``python -m train.export --latents models/fashion_mnist.safetensors`` rewrites one model's latents file.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nvp_core import CheckpointError, gallery_latents, load_model, save_model

from .data import DataError, load_dataset
from .evaluate import eval_bits_per_dim, sample_grid, save_png

HALF_TOLERANCE = 1e-3  # bits/dim: float16 storage is used only if it changes the gallery value less than this


def gallery_indices(labels: np.ndarray, per_class: int) -> np.ndarray:
    """The first ``per_class`` test images of each class, in test-set order (all images if unlabelled)."""
    if labels.size == 0 or labels.min() < 0:
        return np.arange(min(len(labels), per_class * 10))
    picks = [np.flatnonzero(labels == c)[:per_class] for c in np.unique(labels)]
    return np.sort(np.concatenate(picks))


def gallery_bits_per_dim(model: torch.nn.Module, images: np.ndarray | torch.Tensor) -> float:
    """Mean test bits/dim of gallery images with the trainer's fixed evaluation noise."""
    return eval_bits_per_dim(model, torch.as_tensor(np.asarray(images)))  # type: ignore[arg-type]


def write_latents(checkpoint: Path, count: int = gallery_latents.DEFAULT_COUNT) -> Path:
    """Writes ``<name>.latents.npz`` for a shipped checkpoint and its ``<name>.gallery.npz`` (the app's model): the
    latents of the first ``count`` gallery images and the bits/dim of all of them."""
    gallery = checkpoint.with_name(checkpoint.name.removesuffix(".safetensors") + ".gallery.npz")
    with np.load(gallery, allow_pickle=False) as g:
        images, labels = g["images"], g["labels"]
    model, _ = load_model(checkpoint)
    gl = gallery_latents.compute(model, images, labels, latents=count)
    return gallery_latents.save(gallery_latents.shipped_path(checkpoint), gl, gallery_latents.key(checkpoint, gallery))


def export_run(
    run: Path,
    name: str,
    models_dir: Path,
    per_class: int = 300,
    data_dir: Path | None = None,
    extra_metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Writes the shipped files for ``run``'s best checkpoint; returns a summary for the model card."""
    model, meta = load_model(run / "best.safetensors")
    recipe = meta.get("train_config", {})
    splits = load_dataset(
        meta["dataset"], data_dir, meta["image_size"], meta["channels"], False, recipe.get("test_fraction", 0.1)
    )
    labels = splits.test_labels.numpy()
    idx = gallery_indices(labels, per_class)
    images, gallery_labels = splits.test.numpy()[idx], labels[idx]
    fp32_bpd = gallery_bits_per_dim(model, images)
    meta = {**meta, **(extra_metadata or {})}

    # Try float16 storage: keep it only if the evaluation does not move.
    models_dir.mkdir(parents=True, exist_ok=True)
    target = models_dir / f"{name}.safetensors"
    with tempfile.TemporaryDirectory() as tmp:
        half_path = Path(tmp) / "half.safetensors"
        save_model(model, half_path, {**meta, "gallery_bpd": fp32_bpd}, half=True)
        half_model, _ = load_model(half_path)
        half_bpd = gallery_bits_per_dim(half_model, images)
    half = abs(half_bpd - fp32_bpd) < HALF_TOLERANCE
    final_model = half_model if half else model
    meta.update(
        gallery_bpd=half_bpd if half else fp32_bpd, gallery_size=len(idx), storage="float16" if half else "float32"
    )
    save_model(final_model, target, meta, half=half)

    np.savez_compressed(
        models_dir / f"{name}.gallery.npz",
        images=images.astype(np.uint8),
        labels=gallery_labels.astype(np.int64),
        class_names=np.array(splits.class_names, dtype=str),
    )
    if (run / "metrics.jsonl").is_file():
        shutil.copyfile(run / "metrics.jsonl", models_dir / f"{name}.metrics.jsonl")
    write_latents(target)
    grid = sample_grid(final_model, (1.0, 0.85, 0.7, 0.5), 10, seed=0)
    save_png(grid, models_dir / f"{name}.samples.png")
    return {
        "file": str(target),
        "size_bytes": target.stat().st_size,
        "storage": meta["storage"],
        "gallery_bpd_fp32": fp32_bpd,
        "gallery_bpd_stored": meta["gallery_bpd"],
        "gallery_size": len(idx),
        "test_bpd": meta.get("test_bpd"),
        "validation_bpd": meta.get("validation_bpd"),
        "validation_images": meta.get("validation_images"),
        "step": meta.get("step"),
        "epoch": meta.get("epoch"),
        "train_time_s": meta.get("train_time_s"),
        "hardware": meta.get("hardware"),
        "parameters": sum(p.numel() for p in final_model.parameters()),
        "config": final_model.config.to_dict(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.export", description=__doc__.split("\n")[0])
    p.add_argument("--run", type=Path, help="run folder with best.safetensors and metrics.jsonl")
    p.add_argument("--name", help="base name of the files, e.g. fashion_mnist")
    p.add_argument("--latents", type=Path, metavar="CHECKPOINT", help="only rewrite this shipped model's latents file")
    p.add_argument("--models-dir", type=Path, default=Path("models"), help="where to write (default models/)")
    p.add_argument("--per-class", type=int, default=300, help="gallery images per class (default 300)")
    p.add_argument("--data-dir", type=Path, help="dataset folder, as for training")
    p.add_argument("--meta", default="{}", help="extra JSON metadata for the checkpoint")
    args = p.parse_args(argv)
    if args.latents is None and (args.run is None or args.name is None):
        p.error("give --run and --name, or --latents CHECKPOINT")
    try:
        if args.latents is not None:
            print(write_latents(args.latents))
            return 0
        summary = export_run(args.run, args.name, args.models_dir, args.per_class, args.data_dir, json.loads(args.meta))
    except (CheckpointError, DataError, ValueError, OSError, KeyError, zipfile.BadZipFile) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
