"""The decode path on ONNX Runtime, a lever for the server's CPU: the shipped model's s,t ResNets exported to ONNX
and run by ``onnxruntime`` inside the same flow (the couplings, the log-determinant and the squeezes stay in
torch), against the model as loaded (float32 NCHW) and the app's fast path, alternating.

    pip install onnxruntime onnx        # not dependencies of the project: this benchmark decides whether to add them
    python -m bench.onnx_decode --batches 1,9 --repeats 7

Prints per batch the median time of a decode (``RealNVP.inverse`` of samples at T = 0.8, what Sample and every
picture cost), the speed-up over the fast path, and how far the pictures move: the largest difference of the
uint8 pixels (the app's one-grey-level rule) and of the float output against float32 NCHW.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from app.compute import to_uint8
from app.models import prepare_app_model
from bench.common import add_save_flag, machine_info, median, table, time_alternating, write_results
from nvp_core import RealNVP, load_model
from nvp_core.fastpath import FastPath
from nvp_core.resnet import ResNet

ROOT = Path(__file__).resolve().parents[1]
MISSING = "onnxruntime and onnx are not installed: pip install onnxruntime onnx"


class _OrtNet(nn.Module):
    """One exported ResNet: the same ``[B, C, H, W] -> [B, C', H, W]`` call, run by an ONNX Runtime session."""

    def __init__(self, session: Any) -> None:
        super().__init__()
        self.session = session

    def forward(self, x: Tensor) -> Tensor:
        return torch.from_numpy(self.session.run(None, {"x": x.contiguous().numpy()})[0])


def on_onnxruntime(model: RealNVP, batch: int, threads: int) -> RealNVP:
    """A copy of ``model`` whose ResNets run on ONNX Runtime (traced at their shapes in a decode of ``batch``)."""
    import onnxruntime as ort

    shapes: dict[str, torch.Size] = {}
    nets = {name: m for name, m in model.named_modules() if isinstance(m, ResNet)}

    def record(name: str) -> Any:
        return lambda _m, args: shapes.setdefault(name, args[0].shape) and None

    hooks = [m.register_forward_pre_hook(record(name)) for name, m in nets.items()]
    with torch.inference_mode():
        decode(model, batch)
    for h in hooks:
        h.remove()
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    out = copy.deepcopy(model)
    with tempfile.TemporaryDirectory() as tmp:
        for name, net in nets.items():
            f = Path(tmp) / f"{name}.onnx"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
                torch.onnx.export(net, (torch.zeros(shapes[name]),), f, dynamo=False, input_names=["x"],
                                  output_names=["y"], dynamic_axes={"x": {0: "b"}, "y": {0: "b"}})  # fmt: skip
            session = ort.InferenceSession(str(f), options, providers=["CPUExecutionProvider"])
            parent, _, leaf = name.rpartition(".")
            setattr(out.get_submodule(parent), leaf, _OrtNet(session))
    return out


def decode(model: RealNVP, batch: int) -> Tensor:
    gen = torch.Generator().manual_seed(1)
    with torch.inference_mode():
        return model.inverse(model.sample_latents(batch, [0.8] * model.num_levels, generator=gen))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.onnx_decode", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=ROOT / "models" / "fashion_mnist.safetensors")
    p.add_argument("--batches", default="1,9", help="comma list of decode batch sizes (Sample's grid is 9)")
    p.add_argument("--repeats", type=int, default=7, help="alternating rounds per batch")
    p.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime threads (the app's: 1 on 2 cores)")
    add_save_flag(p)
    args = p.parse_args(argv)
    try:
        import onnx  # noqa: F401  (the exporter needs it)
        import onnxruntime  # noqa: F401
    except ImportError:
        print(MISSING, file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    reference, _ = load_model(args.model)
    fast = copy.deepcopy(reference)
    chosen = FastPath.from_name(prepare_app_model(fast)["path"])  # the app's own choice, applied in place
    rows = []
    for batch in (int(b) for b in args.batches.split(",")):
        ort_model = on_onnxruntime(reference, batch, args.threads)
        want = decode(reference, batch)
        calls = {"fp32-nchw": reference, chosen.name: fast, "onnxruntime": ort_model}
        runs: dict[str, Callable[[], Tensor]] = {k: partial(decode, m, batch) for k, m in calls.items()}
        times = time_alternating(runs, args.repeats)
        for name, m in calls.items():
            got = decode(m, batch)
            grey = (to_uint8(got).astype(int) - to_uint8(want).astype(int)).__abs__().max()
            ms, base = median(times[name][1:]), median(times[chosen.name][1:])
            err = f"{(got - want).abs().max().item():.1e}"
            rows.append({"batch": batch, "path": name, "ms": round(1000 * ms, 1), "speed_up": round(base / ms, 2),
                         "max_grey_levels": int(grey), "max_abs": err})  # fmt: skip
    print(table(rows, ["batch", "path", "ms", "speed_up", "max_grey_levels", "max_abs"]))
    info = machine_info()
    flags = ", ".join(info["flags_that_matter"])
    print(f"{info['cpu']} ({flags}), {args.threads} thread(s); speed_up: over the app's path {chosen.name}")
    report = {"model": str(args.model), "rows": rows, "machine": info, "command": " ".join(sys.argv)}
    print(f"written: {write_results('onnx-decode', report, args.save)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
