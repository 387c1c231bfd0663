"""The whole multi-scale model: exactness, shapes, sampling and the prior."""

from __future__ import annotations

import math

import pytest
import torch
from flow_helpers import jacobian_logdet, nontrivial_model

from nvp_core import FlowConfig, RealNVP
from nvp_core.base import standard_normal_logprob

SMALL = {
    "gray-2-scales": FlowConfig(in_channels=1, image_size=4, num_scales=2, mid_channels=4, num_blocks=1),
    "rgb-2-scales": FlowConfig(in_channels=3, image_size=4, num_scales=2, mid_channels=4, num_blocks=1),
    "gray-3-scales": FlowConfig(in_channels=1, image_size=8, num_scales=3, mid_channels=4, num_blocks=1),
}


def _flat(zs: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([z.reshape(z.shape[0], -1) for z in zs], dim=1)


@pytest.mark.parametrize("name", SMALL)
def test_model_logdet_matches_brute_force_jacobian(name: str) -> None:
    cfg = SMALL[name]
    model = nontrivial_model(cfg)
    x = torch.rand(2, cfg.in_channels, cfg.image_size, cfg.image_size, dtype=torch.float64) * 0.9 + 0.05
    zs, logdet = model(x)
    for i in range(2):
        expected = jacobian_logdet(lambda v: _flat(model(v)[0]), x[i : i + 1])
        torch.testing.assert_close(logdet[i], expected, rtol=1e-8, atol=1e-9)
    # And the inverse's Jacobian is the inverse's: -logdet.
    z0 = _flat([z[:1] for z in zs])

    def inv(v: torch.Tensor) -> torch.Tensor:
        parts, offset = [], 0
        for shape in model.latent_shapes:
            n = math.prod(shape)
            parts.append(v.reshape(1, -1)[:, offset : offset + n].view(1, *shape))
            offset += n
        return model.inverse(parts)

    torch.testing.assert_close(jacobian_logdet(inv, z0), -logdet[0], rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("name", SMALL)
def test_model_round_trip_float64(name: str) -> None:
    cfg = SMALL[name]
    model = nontrivial_model(cfg)
    x = torch.rand(4, cfg.in_channels, cfg.image_size, cfg.image_size, dtype=torch.float64)
    zs, _ = model(x)
    assert (model.inverse(zs) - x).abs().max() <= 1e-10


@pytest.mark.parametrize("name", SMALL)
def test_the_inverse_split_at_any_level_is_the_inverse_exactly(name: str) -> None:
    """A finer level's change reuses the coarse part of the inverse: the two halves give the same bits."""
    cfg = SMALL[name]
    model = nontrivial_model(cfg)
    zs, _ = model(torch.rand(3, cfg.in_channels, cfg.image_size, cfg.image_size, dtype=torch.float64) * 0.9 + 0.05)
    zs = [z + 0.3 * torch.randn_like(z) for z in zs]  # not only the latents of real images
    whole = model.inverse(zs)
    for k in range(model.num_levels):
        assert torch.equal(model.inverse_fine(model.inverse_coarse(zs[k:]), zs[:k]), whole), k
    with pytest.raises(ValueError, match="coarse latent levels"):
        model.inverse_coarse([])
    with pytest.raises(ValueError, match="fine latent levels"):
        model.inverse_fine(zs[-1], zs)
    with pytest.raises(ValueError, match="level 2"):
        model.inverse_coarse([zs[0], zs[1][:, :1], *zs[2:]])


@pytest.mark.parametrize(
    "cfg",
    [
        FlowConfig(in_channels=1, image_size=28, num_scales=3, mid_channels=16, num_blocks=2),
        FlowConfig(in_channels=3, image_size=32, num_scales=2, mid_channels=16, num_blocks=2),
    ],
    ids=["28x28x1", "32x32x3"],
)
def test_model_round_trip_float32(cfg: FlowConfig) -> None:
    # Moderate weights, like a trained model's: a wildly random deep flow is ill-conditioned in float32.
    model = nontrivial_model(cfg, dtype=torch.float32, strength=0.1)
    x = torch.rand(4, cfg.in_channels, cfg.image_size, cfg.image_size)
    with torch.no_grad():
        zs, logdet = model(x)
        assert torch.isfinite(logdet).all()
        assert (model.inverse(zs) - x).abs().max() <= 1e-5


@pytest.mark.parametrize(
    ("channels", "size", "scales", "expected"),
    [
        (1, 28, 3, [(2, 14, 14), (4, 7, 7), (4, 7, 7)]),
        (3, 32, 2, [(6, 16, 16), (6, 16, 16)]),
        (3, 32, 4, [(6, 16, 16), (12, 8, 8), (24, 4, 4), (24, 4, 4)]),
        (1, 8, 2, [(2, 4, 4), (2, 4, 4)]),
        (1, 6, 1, [(1, 6, 6)]),
    ],
)
def test_latent_shapes(channels: int, size: int, scales: int, expected: list[tuple[int, int, int]]) -> None:
    model = RealNVP(FlowConfig(in_channels=channels, image_size=size, num_scales=scales, mid_channels=4, num_blocks=1))
    assert model.latent_shapes == expected
    assert sum(math.prod(s) for s in expected) == channels * size * size
    zs, _ = model.eval()(torch.rand(2, channels, size, size))
    assert [tuple(z.shape[1:]) for z in zs] == expected


@pytest.mark.parametrize(("size", "scales"), [(28, 4), (30, 3), (6, 3)])
def test_sizes_that_do_not_fit_are_refused_at_construction(size: int, scales: int) -> None:
    with pytest.raises(ValueError, match=r"divisible by 2\^\(scales-1\)"):
        FlowConfig(image_size=size, num_scales=scales)


def test_wrong_input_shape_is_refused() -> None:
    model = RealNVP(SMALL["gray-2-scales"])
    with pytest.raises(ValueError, match=r"expects images of shape \[B, 1, 4, 4\]"):
        model(torch.rand(2, 3, 4, 4))
    with pytest.raises(ValueError, match="expected 2 latent levels"):
        model.inverse([torch.zeros(1, 2, 2, 2)])


def test_log_prob_is_prior_of_all_levels_plus_logdet() -> None:
    model = nontrivial_model(SMALL["rgb-2-scales"])
    x = torch.rand(3, 3, 4, 4, dtype=torch.float64) * 0.9 + 0.05
    zs, logdet = model(x)
    expected = sum(standard_normal_logprob(z) for z in zs) + logdet
    torch.testing.assert_close(model.log_prob(x), expected, rtol=1e-12, atol=0)
    # The standard normal density, written out.
    z = zs[0]
    by_hand = (-0.5 * z.pow(2) - 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)
    torch.testing.assert_close(standard_normal_logprob(z), by_hand)


def test_log_prob_is_a_change_of_variables_of_the_prior() -> None:
    # A 1-scale model on a 2x2 image whose couplings are the identity (their initial state) factorises
    # over dimensions: each factor is N(a·logit(p)) · a · dlogit/dx, with a = 1/sqrt(1+eps) from the eval
    # batch norms. Its integral over (0,1) is the prior mass of the interval the logit layer reaches,
    # a·(-L, L) with L = logit(1-alpha): the density is exact, and (as in the paper) slightly deficient.
    model = RealNVP(FlowConfig(in_channels=1, image_size=2, num_scales=1, mid_channels=2, num_blocks=1)).double()
    model.eval()
    u = torch.linspace(0.0, 1.0, 20001, dtype=torch.float64)  # alpha > 0: the ends are finite
    x = u.view(-1, 1, 1, 1).expand(-1, 1, 2, 2).contiguous()
    with torch.no_grad():
        density_per_dim = model.log_prob(x).div(4).exp()
    integral = float(torch.trapezoid(density_per_dim, u))
    n_bn = 4  # final scale: 4 checkerboard couplings, each followed by a batch norm
    a = (1.0 + model.config.bn_eps) ** (-0.5 * n_bn)
    reach = a * math.log(0.95 / 0.05)
    mass = math.erf(reach / math.sqrt(2.0))
    assert abs(integral - mass) < 1e-6
    assert 0.99 < mass < 1.0


def test_temperature_zero_gives_the_decoded_zero_latents() -> None:
    model = nontrivial_model(SMALL["gray-3-scales"], dtype=torch.float32)
    samples = model.sample(3, temperature=0.0)
    zeros = [torch.zeros(3, *s) for s in model.latent_shapes]
    torch.testing.assert_close(samples, model.inverse(zeros))
    assert samples.shape == (3, 1, 8, 8) and (samples >= 0).all() and (samples <= 1).all()


def test_per_level_temperature_changes_only_that_level() -> None:
    model = RealNVP(SMALL["gray-3-scales"])
    a = model.sample_latents(4, [1.0, 1.0, 1.0], torch.Generator().manual_seed(0))
    b = model.sample_latents(4, [1.0, 0.5, 1.0], torch.Generator().manual_seed(0))
    assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2])
    torch.testing.assert_close(b[1], 0.5 * a[1])
    with pytest.raises(ValueError, match="one temperature per level"):
        model.sample(2, [1.0, 0.5])


