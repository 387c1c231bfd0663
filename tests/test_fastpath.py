"""Correctness of every fast path (issue 5): weight-norm cache, channels_last, bf16 autocast, torch.compile.

No timings here (the machines are noisy); bench/ measures speed. Each test compares a fast path against the
default path it replaces, so it fails if the fast path changes the model's function or its bookkeeping.
"""

from __future__ import annotations

import shutil

import pytest
import torch
from flow_helpers import nontrivial_model

from nvp_core import FlowConfig, RealNVP
from nvp_core.fastpath import compile_nets, configure, cpu_has_fast_bf16
from nvp_core.resnet import WNConv2d

CFG = FlowConfig(in_channels=1, image_size=8, num_scales=2, mid_channels=8, num_blocks=2)


def _images(n: int = 4, dtype: torch.dtype = torch.float64, seed: int = 3) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=gen, dtype=torch.float64).to(dtype) * 0.9 + 0.05


def _conv_layouts(model: RealNVP, x: torch.Tensor) -> list[bool]:
    """For every WNConv2d call during ``model(x)``: was its input channels_last (and not also NCHW)?"""
    seen: list[bool] = []

    def hook(_mod: torch.nn.Module, inp: tuple[torch.Tensor, ...]) -> None:
        t = inp[0]
        seen.append(t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous())

    handles = [m.register_forward_pre_hook(hook) for m in model.modules() if isinstance(m, WNConv2d)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return seen


# --- weight-norm cache -----------------------------------------------------------------------------
def test_cached_weight_is_bit_identical_to_the_computed_one() -> None:
    model = nontrivial_model(CFG, dtype=torch.float32)
    x = _images(dtype=torch.float32)
    with torch.enable_grad():
        zs_grad, ld_grad = model(x)  # grad mode: weights computed every call
    with torch.no_grad():
        zs_a, ld_a = model(x)  # fills the cache
        zs_b, ld_b = model(x)  # uses it
    for a, b, c in zip(zs_grad, zs_a, zs_b, strict=True):
        assert torch.equal(a.detach(), b) and torch.equal(b, c)
    assert torch.equal(ld_grad.detach(), ld_a) and torch.equal(ld_a, ld_b)


def test_weight_cache_follows_in_place_updates_of_the_parameters() -> None:
    model = nontrivial_model(CFG, dtype=torch.float32)
    x = _images(dtype=torch.float32)
    with torch.no_grad():
        before, _ = model(x)
        for name, p in model.named_parameters():  # an optimizer step does exactly this: in-place updates
            if name.endswith(".v") or name.endswith(".g"):
                p.mul_(1.1)
        after_cached, _ = model(x)
    fresh = RealNVP(CFG).eval()
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        after_fresh, _ = fresh(x)
    assert not torch.equal(before[0], after_cached[0])
    for a, b in zip(after_cached, after_fresh, strict=True):
        assert torch.equal(a, b)


def test_weight_cache_follows_load_state_dict_and_dtype_changes() -> None:
    model_a = nontrivial_model(CFG, seed=0, dtype=torch.float32)
    model_b = nontrivial_model(CFG, seed=1, dtype=torch.float32)
    x = _images(dtype=torch.float32)
    with torch.no_grad():
        model_a(x)  # fill model_a's cache with its own weights
        model_a.load_state_dict(model_b.state_dict())
        for a, b in zip(model_a(x)[0], model_b(x)[0], strict=True):
            assert torch.equal(a, b)
        model_a.double()
        z64, _ = model_a(x.double())
    assert z64[0].dtype == torch.float64


def test_weight_cache_is_not_in_the_state_dict_and_not_used_with_grad() -> None:
    model = nontrivial_model(CFG, dtype=torch.float32)
    keys = list(model.state_dict())
    with torch.no_grad():
        model(_images(dtype=torch.float32))
    assert list(model.state_dict()) == keys
    loss = model.log_prob(_images(dtype=torch.float32)).sum()
    loss.backward()  # with a cached weight reused under grad, v and g would get no gradient
    conv = next(m for m in model.modules() if isinstance(m, WNConv2d))
    assert conv.v.grad is not None and conv.g.grad is not None


# --- channels_last ---------------------------------------------------------------------------------
def test_channels_last_reaches_every_convolution() -> None:
    model = nontrivial_model(CFG, dtype=torch.float32)
    x = _images(dtype=torch.float32)
    assert not any(_conv_layouts(model, x))  # default path: NCHW
    model.set_channels_last(True)
    layouts = _conv_layouts(model, x)
    assert layouts and all(layouts)
    model.set_channels_last(False)
    assert not any(_conv_layouts(model, x))


def test_channels_last_keeps_exactness_in_float64() -> None:
    model = nontrivial_model(CFG, dtype=torch.float64)
    x = _images()
    keys = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    with torch.no_grad():
        zs_ref, ld_ref = model(x)
        model.set_channels_last(True)
        zs, ld = model(x)
        x_back = model.inverse(zs)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == keys
    torch.testing.assert_close(ld, ld_ref, rtol=1e-10, atol=1e-10)
    for a, b in zip(zs, zs_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    assert (x_back - x).abs().max() < 1e-10


def test_channels_last_float32_matches_default_and_round_trips() -> None:
    model = nontrivial_model(CFG, dtype=torch.float32)
    x = _images(dtype=torch.float32)
    with torch.no_grad():
        zs_ref, ld_ref = model(x)
        model.set_channels_last(True)
        zs, ld = model(x.contiguous(memory_format=torch.channels_last))
        x_back = model.inverse(zs)
    torch.testing.assert_close(ld, ld_ref, rtol=1e-5, atol=1e-3)
    for a, b in zip(zs, zs_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert (x_back - x).abs().max() < 1e-5


def test_channels_last_training_gives_the_same_gradients() -> None:
    x = _images(n=8, dtype=torch.float32)
    grads = []
    for cl in (False, True):
        model = nontrivial_model(CFG, dtype=torch.float32).train().set_channels_last(cl)
        model.log_prob(x).mean().backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=1e-3, atol=1e-4, msg=name)


# --- bf16 autocast ---------------------------------------------------------------------------------
def test_bf16_path_is_finite_and_round_trips_in_float32() -> None:
    model = nontrivial_model(CFG, dtype=torch.float32).set_compute_dtype(torch.bfloat16).set_channels_last(True)
    x = _images(dtype=torch.float32)
    with torch.no_grad():
        zs, ld = model(x)
        x_back = model.inverse(zs)
    assert all(z.dtype == torch.float32 and torch.isfinite(z).all() for z in zs)
    assert ld.dtype == torch.float32 and torch.isfinite(ld).all()
    # The coupling arithmetic stays float32 and the inverse recomputes the same s,t from the same
    # conditioning values, so the round trip is float32-exact even though s,t came from bf16 convolutions.
    assert (x_back - x).abs().max() < 1e-5
    with torch.no_grad():
        zs_ref, _ = model.set_compute_dtype(None)(x)
    assert 0 < (zs[0] - zs_ref[0]).abs().max() < 0.5  # really ran in bf16, and close to float32


# --- configure / compile ----------------------------------------------------------------------------
def test_configure_picks_float32_on_a_cpu_without_fast_bf16() -> None:
    model = RealNVP(CFG)
    settings = configure(model, torch.device("cpu"))
    assert settings["channels_last"] is True
    expected = torch.bfloat16 if cpu_has_fast_bf16() else None
    assert settings["compute_dtype"] == expected
    assert all(m.memory_format == torch.channels_last for m in model.modules() if hasattr(m, "memory_format"))


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("gcc") is None and shutil.which("cc") is None, reason="inductor needs a C compiler")
def test_compiled_path_equals_eager() -> None:
    model = nontrivial_model(CFG, dtype=torch.float32)
    x = _images(dtype=torch.float32)
    with torch.no_grad():
        zs_ref, ld_ref = model(x)
        keys = list(model.state_dict())
        compile_nets(model)
        zs, ld = model(x)
        x_back = model.inverse(zs)
    assert list(model.state_dict()) == keys  # compiling in place keeps the checkpoint format
    torch.testing.assert_close(ld, ld_ref, rtol=1e-5, atol=1e-3)
    for a, b in zip(zs, zs_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert (x_back - x).abs().max() < 1e-5


def test_model_built_under_inference_mode_still_runs() -> None:
    with torch.inference_mode():  # parameters become inference tensors, which have no version counter
        model = RealNVP(CFG).eval()
        zs, _ = model(_images(dtype=torch.float32))
        assert torch.isfinite(model.inverse(zs)).all()


def test_weight_cache_can_be_switched_off() -> None:
    model = nontrivial_model(CFG, dtype=torch.float32)
    x = _images(dtype=torch.float32)
    with torch.no_grad():
        cached, _ = model(x)
        WNConv2d.cache_weights = False
        try:
            uncached, _ = model(x)
        finally:
            WNConv2d.cache_weights = True
    for a, b in zip(cached, uncached, strict=True):
        assert torch.equal(a, b)


# --- batch-norm bijector: cached eval affine map -----------------------------------------------------
def test_batchnorm_eval_cache_is_bit_identical_and_follows_running_stats() -> None:
    model = nontrivial_model(CFG, dtype=torch.float32)
    x = _images(dtype=torch.float32)
    with torch.enable_grad():
        zs_grad, ld_grad = model(x)  # uncached path
        x_grad = model.inverse([z.detach() for z in zs_grad])
    with torch.no_grad():
        zs, ld = model(x)
        x_back = model.inverse(zs)
        assert torch.equal(ld, ld_grad.detach()) and torch.equal(x_back, x_grad.detach())
        for a, b in zip(zs, zs_grad, strict=True):
            assert torch.equal(a, b.detach())
        model.train()
        model(_images(n=8, dtype=torch.float32, seed=9))  # updates the running statistics in place
        model.eval()
        zs_new, ld_new = model(x)
    fresh = RealNVP(CFG).eval()
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        zs_fresh, ld_fresh = fresh(x)
    assert not torch.equal(ld_new, ld)
    assert torch.equal(ld_new, ld_fresh)
    for a, b in zip(zs_new, zs_fresh, strict=True):
        assert torch.equal(a, b)
