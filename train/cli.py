"""The command line: flags -> :class:`TrainConfig` + :class:`RunOptions`."""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any, NoReturn, get_type_hints

from .config import PRESETS, TrainConfig, preset
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
    groups = {name: p.add_argument_group(name) for name in ("data", "model size", "optimisation", "run")}
    g = groups["data"]
    g.add_argument("--preset", choices=list(PRESETS), help="a recipe to start from (flags below override it)")
    g.add_argument("--data-dir", type=Path, help="folder with the dataset files (Fashion-MNIST IDX files; "
                   "torchvision downloads). Default: /usr/share/datasets/fashion-mnist, "
                   "~/.cache/nvp-explorer/datasets")  # fmt: skip
    add_config_flags(groups)
    g = groups["run"]
    g.add_argument("--out", type=Path, help="run folder (default runs/<preset or dataset>)")
    g.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    g.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="default: cuda if available")
    g.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    g.add_argument("--resnet-bn", choices=("local", "sync"), default="local",
                   help="several processes: the s,t ResNets' batch norms use each process's own batch (local, "
                   "running averages averaged at every save) or SyncBatchNorm (sync, GPUs only, slower); the "
                   "flow's own batch norm is always synced. Default local")  # fmt: skip
    g.add_argument("--checkpoint-minutes", type=float, default=10.0, help="minutes between mid-epoch resume points")
    g.add_argument("--eval-minutes", type=float, default=0.0, help="also evaluate on the held-out set every N minutes "
                   "(a learning-curve point and a best-checkpoint candidate; 0 = after each epoch only)")  # fmt: skip
    g.add_argument("--stop-after", type=int, default=0, help="stop this invocation after N steps (resumable)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    g.add_argument("--list-presets", action="store_true", help="print the presets and exit")
    return p


def parse(argv: list[str] | None = None) -> tuple[TrainConfig, RunOptions, argparse.Namespace]:
    """Parses flags; raises ValueError with a user-facing message for inconsistent values."""
    args = build_parser().parse_args(argv)
    base = preset(args.preset) if args.preset else TrainConfig()
    changes = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name) is not None}
    if "sample_temperatures" in changes:
        changes["sample_temperatures"] = tuple(changes["sample_temperatures"])
    cfg = base.with_updates(**changes)
    if cfg.image_size or not cfg.dataset.startswith("folder:"):
        cfg.flow_config(cfg.in_channels or 1, cfg.image_size or _native_size(cfg.dataset))  # fail early on misfit
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


def add_config_flags(groups: dict[str, argparse._ArgumentGroup]) -> None:
    """One flag per :class:`TrainConfig` field, from its type and metadata; ``None`` = not given (the preset's)."""
    hints = get_type_hints(TrainConfig)
    for f in fields(TrainConfig):
        meta, kind = f.metadata, hints[f.name]
        names = [meta.get("flag", "--" + f.name.replace("_", "-")), *meta.get("aliases", ())]
        default = "" if f.default in ("", None) or kind in (bool, bool | None) else f" (default {f.default})"
        kwargs: dict[str, Any] = {"dest": f.name, "default": None, "help": meta["help"] + default}
        if kind in (bool, bool | None):
            kwargs["action"] = argparse.BooleanOptionalAction
        elif kind == tuple[float, ...]:
            kwargs.update(type=float, nargs="+")
        else:
            kwargs["type"] = next(t for t in (int, float, str) if kind in (t, t | None))
        for key in ("choices", "metavar"):
            if key in meta:
                kwargs[key] = meta[key]
        groups[meta.get("group", "model size")].add_argument(*names, **kwargs)


def _native_size(dataset: str) -> int:
    return {"digits": 8, "cifar10": 32, "celeba": 64}.get(dataset, 28)
