"""Choosing the fast path by measuring on the machine at hand, and remembering the answer.

* candidates: float32 × {NCHW, channels_last}, plus bf16 × {NCHW, channels_last} where bf16 *can* be fast
  (:func:`nvp_core.fastpath.bf16_can_be_fast`);
* timing: a few training steps (forward + backward) or inference calls (forward + inverse) of the model's
  configuration at a small batch (at most ``TIMING_BATCH`` images, at most ``TIMING_BLOCKS`` residual blocks:
  the same layer shapes, fewer of them), after one warm-up call each; the candidates alternate round by round
  and the median decides. bf16 wins only when it is at least ``BF16_MARGIN`` faster than the best float32 path;
* cache: ``~/.cache/nvp-explorer/fastpath.json`` (``$NVP_FASTPATH_CACHE`` elsewhere), keyed by the machine
  (:func:`machine_key`), the model's configuration, the mode and the batch. An unreadable or corrupt file is
  ignored and rewritten. A measurement taken on a busy machine (load average per core at least ``BUSY_LOAD``) is
  provisional: measured again once the machine is quiet, and after ``BUSY_TTL_S`` in any case;
* overrides: the caller's ``precision`` (``"fp32"``/``"bf16"`` restrict the dtype, a full name such as
  ``"bf16-cl"`` fixes the path) wins over ``$NVP_FASTPATH`` (same values), which wins over the cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from .config import FlowConfig
from .fastpath import ALL_PATHS, ENV_OVERRIDE, OVERRIDES, Choice, FastPath, candidates, faithful
from .fileio import atomic_write, user_cache_dir
from .model import RealNVP

log = logging.getLogger(__name__)

ENV_CACHE = "NVP_FASTPATH_CACHE"
MODES = ("train", "infer")
#: bf16 must be at least this much faster (median) than the best float32 path to be chosen.
BF16_MARGIN = 0.10
#: The timing model: the configuration's shapes, at most this many residual blocks and images.
TIMING_BLOCKS = 2
TIMING_BATCH = 8
#: Alternated timing rounds: at least ``MIN_ROUNDS``, more while under ``BUDGET_S`` seconds, at most ``MAX_ROUNDS``.
MIN_ROUNDS, MAX_ROUNDS, BUDGET_S = 3, 9, 4.0
#: Load average per core from which a measurement counts as taken on a busy machine, and how long one is kept.
BUSY_LOAD, BUSY_TTL_S = 0.5, 24 * 3600.0
#: A candidate whose warm-up call is this many times slower than the fastest one is not timed further.
HOPELESS = 4.0
#: CPU flags that decide which kernels exist (recorded with every measurement and in the cache key).
FLAGS_THAT_MATTER = ("avx2", "fma", "avx512f", "avx512bw", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")
CACHE_VERSION = 1


# --- the machine
def _cpuinfo_field(name: str) -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(name):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; ``platform.processor()`` elsewhere)."""
    return _cpuinfo_field("model name") or platform.processor() or "unknown"


def cpu_flags() -> set[str]:
    """The CPU's feature flags (``/proc/cpuinfo``; empty where that file does not exist)."""
    return set((_cpuinfo_field("flags") or "").split())


def machine_key(device: torch.device) -> dict[str, Any]:
    """What a measurement depends on besides the model: CPU, the flags that matter, torch, threads, device."""
    flags = cpu_flags()
    key: dict[str, Any] = {
        "cpu": cpu_model(),
        "flags": [f for f in FLAGS_THAT_MATTER if f in flags],
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "device": device.type,
    }
    if device.type == "cuda":
        key["gpu"] = torch.cuda.get_device_name(device)
    return key


def cache_path() -> Path:
    """``$NVP_FASTPATH_CACHE``, else ``fastpath.json`` in :func:`nvp_core.fileio.user_cache_dir`."""
    env = os.environ.get(ENV_CACHE)
    return Path(env).expanduser() if env else user_cache_dir() / "fastpath.json"


def _key_id(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]


