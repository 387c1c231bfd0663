"""The training configuration: one dataclass, and the presets as plain data."""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, fields, replace
from typing import Any

from nvp_core import FlowConfig


def _model_default(name: str) -> Any:
    """The default of a :class:`FlowConfig` field: the model's defaults are written once, in nvp_core."""
    default = FlowConfig.__dataclass_fields__[name].default
    assert default is not MISSING
    return default


#: FlowConfig fields that the training config sets from the dataset, not from a flag of their own.
DATA_SHAPED = {"in_channels": "channels", "image_size": "image_size"}


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on (the run folder and device aside).

    Model: every :class:`nvp_core.FlowConfig` field (``num_scales`` .. ``final_couplings``) under the same
    name, with FlowConfig's defaults; ``channels``/``image_size`` of ``0`` mean "the dataset's own".
    Budgets: training stops at whichever of ``epochs``, ``max_steps`` or ``max_minutes`` comes first
    (``0`` = no limit of that kind; at least one must be set).
    """

    dataset: str = "fashion-mnist"
    image_size: int = 0
    channels: int = 0
    # model: FlowConfig's fields and defaults (see model_fields(); a test keeps the two in step)
    num_scales: int = _model_default("num_scales")
    num_blocks: int = _model_default("num_blocks")
    mid_channels: int = _model_default("mid_channels")
    max_mid_channels: int | None = _model_default("max_mid_channels")
    width_growth: int = _model_default("width_growth")
    logit_alpha: float = _model_default("logit_alpha")
    bn_momentum: float = _model_default("bn_momentum")
    bn_eps: float = _model_default("bn_eps")
    final_couplings: int = _model_default("final_couplings")
    # optimisation (paper, sec. 4.1)
    batch_size: int = 64
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    l2: float = 5e-5
    grad_clip: float = 100.0
    warmup_steps: int = 200
    schedule: str = "cosine"
    min_lr_ratio: float = 0.01
    # budgets
    epochs: int = 10
    max_steps: int = 0
    max_minutes: float = 0.0
    # data
    flip: bool | None = None
    test_fraction: float = 0.1
    validation_images: int = 0  # training images held out to choose checkpoints; 0: they are chosen on the test set
    # evaluation and output
    eval_limit: int = 0
    sample_temperatures: tuple[float, ...] = (1.0, 0.85, 0.7, 0.5)
    samples_per_temperature: int = 10
    bn_recalibration_batches: int = 0
    log_every: int = 50
    seed: int = 0
    precision: str = "auto"
    compile: str = "auto"  # torch.compile of the s,t ResNets: auto (long runs), on, off (train.compiling)
    half_checkpoint: bool = False
    # Not in the paper, both off by default: start from a saved model's weights (a warm start: optimiser,
    # schedule and step begin afresh), and evaluate/export an exponential moving average of the weights.
    init_from: str = ""
    ema: float = 0.0

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
        need(self.compile in ("auto", "on", "off"), f"--compile must be auto, on or off, got {self.compile}")
        need(self.eval_limit >= 0 and self.bn_recalibration_batches >= 0, "counts must be >= 0")
        need(self.log_every >= 1, f"--log-every must be >= 1, got {self.log_every}")
        need(len(self.sample_temperatures) >= 1, "need at least one sample temperature")
        need(self.samples_per_temperature >= 1, "need at least one sample per temperature")
        need(0 <= self.ema < 1, f"--ema must be in [0, 1) (0 = off; e.g. 0.999), got {self.ema}")

    def flow_config(self, channels: int, image_size: int) -> FlowConfig:
        """The model for images ``[B, channels, image_size, image_size]`` (raises ValueError if it does not fit)."""
        model = {name: getattr(self, name) for name in model_fields()}
        try:
            return FlowConfig(in_channels=channels, image_size=image_size, **model)
        except ValueError as e:  # name the flag, not the dataclass
            raise ValueError(str(e).replace("FlowConfig: ", "model: ")) from None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["sample_temperatures"] = list(self.sample_temperatures)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown training option(s) {unknown}")
        d = dict(d)
        if "sample_temperatures" in d:
            d["sample_temperatures"] = tuple(float(t) for t in d["sample_temperatures"])
        return cls(**d)

    def with_updates(self, **changes: Any) -> TrainConfig:
        return replace(self, **changes)


def model_fields() -> list[str]:
    """The FlowConfig fields a training run sets by flag (all but the data-shaped ones)."""
    return [f.name for f in fields(FlowConfig) if f.name not in DATA_SHAPED]


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
    # The shipped Fashion-MNIST model (models/fashion_mnist.safetensors, models/README.md): 5.3M parameters, s,t
    # ResNets of 2 blocks, 32 -> 64 -> 128 features. Chosen over the former 0.7M one (1 block, 16 -> 64) because,
    # on an AVX-512-BF16 CPU where bf16 doubles its training speed, it reached lower test bits/dim in equal
    # wall-clock (3.153 vs 3.236 after 25-30 minutes). The card's run used --epochs 0 --max-minutes 141 (the
    # cosine schedule anneals to the wall-clock budget); 15 epochs is about as much training.
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


def preset(name: str) -> TrainConfig:
    """The :class:`TrainConfig` of a preset (ValueError naming the known presets otherwise)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
    return TrainConfig(**PRESETS[name])
