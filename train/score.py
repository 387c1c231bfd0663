"""The model card's figure in one command: test bits/dim of a checkpoint on its dataset's whole test split.

    python -m train.score models/fashion_mnist.safetensors
    python -m train.score runs/fm/best.safetensors --limit 1000 --threads 2

Same convention as training and the model card (``train.evaluate.eval_bits_per_dim``): uniform dequantisation
with fixed seeds (batch ``i`` of 500 images: seed ``1000 + i``), eval mode, float32.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from nvp_core import CheckpointError, load_model

from .data import DataError, load_dataset
from .evaluate import eval_bits_per_dim


def score(checkpoint: Path, data_dir: Path | None = None, limit: int = 0) -> dict[str, float | int | str]:
    """``{"test_bpd", "images", "dataset", "seconds"}`` for ``checkpoint`` on its dataset's test split."""
    model, meta = load_model(checkpoint)
    if "dataset" not in meta:
        raise ValueError(f"{checkpoint}: no dataset in the checkpoint's metadata; it was not written by the trainer")
    recipe = meta.get("train_config", {})
    splits = load_dataset(
        meta["dataset"], data_dir, meta["image_size"], meta["channels"], False, recipe.get("test_fraction", 0.1)
    )
    images = splits.test[:limit] if limit else splits.test
    t0 = time.perf_counter()
    bpd = eval_bits_per_dim(model, images)
    return {"test_bpd": bpd, "images": len(images), "dataset": splits.name, "seconds": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.score", description=__doc__.split("\n")[0])
    p.add_argument("checkpoint", type=Path, help="a .safetensors checkpoint written by the trainer or the export")
    p.add_argument("--data-dir", type=Path, help="dataset folder, as for training")
    p.add_argument("--limit", type=int, default=0, help="the first N test images only (0 = all)")
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    args = p.parse_args(argv)
    if args.limit < 0 or (args.threads is not None and args.threads < 1):
        p.error("--limit must be >= 0 and --threads >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        result = score(args.checkpoint, args.data_dir, args.limit)
    except (CheckpointError, DataError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.checkpoint}: {result['test_bpd']:.4f} bits/dim on {result['images']} test images of "
          f"{result['dataset']} ({result['seconds']:.1f} s)")  # fmt: skip
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