def _read_cache(path: Path) -> dict[str, Any]:
    """The cache's entries, or ``{}`` if the file is missing, unreadable, corrupt or of another version."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION or not isinstance(data.get("entries"), dict):
        return {}
    return data["entries"]


def _write_cache(path: Path, key_id: str, entry: dict[str, Any]) -> None:
    """Adds one entry; a cache that cannot be written is skipped."""
    entries = {**_read_cache(path), key_id: entry}
    text = json.dumps({"version": CACHE_VERSION, "entries": entries}, indent=1, sort_keys=True)
    try:
        atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    except OSError as e:
        log.warning("fast path cache %s not written (%s)", path, e)


def load_per_core() -> float | None:
    """The 1-minute load average divided by the number of CPUs (``None`` where the OS has no load average)."""
    if not hasattr(os, "getloadavg"):
        return None
    return os.getloadavg()[0] / (os.cpu_count() or 1)


def _still_valid(entry: dict[str, Any], now: datetime, load_now: float | None) -> bool:
    """A quiet machine's measurement stays; a busy machine's is kept until the machine is quiet or it is
    ``BUSY_TTL_S`` old (entries without the fields, from before they existed, count as quiet)."""
    busy = entry.get("load_per_core")
    if not isinstance(busy, (int, float)) or busy < BUSY_LOAD:
        return True
    if load_now is not None and load_now < BUSY_LOAD:
        return False
    try:
        age = (now - datetime.fromisoformat(entry["measured_utc"])).total_seconds()
    except (KeyError, TypeError, ValueError):
        return False
    return 0 <= age < BUSY_TTL_S


def _cached_path(entry: Any, allowed: list[FastPath], now: datetime, load_now: float | None) -> FastPath | None:
    if not isinstance(entry, dict) or not _still_valid(entry, now, load_now):
        return None
    try:
        path = FastPath.from_name(entry["path"])
    except (TypeError, KeyError, ValueError):
        return None
    return path if path in allowed else None


# --- measuring
def timing_config(config: FlowConfig) -> FlowConfig:
    """The configuration that is timed: the same layer shapes, at most :data:`TIMING_BLOCKS` residual blocks."""
    d = config.to_dict()
    d["num_blocks"] = min(d["num_blocks"], TIMING_BLOCKS)
    return FlowConfig(**d)


def _workload(config: FlowConfig, path: FastPath, mode: str, batch: int, device: torch.device) -> Callable[[], None]:
    """One call of the work to time: a training step without the optimiser, or a forward and an inverse."""
    torch.manual_seed(0)
    model = path.apply(RealNVP(config).to(device))
    gen = torch.Generator().manual_seed(0)
    shape = (batch, config.in_channels, config.image_size, config.image_size)
    x = (torch.rand(shape, generator=gen) * 0.9 + 0.05).to(device)
    if path.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if mode == "train":
        model.train()

        def step() -> None:
            model.zero_grad(set_to_none=True)
            model.log_prob(x).mean().neg().backward()
            sync()

        return step
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)

    def call() -> None:
        with torch.inference_mode():
            zs, _ = model(x)
            model.inverse(zs)
        sync()

    return call


def measure(config: FlowConfig, mode: str, batch: int, device: torch.device, paths: list[FastPath]) -> dict[str, float]:
    """Median milliseconds per call of each path on :func:`timing_config` of ``config`` (alternated rounds)."""
    # Not torch.utils.benchmark.Timer: it times one statement at a time, and here the candidates take turns under one
    # time budget, so that a load that comes and goes hits them alike.
    tcfg = timing_config(config)
    tbatch = max(1, min(batch, TIMING_BATCH))
    calls: dict[str, Callable[[], None]] = {}
    warm: dict[str, float] = {}
    for p in paths:
        fn = _workload(tcfg, p, mode, tbatch, device)
        t = time.perf_counter()
        fn()  # warm-up: oneDNN primitive creation, allocations
        warm[p.name] = time.perf_counter() - t
        calls[p.name] = fn
    best_warm = min(warm.values())
    live = [n for n in calls if warm[n] <= HOPELESS * best_warm]
    times: dict[str, list[float]] = {n: [] for n in live}
    t0 = time.perf_counter()
    for r in range(MAX_ROUNDS):
        if r >= MIN_ROUNDS and time.perf_counter() - t0 > BUDGET_S:
            break
        order = live[r % len(live) :] + live[: r % len(live)]  # rotate who goes first
        for n in order:
            t = time.perf_counter()
            calls[n]()
            times[n].append(time.perf_counter() - t)
    out = {n: round(statistics.median(v) * 1e3, 3) for n, v in times.items()}
    out.update({n: round(warm[n] * 1e3, 3) for n in calls if n not in out})  # hopeless: their warm-up time
    return out


def pick(timings_ms: dict[str, float], margin: float = BF16_MARGIN) -> FastPath:
    """The fastest float32 path, unless a bf16 path is at least ``margin`` faster than it (then that one)."""
    paths = {FastPath.from_name(n): t for n, t in timings_ms.items()}
    fp32 = {p: t for p, t in paths.items() if p.dtype is None}
    bf16 = {p: t for p, t in paths.items() if p.dtype is not None}
    best32 = min(fp32, key=fp32.__getitem__) if fp32 else None
    best16 = min(bf16, key=bf16.__getitem__) if bf16 else None
    if best32 is None:
        assert best16 is not None, "no timings"
        return best16
    if best16 is not None and bf16[best16] <= (1.0 - margin) * fp32[best32]:
        return best16
    return best32


# --- the one decision
def choose(
    config: FlowConfig,
    mode: str = "infer",
    batch: int = TIMING_BATCH,
    device: torch.device | str = "cpu",
    precision: str = "auto",
    use_cache: bool = True,
    allowed: list[FastPath] | None = None,
) -> Choice:
    """The fast path for ``config`` in ``mode`` (``"train"``: forward + backward; ``"infer"``: forward +
    inverse) at ``batch`` on ``device``: ``precision`` if it names one path, else ``$NVP_FASTPATH`` if it
    names one, else the cached measurement for this machine and model, else a new measurement (seconds),
    cached. ``precision``/``$NVP_FASTPATH`` = ``fp32`` or ``bf16`` restrict the dtype and measure the layout;
    ``allowed`` (e.g. from :func:`faithful`) restricts the candidates further."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    device = torch.device(device)
    env = os.environ.get(ENV_OVERRIDE, "").strip()
    if env and env not in OVERRIDES:
        raise ValueError(f"${ENV_OVERRIDE} must be one of {', '.join(OVERRIDES)}, got {env!r}")
    wanted = precision if precision != "auto" else (env or "auto")
    if precision in ("fp32", "bf16") and env.startswith(precision + "-"):
        wanted = env  # a whole path named in the environment pins the layout as well as the dtype
    allowed = [p for p in candidates(device, wanted) if allowed is None or p in allowed] or [ALL_PATHS[0]]
    if len(allowed) == 1:
        return Choice(allowed[0], "override" if wanted != "auto" else "only candidate")
    key = {
        **machine_key(device),
        "model": config.to_dict(),
        "mode": mode,
        "batch": batch,
        "candidates": [p.name for p in allowed],
    }
    key_id = _key_id(key)
    cpath = cache_path()
    load_now = load_per_core()
    if use_cache:
        entry = _read_cache(cpath).get(key_id)
        found = _cached_path(entry, allowed, datetime.now(timezone.utc), load_now)
        if found is not None and isinstance(entry, dict):
            timings = entry.get("timings_ms", {})
            return Choice(found, "cache", timings if isinstance(timings, dict) else {}, key)
    timings = measure(config, mode, batch, device, allowed)
    choice = Choice(pick(timings), "measured", timings, key)
    if use_cache:
        when = datetime.now(timezone.utc).isoformat(timespec="seconds")
        load = None if load_now is None else round(load_now, 3)
        entry = {"path": choice.name, "timings_ms": timings, "key": key, "measured_utc": when, "load_per_core": load}
        _write_cache(cpath, key_id, entry)
    log.info("fast path for %s on %s: %s", mode, device, choice.describe())
    return choice


def configure(
    model: RealNVP,
    device: torch.device | str = "cpu",
    mode: str = "infer",
    batch: int = TIMING_BATCH,
    precision: str = "auto",
    same_pictures: bool = False,
) -> Choice:
    """:func:`choose` the fast path for ``model`` (already on ``device``), apply it in place, and return the
    choice. ``same_pictures``: time only the paths that :func:`faithful` admits on this model's weights (what the
    app needs: its pictures within one grey level of float32, its numbers float32), unless ``precision`` or
    ``$NVP_FASTPATH`` name a path."""
    allowed = None
    fidelity: dict[str, dict[str, float]] = {}
    env = os.environ.get(ENV_OVERRIDE, "").strip()
    if same_pictures and precision in ("auto", "fp32", "bf16") and env in ("", "auto", "fp32", "bf16"):
        allowed, fidelity = faithful(
            model, candidates(torch.device(device), precision if precision != "auto" else env or "auto")
        )
    choice = choose(model.config, mode, batch, device, precision, allowed=allowed)
    choice.fidelity = fidelity
    choice.path.apply(model)
    return choice
