"""Keeping the processes of a distributed run in agreement: one fast path, one clock, one set of batch-norm
averages, every rank's noise stream in each resume state, and a check that their parameters agree at the end."""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from nvp_core import RealNVP
from nvp_core.fastpath import FastPath
from nvp_core.fastpath_choice import configure

from .distributed import DistInfo


def agreed_fast_path(model: RealNVP, device: torch.device, di: DistInfo, batch: int, precision: str) -> FastPath:
    """The training fast path, applied to ``model``: measured (or read from the cache) by rank 0 alone and
    taken by every other rank, so that all processes run the same arithmetic. Ranks measuring separately
    would time the candidates while competing with each other and could pick different paths."""
    path = configure(model, device, mode="train", batch=batch, precision=precision).path if di.is_main else None
    if di.enabled:
        name = [path.name if path is not None else ""]
        torch.distributed.broadcast_object_list(name, src=0)
        if path is None:
            path = FastPath.from_name(name[0])
            path.apply(model)
    assert path is not None
    return path


def synced_elapsed(di: DistInfo, seconds: float) -> float:
    """Rank 0's elapsed time on every rank, so that time budgets end every process at the same step."""
    if not di.enabled:
        return seconds
    t = torch.tensor([seconds], dtype=torch.float64)
    torch.distributed.broadcast(t, 0)
    return float(t.item())


def max_diff_across_ranks(tensors: list[torch.Tensor]) -> float:
    """Largest difference between any of ``tensors`` and rank 0's copy (0.0 when the ranks agree)."""
    diff = torch.zeros((), dtype=torch.float64)
    for t in tensors:
        ref = t.detach().clone()
        torch.distributed.broadcast(ref, 0)
        diff = torch.maximum(diff, (t.detach() - ref).abs().max().double().cpu())
    torch.distributed.all_reduce(diff, op=torch.distributed.ReduceOp.MAX)
    return float(diff)


def no_buffer_sync() -> dict[str, Any]:
    """DDP's option to not broadcast rank 0's buffers before every forward (its name changed in torch 2.13)."""
    params = inspect.signature(DistributedDataParallel.__init__).parameters
    return {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}


def average_buffers(model: torch.nn.Module, world: int) -> None:
    """Averages the floating-point buffers over the processes. The s,t ResNets' batch norms see only their
    own process's batches (SyncBatchNorm needs a GPU), so their running averages differ slightly between
    ranks; before evaluating or saving, every rank takes the mean (the flow's own batch norms are synced
    already and stay unchanged)."""
    for buf in model.buffers():
        if buf.is_floating_point():
            torch.distributed.all_reduce(buf)
            buf.div_(world)


def gather_rng_states(di: DistInfo, noise_gen: torch.Generator) -> dict[str, torch.Tensor]:
    """The global generator's state and every rank's noise generator state, so that any rank can resume its
    own stream. A collective under DDP: every rank must call it."""
    states = {"torch": torch.get_rng_state(), f"noise{di.rank}": noise_gen.get_state()}
    if di.enabled:
        gathered: list[Any] = [None] * di.world
        torch.distributed.all_gather_object(gathered, noise_gen.get_state().tolist())
        states.update({f"noise{r}": torch.tensor(s, dtype=torch.uint8) for r, s in enumerate(gathered)})
    return states
