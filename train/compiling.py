"""``--compile on|off``: whether the trainer compiles the s,t ResNets, and doing it safely.

Compiling (``torch.compile`` of the s,t ResNets, :func:`compile_nets`) makes a training step a few per cent faster
on some CPUs and none on others, and costs minutes up front (bench/README.md has both per CPU kind), so it is off
unless asked for. Only training steps run compiled: evaluation, sampling and batch-norm recalibration run eagerly
(:func:`eager`), because their float32, eval-mode and no-grad calls would each compile the nets once more. Where
inductor cannot work (no C++ compiler, no Triton) ``on`` stops with that message before the first step, and a
first compiled step that fails stops the run with a clear message instead of a traceback from inductor.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import torch

from nvp_core import RealNVP
from nvp_core.resnet import ResNet

from .metrics import MetricsWriter
from .step_checks import TrainingError

MODES = ("on", "off")

T = TypeVar("T")


def compile_nets(model: RealNVP, **compile_kwargs: Any) -> RealNVP:
    """``torch.compile`` every s,t ResNet in place (``nn.Module.compile``): the state dict keys stay the same
    (no ``_orig_mod.`` prefix), so checkpoints are unaffected. Compilation happens lazily on the first call of
    each shape; ``compile_kwargs`` go to :func:`torch.compile` (e.g. ``mode="max-autotune-no-cudagraphs"``)."""
    nets = [m for m in model.modules() if isinstance(m, ResNet)]
    # The nets share one forward: each input shape, grad mode and dtype is one more entry in dynamo's cache of
    # that code, and past its limit (8 by default) every further shape would silently run eager.
    cfg = torch._dynamo.config
    name = "recompile_limit" if hasattr(cfg, "recompile_limit") else "cache_size_limit"  # renamed in torch 2.7
    setattr(cfg, name, max(getattr(cfg, name), 4 * len(nets)))
    for m in nets:
        m.compile(**compile_kwargs)
    return model


def uncompile_nets(model: RealNVP) -> RealNVP:
    """Undoes :func:`compile_nets` in place: the s,t ResNets run eagerly again."""
    for m in model.modules():
        if isinstance(m, ResNet):
            m._compiled_call_impl = None  # what nn.Module.compile set; torch has no public inverse
    return model


_COMPILER_CHECKED: dict[str, str | None] = {}


def compiler_problem(device: torch.device | str = "cpu") -> str | None:
    """Why ``torch.compile`` cannot run on ``device`` here (``None``: it can), found by compiling a tiny
    convolution network forward and backward once per process: inductor needs a C++ compiler for CPU code
    and Triton for CUDA, which a machine may lack. Takes a few seconds the first time."""
    key = torch.device(device).type
    if key not in _COMPILER_CHECKED:
        try:
            net = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.ReLU()).to(key)
            x = torch.randn(2, 2, 6, 6, device=key, requires_grad=True)
            torch.compile(net)(x).sum().backward()
            _COMPILER_CHECKED[key] = None
        except Exception as e:  # any failure means "not here": the message says which
            first_line = (str(e).strip().splitlines() or [""])[0]
            _COMPILER_CHECKED[key] = f"{type(e).__name__}: {first_line}"
    return _COMPILER_CHECKED[key]


@contextmanager
def eager() -> Iterator[None]:
    """Compiled nets run eagerly inside the block (evaluation and sampling: see the module docstring)."""
    with torch.compiler.set_stance("force_eager"):
        yield


class Compiler:
    """The compile setting of one invocation and its first compiled step. ``compiled``: the nets are compiled
    now (saved in the resume state as ``RunState.compiled``)."""

    def __init__(self, mode: str, model: RealNVP, device: torch.device, metrics: MetricsWriter) -> None:
        if mode not in MODES:
            raise ValueError(f"--compile must be one of {', '.join(MODES)}, got {mode!r}")
        self.mode, self.model, self.device, self.metrics = mode, model, device, metrics
        self.compiled = self.first_step_pending = False

    def start(self) -> None:
        """Before the first step: compiles for ``on`` (ValueError where torch.compile cannot work here)."""
        if self.mode != "on":
            return
        if (problem := compiler_problem(self.device)) is not None:
            raise ValueError(f"--compile on: torch.compile does not work here ({problem}); use --compile off")
        compile_nets(self.model)
        self.compiled = self.first_step_pending = True
        self.metrics.note("compiling the s,t ResNets (--compile on)")

    def step(self, run_step: Callable[[], T]) -> T:
        """Runs ``run_step`` (one training step); the first compiled one reports its time, or why it failed."""
        if not self.first_step_pending:
            return run_step()
        self.first_step_pending = False
        t = time.time()
        try:
            result = run_step()
        except Exception as e:
            raise TrainingError(
                f"torch.compile failed in the first compiled step ({type(e).__name__}: {e}); "
                "train with --compile off, or --resume the last saved state that way"
            ) from e
        self.metrics.note(f"first compiled step (compiling included): {time.time() - t:.1f} s")
        return result