def test_sampling_is_seedable_and_in_range() -> None:
    model = nontrivial_model(SMALL["rgb-2-scales"], dtype=torch.float32)
    s1 = model.sample(5, 0.7, torch.Generator().manual_seed(3))
    s2 = model.sample(5, 0.7, torch.Generator().manual_seed(3))
    assert torch.equal(s1, s2) and s1.shape == (5, 3, 4, 4)
    assert ((s1 >= 0) & (s1 <= 1)).all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_trace_logdets_sum_to_the_forward_logdet(dtype: torch.dtype) -> None:
    model = nontrivial_model(SMALL["gray-3-scales"], dtype=dtype)
    x = torch.rand(2, 1, 8, 8, dtype=dtype)
    zs, logdet = model(x)
    zs2, total, parts = model.trace(x)
    torch.testing.assert_close(sum(p for _, p in parts), logdet)
    # The total is forward's to the bit (float32 included), so numbers derived from a trace equal log_prob's.
    assert torch.equal(total, logdet)
    assert torch.equal(model.log_prob_of(zs2, total), model.log_prob(x))
    assert parts[0][0].startswith("logit")
    assert all(torch.equal(a, b) for a, b in zip(zs, zs2, strict=True))


def test_regularized_parameters_are_weight_norm_and_tanh_scales() -> None:
    model = RealNVP(SMALL["gray-2-scales"])
    reg = {id(p) for p in model.regularized_parameters()}
    names = {n for n, p in model.named_parameters() if id(p) in reg}
    assert names and all(n.endswith((".g", ".scale")) for n in names)
    n_couplings = 3 + 3 + 4
    assert sum(n.endswith(".scale") for n in names) == n_couplings


