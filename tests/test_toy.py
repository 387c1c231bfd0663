"""The vector Real NVP (nvp_core.toy): exact log-det, round trip, density, traces; in float64 with non-trivial
weights and trained batch-norm statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from flow_helpers import jacobian_logdet, perturb, warm_batchnorm

from nvp_core import BatchNormFlow, ChannelCoupling
from nvp_core.toy import ToyFlow
from nvp_core.toy_data import DATASETS, EXTENT, make


def _flow(dim: int = 2, couplings: int = 4, seed: int = 0, strength: float = 1.0) -> ToyFlow:
    torch.manual_seed(seed)
    flow = ToyFlow(dim, num_couplings=couplings, hidden=16).double()
    perturb(flow, seed=seed + 1, strength=strength)
    gen = torch.Generator().manual_seed(seed + 2)
    warm_batchnorm(flow, lambda: torch.randn(64, dim, generator=gen, dtype=torch.float64) * 2 + 0.5, steps=4)
    return flow


def test_batchnorm_statistics_are_trained_and_non_trivial() -> None:
    flow = _flow()
    bns = flow.batchnorms()
    assert len(bns) == 3  # between the four couplings
    for bn in bns:
        assert (bn.running_mean.abs() > 1e-3).all() and ((bn.running_var - 1).abs() > 1e-3).all()
    assert all(isinstance(p, BatchNormFlow | ChannelCoupling) for p in flow.parts)


@pytest.mark.parametrize("dim", [2, 4])
def test_logdet_matches_brute_force_jacobian(dim: int) -> None:
    flow = _flow(dim)
    x = torch.randn(3, dim, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * 2
    z, logdet = flow(x)
    assert z.shape == x.shape and logdet.shape == (3,)
    assert not torch.allclose(z, x)  # the weights are not the identity's
    for i in range(3):
        expected = jacobian_logdet(lambda v: flow(v)[0], x[i : i + 1])
        torch.testing.assert_close(logdet[i], expected, rtol=1e-8, atol=1e-10)
        inverse = jacobian_logdet(flow.inverse, z[i : i + 1])
        torch.testing.assert_close(inverse, -logdet[i], rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("dim", [2, 6])
def test_round_trip(dim: int) -> None:
    flow = _flow(dim, couplings=5)
    x = torch.randn(50, dim, generator=torch.Generator().manual_seed(6), dtype=torch.float64) * 3
    z, _ = flow(x)
    assert (flow.inverse(z) - x).abs().max() <= 1e-10
    w = torch.randn(50, dim, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    assert (flow(flow.inverse(w))[0] - w).abs().max() <= 1e-10


def test_starts_as_the_identity_up_to_batch_norm() -> None:
    flow = ToyFlow(2, batchnorm=False).double().eval()
    x = torch.randn(10, 2, dtype=torch.float64)
    z, logdet = flow(x)
    assert torch.equal(z, x) and torch.equal(logdet, torch.zeros(10, dtype=torch.float64))


def test_density_integrates_to_one() -> None:
    flow = _flow(strength=0.3)
    side = np.linspace(-12, 12, 481)
    xx, yy = np.meshgrid(side, side)
    pts = torch.from_numpy(np.stack([xx.ravel(), yy.ravel()], axis=1))
    with torch.no_grad():
        p = flow.log_prob(pts).exp().sum() * (side[1] - side[0]) ** 2
    assert abs(float(p) - 1.0) < 0.02


def test_log_prob_is_the_change_of_variables() -> None:
    flow = _flow()
    x = torch.randn(7, 2, dtype=torch.float64)
    z, logdet = flow(x)
    expected = -0.5 * (z * z).sum(1) - math.log(2 * math.pi) + logdet
    torch.testing.assert_close(flow.log_prob(x), expected, rtol=1e-12, atol=1e-12)


def test_traces_match_forward_and_inverse() -> None:
    flow = _flow()
    x = torch.randn(20, 2, dtype=torch.float64)
    z, logdet = flow(x)
    fwd = flow.trace_forward(x)
    assert len(fwd) == len(flow.parts) + 1 and fwd[0].name == "data"
    torch.testing.assert_close(fwd[-1].points, z, rtol=0, atol=0)
    torch.testing.assert_close(sum(s.logdet for s in fwd), logdet, rtol=1e-12, atol=1e-12)
    back = flow.trace_inverse(z)
    assert back[0].name == "latent" and back[-1].name.endswith("inverse")
    torch.testing.assert_close(back[-1].points, x, rtol=0, atol=1e-10)
    torch.testing.assert_close(sum(s.logdet for s in back), -logdet, rtol=1e-9, atol=1e-9)
    # Each inverse step retraces the forward step: stage k of generation is stage L-k of inference.
    for k, stage in enumerate(back):
        torch.testing.assert_close(stage.points, fwd[len(fwd) - 1 - k].points, rtol=0, atol=1e-10)


def test_sample_temperature() -> None:
    flow = _flow()
    g = torch.Generator().manual_seed(0)
    cold = flow.sample(5, 0.0, g)
    assert torch.allclose(cold, flow.inverse(torch.zeros(1, 2, dtype=torch.float64)).expand(5, 2))
    a = flow.sample(100, 1.0, torch.Generator().manual_seed(1))
    b = flow.sample(100, 1.0, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.dtype == torch.float64 and a.shape == (100, 2)


def test_bad_shapes_and_dims_are_refused() -> None:
    with pytest.raises(ValueError, match="even dimension"):
        ToyFlow(3)
    with pytest.raises(ValueError, match="at least one coupling"):
        ToyFlow(2, num_couplings=0)
    with pytest.raises(ValueError, match="points"):
        ToyFlow(2)(torch.zeros(4, 3))


def test_log_scale_is_bounded() -> None:
    flow = _flow()
    x = torch.randn(5, 2, dtype=torch.float64) * 1e4
    _, logdet = flow.eval()(x)
    couplings = [p for p in flow.parts if isinstance(p, ChannelCoupling)]
    bn = sum(float(s.logdet[0]) for s in flow.trace_forward(x[:1]) if s.name == "batch norm")
    bound = sum(float(c.scale.abs().sum()) for c in couplings)
    assert ((logdet - bn).abs() <= bound * (1 + 1e-9)).all()


@pytest.mark.parametrize("name", DATASETS)
def test_toy_data_is_seeded_and_bounded(name: str) -> None:
    a = make(name, 3000, seed=1)
    assert a.shape == (3000, 2) and a.dtype == np.float32
    assert np.array_equal(a, make(name, 3000, seed=1)) and not np.array_equal(a, make(name, 3000, seed=2))
    assert (np.abs(a) <= EXTENT).mean() > 0.995
    assert a.std(axis=0).min() > 0.5  # spread over the plane, not a point


def test_toy_data_shapes_differ() -> None:
    # Each set has its own shape: the histograms of any two differ.
    hists = {n: np.histogram2d(*make(n, 5000).T, bins=8, range=[[-4, 4], [-4, 4]])[0] / 5000 for n in DATASETS}
    names = list(hists)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert np.abs(hists[a] - hists[b]).sum() > 0.3, (a, b)


def test_toy_data_refuses_unknown_names() -> None:
    with pytest.raises(ValueError, match="unknown toy data set"):
        make("spirals", 10)
