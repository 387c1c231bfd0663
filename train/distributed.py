"""Process-group set-up for ``torchrun``; a no-op for a single process.

On GPUs the process group has a backend per device, ``cpu:gloo,cuda:nccl``: model tensors (gradients, the flow's
batch-norm statistics, parameter checks) go through NCCL, and the small host-side values every rank must agree
on (rank 0's clock, evaluation totals, RNG states) through gloo, so NCCL never receives a CPU tensor and reading
them never waits for the GPU. On CPU it is gloo alone.

Errors: an error on one rank must end the job within seconds, with its message printed once. The error path
never enters a collective (no barrier in :func:`shutdown`); :func:`claim_report` lets the first failing rank
print and the others stay silent; the process group has a timeout (``$NVP_DIST_TIMEOUT_S``, default 600 s) as
the last resort for a rank stuck in a collective whose peer died (``torchrun`` also stops the other ranks as
soon as one exits with an error).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")
TIMEOUT_ENV = "NVP_DIST_TIMEOUT_S"
#: ``1``: join a process group even as the only process (``torchrun --nproc_per_node=1``), so that every
#: collective of the multi-process path runs; the GPU check uses it to try NCCL on a machine with one GPU.
FORCE_ENV = "NVP_DIST_FORCE"
DEFAULT_TIMEOUT_S = 600.0
_REPORT_KEY = "nvp_train/error_reported"


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    forced: bool = False  # a process group of one (FORCE_ENV)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1 or self.forced


def backend_for(device_kind: str) -> str:
    """The process group's backend: one per device on GPUs (CPU tensors never reach NCCL), gloo on CPU."""
    return "cpu:gloo,cuda:nccl" if device_kind == "cuda" else "gloo"


def timeout_seconds() -> float:
    """The process group's timeout: ``$NVP_DIST_TIMEOUT_S`` seconds, default 600."""
    text = os.environ.get(TIMEOUT_ENV, "")
    try:
        value = float(text) if text else DEFAULT_TIMEOUT_S
    except ValueError:
        raise ValueError(f"${TIMEOUT_ENV} must be a number of seconds, got {text!r}") from None
    if not value > 0:
        raise ValueError(f"${TIMEOUT_ENV} must be > 0, got {text!r}")
    return value


def init_distributed(device_kind: str) -> DistInfo:
    """Joins the process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1). On CUDA each process first
    takes its local GPU (``LOCAL_RANK``), so that NCCL and every later CUDA call use it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    forced = world == 1 and os.environ.get(FORCE_ENV) == "1" and "MASTER_ADDR" in os.environ
    if world <= 1 and not forced:
        return DistInfo()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device_kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if local_rank >= count:
            raise ValueError(
                f"--device cuda: process {rank} needs GPU {local_rank} (LOCAL_RANK) but {count} GPU(s) are visible; "
                "start at most that many processes per machine (torchrun --nproc_per_node), or use --device cpu"
            )
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend_for(device_kind), timeout=timedelta(seconds=timeout_seconds()))
    return DistInfo(rank, world, local_rank, forced)


def shutdown(info: DistInfo, ok: bool = True) -> None:
    """After a successful run: wait for every rank, then leave the process group. After an error: nothing,
    no collective (the other ranks may be stuck in another one); the process ends right after its report."""
    if ok and info.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def active() -> bool:
    """Whether this process is one of several in an initialised process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def claim_report() -> bool:
    """Whether this process should print its error: the first rank of the job to ask gets ``True``, the ranks
    that fail after it (usually because it stopped) get ``False``, so the message is printed once. Counted
    in the process group's key-value store; a single process, or a store that cannot be reached, gets ``True``."""
    if not active():
        return True
    try:
        store = dist.distributed_c10d._get_default_store()
        store.set_timeout(timedelta(seconds=5))
        return int(store.add(_REPORT_KEY, 1)) == 1
    except Exception:  # the store died with its host: better twice than never
        return True


def linger_for_reports(seconds: float = 3.0) -> None:
    """Called by a failing process before it ends. Where rank 0 hosts the key-value store (a job started without
    torchrun's agent), its exit closes the store: it waits, up to ``seconds``, until every rank has claimed
    (ranks that fail with the same error at about the same time), so that they learn the message was printed."""
    if not active() or dist.get_rank() != 0 or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        return
    deadline = time.monotonic() + seconds
    try:
        store = dist.distributed_c10d._get_default_store()
        while time.monotonic() < deadline and int(store.add(_REPORT_KEY, 0)) < dist.get_world_size():
            time.sleep(0.05)
    except Exception:  # nothing to wait for
        return


def peer_failed(error: BaseException) -> bool:
    """Whether ``error`` is this process's view of another process's failure (its connection closed in the
    middle of a collective), which that process reports itself."""
    if not active():
        return False
    text = str(error)
    signs = ("closed by peer", "reset by peer", "remote worker", "Broken pipe", "Connection closed")
    return isinstance(error, dist.DistError) or any(s in text for s in signs)


def rank_prefix() -> str:
    """``"rank 1: "`` in a job of several processes, else empty."""
    return f"rank {dist.get_rank()}: " if active() else ""


def local_main_first(info: DistInfo, load: Callable[[], T]) -> T:
    """``load()`` on each machine's local rank 0 first (it downloads what is missing), then on the other ranks,
    which find the files in place: several processes never download into one folder at once. An error on a
    downloading rank is raised on every rank, with its message."""
    if not info.enabled:
        return load()
    result: T | None = None
    error: str | None = None
    if info.local_rank == 0:
        try:
            result = load()
        except ValueError as e:  # DataError and other bad input: every rank raises the same message
            error = str(e)
    errors: list[str | None] = [None] * info.world
    dist.all_gather_object(errors, error)  # on gloo (the CPU part of the process group)
    first = next((e for e in errors if e), None)
    if first is not None:
        raise ValueError(first)
    return load() if info.local_rank != 0 else result  # type: ignore[return-value]


def resolve_device(name: str, info: DistInfo) -> torch.device:
    """``auto`` picks CUDA when available; with several processes each takes its local GPU."""
    if name not in ("auto", "cpu", "cuda"):
        raise ValueError(f"--device must be auto, cpu or cuda, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA GPU is visible to this torch build (use --device cpu)")
    use_cuda = name == "cuda" or (name == "auto" and torch.cuda.is_available())
    return torch.device("cuda", info.local_rank) if use_cuda else torch.device("cpu")
