"""The flow's stages frozen for inference (``nvp_core.freezing``): the same function as the eager stages, on random
non-trivial weights, only where autograd is off, with every pass that shares stages agreeing to the bit."""

from __future__ import annotations

import copy
from typing import Any

import torch
from flow_helpers import nontrivial_model
from torch.overrides import TorchFunctionMode

from nvp_core import FlowConfig
from nvp_core.fastpath import FastPath
from nvp_core.freezing import FrozenFlow, freeze, is_frozen, try_freezing, unfreeze

CFG = FlowConfig(in_channels=1, image_size=8, num_scales=2, mid_channels=8, num_blocks=2)


def _images(n: int = 5) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(3)) * 0.9 + 0.05


def test_frozen_stages_compute_the_same_flow_at_any_batch() -> None:
    model = nontrivial_model(CFG, dtype=torch.float32, strength=0.5)
    eager = copy.deepcopy(model)
    params = {k: v.clone() for k, v in model.state_dict().items()}
    freeze(model)  # traced at a batch of 2
    assert is_frozen(model) and not is_frozen(eager)
    with torch.inference_mode():
        for n in (1, 5):
            x = _images(n)
            zs, logdet = model(x)
            zs_ref, logdet_ref = eager(x)
            for z, zr in zip(zs, zs_ref, strict=True):
                torch.testing.assert_close(z, zr, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(logdet, logdet_ref, rtol=1e-5, atol=1e-4)
            torch.testing.assert_close(model.inverse(zs), x, rtol=0, atol=1e-5)
    # The parameters stay the model's: counted, saved and trained as before.
    assert model.state_dict().keys() == params.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in params.items())
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in eager.parameters())


def test_passes_that_share_stages_agree_to_the_bit_when_frozen() -> None:
    """forward and trace (the bits/dim and its terms), trace_layers (How it works) and the inverse and its
    coarse/fine halves (Interpolate) run the same graphs, so their numbers are one number."""
    model = freeze(nontrivial_model(FlowConfig(1, 8, num_scales=3, mid_channels=8, num_blocks=1), strength=0.5).float())
    x = _images(3)
    with torch.inference_mode():
        zs, logdet = model(x)
        zs_t, logdet_t, parts = model.trace(x)
        zs_l, rows = model.trace_layers(x)
        assert torch.equal(logdet, logdet_t)
        assert all(torch.equal(a, b) and torch.equal(a, c) for a, b, c in zip(zs, zs_t, zs_l, strict=True))
        layer_lds = [r.logdet for r in rows if not r.layer.startswith("factor out")]
        assert all(torch.equal(p, ld) for (_, p), ld in zip(parts, layer_lds, strict=True))
        whole = model.inverse(zs)
        for k in range(model.num_levels):
            assert torch.equal(model.inverse_fine(model.inverse_coarse(zs[k:]), zs[:k]), whole)


def test_a_frozen_pass_gives_up_the_gil_a_few_times_not_hundreds() -> None:
    """Every torch call from Python gives up the GIL and must win it back from a server's other sessions; a frozen
    pass makes a few such calls per stage where an eager one makes one per operation."""

    class Count(TorchFunctionMode):
        calls = 0

        def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            Count.calls += 1
            return func(*args, **(kwargs or {}))

    def calls(model: Any) -> int:
        Count.calls = 0
        with torch.inference_mode(), Count():
            model.inverse(model(_images(2))[0])
        return Count.calls

    model = nontrivial_model(CFG, dtype=torch.float32, strength=0.5)
    eager = calls(model)
    frozen = calls(freeze(model))
    assert frozen <= 8 * len(model.stages) and 10 * frozen < eager, (frozen, eager)


def test_with_autograd_on_the_eager_stages_run_and_give_gradients() -> None:
    model = freeze(nontrivial_model(CFG, dtype=torch.float32, strength=0.5))
    graphs = model.__dict__["frozen"]
    called = []

    def counted(fns: list) -> list:
        return [lambda h, f=f: called.append(1) or f(h) for f in fns]

    model.__dict__["frozen"] = FrozenFlow(counted([graphs.encode])[0], counted(graphs.inverse))
    model.log_prob(_images(2)).sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert not called and all(g is not None for g in grads) and any(float(g.abs().sum()) > 0 for g in grads)
    with torch.no_grad():
        model.inverse(model(_images(2))[0])
    assert len(called) == 1 + len(model.stages)
    unfreeze(model)
    assert not is_frozen(model)


def test_try_freezing_keeps_it_only_when_faithful_and_reports_why() -> None:
    model = nontrivial_model(CFG, dtype=torch.float32, strength=0.5)
    report = try_freezing(model, FastPath(None, True))
    assert {"max_grey_levels", "max_bpd_diff", "frozen"} <= report.keys()
    assert report["max_grey_levels"] <= 1 and report["max_bpd_diff"] <= 1e-4
    assert report["frozen"] is is_frozen(model) is True
    strict = try_freezing(model, FastPath(None, True), max_grey_levels=-1)  # nothing passes
    assert strict["frozen"] is False and not is_frozen(model)
    bf16 = try_freezing(model, FastPath(torch.bfloat16, True))
    assert bf16["frozen"] is False and "float32" in bf16["why"]


def test_the_app_keeps_its_fast_path_when_freezing_fails(monkeypatch) -> None:
    from app import models

    def broken(*_a: object, **_k: object) -> dict:
        raise RuntimeError("torch.jit is gone")

    monkeypatch.setattr(models, "try_freezing", broken)
    model = nontrivial_model(CFG, dtype=torch.float32, strength=0.5)
    chosen = models.prepare_app_model(model)
    assert chosen["freezing"] == {"frozen": False, "why": "RuntimeError: torch.jit is gone"}
    assert chosen["path"] and not is_frozen(model)
