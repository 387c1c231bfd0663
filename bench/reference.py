"""Training throughput side by side with the public reference implementation (issue 11's first target).

The reference is chrischute/real-nvp (PyTorch): its CIFAR-10 network (2 scales, 8 residual blocks, 64
features), here on 28×28×1 images, trained as its ``train.py`` does (Adam with its weight-decay groups,
gradient clipping, its loss). Ours: the same architecture (``bench.train_speed.PAPER_28``) trained with the
trainer's default settings (``train.loop``: its optimiser, loss and clipping; ``--precision auto``, i.e. the
fast path :func:`nvp_core.fastpath_choice.choose` measured and cached for this machine). The steps alternate
(reference, ours, ...) so that machine load hits both alike; FLOP/s of ours is given as a share of the best
3×3 convolution rate measured in the same run: the best of the convolution table (measured first, on a quiet
machine), and that same convolution timed once per round between the steps (``share_of_conv_alternating``: the
rate a convolution reaches in the state the steps leave the machine in, caches and memory included). The reference
is never copied into this repository::

    git clone https://github.com/chrischute/real-nvp /tmp/chrischute-real-nvp
    python -m bench.reference /tmp/chrischute-real-nvp --batch 32 --repeats 3 --threads 1
    python -m bench.reference /tmp/chrischute-real-nvp --batch 32 --repeats 7 --threads 2 --compiled   # + ours compiled

Results, with the machine description and the fast-path choice: ``bench/results/local/``
(``--save``: the committed ``bench/results/<name>-<cpu kind>.json``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path
from typing import Any

import torch

from bench.common import add_save_flag, load_now, machine_info, median, table, time_alternating, write_results
from bench.conv import conv_rate, conv_reference
from bench.train_speed import PAPER_28, count_step_flops
from nvp_core import RealNVP, dequantize
from nvp_core.fastpath_choice import choose
from train.compiling import compile_nets
from train.config import TrainConfig
from train.loop import build_optimizer, loss_bits_per_dim, resolve_precision


def _images(batch: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 1, 28, 28), generator=gen, dtype=torch.uint8)


def _contiguous_rescale(rescale: Any) -> None:  # the reference's Rescale class (an nn.Module subclass)
    """Compatibility shim, the only change to the reference: its channel-wise couplings call ``s.view(B, -1)``
    on ``rescale(tanh(s))`` where ``s`` is a ``chunk`` of the s,t output. Recent torch keeps the chunk's strides
    through the element-wise product, so ``view`` raises; the torch it was written for returned a contiguous
    tensor. Making that product contiguous (one small copy per coupling) restores its behaviour."""
    if getattr(rescale, "_bench_contiguous", False):
        return
    forward = rescale.forward
    rescale.forward = lambda self, x: forward(self, x).contiguous()
    rescale._bench_contiguous = True


class Reference:
    """chrischute/real-nvp's model, loss, optimiser and clipping, as in its ``train.py`` (CPU)."""

    name = "reference (chrischute/real-nvp)"

    def __init__(self, path: Path, batch: int) -> None:
        sys.path.insert(0, str(path))
        try:
            models = importlib.import_module("models")
            util = importlib.import_module("util")
        finally:
            sys.path.remove(str(path))
        _contiguous_rescale(importlib.import_module("models.real_nvp.coupling_layer").Rescale)
        torch.manual_seed(0)
        self.util = util
        self.net = models.RealNVP(num_scales=2, in_channels=1, mid_channels=64, num_blocks=8).train()
        self.loss_fn = models.RealNVPLoss()
        self.opt = torch.optim.Adam(util.get_param_groups(self.net, 5e-5, norm_suffix="weight_g"), lr=1e-3)
        self.x = _images(batch).float() / 255.0  # its ToTensor(): [0, 1]; it dequantises inside the model
        self.params = sum(p.numel() for p in self.net.parameters())

    def step(self) -> None:
        self.opt.zero_grad()
        z, sldj = self.net(self.x, reverse=False)
        loss = self.loss_fn(z, sldj)
        loss.backward()
        self.util.clip_grad_norm(self.opt, 100.0)
        self.opt.step()


class Ours:
    """Our trainer's step with its default settings (``--precision auto``: the measured fast path). With
    ``compiled``, as ``--compile on`` runs it: s,t ResNets compiled (the first step includes the compiling)."""

    def __init__(self, batch: int, compiled: bool = False) -> None:
        torch.manual_seed(0)
        cfg = TrainConfig()
        self.model = RealNVP(PAPER_28).train()
        resolve_precision(cfg.precision, torch.device("cpu"), self.model, batch)
        self.name = "ours (trainer defaults)"
        if compiled:
            compile_nets(self.model)  # what train.compiling does for --compile on
            self.name = "ours (trainer defaults, --compile on)"
        self.opt = build_optimizer(self.model, cfg)
        self.grad_clip = cfg.grad_clip
        self.images = _images(batch)
        self.gen = torch.Generator().manual_seed(0)
        self.params = sum(p.numel() for p in self.model.parameters())

    def step(self) -> None:
        x = dequantize(self.images, self.gen)
        loss = loss_bits_per_dim(self.model, self.model, x)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.opt.step()