def test_feature_width_grows_after_each_squeeze() -> None:
    cfg = FlowConfig(in_channels=1, image_size=8, num_scales=3, mid_channels=4, num_blocks=1, max_mid_channels=12)
    model = RealNVP(cfg)
    widths = [m.net.inp.v.shape[0] for m in model.modules() if hasattr(m, "net")]
    # scale 1: 3 x 4 (checkerboard), 3 x 8 (channel); scale 2: 3 x 8, 3 x 12 (capped); final: 4 x 12.
    assert widths == [4] * 3 + [8] * 3 + [8] * 3 + [12] * 3 + [12] * 4


@pytest.mark.parametrize("name", list(SMALL))
def test_trace_layers_rows_add_up_to_the_model(name: str) -> None:
    """The rows a teaching page displays: every layer in order, shapes that chain, the parameters of the whole
    model, log-dets that sum to forward's, and the same latents."""
    model = nontrivial_model(SMALL[name])
    cfg = SMALL[name]
    x = torch.rand(3, cfg.in_channels, cfg.image_size, cfg.image_size, dtype=torch.float64)
    zs, rows = model.trace_layers(x)
    zs_ref, logdet = model(x)
    for a, b in zip(zs, zs_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(sum(r.logdet for r in rows), logdet, rtol=1e-10, atol=1e-8)
    assert sum(r.parameters for r in rows) == sum(p.numel() for p in model.parameters())
    assert rows[0].scale == 0 and rows[0].input == (cfg.in_channels, cfg.image_size, cfg.image_size)
    for prev, row in zip(rows, rows[1:], strict=False):
        if prev.layer.startswith("factor out"):
            c, h, w = prev.input
            assert prev.output == (c // 2, h, w) and row.input == (c - c // 2, h, w)
        else:
            assert row.input == prev.output, (prev, row)
    assert [r.layer for r in rows].count("factor out → latent level 1") == (model.num_levels > 1)
    assert all(r.logdet.shape == (3,) for r in rows)


def test_computing_in_sets_and_restores_the_compute_dtype():
    from nvp_core.coupling import _AffineCoupling

    model = RealNVP(FlowConfig(image_size=8, num_scales=2, mid_channels=4, num_blocks=1))
    model.set_compute_dtype(torch.bfloat16)

    def dtypes():
        return {m.compute_dtype for m in model.modules() if isinstance(m, _AffineCoupling)}

    with model.computing_in(None) as m:
        assert m is model and dtypes() == {None}
    assert dtypes() == {torch.bfloat16}
    with pytest.raises(RuntimeError, match="boom"), model.computing_in(None):
        raise RuntimeError("boom")
    assert dtypes() == {torch.bfloat16}
