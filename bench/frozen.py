"""The flow's stages frozen for inference (``nvp_core.freezing``) against the same model eager, on the app's fast
path: decodes and encodes alternating, one thread; the same encodes beside a thread that runs Python (what a
server's other sessions do between their model calls: every torch call from Python gives up the GIL and waits a
switch interval to win it back), and from two threads at once; with how far the frozen pictures move from float32
NCHW.

    python -m bench.frozen                      # the shipped model
    python -m bench.frozen --repeats 3 --model models/digits.safetensors
"""

from __future__ import annotations

import argparse
import copy
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

from bench.common import add_save_flag, machine_info, median, table, time_alternating, write_results
from nvp_core import RealNVP, load_model
from nvp_core.fastpath import FastPath, distance, fidelity_latents, pictures_and_bpd
from nvp_core.freezing import freeze

ROOT = Path(__file__).resolve().parents[1]


def decode(model: RealNVP, batch: int) -> Callable[[], object]:
    zs = model.sample_latents(batch, 0.8, torch.Generator().manual_seed(1))
    return lambda: model.inverse(zs)


def encode(model: RealNVP) -> Callable[[], object]:
    x = torch.rand(1, model.config.in_channels, model.config.image_size, model.config.image_size)
    return lambda: model(x)


def two_threads(fn: Callable[[], object], calls: int) -> float:
    """Seconds for two threads each making ``calls`` calls of ``fn`` at once."""

    def work() -> None:
        with torch.no_grad():  # grad mode is per thread: as the app's script threads run
            for _ in range(calls):
                fn()

    threads = [threading.Thread(target=work) for _ in range(2)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return time.perf_counter() - t


def beside_python(fn: Callable[[], object], calls: int) -> float:
    """Seconds per call of ``fn`` while another thread runs pure Python the whole time."""
    stop = threading.Event()

    def busy() -> None:
        x = 0
        while not stop.is_set():
            for i in range(1000):
                x += i

    other = threading.Thread(target=busy)
    other.start()
    try:
        with torch.no_grad():
            fn()  # warm-up
            t = time.perf_counter()
            for _ in range(calls):
                fn()
            return (time.perf_counter() - t) / calls
    finally:
        stop.set()
        other.join()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.frozen", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=ROOT / "models" / "fashion_mnist.safetensors")
    p.add_argument("--path", default="fp32-cl", help="the fast path both run (default fp32-cl)")
    p.add_argument("--repeats", type=int, default=7, help="alternating rounds per measurement")
    p.add_argument("--calls", type=int, default=10, help="encodes per thread in the two-thread measurement")
    add_save_flag(p)
    args = p.parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():  # not inference_mode: its parameters would skip the eager weight cache
            return _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace) -> int:
    eager, _ = load_model(args.model)
    zs = fidelity_latents(eager)
    ref = pictures_and_bpd(eager, zs)  # float32 NCHW, as loaded
    FastPath.from_name(args.path).apply(eager)
    frozen = freeze(copy.deepcopy(eager))
    fidelity = distance(ref, pictures_and_bpd(frozen, zs))
    rows = []
    for what, calls in (
        ("decode 1", {"eager": decode(eager, 1), "frozen": decode(frozen, 1)}),
        ("decode 9", {"eager": decode(eager, 9), "frozen": decode(frozen, 9)}),
        ("decode 16", {"eager": decode(eager, 16), "frozen": decode(frozen, 16)}),
        ("encode 1", {"eager": encode(eager), "frozen": encode(frozen)}),
    ):
        times = time_alternating(calls, args.repeats + 1)
        e, f = (1e3 * median(times[k][1:]) for k in ("eager", "frozen"))
        rows.append({"what": what, "eager ms": round(e, 1), "frozen ms": round(f, 1), "speed-up": round(e / f, 2)})
    for what, make in (("encode 1", encode), ("decode 1", lambda m: decode(m, 1))):
        busy = [(beside_python(make(eager), 3), beside_python(make(frozen), args.calls)) for _ in range(2)]
        e, f = (min(v) for v in zip(*busy, strict=True))
        rows.append({"what": f"{what} beside busy Python", "eager ms": round(1e3 * e, 1),
                     "frozen ms": round(1e3 * f, 1), "speed-up": round(e / f, 2)})  # fmt: skip
    pair = [(two_threads(encode(eager), args.calls), two_threads(encode(frozen), args.calls)) for _ in range(2)]
    e, f = (min(v) for v in zip(*pair, strict=True))
    rows.append({"what": f"2 threads x {args.calls} encodes (s)", "eager ms": round(1e3 * e, 1),
                 "frozen ms": round(1e3 * f, 1), "speed-up": round(e / f, 2)})  # fmt: skip
    print(table(rows, ["what", "eager ms", "frozen ms", "speed-up"]))
    info = machine_info()
    print(
        f"frozen vs float32 NCHW: {fidelity['max_grey_levels']:g} grey levels, {fidelity['max_bpd_diff']:.1e} bits/dim"
    )
    print(f"{info['cpu']} ({', '.join(info['flags_that_matter'])}), 1 thread per call; path {args.path}")
    report = {
        "model": str(args.model),
        "rows": rows,
        "fidelity": fidelity,
        "machine": info,
        "command": " ".join(sys.argv),
    }
    print(f"written: {write_results('frozen', report, args.save)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
