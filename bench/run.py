"""``python -m bench``: conv reference, training throughput, interactive latency and model sizes; prints a table
per section and writes everything to ``bench/results/local/``
(``--save``: the committed ``bench/results/<name>-<cpu kind>.json``).

Examples::

    python -m bench                       # the full run (bench/README.md gives its time per CPU kind)
    python -m bench --quick               # smoke test with tiny sizes (a minute)
    python -m bench --sections conv,latency --threads 1
    python -m bench --variants fp32-nchw,fp32-cl,fp32-cl-compiled   # add the compiled path (slow to compile)
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import torch

from bench.common import add_save_flag, machine_info, table, write_results
from bench.conv import conv_reference
from bench.latency import (
    InferenceVariant,
    default_configs,
    forward_inverse_times,
    interactive_latency,
    shipped_or_preset_model,
)
from bench.train_speed import PAPER_28, VARIANTS, Variant, count_step_flops, train_throughput
from nvp_core import FlowConfig
from nvp_core.fastpath import bf16_can_be_fast
from nvp_core.fastpath_choice import choose, configure

SECTIONS = ("conv", "train", "latency", "sizes")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of {', '.join(SECTIONS)}")
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks that everything runs")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--batch", type=int, default=64, help="training batch (issue: 64)")
    p.add_argument("--repeats", type=int, default=3, help="timed training steps per variant (median reported)")
    p.add_argument(
        "--variants",
        default="fp32-nchw,fp32-cl,bf16-cl",
        help=f"training variants, comma list of {', '.join(VARIANTS)}",
    )
    p.add_argument("--bf16-batch", type=int, default=8, help="batch for bf16 variants where bf16 is emulated")
    p.add_argument("--latency-threads", default="1,2", help="thread counts to try for the interactive latency")
    p.add_argument("--compile", action="store_true", help="also time the torch.compile'd inference path")
    p.add_argument(
        "--config",
        default="paper",
        choices=("paper", "fashion-mnist"),
        help="training model: the issue's paper network on 28x28x1, or the fashion-mnist preset",
    )
    p.add_argument("--name", default="bench", help="results file prefix")
    add_save_flag(p)
    return p.parse_args(argv)


def _train_section(args: argparse.Namespace, cfg: FlowConfig, conv: list[dict[str, Any]]) -> dict[str, Any]:
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    slow_bf16 = not bf16_can_be_fast(torch.device("cpu"))
    trainer = choose(cfg, "train", args.batch)  # what the trainer's --precision auto runs
    variants = [Variant(f"trainer-default={trainer.name}", trainer.path.channels_last, trainer.path.dtype)]
    for n in names:
        v = VARIANTS[n]
        if v.compute_dtype == torch.bfloat16 and slow_bf16:
            v = Variant(v.name, v.channels_last, v.compute_dtype, v.compile, batch=args.bf16_batch)
        variants.append(v)
    flops = count_step_flops(cfg)
    rows = train_throughput(cfg, args.batch, variants, repeats=args.repeats)
    peaks = {(c["dtype"], c["layout"], c["pass"]): c["gflops_per_s"] for c in conv}
    bf16_peak = peaks.get(("bfloat16", "channels_last", "fwd"))
    fp32_peak = peaks.get(("float32", "channels_last", "fwd"))
    for r in rows:
        if "images_per_s" in r:
            gf = r["images_per_s"] * flops["flops_per_image"] / 1e9
            r["gflops_per_s"] = round(gf, 2)
            r["share_of_bf16_cl_conv"] = round(gf / bf16_peak, 3) if bf16_peak else None
            r["share_of_fp32_cl_conv"] = round(gf / fp32_peak, 3) if fp32_peak else None
    base = next((r for r in rows if r.get("variant") == "fp32-nchw"), None)
    if base:
        for r in rows:
            if "images_per_s" in r:
                r["speedup_vs_fp32_nchw"] = round(r["images_per_s"] / base["images_per_s"], 2)
    return {"config": cfg.to_dict(), "flops": flops, "rows": rows, "trainer_fast_path": trainer.to_dict()}


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    bad = [s for s in sections if s not in SECTIONS]
    if bad:
        print(f"unknown section(s) {bad}; choose from {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    cfg = PAPER_28
    if args.config == "fashion-mnist":
        from train.config import preset

        cfg = preset("fashion-mnist").flow_config(1, 28)
    if args.quick:
        cfg = FlowConfig(in_channels=1, image_size=28, num_scales=2, mid_channels=8, num_blocks=1)
        args.batch, args.repeats, args.bf16_batch = 8, 2, 4
    t0 = time.perf_counter()
    results: dict[str, Any] = {"machine": machine_info(), "args": vars(args)}
    print("machine:", {k: results["machine"][k] for k in ("cpu", "torch_cpu_capability", "loadavg_1_5_15")})
    conv: list[dict[str, Any]] = []
    if "conv" in sections or "train" in sections:
        conv = conv_reference(quick=args.quick)
        results["conv_reference"] = conv
        print("\n== 3x3 convolution reference (64->64 channels, 28x28) ==")
        print(table(conv, ["dtype", "layout", "pass", "shape", "gflops_per_s", "load"]))
    if "train" in sections:
        tr = _train_section(args, cfg, conv)
        results["train"] = tr
        print(f"\n== training throughput: {cfg.to_json()} ==")
        print(f"FLOPs/image fwd+bwd: {tr['flops']['gflop_per_image']} GFLOP; params {tr['flops']['params']}")
        cols = ["variant", "batch", "images_per_s", "speedup_vs_fp32_nchw", "gflops_per_s"]
        cols += ["share_of_bf16_cl_conv", "share_of_fp32_cl_conv", "warmup_s", "load_during"]
        print(table([r for r in tr["rows"] if "variant" in r], cols))
        mem = tr["flops"]
        act = mem["saved_mb_fixed"] + mem["saved_mb_per_image"] * args.batch
        tr["saved_for_backward_mb_at_batch"] = round(act, 1)
        print(
            f"memory of a step at batch {args.batch}: {act:.0f} MB saved for backward "
            f"(+{mem['param_state_mb']} MB params/grads/Adam); "
            f"process max RSS {tr['rows'][-1]['max_rss_mb_process']} MB"
        )
    if "latency" in sections:
        model, source = shipped_or_preset_model()
        app_choice = configure(model, torch.device("cpu"), "infer", 16, same_pictures=True)  # as the app does
        print(f"app fast path: {app_choice.describe()}")
        threads = [int(t) for t in args.latency_threads.split(",") if t.strip()]
        variants = [InferenceVariant(f"baseline-{t}t", False, t) for t in threads]
        variants += [InferenceVariant(f"fast-{t}t", True, t) for t in threads]
        if args.compile:
            variants.append(InferenceVariant(f"fast-compiled-{threads[0]}t", True, threads[0], compile=True))
        rows = interactive_latency(model, variants, rounds=2 if args.quick else 8, fast_path=app_choice.path)
        results["latency"] = {
            "model": source,
            "config": model.config.to_dict(),
            "rows": rows,
            "app_fast_path": app_choice.to_dict(),
        }
        print(f"\n== interactive latency: {source} ==")
        flat = [
            {
                "variant": r["variant"],
                "enc+dec p50 ms": r["encode_decode_1"]["p50_ms"],
                "enc+dec p90 ms": r["encode_decode_1"]["p90_ms"],
                "interp16 p50 ms": r["interpolation_16"]["p50_ms"],
                "64 samples p50 ms": r["samples_64"]["p50_ms"],
                "weight move 9 fr. p50 ms": r["weight_move_whole_9"]["p50_ms"],
                "finest only p50 ms": r["weight_move_finest_9"]["p50_ms"],
                "first calls s": r["first_calls_s"],
                "load": r["load_during"],
            }
            for r in rows
        ]
        print(table(flat, list(flat[0])))
    if "sizes" in sections:
        rows = []
        for name, c in default_configs().items():
            n_params = sum(p.numel() for p in __import__("nvp_core").RealNVP(c).parameters())
            for batch in (1, 8 if args.quick else 64):
                if args.quick and c is PAPER_28:
                    continue
                r = forward_inverse_times(c, batch, fast=True, repeats=2 if args.quick else 3)
                rows.append({"config": name, "params": n_params, **r})
        results["sizes"] = rows
        print("\n== forward / inverse time (fast path, eval) and parameter counts ==")
        cols = ["config", "params", "batch", "path", "forward_ms_p50", "inverse_ms_p50", "forward_ms_per_image"]
        print(table(rows, cols + ["inverse_ms_per_image", "load"]))
    results["total_s"] = round(time.perf_counter() - t0, 1)
    path = write_results(args.name + ("-quick" if args.quick else ""), results, args.save)
    print(f"\nwrote {path} ({results['total_s']} s)")
    return 0
