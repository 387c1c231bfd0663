"""The weight average (train/ema.py): the update formula, the swap, saving and loading."""

from __future__ import annotations

import pytest
import torch
from flow_helpers import nontrivial_model

from nvp_core import FlowConfig
from train.ema import WeightAverage

CFG = FlowConfig(in_channels=1, image_size=8, num_scales=2, mid_channels=4, num_blocks=1)


def _params(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def _step(model: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype))


def test_the_average_follows_the_formula_with_its_warm_up() -> None:
    model = nontrivial_model(CFG)
    ema = WeightAverage(model, decay=0.9)
    expected = _params(model)
    for t in range(30):
        _step(model, t)
        d = min(0.9, (1 + t) / (10 + t))  # 0.1, 0.18, ... then 0.9 from t = 80: the warm-up is in force here
        expected = [d * e + (1 - d) * p for e, p in zip(expected, _params(model), strict=True)]
        ema.update(model)
    for s, e in zip(ema.shadow, expected, strict=True):
        torch.testing.assert_close(s, e, rtol=1e-12, atol=1e-12)
    assert ema.updates == 30 and ema.current_decay() == pytest.approx(31 / 40)


def test_swapped_in_uses_the_average_and_restores_the_weights_even_on_error() -> None:
    model = nontrivial_model(CFG)
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ema = WeightAverage(model, decay=0.5)
    _step(model, 1)
    ema.update(model)
    live, shadow = _params(model), [s.clone() for s in ema.shadow]
    out_live = model(x)[1]
    with ema.swapped_in(model) as m:
        for p, s in zip(m.parameters(), shadow, strict=True):
            assert torch.equal(p, s)
        out_avg = m(x)[1]
    assert not torch.allclose(out_live, out_avg)
    with pytest.raises(RuntimeError, match="boom"), ema.swapped_in(model):
        raise RuntimeError("boom")
    for p, w in zip(model.parameters(), live, strict=True):
        assert torch.equal(p, w)
    for s, w in zip(ema.shadow, shadow, strict=True):
        assert torch.equal(s, w)
    torch.testing.assert_close(model(x)[1], out_live, rtol=0, atol=0)


def test_state_round_trip_and_mismatches_are_refused() -> None:
    model = nontrivial_model(CFG)
    ema = WeightAverage(model, decay=0.99)
    for t in range(3):
        _step(model, t)
        ema.update(model)
    saved = ema.state_dict()
    other = WeightAverage(nontrivial_model(CFG, seed=5), decay=0.99)
    other.load_state_dict(saved)
    assert other.updates == 3
    for a, b in zip(other.shadow, ema.shadow, strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="lacks"):
        other.load_state_dict({k: v for k, v in saved.items() if k != "ema.__updates__"})
    bigger = WeightAverage(nontrivial_model(FlowConfig(in_channels=1, image_size=8, num_scales=2, mid_channels=6,
                                                        num_blocks=1)), decay=0.99)  # fmt: skip
    with pytest.raises(ValueError, match="has shape"):
        bigger.load_state_dict(saved)
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        WeightAverage(model, decay=1.0)


def test_a_saved_average_continues_through_the_constructor() -> None:
    # A resume state's average (flat tensors, as every trainer version wrote them) continues where it stopped.
    model = nontrivial_model(CFG)
    old = {f"ema.{n}": p.detach() * 2 for n, p in model.named_parameters()}
    old["ema.__updates__"] = torch.tensor([7], dtype=torch.int64)
    ema = WeightAverage(model, decay=0.9, state=old)
    assert ema.updates == 7 and ema.current_decay() == pytest.approx(8 / 17)
    for (n, p), s in zip(model.named_parameters(), ema.shadow, strict=True):
        assert torch.equal(s, p.detach() * 2), n
    assert ema.state_dict().keys() == old.keys()
