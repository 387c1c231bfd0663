"""The command line: flags -> :class:`TrainConfig` + :class:`RunOptions`."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import NoReturn

from .config import PRESETS, TrainConfig, preset
from .data import DATASETS
from .options import RunOptions

EPILOG = """\
examples:
  python -m train --preset digits-tiny --out runs/smoke            # seconds, for a smoke test
  python -m train --preset fashion-mnist --max-minutes 75 --out runs/fashion_mnist
  python -m train --preset fashion-mnist --out runs/fashion_mnist --resume
  python -m train --dataset folder:~/photos --image-size 32 --channels 3 --flip --out runs/photos
  torchrun --nproc_per_node=2 -m train --preset digits-tiny --out runs/ddp   # several processes (DDP)

Training stops at whichever budget comes first (--epochs, --max-steps, --max-minutes). The run folder gets
metrics.jsonl, log.txt, samples/*.png, last/best.safetensors (load with nvp_core.load_model) and
last.state.safetensors + last.state.json (for --resume).
"""

# Flags that map one-to-one onto TrainConfig fields (dest -> field); None means "not given".
_FIELDS = (
    "dataset", "image_size", "channels", "num_scales", "num_blocks", "mid_channels", "max_mid_channels",
    "width_growth", "logit_alpha", "bn_momentum", "bn_eps", "final_couplings",
    "batch_size", "lr", "l2", "grad_clip", "warmup_steps", "schedule", "min_lr_ratio", "epochs", "max_steps",
    "max_minutes", "flip", "test_fraction", "validation_images", "eval_limit", "bn_recalibration_batches",
    "log_every", "seed",
    "precision", "compile", "half_checkpoint", "init_from", "ema",
)  # fmt: skip


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # exit 2 with the usage and a clear message, never a traceback
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m train",
        description="Train a Real NVP flow (Dinh et al., ICLR 2017) on images, on CPU, one GPU or several (torchrun).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = p.add_argument_group("data")
    g.add_argument("--preset", choices=list(PRESETS), help="a recipe to start from (flags below override it)")
    g.add_argument("--dataset", help=f"one of: {', '.join(DATASETS)} (default: the preset's, else fashion-mnist)")
    g.add_argument("--data-dir", type=Path, help="folder with the dataset files (Fashion-MNIST IDX files; "
                   "torchvision downloads). Default: /usr/share/datasets/fashion-mnist, "
                   "~/.cache/nvp-explorer/datasets")  # fmt: skip
    g.add_argument("--image-size", type=int, help="resize images to this side (default: the dataset's; folders: 32)")
    g.add_argument("--channels", type=int, choices=(1, 3), help="1 = grayscale, 3 = RGB (default: the dataset's)")
    g.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="random horizontal flips (default: on for cifar10 and celeba, as in the paper)")  # fmt: skip
    g.add_argument("--test-fraction", type=float, help="held-out fraction for digits and folders (default 0.1)")
    g.add_argument("--validation-images", type=int, help="training images held out (a fixed split) "
                   "to choose curve points and checkpoints; 0 = on the test set (fashion-mnist: 5000)")  # fmt: skip

    g = p.add_argument_group("model size")
    g.add_argument("--num-scales", "--scales", type=int, help="scales L of the multi-scale architecture")
    g.add_argument("--num-blocks", "--blocks", type=int, help="residual blocks in each s,t ResNet")
    g.add_argument("--mid-channels", "--features", type=int, help="features of the s,t ResNets at the first scale "
                   "(doubled after each squeeze)")  # fmt: skip
    g.add_argument("--max-mid-channels", type=int, help="cap on the features (keeps deep models small)")
    g.add_argument("--width-growth", type=int, help="factor on the features after each squeeze (paper: 2)")
    g.add_argument("--final-couplings", type=int, help="checkerboard couplings at the last scale (paper: 4)")
    g.add_argument("--logit-alpha", type=float, help="alpha of the logit preprocessing p = alpha + (1-2 alpha) x "
                   "(paper: 0.05)")  # fmt: skip
    g.add_argument("--bn-momentum", type=float, help="momentum of the flow's batch-norm running averages "
                   "(default 0.05)")  # fmt: skip
    g.add_argument("--bn-eps", type=float, help="epsilon added to the variance in the flow's batch norms")

    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, help="passes over the training set (0 = no epoch limit)")
    g.add_argument("--max-steps", type=int, help="optimiser steps (0 = no step limit)")
    g.add_argument("--max-minutes", type=float, help="wall-clock budget; the cosine schedule anneals to it")
    g.add_argument("--batch-size", type=int, help="images per step, over all processes (default 64)")
    g.add_argument("--lr", type=float, help="Adam learning rate (default 1e-3)")
    g.add_argument("--l2", type=float, help="L2 on weight-norm scales and coupling scales (default 5e-5)")
    g.add_argument("--grad-clip", type=float, help="global gradient-norm clipping (default 100)")
    g.add_argument("--warmup-steps", type=int, help="linear learning-rate warm-up steps")
    g.add_argument("--schedule", choices=("cosine", "constant"), help="after the warm-up (default cosine)")
    g.add_argument("--min-lr-ratio", type=float, help="final learning rate of the cosine, as a fraction of --lr")
    g.add_argument("--seed", type=int, help="seed of initialisation, shuffling and dequantisation noise")
    g.add_argument("--init-from", metavar="CHECKPOINT", help="start from the weights of this .safetensors model "
                   "(e.g. models/fashion_mnist.safetensors; same architecture): a warm start, with a fresh "
                   "optimiser, schedule and step count")  # fmt: skip
    g.add_argument("--ema", type=float, help="evaluate, checkpoint and export an exponential moving average of "
                   "the weights with this decay (e.g. 0.999; 0 = off, the default); may be switched on at --resume, "
                   "the average then starts from the resumed weights")  # fmt: skip
    g.add_argument("--precision", choices=("auto", "fp32", "bf16"), help="s,t ResNets in bf16 autocast or float32; "
                   "auto = measured per machine and model, cached (or $NVP_FASTPATH); eval is float32")  # fmt: skip
    g.add_argument("--compile", choices=("auto", "on", "off"), help="torch.compile the s,t ResNets for training "
                   "(a few per cent per step, after minutes of compiling); auto = when at least 60 minutes of the "
                   "budget are left after 20 steps. Evaluation runs eagerly; may change at --resume")  # fmt: skip

    g = p.add_argument_group("run")
    g.add_argument("--out", type=Path, help="run folder (default runs/<preset or dataset>)")
    g.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    g.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="default: cuda if available")
    g.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    g.add_argument("--resnet-bn", choices=("local", "sync"), default="local",
                   help="several processes: the s,t ResNets' batch norms use each process's own batch (local, "
                   "running averages averaged at every save) or SyncBatchNorm (sync, GPUs only, slower); the "
                   "flow's own batch norm is always synced. Default local")  # fmt: skip
    g.add_argument("--eval-limit", type=int, help="evaluate on the first N test images only (0 = all)")
    g.add_argument("--bn-recalibration", dest="bn_recalibration_batches", type=int,
                   help="at the end, recompute batch-norm averages of the best model over N training batches "
                   "and keep them if the test bits/dim improves (0 = off)")  # fmt: skip
    g.add_argument("--half", dest="half_checkpoint", action=argparse.BooleanOptionalAction, default=None,
                   help="store checkpoints in float16 (half the size)")  # fmt: skip
    g.add_argument("--log-every", type=int, help="steps between progress-bar updates")
    g.add_argument("--checkpoint-minutes", type=float, default=10.0, help="minutes between mid-epoch resume points")
    g.add_argument("--eval-minutes", type=float, default=0.0, help="also evaluate on the test set every N minutes "
                   "(a learning-curve point and a best-checkpoint candidate; 0 = after each epoch only)")  # fmt: skip
    g.add_argument("--stop-after", type=int, default=0, help="stop this invocation after N steps (resumable)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    g.add_argument("--list-presets", action="store_true", help="print the presets and exit")
    return p


def parse(argv: list[str] | None = None) -> tuple[TrainConfig, RunOptions, argparse.Namespace]:
    """Parses flags; raises ValueError with a user-facing message for inconsistent values."""
    args = build_parser().parse_args(argv)
    base = preset(args.preset) if args.preset else TrainConfig()
    changes = {name: getattr(args, name) for name in _FIELDS if getattr(args, name) is not None}
    cfg = base.with_updates(**changes)
    if cfg.image_size or not cfg.dataset.startswith("folder:"):
        cfg.flow_config(cfg.channels or 1, cfg.image_size or _native_size(cfg.dataset))  # fail early on misfit
    out = args.out or Path("runs") / (args.preset or cfg.dataset.replace(":", "_").replace("/", "_"))
    command = "python -m train " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    opts = RunOptions(
        out=out,
        data_dir=args.data_dir,
        device=args.device,
        resume=args.resume,
        preset=args.preset,
        command=command,
        progress=not args.no_progress,
        checkpoint_minutes=args.checkpoint_minutes,
        eval_minutes=args.eval_minutes,
        stop_after=args.stop_after,
        resnet_bn=args.resnet_bn,
    )
    if args.eval_minutes < 0 or args.checkpoint_minutes < 0:
        raise ValueError("--eval-minutes and --checkpoint-minutes must be >= 0")
    if cfg.init_from and not Path(cfg.init_from).expanduser().is_file():
        raise ValueError(f"--init-from {cfg.init_from}: no such file")
    if args.stop_after < 0 or (args.threads is not None and args.threads < 1):
        raise ValueError("--stop-after must be >= 0 and --threads >= 1")
    return cfg, opts, args


def _native_size(dataset: str) -> int:
    return {"digits": 8, "cifar10": 32, "celeba": 64}.get(dataset, 28)
