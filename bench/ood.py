"""The likelihood paradox on a shipped model: mean bits/dim of its test images and of each outsider set, and the
AUROC of detecting the outsiders by bits/dim and by the complexity-corrected score (``nvp_core.ood``), as the
app's Out-of-distribution page shows them.

    python -m bench.ood                                   # models/fashion_mnist.safetensors, 300 images per set
    python -m bench.ood --model models/digits.safetensors --n 100
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import machine_info, table, write_results
from nvp_core import CheckpointError, load_model
from nvp_core.ood import auroc, corrected, score_images
from nvp_core.ood_sets import outsider_sets

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / "models" / "fashion_mnist.safetensors"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.ood", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="checkpoint with a <stem>.gallery.npz beside it")
    p.add_argument("--n", type=int, default=300, help="images per set (default 300)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    return p.parse_args(argv)


def rows_for(model_path: Path, n: int) -> list[dict[str, object]]:
    """One row per set: name, images, mean bits/dim, mean complexity and the two AUROCs (none for the test set)."""
    model, meta = load_model(model_path)
    gallery = model_path.with_name(model_path.name.removesuffix(".safetensors") + ".gallery.npz")
    with np.load(gallery, allow_pickle=False) as f:
        own = np.asarray(f["images"])
    own = own[:, None] if own.ndim == 3 else own
    sets, notes = outsider_sets(own, str(meta.get("dataset") or model_path.stem), n)
    for note in notes:
        print(f"skipped: {note}")
    ib, ic = score_images(model, own[:n])
    rows: list[dict[str, object]] = [_row("test images", ib, ic, None)]
    for s in sets:
        b, c = score_images(model, s.images)
        rows.append(_row(s.name, b, c, (auroc(ib, b), auroc(corrected(ib, ic), corrected(b, c)))))
    return rows


def _row(name: str, bpd: np.ndarray, cx: np.ndarray, aurocs: tuple[float, float] | None) -> dict[str, object]:
    return {
        "set": name,
        "n": len(bpd),
        "mean bits/dim": f"{np.mean(bpd):.2f}",
        "mean complexity": f"{np.mean(cx):.2f}",
        "AUROC bpd": "" if aurocs is None else f"{aurocs[0]:.2f}",
        "AUROC corrected": "" if aurocs is None else f"{aurocs[1]:.2f}",
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    start = time.perf_counter()
    try:
        rows = rows_for(args.model, max(1, args.n))
    except (CheckpointError, OSError, KeyError, ValueError) as e:
        print(f"error: {args.model}: {e}", file=sys.stderr)
        return 2
    print(table(rows, list(rows[0])))
    seconds = time.perf_counter() - start
    path = write_results("ood", {"model": str(args.model), "n": args.n, "seconds": seconds, "rows": rows,
                                 "machine": machine_info()})  # fmt: skip
    print(f"{seconds:.0f} s; written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
