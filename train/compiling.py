"""Whether the trainer compiles the s,t ResNets (``--compile auto|on|off``), and doing it safely.

Compiling (``torch.compile`` of the s,t ResNets, :func:`compile_nets`) makes a training step faster but
costs its time up front, in the first compiled steps (bench/README.md has the measured gain and cost). At a few per
cent a run earns the compile time back after about an hour, so ``auto`` first runs ``PROBE_STEPS`` steps
eagerly, estimates what is left of the budget at that speed, and compiles when at least ``AUTO_MIN_MINUTES``
are left. ``on`` compiles from the first step, ``off`` never. A resumed run that had compiled compiles again
(unless ``off``): the continuation runs on the run's own path.

Only training steps run compiled: evaluation, sampling and batch-norm recalibration run eagerly
(:func:`eager`), because their float32, eval-mode and no-grad calls would each compile the nets once more.
Where inductor cannot work (no C++ compiler, no Triton) ``auto`` says so in the log and trains eagerly, and
``on`` stops with that message before the first step. Should the first compiled step fail anyway, ``auto``
restores the batch-norm averages that step touched and repeats it eagerly, so the run is the eager run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import torch

from nvp_core import RealNVP
from nvp_core.resnet import ResNet

from .metrics import MetricsWriter
from .step_checks import TrainingError

MODES = ("auto", "on", "off")
#: ``auto`` compiles when at least this much of the budget is left after the probe steps (at eager speed).
AUTO_MIN_MINUTES = 60.0
#: ``auto`` decides after this many steps of an invocation (the first one, with its warm-up, is not timed).
PROBE_STEPS = 20

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


def remaining_seconds(step: int, elapsed_s: float, total_steps: int, max_seconds: float, step_s: float) -> float:
    """Seconds of training left after ``step`` steps and ``elapsed_s`` seconds, at ``step_s`` seconds a step:
    whichever budget (steps, time; 0 = unset) ends first."""
    left = math.inf
    if total_steps:
        left = max(total_steps - step, 0) * step_s
    if max_seconds:
        left = min(left, max(max_seconds - elapsed_s, 0.0))
    return left


@contextmanager
def eager() -> Iterator[None]:
    """Compiled nets run eagerly inside the block (evaluation and sampling: see the module docstring)."""
    with torch.compiler.set_stance("force_eager"):
        yield


class Compiler:
    """The compile decision of one invocation and its first compiled step. ``compiled``: the nets are compiled
    now (saved in the resume state as ``RunState.compiled``)."""

    def __init__(self, mode: str, model: RealNVP, device: torch.device, metrics: MetricsWriter) -> None:
        if mode not in MODES:
            raise ValueError(f"--compile must be one of {', '.join(MODES)}, got {mode!r}")
        self.mode, self.model, self.device, self.metrics = mode, model, device, metrics
        self.compiled = False
        self.decided = mode != "auto"
        self.first_step_pending = False
        self._probe_start: tuple[int, float] | None = None

    def start(self, resumed_compiled: bool) -> None:
        """Before the first step: compile for ``on`` and for a resumed run that had compiled (not ``off``)."""
        if self.mode == "on" or (resumed_compiled and self.mode == "auto"):
            why = "--compile on" if self.mode == "on" else "the resumed run had compiled"
            self._compile(why, required=self.mode == "on")
            self.decided = True

    def after_step(self, first_step: int, step: int, now_s: float, total_steps: int, max_seconds: float) -> None:
        """``auto``, after each of the invocation's steps (``step``: the steps done; ``now_s``: the run's clock
        when the latest one began, the same on every process; the budgets as in :func:`remaining_seconds`):
        times the steps after the first one (which warms up), and at ``PROBE_STEPS`` compiles when at least
        ``AUTO_MIN_MINUTES`` minutes are left at that speed. Every process decides alike."""
        if self.decided:
            return
        if step == first_step + 2:  # now_s: when the second step began, i.e. the first one ended
            self._probe_start = (step, now_s)
            return
        if step < first_step + PROBE_STEPS or self._probe_start is None:
            return
        self.decided = True
        step_s = (now_s - self._probe_start[1]) / max(step - self._probe_start[0], 1)
        left_min = remaining_seconds(step, now_s, total_steps, max_seconds, step_s) / 60.0
        if left_min >= AUTO_MIN_MINUTES:
            self._compile(f"--compile auto: ~{left_min:.0f} minutes left at {step_s:.3g} s a step", required=False)
        else:
            self.metrics.note(
                f"--compile auto: not compiling, ~{left_min:.0f} minutes left at {step_s:.3g} s a step "
                f"(< {AUTO_MIN_MINUTES:.0f}: the compile time would not be earned back)"
            )

    def step(self, run_step: Callable[[], T]) -> T:
        """Runs ``run_step`` (one training step); the first compiled one is guarded (see the module docstring)."""
        if not self.first_step_pending:
            return run_step()
        self.first_step_pending = False
        saved = [b.detach().clone() for b in self.model.buffers()]
        t = time.time()
        try:
            result = run_step()
        except Exception as e:
            if self.mode == "on":
                raise TrainingError(
                    f"torch.compile failed in the first compiled step ({type(e).__name__}: {e}); "
                    "train with --compile off (or auto), or --resume the last saved state that way"
                ) from e
            with torch.no_grad():
                for b, s in zip(self.model.buffers(), saved, strict=True):
                    b.copy_(s)
            uncompile_nets(self.model)
            torch._dynamo.reset()
            self.compiled = False
            self.metrics.note(f"--compile auto: the first compiled step failed ({type(e).__name__}); training eagerly")
            return run_step()
        self.metrics.note(f"first compiled step (compiling included): {time.time() - t:.1f} s")
        return result

    def _compile(self, why: str, required: bool) -> None:
        problem = compiler_problem(self.device)
        if problem is not None:
            if required:
                raise ValueError(f"--compile on: torch.compile does not work here ({problem}); use --compile off")
            self.metrics.note(f"not compiling ({why}): torch.compile does not work here ({problem})")
            return
        compile_nets(self.model)
        self.compiled = self.first_step_pending = True
        self.metrics.note(f"compiling the s,t ResNets ({why})")
