"""The model's configuration: a dataclass that round-trips through JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, TypeVar


def setting(default: Any, help: str, **cli: Any) -> Any:
    """A dataclass field with its one-line ``help`` in the metadata, from which the trainer makes its flag.

    ``cli`` may add ``group``, ``flag`` (the name instead of ``--field-name``), ``aliases`` and ``choices``."""
    return field(default=default, metadata={"help": help, **cli})


_C = TypeVar("_C", bound="FlowConfig")


@dataclass(frozen=True)
class FlowConfig:
    """Everything needed to rebuild a :class:`~nvp_core.RealNVP`; each field's ``help`` says what it is.

    Latent levels are numbered 1 (finest) .. L = ``num_scales`` (coarsest).
    """

    in_channels: int = setting(1, "image channels C (1 = grayscale, 3 = RGB)")
    image_size: int = setting(28, "height and width H = W of the images; divisible by 2^(scales-1)")
    num_scales: int = setting(3, "scales L of the multi-scale architecture", aliases=("--scales",))
    mid_channels: int = setting(64, "features of the s,t ResNets at the first scale (times width_growth after "
                                "each squeeze)", aliases=("--features",))  # fmt: skip
    num_blocks: int = setting(4, "residual blocks in each s,t ResNet", aliases=("--blocks",))
    width_growth: int = setting(2, "factor on the features after each squeeze (paper: 2)")
    max_mid_channels: int | None = setting(None, "cap on the features, to keep deep models small (none: no cap)")
    logit_alpha: float = setting(0.05, "alpha of the logit preprocessing p = alpha + (1-2 alpha) x (paper: 0.05)")
    bn_momentum: float = setting(0.05, "momentum of the running averages of the flow's batch-norm bijectors")
    bn_eps: float = setting(1e-4, "epsilon added to the variance in the flow's batch-norm bijectors")
    final_couplings: int = setting(4, "checkerboard couplings at the final scale (paper: 4)")

    def __post_init__(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(f"FlowConfig: {msg}")

        need(self.in_channels >= 1, f"in_channels must be >= 1, got {self.in_channels}")
        need(self.num_scales >= 1, f"num_scales must be >= 1, got {self.num_scales}")
        need(self.mid_channels >= 1, f"mid_channels must be >= 1, got {self.mid_channels}")
        need(self.num_blocks >= 1, f"num_blocks must be >= 1, got {self.num_blocks}")
        need(self.width_growth >= 1, f"width_growth must be >= 1, got {self.width_growth}")
        need(0.0 <= self.logit_alpha < 0.5, f"logit_alpha must be in [0, 0.5), got {self.logit_alpha}")
        need(0.0 < self.bn_momentum <= 1.0, f"bn_momentum must be in (0, 1], got {self.bn_momentum}")
        need(self.bn_eps > 0.0, f"bn_eps must be > 0, got {self.bn_eps}")
        need(self.final_couplings >= 1, f"final_couplings must be >= 1, got {self.final_couplings}")
        factor = 2 ** (self.num_scales - 1)
        need(
            self.image_size >= 2 * factor and self.image_size % factor == 0,
            f"image_size {self.image_size} does not fit {self.num_scales} scales: height and width must be "
            f"divisible by 2^(scales-1) = {factor} and at least {2 * factor} "
            f"(nearest sizes that fit: {_nearest_fits(self.image_size, factor)})",
        )

    def width(self, squeezes: int) -> int:
        """Feature width of the s,t networks after ``squeezes`` squeeze operations."""
        w = self.mid_channels * self.width_growth**squeezes
        return w if self.max_mid_channels is None else min(w, self.max_mid_channels)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls: type[_C], d: dict[str, Any]) -> _C:
        """Build from a dict, refusing unknown keys with a clear message."""
        if not isinstance(d, dict):
            raise ValueError(f"FlowConfig: expected a JSON object, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"FlowConfig: unknown field(s) {unknown}; known fields are {sorted(known)}")
        return cls(**d)

    @classmethod
    def from_json(cls: type[_C], s: str) -> _C:
        return cls.from_dict(json.loads(s))


def _nearest_fits(size: int, factor: int) -> str:
    lo = max(2 * factor, (size // factor) * factor)
    hi = max(2 * factor, -(-size // factor) * factor)
    return f"{lo}" if lo == hi else f"{lo} or {hi}"
