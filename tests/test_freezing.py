"""The s,t networks frozen for inference (``nvp_core.freezing``): the same function as the eager networks, on
random non-trivial weights, and only where autograd is off."""

from __future__ import annotations

import copy

import torch
from flow_helpers import nontrivial_model

from nvp_core import FlowConfig
from nvp_core.fastpath import FastPath
from nvp_core.freezing import freeze, is_frozen, try_freezing, unfreeze

CFG = FlowConfig(in_channels=1, image_size=8, num_scales=2, mid_channels=8, num_blocks=2)


def _images(n: int = 5) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(3)) * 0.9 + 0.05


def test_frozen_networks_compute_the_same_flow_at_any_batch() -> None:
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


def test_with_autograd_on_the_eager_networks_run_and_give_gradients() -> None:
    model = nontrivial_model(CFG, dtype=torch.float32, strength=0.5)
    freeze(model)
    called = []
    net = next(m for m in model.modules() if "frozen" in m.__dict__)
    real = net.__dict__["frozen"]
    net.__dict__["frozen"] = lambda x: called.append(1) or real(x)
    model.log_prob(_images(2)).sum().backward()
    grads = [p.grad for p in net.parameters()]
    assert not called and all(g is not None for g in grads) and any(float(g.abs().sum()) > 0 for g in grads)
    with torch.no_grad():
        model(_images(2))
    assert called
    unfreeze(model)
    assert not is_frozen(model)


def test_try_freezing_keeps_it_only_when_faithful_and_reports_why() -> None:
    model = nontrivial_model(CFG, dtype=torch.float32, strength=0.5)
    report = try_freezing(model, FastPath(None, True), batch=4, rounds=2)
    assert {"max_grey_levels", "max_bpd_diff", "frozen_ms", "eager_ms", "frozen"} <= report.keys()
    assert report["max_grey_levels"] <= 1 and report["max_bpd_diff"] <= 1e-4
    assert report["frozen"] == is_frozen(model) == (report["frozen_ms"] <= report["eager_ms"])
    strict = try_freezing(model, FastPath(None, True), batch=4, rounds=2, max_grey_levels=-1)  # nothing passes
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
