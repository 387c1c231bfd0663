"""Correctness of every fast path (issues 5, 11): weight-norm cache, channels_last, bf16 autocast,
torch.compile; and the one function that chooses between them by measuring (cache, overrides, app fidelity).

No timings are asserted here (the machines are noisy); bench/ measures speed. Each test compares a fast path
against the default path it replaces, so it fails if the fast path changes the model's function or its
bookkeeping. The chooser's own timing is replaced by a stub where only its bookkeeping is tested.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from flow_helpers import nontrivial_model

from nvp_core import FlowConfig, RealNVP, fastpath, fastpath_choice
from nvp_core.fastpath import ALL_PATHS, FastPath
from nvp_core.fastpath_choice import choose, pick
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


# --- every candidate of the chooser computes the same function --------------------------------------
@pytest.mark.parametrize("path", ALL_PATHS, ids=lambda p: p.name)
def test_every_candidate_computes_the_same_function(path: FastPath) -> None:
    bf16 = path.dtype == torch.bfloat16
    x = _images(n=8, dtype=torch.float32)
    ref = nontrivial_model(CFG, dtype=torch.float32)
    model = path.apply(nontrivial_model(CFG, dtype=torch.float32))
    with torch.no_grad():
        zs_ref, ld_ref = ref(x)
        zs, ld = model(x)
        x_back = model.inverse(zs)
    tol = {"rtol": 0.05, "atol": 0.05} if bf16 else {"rtol": 1e-4, "atol": 1e-4}
    torch.testing.assert_close(ld, ld_ref, **tol)
    for a, b in zip(zs, zs_ref, strict=True):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, **tol)
    # float32: the inverse recomputes the same s,t, so it is exact. bf16: a float32 rounding difference in the
    # conditioning half can flip a bf16 rounding of s,t (seen with oneDNN's emulated bf16 on AVX2-only CPUs).
    assert (x_back - x).abs().max() < (1e-2 if bf16 else 1e-5)
    # training: the same gradients (bf16: the same direction, to bf16 accuracy; 0.98 measured)
    grads = []
    for m in (ref.train(), model.train()):
        m.zero_grad()
        m.log_prob(x).mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters()]))
    if bf16:
        assert torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0) > 0.95
    else:
        torch.testing.assert_close(grads[1], grads[0], rtol=1e-3, atol=1e-4)


def test_fast_path_names_round_trip_and_apply() -> None:
    assert [p.name for p in ALL_PATHS] == ["fp32-nchw", "fp32-cl", "bf16-nchw", "bf16-cl"]
    for p in ALL_PATHS:
        assert FastPath.from_name(p.name) == p
    with pytest.raises(ValueError, match="unknown fast path 'fp16-cl'"):
        FastPath.from_name("fp16-cl")
    model = FastPath.from_name("bf16-cl").apply(RealNVP(CFG))
    assert all(m.memory_format == torch.channels_last for m in model.modules() if hasattr(m, "memory_format"))
    assert all(m.compute_dtype == torch.bfloat16 for m in model.modules() if hasattr(m, "compute_dtype"))


# --- the chooser: measuring, the cache, overrides -----------------------------------------------------
@pytest.fixture
def cache_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cache" / "fastpath.json"
    monkeypatch.setenv(fastpath_choice.ENV_CACHE, str(path))
    monkeypatch.delenv(fastpath.ENV_OVERRIDE, raising=False)
    monkeypatch.setattr(fastpath, "bf16_can_be_fast", lambda device: True)  # all four are candidates
    monkeypatch.setattr(fastpath_choice, "load_per_core", lambda: 0.1)  # a quiet machine unless a test says otherwise
    return path


@pytest.fixture
def fake_timings(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Replaces the timing by a stub (bf16-cl fastest); returns the list of calls it received."""
    calls: list[int] = []

    def measure(config: FlowConfig, mode: str, batch: int, device: torch.device, paths: list[FastPath]):
        calls.append(len(paths))
        fake = {"fp32-nchw": 100.0, "fp32-cl": 80.0, "bf16-nchw": 70.0, "bf16-cl": 50.0}
        return {p.name: fake[p.name] for p in paths}

    monkeypatch.setattr(fastpath_choice, "measure", measure)
    return calls


