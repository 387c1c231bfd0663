"""Non-finite training steps: skipped without waiting for the device, counted, and the run stopped when
they keep coming."""

from __future__ import annotations

import torch

MAX_BAD_STEPS = 25  # consecutive non-finite steps before the run gives up


class TrainingError(RuntimeError):
    """The run cannot go on (e.g. the loss keeps diverging); the message says why and what to try."""


def diverged(what: str) -> TrainingError:
    return TrainingError(
        f"{what}: training diverged. Try a smaller --lr, a smaller --grad-clip, or --precision fp32; resume from "
        "the last checkpoint (--resume)"
    )


class BufferGuard:
    """The floating-point buffers (batch-norm running averages) before a step, to undo what a skipped step
    did to them without asking the host: :meth:`keep_if` selects, on the device, the new or the saved
    values. (Integer counters, ``num_batches_tracked``, are not restored; nothing here reads them.)"""

    def __init__(self, model: torch.nn.Module) -> None:
        self.buffers = [b for b in model.buffers() if b.is_floating_point() and b.numel()]
        self.saved: torch.Tensor | None = None

    def save(self) -> None:
        self.saved = torch.cat([b.detach().reshape(-1) for b in self.buffers])

    @torch.no_grad()
    def keep_if(self, ok: torch.Tensor) -> None:
        assert self.saved is not None
        now = torch.cat([b.reshape(-1) for b in self.buffers])
        chosen = torch.where(ok, now, self.saved).split([b.numel() for b in self.buffers])
        values = [c.view_as(b).to(b.dtype) for c, b in zip(chosen, self.buffers, strict=True)]
        torch._foreach_copy_(self.buffers, values)


class StepTally:
    """The loss sum of the good steps, the counts of good and skipped (non-finite) steps, and the longest run
    of skipped steps since the last :meth:`read`, kept on the device: reading them is the one host sync."""

    def __init__(self, device: torch.device) -> None:
        self.sums = torch.zeros(3, dtype=torch.float64, device=device)
        self.run = torch.zeros((), dtype=torch.int64, device=device)
        self.worst = torch.zeros((), dtype=torch.int64, device=device)

    @torch.no_grad()
    def add(self, loss: torch.Tensor, ok: torch.Tensor) -> None:
        okd = ok.double()
        self.sums += torch.stack([torch.where(ok, loss.detach().double(), 0.0), okd, 1.0 - okd])
        self.run = torch.where(ok, 0, self.run + 1)
        self.worst = torch.maximum(self.worst, self.run)

    def read(self) -> tuple[float, int, int, int]:
        """``(loss sum, good steps, skipped steps, longest run of skipped steps)``, then starts afresh."""
        loss_sum, good, skipped = self.sums.tolist()
        worst = int(self.worst)
        self.sums.zero_()
        self.worst.copy_(self.run)
        return loss_sum, int(good), int(skipped), worst
