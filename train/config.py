"""The training configuration: one dataclass, and the presets as plain data."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, TypeVar

from nvp_core import FlowConfig
from nvp_core.config import setting

from .compiling import MODES
from .data import DATASETS

#: Keys an older trainer wrote under another name (a run folder or checkpoint made before the rename).
_RENAMED = {"channels": "in_channels"}

_T = TypeVar("_T", bound="TrainConfig")


@dataclass(frozen=True)
class TrainConfig(FlowConfig):
    """Everything a training run depends on (the run folder and device aside); each field's ``help`` says what
    it is, and ``python -m train`` has one flag per field (train.cli generates them).

    The model's fields are :class:`nvp_core.FlowConfig`'s own, inherited with their defaults; ``in_channels`` and
    ``image_size`` of ``0`` mean "the dataset's own". Training stops at whichever budget (``epochs``,
    ``max_steps``, ``max_minutes``; ``0`` = no limit of that kind) comes first.
    """

    in_channels: int = setting(0, "1 = grayscale, 3 = RGB (0: the dataset's)", group="data", flag="--channels",
                               choices=(0, 1, 3))  # fmt: skip
    image_size: int = setting(0, "resize images to this side (0: the dataset's; folders: 32)", group="data")
    dataset: str = setting("fashion-mnist", f"one of: {', '.join(DATASETS)}", group="data")
    flip: bool | None = setting(None, "random horizontal flips (default: on for cifar10 and celeba, as in the "
                                "paper)", group="data")  # fmt: skip
    test_fraction: float = setting(0.1, "held-out fraction for digits and folders", group="data")
    validation_images: int = setting(0, "training images held out (a fixed split) to choose curve points and "
                                     "checkpoints; 0 = on the test set", group="data")  # fmt: skip
    # optimisation (paper, sec. 4.1)
    batch_size: int = setting(64, "images per step, over all processes", group="optimisation")
    lr: float = setting(1e-3, "Adam learning rate", group="optimisation")
    beta1: float = setting(0.9, "Adam beta1", group="optimisation")
    beta2: float = setting(0.999, "Adam beta2", group="optimisation")
    l2: float = setting(5e-5, "L2 on weight-norm scales and coupling scales", group="optimisation")
    grad_clip: float = setting(100.0, "global gradient-norm clipping", group="optimisation")
    warmup_steps: int = setting(200, "linear learning-rate warm-up steps", group="optimisation")
    schedule: str = setting("cosine", "after the warm-up", group="optimisation", choices=("cosine", "constant"))
    min_lr_ratio: float = setting(0.01, "final learning rate of the cosine, as a fraction of --lr",
                                  group="optimisation")  # fmt: skip
    epochs: int = setting(10, "passes over the training set (0 = no epoch limit)", group="optimisation")
    max_steps: int = setting(0, "optimiser steps (0 = no step limit)", group="optimisation")
    max_minutes: float = setting(0.0, "wall-clock budget; the cosine schedule anneals to it",
                                 group="optimisation")  # fmt: skip
    seed: int = setting(0, "seed of initialisation, shuffling and dequantisation noise", group="optimisation")
    precision: str = setting("auto", "s,t ResNets in bf16 autocast or float32; auto = measured per machine and "
                             "model, cached (or $NVP_FASTPATH); eval is float32", group="optimisation",
                             choices=("auto", "fp32", "bf16"))  # fmt: skip
    compile: str = setting("off", "torch.compile the s,t ResNets for training steps (evaluation runs eagerly); it "
                           "pays on few CPUs (bench/README.md); may change at --resume", group="optimisation",
                           choices=MODES)  # fmt: skip
    # Not in the paper, both off by default.
    init_from: str = setting("", "start from the weights of this .safetensors model (same architecture): a warm "
                             "start, with a fresh optimiser, schedule and step count", group="optimisation",
                             metavar="CHECKPOINT")  # fmt: skip
    ema: float = setting(0.0, "evaluate, checkpoint and export an exponential moving average of the weights "
                         "with this decay (e.g. 0.999; 0 = off); may be switched on at --resume, the average then "
                         "starts from the resumed weights", group="optimisation")  # fmt: skip
    # evaluation and output
    eval_limit: int = setting(0, "evaluate on the first N held-out images only (0 = all)", group="run")
    sample_temperatures: tuple[float, ...] = setting((1.0, 0.85, 0.7, 0.5), "temperatures of the samples saved "
                                                     "after each evaluation", group="run")  # fmt: skip
    samples_per_temperature: int = setting(10, "samples saved per temperature", group="run")
    bn_recalibration_batches: int = setting(0, "at the end, recompute batch-norm averages of the best model over "
                                            "N training batches and keep them if the held-out bits/dim improves "
                                            "(0 = off)", group="run", flag="--bn-recalibration")  # fmt: skip
    log_every: int = setting(50, "steps between progress updates (and reads of the step tally)", group="run")
    half_checkpoint: bool = setting(False, "store checkpoints in float16 (half the size)", group="run",
                                    flag="--half")  # fmt: skip

    def __post_init__(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(msg)

        need(self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}")
        need(self.lr > 0, f"--lr must be > 0, got {self.lr}")
        need(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "Adam betas must be in [0, 1)")
        need(self.l2 >= 0, f"--l2 must be >= 0, got {self.l2}")
        need(self.grad_clip > 0, f"--grad-clip must be > 0, got {self.grad_clip}")
        need(self.warmup_steps >= 0, f"--warmup-steps must be >= 0, got {self.warmup_steps}")
        need(self.schedule in ("cosine", "constant"), f"--schedule must be cosine or constant, got {self.schedule}")
        need(0 <= self.min_lr_ratio <= 1, f"--min-lr-ratio must be in [0, 1], got {self.min_lr_ratio}")
        need(min(self.epochs, self.max_steps, self.max_minutes) >= 0, "budgets must be >= 0")
        need(
            self.epochs > 0 or self.max_steps > 0 or self.max_minutes > 0,
            "no training budget: set --epochs, --max-steps or --max-minutes",
        )
        need(0 < self.test_fraction < 1, f"--test-fraction must be in (0, 1), got {self.test_fraction}")
        need(self.validation_images >= 0, f"--validation-images must be >= 0, got {self.validation_images}")
        need(
            self.precision in ("auto", "fp32", "bf16"), f"--precision must be auto, fp32 or bf16, got {self.precision}"
        )
        need(self.compile in MODES, f"--compile must be on or off, got {self.compile}")
        need(self.eval_limit >= 0 and self.bn_recalibration_batches >= 0, "counts must be >= 0")
        need(self.log_every >= 1, f"--log-every must be >= 1, got {self.log_every}")
        need(len(self.sample_temperatures) >= 1, "need at least one sample temperature")
        need(self.samples_per_temperature >= 1, "need at least one sample per temperature")
        need(0 <= self.ema < 1, f"--ema must be in [0, 1) (0 = off; e.g. 0.999), got {self.ema}")
        need(self.in_channels >= 0 and self.image_size >= 0, "--channels and --image-size must be >= 0")
        self.flow_config(self.in_channels or 1, self.image_size or 2**self.num_scales)  # the model's own checks

    def flow_config(self, channels: int, image_size: int) -> FlowConfig:
        """The model for images ``[B, channels, image_size, image_size]`` (raises ValueError if it does not fit)."""
        model = {f.name: getattr(self, f.name) for f in fields(FlowConfig)}
        model.update(in_channels=channels, image_size=image_size)
        try:
            return FlowConfig(**model)
        except ValueError as e:  # name the flag, not the dataclass
            raise ValueError(str(e).replace("FlowConfig: ", "model: ")) from None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["sample_temperatures"] = list(self.sample_temperatures)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls: type[_T], d: dict[str, Any]) -> _T:
        """Build from a dict, refusing unknown keys; keys of older trainers (see ``_RENAMED``) are upgraded."""
        d = upgrade(d)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown training option(s) {unknown}")
        if "sample_temperatures" in d:
            d["sample_temperatures"] = tuple(float(t) for t in d["sample_temperatures"])
        return cls(**d)

    def with_updates(self, **changes: Any) -> TrainConfig:
        return replace(self, **changes)


# Presets as data: a name -> the fields it sets. Flags given on the command line override them.
PRESETS: dict[str, dict[str, Any]] = {
    # Paper, sec. 4.1 and appendix: CIFAR-10 uses 8 residual blocks of 64 features and 2 scales.
    "paper-cifar10": {"dataset": "cifar10", "num_scales": 2, "num_blocks": 8, "mid_channels": 64, "epochs": 100},
    # Downsampled ImageNet 32x32: 4 residual blocks, 32 features.
    "paper-imagenet32": {"image_size": 32, "num_scales": 3, "num_blocks": 4, "mid_channels": 32, "epochs": 20},
    # CelebA at 64x64 (the paper's crop and resize): 2 residual blocks, 32 features.
    "paper-celeba": {
        "dataset": "celeba",
        "image_size": 64,
        "num_scales": 4,
        "num_blocks": 2,
        "mid_channels": 32,
        "epochs": 20,
    },
    # The shipped Fashion-MNIST model (models/README.md): s,t ResNets of 2 blocks, 32 -> 64 -> 128 features.
    "fashion-mnist": {
        "dataset": "fashion-mnist",
        "num_scales": 3,
        "num_blocks": 2,
        "mid_channels": 32,
        "max_mid_channels": 128,
        "batch_size": 64,
        "epochs": 15,
        "bn_recalibration_batches": 20,
        "validation_images": 5000,
    },
    # The shipped 8x8 digits model (models/digits.safetensors): a few minutes on a CPU.
    "digits": {
        "dataset": "digits",
        "num_scales": 2,
        "num_blocks": 1,
        "mid_channels": 16,
        "epochs": 40,
        "warmup_steps": 100,
        "test_fraction": 0.2,
        "log_every": 10,
    },
    # Trains in seconds: for tests and smoke runs.
    "digits-tiny": {
        "dataset": "digits",
        "num_scales": 2,
        "num_blocks": 1,
        "mid_channels": 8,
        "epochs": 1,
        "batch_size": 32,
        "warmup_steps": 5,
        "samples_per_temperature": 4,
        "log_every": 5,
        "precision": "fp32",
    },
}


def upgrade(d: dict[str, Any]) -> dict[str, Any]:
    """A saved training config under today's field names (run folders and checkpoints of older trainers)."""
    d = {_RENAMED.get(k, k): v for k, v in d.items()}
    if d.get("compile") == "auto":  # an older trainer's default, which compiled long runs only; now off
        d["compile"] = "off"
    return d


def preset(name: str) -> TrainConfig:
    """The :class:`TrainConfig` of a preset (ValueError naming the known presets otherwise)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
    return TrainConfig(**PRESETS[name])
