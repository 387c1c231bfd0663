"""Latent-space operations: shapes, endpoints, and levels left untouched."""

from __future__ import annotations

import math

import pytest
import torch

from nvp_core.latent import (
    apply_direction,
    attribute_direction,
    interpolate,
    level_stats,
    manifold,
    mean_latents,
    resample_finer,
    slerp,
    swap_levels,
)

SHAPES = [(2, 4, 4), (4, 2, 2), (4, 2, 2)]


def _z(seed: int, batch: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, *s, generator=g, dtype=torch.float64) for s in SHAPES]


@pytest.mark.parametrize("method", ["linear", "spherical"])
def test_interpolation_endpoints_and_shapes(method: str) -> None:
    za, zb = _z(0), _z(1)
    path = interpolate(za, zb, steps=7, method=method)
    assert [tuple(p.shape) for p in path] == [(7, *s) for s in SHAPES]
    for p, a, b in zip(path, za, zb, strict=True):
        torch.testing.assert_close(p[0], a[0])
        torch.testing.assert_close(p[-1], b[0])


def test_level_weights_move_only_the_chosen_levels() -> None:
    za, zb = _z(0), _z(1)
    path = interpolate(za, zb, steps=5, level_weights=[0.0, 0.5, 1.0])
    assert torch.equal(path[0], za[0].expand(5, *SHAPES[0]))
    torch.testing.assert_close(path[1][-1], (za[1][0] + zb[1][0]) / 2)
    torch.testing.assert_close(path[2][-1], zb[2][0])


def test_slerp_keeps_the_norm_of_equal_norm_endpoints() -> None:
    a = torch.randn(1, 50, dtype=torch.float64)
    b = torch.randn(1, 50, dtype=torch.float64)
    b = b / b.norm() * a.norm()
    mid = slerp(a, b, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))
    torch.testing.assert_close(mid.norm(dim=1), a.norm().expand(3))
    # Parallel endpoints fall back to a straight line instead of dividing by zero.
    same = slerp(a, 2 * a, torch.tensor([0.5], dtype=torch.float64))
    torch.testing.assert_close(same[0], 1.5 * a[0])


def test_interpolation_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="steps must be >= 2"):
        interpolate(_z(0), _z(1), steps=1)
    with pytest.raises(ValueError, match="method"):
        interpolate(_z(0), _z(1), steps=3, method="cubic")
    with pytest.raises(ValueError, match="3 level weights"):
        interpolate(_z(0), _z(1), steps=3, level_weights=[1.0])
    with pytest.raises(ValueError, match="levels"):
        interpolate(_z(0)[:2], _z(1), steps=3)


def test_manifold_corners_are_the_four_inputs() -> None:
    z = [_z(i) for i in range(4)]
    grid = manifold(*z, n=5)
    assert [tuple(g.shape) for g in grid] == [(25, *s) for s in SHAPES]
    corners = {0: z[0], 4: z[1], 20: z[2], 24: z[3]}
    for cell, expected in corners.items():
        for g, e in zip(grid, expected, strict=True):
            torch.testing.assert_close(g[cell], e[0])


def test_manifold_follows_equation_19() -> None:
    z = [_z(i) for i in range(4)]
    grid = manifold(*z, n=3)
    phi, phi2 = math.pi / 4, math.pi / 2  # row 1, column 2
    expected = math.cos(phi) * (math.cos(phi2) * z[0][1] + math.sin(phi2) * z[1][1]) + math.sin(phi) * (
        math.cos(phi2) * z[2][1] + math.sin(phi2) * z[3][1]
    )
    torch.testing.assert_close(grid[1][1 * 3 + 2], expected[0])


def test_manifold_on_chosen_levels_keeps_the_others_from_the_first_image() -> None:
    z = [_z(i) for i in range(4)]
    grid = manifold(*z, n=3, levels=[3])
    assert torch.equal(grid[0], z[0][0].expand(9, *SHAPES[0]))
    assert torch.equal(grid[1], z[0][1].expand(9, *SHAPES[1]))
    assert not torch.equal(grid[2][4], z[0][2][0])
    with pytest.raises(ValueError, match=r"levels must be in 1\.\.3"):
        manifold(*z, n=3, levels=[0])


def test_resample_finer_keeps_coarse_levels_and_redraws_fine_ones() -> None:
    z = _z(0)
    out = resample_finer(z, keep_from=2, n=4, temperature=0.5, generator=torch.Generator().manual_seed(0))
    assert [tuple(o.shape) for o in out] == [(4, *s) for s in SHAPES]
    assert torch.equal(out[1], z[1].expand(4, *SHAPES[1])) and torch.equal(out[2], z[2].expand(4, *SHAPES[2]))
    assert not torch.equal(out[0][0], out[0][1])  # independent draws
    assert 0.3 < float(out[0].std()) < 0.7  # at temperature 0.5
    keep_all = resample_finer(z, keep_from=1, n=2)
    assert all(torch.equal(k[0], zl[0]) for k, zl in zip(keep_all, z, strict=True))
    with pytest.raises(ValueError, match="keep_from"):
        resample_finer(z, keep_from=5, n=1)


def test_swap_levels_takes_the_chosen_levels_from_b() -> None:
    za, zb = _z(0), _z(1)
    mixed = swap_levels(za, zb, levels_from_b=[1])
    assert torch.equal(mixed[0], zb[0]) and torch.equal(mixed[1], za[1]) and torch.equal(mixed[2], za[2])
    mixed[1].add_(1.0)
    assert not torch.equal(mixed[1], za[1]), "results must not alias the inputs"


def test_attribute_direction_is_the_difference_of_means() -> None:
    set_a, set_b = _z(0, batch=6), _z(1, batch=4)
    direction = attribute_direction(set_a, set_b)
    for d, a, b in zip(direction, set_a, set_b, strict=True):
        torch.testing.assert_close(d, a.mean(0, keepdim=True) - b.mean(0, keepdim=True))
    assert all(m.shape[0] == 1 for m in mean_latents(set_a))


def test_apply_direction_on_chosen_levels_with_a_strength_strip() -> None:
    z, d = _z(0), _z(1)
    one = apply_direction(z, d, 2.0, levels=[2])
    assert torch.equal(one[0], z[0]) and torch.equal(one[2], z[2])
    torch.testing.assert_close(one[1], z[1] + 2.0 * d[1])
    strip = apply_direction(z, d, [0.0, 1.0, -1.0], levels=[1, 2])
    assert [tuple(s.shape) for s in strip] == [(3, *s) for s in SHAPES]
    torch.testing.assert_close(strip[0][0], z[0][0])
    torch.testing.assert_close(strip[1][2], z[1][0] - d[1][0])
    assert torch.equal(strip[2][1], z[2][0])


def test_level_stats() -> None:
    z = _z(0)
    stats = level_stats(z)
    assert [s["level"] for s in stats] == [1, 2, 3]
    assert stats[0]["dims"] == 32
    assert stats[1]["norm"] == pytest.approx(float(z[1].norm()))
    assert stats[2]["mean"] == pytest.approx(float(z[2].mean()))
