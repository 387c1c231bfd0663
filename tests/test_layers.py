"""One contract test over every bijective layer of nvp_core, in float64 with non-trivial weights."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from flow_helpers import jacobian_logdet, perturb, warm_batchnorm

from nvp_core import (
    BatchNormFlow,
    Bijector,
    ChannelCoupling,
    CheckerboardCoupling,
    CheckerboardOrder,
    LogitTransform,
    Sequential,
    Squeeze,
)
from nvp_core.masks import channel_mask, checkerboard_mask

SHAPE = (2, 4, 4)  # C, H, W: small enough for a brute-force Jacobian

LAYERS: dict[str, Callable[[], Bijector]] = {
    "logit": lambda: LogitTransform(0.05),
    "checkerboard-even": lambda: CheckerboardCoupling(2, 4, 4, mid=8, num_blocks=2, parity=0),
    "checkerboard-odd": lambda: CheckerboardCoupling(2, 4, 4, mid=8, num_blocks=2, parity=1),
    "channel-first": lambda: ChannelCoupling(2, mid=8, num_blocks=2, parity=0),
    "channel-second": lambda: ChannelCoupling(2, mid=8, num_blocks=2, parity=1),
    "batchnorm": lambda: BatchNormFlow(2),
    "squeeze": lambda: Squeeze(),
    "checkerboard-order": lambda: CheckerboardOrder(8),
    "sequential": lambda: Sequential(
        [CheckerboardCoupling(2, 4, 4, 8, 1, 0), BatchNormFlow(2), Squeeze(), ChannelCoupling(8, 8, 1, 1)]
    ),
}


def _input(name: str, gen: torch.Generator, batch: int = 3) -> torch.Tensor:
    shape = (8, 2, 2) if name == "checkerboard-order" else SHAPE
    x = torch.rand(batch, *shape, generator=gen, dtype=torch.float64)
    return x * 0.9 + 0.05 if name == "logit" else (x - 0.5) * 4


def _layer(name: str) -> Bijector:
    torch.manual_seed(0)
    layer = LAYERS[name]().double()
    perturb(layer, seed=1)
    gen = torch.Generator().manual_seed(2)
    return warm_batchnorm(layer, lambda: _input(name, gen, batch=16))


@pytest.mark.parametrize("name", LAYERS)
def test_logdet_matches_brute_force_jacobian(name: str) -> None:
    layer = _layer(name)
    x = _input(name, torch.Generator().manual_seed(3), batch=2)
    _, logdet = layer(x)
    assert logdet.shape == (2,)
    for i in range(2):
        expected = jacobian_logdet(lambda v: layer(v)[0], x[i : i + 1])
        torch.testing.assert_close(logdet[i], expected, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("name", LAYERS)
def test_inverse_jacobian_is_inverse(name: str) -> None:
    layer = _layer(name)
    x = _input(name, torch.Generator().manual_seed(4), batch=1)
    y, logdet = layer(x)
    torch.testing.assert_close(jacobian_logdet(layer.inverse, y), -logdet[0], rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("name", LAYERS)
def test_round_trip_shapes_and_finiteness(name: str) -> None:
    layer = _layer(name)
    x = _input(name, torch.Generator().manual_seed(5), batch=5)
    y, logdet = layer(x)
    assert logdet.shape == (5,) and logdet.dtype == x.dtype
    assert y.numel() == x.numel()
    assert torch.isfinite(y).all() and torch.isfinite(logdet).all()
    assert (layer.inverse(y) - x).abs().max() <= 1e-10


@pytest.mark.parametrize("name", LAYERS)
def test_gradient_reaches_every_parameter(name: str) -> None:
    layer = _layer(name).train()
    x = _input(name, torch.Generator().manual_seed(6), batch=4).requires_grad_(True)
    y, logdet = layer(x)
    (y.square().sum() - logdet.sum()).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for pname, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, f"no gradient reaches {pname}"


@pytest.mark.parametrize("name", LAYERS)
def test_state_dict_round_trip_gives_identical_outputs(name: str) -> None:
    layer = _layer(name)
    x = _input(name, torch.Generator().manual_seed(7))
    twin = LAYERS[name]().double()
    twin.load_state_dict(layer.state_dict())
    twin.eval()
    y1, l1 = layer(x)
    y2, l2 = twin(x)
    assert torch.equal(y1, y2) and torch.equal(l1, l2)


def test_couplings_start_at_the_identity() -> None:
    x = torch.randn(3, *SHAPE, dtype=torch.float64)
    for layer in (CheckerboardCoupling(2, 4, 4, 8, 2, 0), ChannelCoupling(2, 8, 2, 1)):
        y, logdet = layer.double().eval()(x)
        assert torch.equal(y, x) and torch.equal(logdet, torch.zeros(3, dtype=torch.float64))


def test_checkerboard_coupling_leaves_its_conditioning_pixels_unchanged() -> None:
    layer = _layer("checkerboard-even")
    x = _input("checkerboard-even", torch.Generator().manual_seed(8))
    y, _ = layer(x)
    fixed = layer.mask.bool().expand_as(x)
    assert torch.equal(y[fixed], x[fixed])
    assert not torch.allclose(y[~fixed], x[~fixed])


def test_channel_coupling_leaves_its_conditioning_half_unchanged() -> None:
    for parity, half in ((0, slice(0, 1)), (1, slice(1, 2))):
        torch.manual_seed(0)
        layer = perturb(ChannelCoupling(2, 8, 2, parity).double()).eval()
        x = torch.randn(2, *SHAPE, dtype=torch.float64)
        y, _ = layer(x)
        assert torch.equal(y[:, half], x[:, half])


def test_log_scale_is_bounded_by_the_tanh_factor() -> None:
    layer = _layer("checkerboard-even")
    x = _input("checkerboard-even", torch.Generator().manual_seed(9)) * 1e6
    _, logdet = layer(x)
    bound = layer.scale.abs().sum() * 16 / 2 * 1.0000001  # half the pixels of each channel are free
    assert (logdet.abs() <= bound).all()


def test_batchnorm_uses_batch_statistics_in_training_and_running_ones_in_eval() -> None:
    bn = BatchNormFlow(2).double().train()
    x = torch.randn(64, *SHAPE, dtype=torch.float64) * 3 + 1
    y, _ = bn(x)
    torch.testing.assert_close(y.mean(dim=(0, 2, 3)), torch.zeros(2, dtype=torch.float64), atol=1e-10, rtol=0)
    assert (bn.running_mean != 0).all()
    bn.eval()
    y2, _ = bn(x)
    assert not torch.allclose(y, y2)
    torch.testing.assert_close(bn.inverse(y2), x, rtol=0, atol=1e-10)


def test_squeeze_layout() -> None:
    x = torch.arange(16.0).view(1, 1, 4, 4)
    y, logdet = Squeeze()(x)
    assert y.shape == (1, 4, 2, 2) and torch.equal(logdet, torch.zeros(1))
    # Channel 2i+j holds the pixel at offset (i, j) of each 2x2 block.
    assert torch.equal(y[0, :, 0, 0], torch.tensor([0.0, 1.0, 4.0, 5.0]))


def test_checkerboard_order_puts_one_colour_in_each_half() -> None:
    x = torch.arange(16.0).view(1, 1, 4, 4)
    y, _ = Squeeze()(x)
    z, _ = CheckerboardOrder(4)(y)
    colour = (torch.arange(4).view(-1, 1) + torch.arange(4).view(1, -1)) % 2
    first, second = z[0, :2].flatten(), z[0, 2:].flatten()
    assert set(colour.flatten()[first.long()].tolist()) == {0}
    assert set(colour.flatten()[second.long()].tolist()) == {1}


@pytest.mark.parametrize(("height", "width"), [(4, 4), (3, 5)])
@pytest.mark.parametrize("parity", [0, 1])
def test_checkerboard_mask_is_one_where_the_coordinates_sum_to_the_parity(height: int, width: int, parity: int) -> None:
    i, j = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    expected = ((i + j) % 2 == parity).double().view(1, 1, height, width)
    assert torch.equal(checkerboard_mask(height, width, parity, torch.float64), expected)


def test_channel_mask_holds_one_half_of_the_channels() -> None:
    assert channel_mask(4, 0).flatten().tolist() == [1, 1, 0, 0]
    assert channel_mask(4, 1).flatten().tolist() == [0, 0, 1, 1]


def test_checkerboard_order_inverse_undoes_it() -> None:
    layer = CheckerboardOrder(12)
    assert torch.equal(layer.perm[layer.inv_perm], torch.arange(12))
    assert sorted(layer.perm.tolist()) == list(range(12))


def test_checkerboard_order_rejects_bad_channel_counts() -> None:
    with pytest.raises(ValueError, match="multiple of 4"):
        CheckerboardOrder(6)


def test_channel_coupling_rejects_odd_channels() -> None:
    with pytest.raises(ValueError, match="even channel count"):
        ChannelCoupling(3, 8, 1, 0)


def test_every_bijector_describes_itself():
    from nvp_core import FlowConfig, RealNVP
    from nvp_core.base import Bijector

    class Plain(Bijector):
        pass

    assert Plain().describe() == "Plain"  # the base class default: no caller needs to probe for it
    model = RealNVP(FlowConfig(image_size=8, num_scales=2, mid_channels=4, num_blocks=1))
    for layer in model.modules():
        if isinstance(layer, Bijector):
            assert isinstance(layer.describe(), str) and layer.describe()