def test_the_choice_is_measured_once_then_read_from_the_cache(cache_file: Path, fake_timings: list[int]) -> None:
    first = choose(CFG, "train", 32)
    assert (first.name, first.source) == ("bf16-cl", "measured") and fake_timings == [4]
    entry = next(iter(json.loads(cache_file.read_text())["entries"].values()))
    assert entry["path"] == "bf16-cl" and entry["key"]["mode"] == "train" and entry["key"]["model"] == CFG.to_dict()
    assert {"cpu", "flags", "torch", "threads"} <= set(entry["key"])
    second = choose(CFG, "train", 32)
    assert (second.name, second.source) == ("bf16-cl", "cache") and fake_timings == [4]  # not measured again
    assert second.timings_ms == first.timings_ms
    choose(CFG, "infer", 32)  # another mode, another model: measured on their own
    choose(FlowConfig(in_channels=1, image_size=8, num_scales=2, mid_channels=4, num_blocks=1), "train", 32)
    assert fake_timings == [4, 4, 4]
    assert len(json.loads(cache_file.read_text())["entries"]) == 3


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"\xff\xfe\x00garbage", b"[]", b'{"version": 1, "entries": []}', b'{"version": 99, "entries": {}}'],
    ids=["truncated", "binary", "list", "bad-entries", "other-version"],
)
def test_a_corrupt_cache_is_ignored_and_rewritten(cache_file: Path, fake_timings: list[int], content: bytes) -> None:
    cache_file.parent.mkdir(parents=True)
    cache_file.write_bytes(content)
    assert choose(CFG, "train", 32).source == "measured"
    assert json.loads(cache_file.read_text())["version"] == fastpath_choice.CACHE_VERSION
    assert choose(CFG, "train", 32).source == "cache"


def test_a_cache_entry_naming_an_unknown_path_is_ignored(cache_file: Path, fake_timings: list[int]) -> None:
    choose(CFG, "train", 32)
    data = json.loads(cache_file.read_text())
    for entry in data["entries"].values():
        entry["path"] = "fp64-weird"
    cache_file.write_text(json.dumps(data))
    assert choose(CFG, "train", 32).source == "measured"


def test_an_unreadable_or_unwritable_cache_is_not_a_crash(cache_file: Path, fake_timings: list[int]) -> None:
    cache_file.mkdir(parents=True)  # a directory where the file should be: cannot be read nor replaced
    assert choose(CFG, "train", 32).name == "bf16-cl"
    assert choose(CFG, "train", 32).source == "measured"  # nothing was cached, and nothing crashed