def side_by_side(
    ref_path: Path,
    batch: int,
    repeats: int,
    warmup: int = 1,
    compiled: bool = False,
    conv: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Images/s of the reference and of ours (and with ``compiled`` ours compiled), alternating step
    by step after ``warmup`` steps each. ``conv`` (a row of :func:`bench.conv.conv_reference`): that convolution's
    rate is measured once per round too, between the steps, so that it sees the machine as the steps do."""
    runners: list[Reference | Ours] = [Reference(ref_path, batch), Ours(batch)]
    if compiled:
        runners.append(Ours(batch, compiled=True))
    choice = choose(PAPER_28, "train", batch)  # what Ours applied (read back from the cache)
    warm = {}
    for r in runners:
        t = time.perf_counter()
        for _ in range(warmup):
            r.step()
        warm[r.name] = round(time.perf_counter() - t, 2)
    loads = [load_now()]
    calls = {r.name: r.step for r in runners}
    rates: list[float] = []
    if conv is not None:
        dtype, cl, n = getattr(torch, conv["dtype"]), conv["layout"] == "channels_last", conv["shape"][0]
        calls["conv"] = lambda: rates.append(conv_rate(dtype, cl, batch=n, min_seconds=0.3)["gflops_per_s"])
    times = time_alternating(calls, repeats, lambda: loads.append(load_now()))
    rows: list[dict[str, Any]] = []
    for r in runners:
        step_s = median(times[r.name])
        rows.append(
            {
                "implementation": r.name,
                "params": r.params,
                "batch": batch,
                "images_per_s": round(batch / step_s, 3),
                "step_s_all": [round(t, 2) for t in times[r.name]],
                "warmup_s": warm[r.name],
            }
        )
    for row in rows[1:]:
        row["speedup_vs_reference"] = round(row["images_per_s"] / rows[0]["images_per_s"], 2)
    alternating = {**conv, "gflops_per_s_all": rates, "gflops_per_s": round(median(rates), 2)} if conv else None
    return {
        "rows": rows,
        "fast_path": choice.to_dict(),
        "load_during": [min(loads), max(loads)],
        "conv_alternating": alternating,
    }


def profile_ours(batch: int, steps: int, compiled: bool = False) -> str:
    """Where our training step's time goes: ``torch.profiler`` self CPU time per op over ``steps`` steps (after
    warm-up: one step, three when ``compiled`` compiles), the 12 largest, and the share of all convolution work."""
    from torch.profiler import ProfilerActivity, profile

    ours = Ours(batch, compiled=compiled)
    for _ in range(3 if compiled else 1):
        ours.step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            ours.step()
    ops = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in ops)
    rows = [
        {"op": e.key, "ms_per_step": round(e.self_cpu_time_total / 1e3 / steps, 1),
         "share": f"{100 * e.self_cpu_time_total / total:.1f} %", "calls_per_step": e.count // steps}
        for e in ops[:12]
    ]  # fmt: skip
    conv = sum(e.self_cpu_time_total for e in ops if "convolution" in e.key)
    return table(rows, list(rows[0])) + f"\nconvolutions (forward and backward): {100 * conv / total:.1f} % of the step"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.reference", description=__doc__.split("\n\n")[0])
    p.add_argument("reference", type=Path, help="a checkout of https://github.com/chrischute/real-nvp")
    p.add_argument("--batch", type=int, default=32, help="images per step (issue 11: 32)")
    p.add_argument("--repeats", type=int, default=3, help="timed steps per implementation (median reported)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--no-conv", action="store_true", help="skip the convolution reference")
    p.add_argument("--compiled", action="store_true",
                   help="also ours with --compile on (its first step includes compiling)")  # fmt: skip
    p.add_argument("--profile", type=int, default=0, metavar="STEPS",
                   help="instead: profile our step by op (with --compiled: the compiled step)")  # fmt: skip
    add_save_flag(p)
    args = p.parse_args(argv)
    if args.profile:
        if args.threads:
            torch.set_num_threads(args.threads)
        print(profile_ours(args.batch, args.profile, args.compiled))
        return 0
    if not (args.reference / "models" / "real_nvp").is_dir():
        p.error(f"{args.reference} is not a checkout of chrischute/real-nvp (no models/real_nvp)")
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine_info()
    print("machine:", {k: info[k] for k in ("cpu", "cpu_isa_flags", "torch_threads", "loadavg_1_5_15")})
    # The convolutions first: the best one is then also timed between the training steps (same machine state).
    conv = [] if args.no_conv else conv_reference()
    best = max(conv, key=lambda c: c["gflops_per_s"]) if conv else None
    res = side_by_side(args.reference, args.batch, args.repeats, compiled=args.compiled, conv=best)
    flops = count_step_flops(PAPER_28)
    alternating = res["conv_alternating"]
    for r in res["rows"]:
        gf = r["images_per_s"] * flops["flops_per_image"] / 1e9
        r["gflops_per_s"] = round(gf, 1)
        r["share_of_best_conv"] = round(gf / best["gflops_per_s"], 3) if best else None
        r["share_of_conv_alternating"] = round(gf / alternating["gflops_per_s"], 3) if alternating else None
    print(f"fast path (ours): {res['fast_path']}")
    if best and alternating:
        print(table(conv, ["dtype", "layout", "pass", "shape", "gflops_per_s", "load"]))
        print(f"the best ({best['dtype']} {best['layout']} {best['pass']}) between the steps: "
              f"{alternating['gflops_per_s']} GFLOP/s (median of {alternating['gflops_per_s_all']})")  # fmt: skip
    cols = ["implementation", "batch", "images_per_s", "speedup_vs_reference", "gflops_per_s", "share_of_best_conv",
            "share_of_conv_alternating"]  # fmt: skip
    print(table(res["rows"], cols + ["step_s_all", "warmup_s"]))
    print(f"{flops['gflop_per_image']} GFLOP per image fwd+bwd; load during {res['load_during']}")
    path = write_results(
        "reference",
        {"machine": info, "args": {**vars(args), "reference": str(args.reference)}, "flops": flops,
         "conv_reference": conv, "best_conv": best, **res, "machine_after": machine_info()},
        args.save,
    )  # fmt: skip
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
