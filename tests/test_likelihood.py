"""Dequantisation, bits/dim and its split by level."""

from __future__ import annotations

import math

import pytest
import torch
from flow_helpers import nontrivial_model

from nvp_core import FlowConfig, RealNVP, bits_per_dim, bits_per_dim_breakdown, dequantize
from nvp_core.likelihood import (
    fixed_noise_bits_per_dim,
    fixed_noise_bits_per_dim_and_breakdown,
    fixed_noise_breakdown,
    fixed_noise_dequantize,
)

CFG = FlowConfig(in_channels=1, image_size=8, num_scales=3, mid_channels=4, num_blocks=1)


def _images(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 1, 8, 8), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def test_dequantize_stays_inside_each_bin() -> None:
    x = torch.tensor([[[[0, 1, 254, 255]]]], dtype=torch.uint8)
    d = dequantize(x, torch.Generator().manual_seed(0))
    assert d.dtype == torch.float32
    assert ((d * 256).floor() == x.float()).all()
    torch.testing.assert_close(dequantize(x, noise=False), (x.float() + 0.5) / 256)


def test_dequantize_refuses_floats() -> None:
    with pytest.raises(TypeError, match="integer pixel values"):
        dequantize(torch.rand(1, 1, 2, 2))


def test_bits_per_dim_is_the_negative_log2_density_plus_8() -> None:
    model = nontrivial_model(CFG, dtype=torch.float32, strength=0.3)
    images = _images()
    bpd = bits_per_dim(model, images, seed=5)
    x = dequantize(images, torch.Generator().manual_seed(5))
    expected = -model.log_prob(x) / (64 * math.log(2.0)) + 8.0
    torch.testing.assert_close(bpd, expected)
    assert bpd.shape == (4,)


def test_bits_per_dim_is_seedable() -> None:
    model = nontrivial_model(CFG, dtype=torch.float32, strength=0.3)
    images = _images()
    assert torch.equal(bits_per_dim(model, images, seed=1), bits_per_dim(model, images, seed=1))
    assert not torch.equal(bits_per_dim(model, images, seed=1), bits_per_dim(model, images, seed=2))


def test_an_untrained_model_is_near_the_uniform_8_bits_scale() -> None:
    # At initialisation every coupling is the identity; the density is the logit's pushforward of the
    # prior, so the bits/dim of uniform noise images is a few bits around 8, not 0 or 100.
    cfg = FlowConfig(in_channels=1, image_size=8, num_scales=2, mid_channels=4, num_blocks=1)
    bpd = bits_per_dim(RealNVP(cfg).eval(), _images(64))
    assert 7.0 < float(bpd.mean().detach()) < 10.0


def test_breakdown_sums_to_bits_per_dim_and_names_every_level() -> None:
    model = nontrivial_model(CFG, dtype=torch.float64)
    images = _images()
    parts = bits_per_dim_breakdown(model, images, seed=3)
    total = sum(parts.values())
    torch.testing.assert_close(total, bits_per_dim(model, images, seed=3), rtol=1e-10, atol=1e-10)
    assert [k for k in parts if k.startswith("prior")] == ["prior level 1", "prior level 2", "prior level 3"]
    assert {"logdet logit", "logdet scale 1", "logdet scale 2", "logdet scale 3", "dequantisation"} <= set(parts)
    assert all(v.shape == (4,) for v in parts.values())


# --- the one convention every bits/dim shown to a user follows (nvp_core.likelihood.fixed_noise_*) ----------
def test_fixed_noise_bits_per_dim_gives_the_trainers_test_bits_per_dim() -> None:
    """Over a test set in order, its mean is train.evaluate.eval_bits_per_dim (blocks of 500, seeds 1000 + i),
    and image i alone (first_index=i) gets the value it has in the set."""
    from train.evaluate import eval_bits_per_dim

    model = nontrivial_model(CFG, dtype=torch.float32, strength=0.3).eval()
    images = _images(1103, seed=7)
    per_image = fixed_noise_bits_per_dim(model, images)
    assert per_image.shape == (1103,)
    assert float(per_image.double().mean()) == pytest.approx(eval_bits_per_dim(model, images), rel=1e-12)
    for i in (0, 3, 499, 500, 777, 1102):
        alone = fixed_noise_bits_per_dim(model, images[i : i + 1], first_index=i)
        torch.testing.assert_close(alone, per_image[i : i + 1], rtol=1e-5, atol=1e-5)
    x = fixed_noise_dequantize(images[498:503], first_index=498)
    assert ((x * 256).floor() == images[498:503].float()).all()
    torch.testing.assert_close(x, fixed_noise_dequantize(images, 0)[498:503], rtol=0, atol=0)
    parts = fixed_noise_breakdown(model, images[5:7], first_index=5)
    torch.testing.assert_close(sum(parts.values()), per_image[5:7], rtol=1e-5, atol=1e-5)


def test_bits_per_dim_and_breakdown_in_one_pass_are_the_two_functions_numbers() -> None:
    """One traced pass gives fixed_noise_bits_per_dim's numbers to the bit (float32, across noise blocks) and
    fixed_noise_breakdown's terms, which add up to them."""
    model = nontrivial_model(CFG, dtype=torch.float32, strength=0.3).eval()
    images = _images(37, seed=11)
    for first in (0, 480):  # 480: the images straddle two noise blocks
        bpd, parts = fixed_noise_bits_per_dim_and_breakdown(model, images, first_index=first)
        assert torch.equal(bpd, fixed_noise_bits_per_dim(model, images, first_index=first))
        alone = fixed_noise_breakdown(model, images, first_index=first)
        assert parts.keys() == alone.keys() and all(torch.equal(parts[k], alone[k]) for k in parts)
        torch.testing.assert_close(sum(parts.values()), bpd, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="eval mode"):
        fixed_noise_bits_per_dim_and_breakdown(model.train(), images)
    with pytest.raises(ValueError, match="no images"):
        fixed_noise_bits_per_dim_and_breakdown(model.eval(), images[:0])


def test_fixed_noise_bits_per_dim_refuses_training_mode_and_bad_indices() -> None:
    model = nontrivial_model(CFG, dtype=torch.float32, strength=0.3)
    with pytest.raises(ValueError, match="eval mode"):
        fixed_noise_bits_per_dim(model.train(), _images())
    with pytest.raises(ValueError, match="first_index"):
        fixed_noise_dequantize(_images(), first_index=-1)