def test_a_busy_machines_measurement_is_redone_when_quiet_or_a_day_old(
    cache_file: Path, fake_timings: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    load = [1.2]  # per core: other jobs are running
    monkeypatch.setattr(fastpath_choice, "load_per_core", lambda: load[0])
    assert choose(CFG, "train", 32).source == "measured"
    (entry,) = json.loads(cache_file.read_text())["entries"].values()
    assert entry["load_per_core"] == 1.2
    assert choose(CFG, "train", 32).source == "cache"  # still busy, and fresh: kept
    load[0] = 0.05
    assert choose(CFG, "train", 32).source == "measured"  # quiet now: measured again, and this one stays
    load[0] = 1.5
    assert choose(CFG, "train", 32).source == "cache"
    data = json.loads(cache_file.read_text())  # a busy measurement from two days ago is not trusted
    for e in data["entries"].values():
        e["load_per_core"], e["measured_utc"] = 0.9, "2026-01-01T00:00:00+00:00"
    cache_file.write_text(json.dumps(data))
    assert choose(CFG, "train", 32).source == "measured"
    assert fake_timings == [4, 4, 4]


def test_overrides(cache_file: Path, fake_timings: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    c = choose(CFG, "train", 32, precision="fp32-nchw")  # a full name: no measurement at all
    assert (c.name, c.source) == ("fp32-nchw", "override") and fake_timings == []
    assert choose(CFG, "train", 32, precision="fp32").name == "fp32-cl"  # the dtype fixed, the layout measured
    monkeypatch.setenv(fastpath.ENV_OVERRIDE, "bf16-nchw")
    assert (choose(CFG, "train", 32).name, choose(CFG, "infer", 8).source) == ("bf16-nchw", "override")
    assert choose(CFG, "train", 32, precision="fp32").name == "fp32-cl"  # the caller's flag wins over the env
    monkeypatch.setenv(fastpath.ENV_OVERRIDE, "fp32-nchw")  # a whole path of the flag's dtype pins the layout too
    c = choose(CFG, "train", 32, precision="fp32")
    assert (c.name, c.source) == ("fp32-nchw", "override")
    monkeypatch.setenv(fastpath.ENV_OVERRIDE, "fp16")
    with pytest.raises(ValueError, match=r"\$NVP_FASTPATH must be one of auto, fp32, bf16, fp32-nchw"):
        choose(CFG, "train", 32)
    with pytest.raises(ValueError, match="mode must be one of"):
        choose(CFG, "sample", 32)


def test_trainer_precision_goes_through_the_chooser(cache_file: Path, fake_timings: list[int]) -> None:
    from train.loop import resolve_precision

    model = RealNVP(CFG)
    assert resolve_precision("auto", torch.device("cpu"), model, 32) == torch.bfloat16
    assert all(m.memory_format == torch.channels_last for m in model.modules() if hasattr(m, "memory_format"))
    assert resolve_precision("fp32", torch.device("cpu"), model, 32) is None
    assert resolve_precision("bf16", torch.device("cpu"), model, 32) == torch.bfloat16
    assert resolve_precision("fp32", torch.device("cpu")) is None  # no model: nothing to measure


def test_bf16_is_chosen_only_when_clearly_faster() -> None:
    assert pick({"fp32-nchw": 100.0, "fp32-cl": 80.0, "bf16-cl": 75.0}).name == "fp32-cl"  # 6 %: noise
    assert pick({"fp32-nchw": 100.0, "fp32-cl": 80.0, "bf16-cl": 70.0}).name == "bf16-cl"  # 12.5 %
    assert pick({"fp32-nchw": 60.0, "fp32-cl": 80.0}).name == "fp32-nchw"
    assert pick({"bf16-nchw": 60.0, "bf16-cl": 50.0}).name == "bf16-cl"


def test_bf16_is_no_candidate_where_it_cannot_be_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fastpath, "bf16_can_be_fast", lambda device: False)
    assert [p.name for p in fastpath.candidates(torch.device("cpu"))] == ["fp32-nchw", "fp32-cl"]
    assert [p.name for p in fastpath.candidates(torch.device("cpu"), "bf16")] == ["bf16-nchw", "bf16-cl"]


def test_a_real_measurement_times_every_candidate(cache_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        fastpath_choice, "MAX_ROUNDS", fastpath_choice.MIN_ROUNDS
    )  # the rounds' bookkeeping, not the budget
    tiny = FlowConfig(in_channels=1, image_size=8, num_scales=2, mid_channels=4, num_blocks=1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a busy machine, 2 OpenMP threads make each tiny step take seconds
    try:
        for mode in ("train", "infer"):
            c = choose(tiny, mode, 4)
            assert c.source == "measured" and set(c.timings_ms) == {p.name for p in ALL_PATHS}
            assert all(t > 0 for t in c.timings_ms.values()) and c.path in ALL_PATHS
            assert c.key["threads"] == 1
    finally:
        torch.set_num_threads(threads)


# --- the app: pictures with the fast path, numbers in float32 ------------------------------------------
def test_app_model_draws_the_float32_pictures_and_numbers(cache_file: Path) -> None:
    from app import compute
    from app.models import find_checkpoint, load_gallery, prepare_app_model
    from nvp_core import load_model

    ckpt = find_checkpoint("digits") or find_checkpoint("fashion_mnist")
    if ckpt is None:
        pytest.skip("no bundled model")
    model, _ = load_model(ckpt)
    chosen = prepare_app_model(model)  # the fast path, and the s,t networks frozen where that pays
    ref, _ = load_model(ckpt)  # float32, NCHW
    assert chosen["source"] in ("measured", "only candidate") and set(chosen["fidelity"]) >= {"fp32-nchw", "fp32-cl"}
    assert chosen["fidelity"][chosen["path"]]["max_grey_levels"] <= 1
    assert isinstance(chosen["freezing"]["frozen"], bool) and chosen["freezing"]["max_grey_levels"] <= 1
    zs = ref.sample_latents(16, 0.8, torch.Generator().manual_seed(1))
    pics, pics_ref = compute.decode(model, zs), compute.decode(ref, zs)
    assert np.abs(pics.astype(int) - pics_ref.astype(int)).max() <= 1  # within one grey level
    images = pics_ref[:8]
    gallery = ckpt.with_name(ckpt.name.replace(".safetensors", ".gallery.npz"))
    if gallery.is_file():
        c, s = model.config.in_channels, model.config.image_size
        images = load_gallery(gallery, c, s).images[:8]
    (zs_a, bpd), (zs_b, bpd_ref) = compute.encode_with_bpd(model, images), compute.encode_with_bpd(ref, images)
    np.testing.assert_allclose(bpd, bpd_ref, rtol=0, atol=1e-4)  # shown with 3 decimals
    err, pix, rec = compute.reconstruction_error(model, images[0], [z[:1] for z in zs_a])
    err_ref, pix_ref, rec_ref = compute.reconstruction_error(ref, images[0], [z[:1] for z in zs_b])
    assert err < 1e-5 and err_ref < 1e-5 and pix == pix_ref == 0 and np.array_equal(rec, rec_ref)


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
