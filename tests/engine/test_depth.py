"""Deep networks: identical points stay identical, depth is a setting, depth 1000 stays finite.

The reference is the kernel recursion itself evaluated in 40-digit arithmetic (mpmath), entry by
entry, so it shares no code and no rounding with the engine.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import torch

from ntk.engine import kernel_fn
from ntk.core.settings import Settings
from ntk.spec.architecture import MAX_LAYERS, Architecture, SpecError

W_STD = math.sqrt(2.0)


@pytest.fixture
def relu_stack():
    """``Dense 64 (w_std √2, b_std 0) + Relu`` × depth, then Dense 1: the issue's example.

    Depth 1000 is 2001 layers, past NTK_MAX_LAYERS' default of 1024: a limit the service applies
    (the engine computes any depth it can parse)."""
    block = [{"type": "Dense", "out_dim": 64, "w_std": W_STD, "b_std": 0.0}, {"type": "Relu"}]

    def build(depth: int) -> Architecture:
        layers = block * depth + [{"type": "Dense", "out_dim": 1, "w_std": W_STD, "b_std": 0.0}]
        return Architecture.parse({"layers": layers})

    return build


def reference_entry(a: np.ndarray, b: np.ndarray, depth: int) -> tuple[mpmath.mpf, mpmath.mpf]:
    """(NNGP, NTK) of ``relu_stack(depth)`` between points a and b, in 40 digits.

    Dense (NTK parameterization, no bias): K' = w² K, Θ' = K' + w² Θ. Relu (arc-cosine kernel):
    K' = sqrt(q1 q2) (sin θ + (π − θ) cos θ) / (2π), Θ' = Θ (π − θ) / (2π).
    """
    with mpmath.workdps(40):
        w2 = mpmath.mpf(W_STD) ** 2
        dot = lambda u, v: mpmath.fsum(mpmath.mpf(float(x)) * mpmath.mpf(float(y)) for x, y in zip(u, v)) / len(u)
        q1, q2, c = dot(a, a), dot(b, b), dot(a, b)
        ntk = mpmath.mpf(0)
        for layer in range(depth + 1):
            q1, q2, c = w2 * q1, w2 * q2, w2 * c
            ntk = c + w2 * ntk if layer else c
            if layer == depth:
                return c, ntk
            cos = max(min(c / mpmath.sqrt(q1 * q2), mpmath.mpf(1)), mpmath.mpf(-1))
            theta = mpmath.acos(cos)
            slope = (mpmath.pi - theta) / (2 * mpmath.pi)
            c = mpmath.sqrt(q1 * q2) * (mpmath.sin(theta) + (mpmath.pi - theta) * cos) / (2 * mpmath.pi)
            q1, q2 = q1 / 2, q2 / 2
            ntk = ntk * slope


def duplicated_points(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """x1 holds rows 0, 1 twice more; x2 holds copies of x1's rows 1 and 2 among new points."""
    generator = torch.Generator().manual_seed(15)
    base = torch.randn(5, 7, generator=generator, dtype=torch.float64)
    x1 = torch.cat([base, base[:2]])
    x2 = torch.cat([torch.randn(3, 7, generator=generator, dtype=torch.float64), base[1:3]])
    return x1.to(dtype), x2.to(dtype)


# (row in x1, column) of K(x1, x1) and of K(x1, x2): two identical points, then a point with
# itself, then two distinct points.
IDENTICAL = {"symmetric": [(0, 5), (1, 6), (2, 2)], "cross": [(1, 3), (2, 4)]}
DISTINCT = {"symmetric": [(0, 3)], "cross": [(0, 1)]}


def relative_errors(relu_stack, depth: int, dtype: torch.dtype, entries: dict) -> dict[str, float]:
    """The largest relative error of NNGP and NTK over ``entries``, against ``reference_entry``."""
    x1, x2 = duplicated_points(dtype)
    points = {"symmetric": x1.double().numpy(), "cross": x2.double().numpy()}
    worst = {"nngp": 0.0, "ntk": 0.0}
    for which, pairs in entries.items():
        ours = kernel_fn(relu_stack(depth), x1, None if which == "symmetric" else x2, dtype=dtype)
        for i, j in pairs:
            reference = reference_entry(points["symmetric"][i], points[which][j], depth)
            for name, value in zip(("nngp", "ntk"), reference):
                error = abs((mpmath.mpf(ours[name][i, j].item()) - value) / value)
                worst[name] = max(worst[name], float(error))
    return worst


@pytest.mark.parametrize("depth", [100, 1000])
def test_identical_points_float64_match_high_precision_recursion(relu_stack, depth):
    """Identical points (duplicated rows, and a row of x1 repeated in x2) at depth 100 and 1000
    agree with the 40-digit recursion to 1e-12; before, their angle was a rounding residue of
    1e-8 instead of 0 and the NTK between them was off by 3.7e-7 at depth 100."""
    errors = relative_errors(relu_stack, depth, torch.float64, IDENTICAL)
    assert max(errors.values()) < 1e-12, errors


@pytest.mark.parametrize("depth, tolerance", [(100, 1e-12), (1000, 1e-9)])
def test_distinct_points_float64_match_high_precision_recursion(relu_stack, depth, tolerance):
    """Distinct points are conditioned by depth itself: their correlation tends to 1 (1 − ρ ≈ 4e-5
    at depth 1000), so one rounding of c moves the gap q1 q2 − c², hence θ and the NTK's slope
    (π − θ)/2π, by ε/(1 − ρ) relative, and the recursion is marginally stable there, so these
    add up over the layers: 1e-10 at depth 1000 (neural-tangents has the same conditioning)."""
    errors = relative_errors(relu_stack, depth, torch.float64, DISTINCT)
    assert max(errors.values()) < tolerance, errors


@pytest.mark.parametrize("depth", [100, 1000])
def test_identical_points_float32(relu_stack, depth):
    """float32: the reference takes the inputs rounded to 24 bits, and each of the 2·depth layers
    rounds once more (ε = 6e-8), so the error grows like depth · ε. Before, one ulp of
    disagreement between a covariance and its variance gave θ ≈ 3e-4 and an NTK error of 7e-3
    between identical points at depth 100."""
    errors = relative_errors(relu_stack, depth, torch.float32, IDENTICAL)
    assert max(errors.values()) < depth * 2e-7, errors


def test_identical_points_give_identical_entries(relu_stack):
    """The Gram entry of two identical points equals their variance through a deep stack."""
    x1, x2 = duplicated_points(torch.float64)
    k = kernel_fn(relu_stack(100), x1, x2)
    symmetric = kernel_fn(relu_stack(100), x1)
    for name in ("nngp", "ntk"):
        assert symmetric[name][0, 5] == symmetric[name][0, 0]
        assert symmetric[name][1, 6] == symmetric[name][1, 1]
        assert k[name][1, 3] == symmetric[name][1, 1]


@pytest.mark.parametrize("block", [
    [{"type": "Dense", "out_dim": 8, "w_std": W_STD}, {"type": "Relu"}],
    [{"type": "Dense", "out_dim": 8, "w_std": 1.0, "b_std": 0.1}, {"type": "Erf"}],
    [{"type": "Dense", "out_dim": 8, "w_std": 1.2, "b_std": 0.1}, {"type": "Elementwise", "fn": "tanh", "degree": 8}],
    [{"type": "Dense", "out_dim": 7},
     {"type": "Residual", "layers": [{"type": "Relu"}, {"type": "Dense", "out_dim": 7, "w_std": 0.3}]},
     {"type": "LayerNorm"}],
], ids=["relu", "erf", "tanh", "residual"])
def test_depth_1000_is_finite(block):
    layers = block * (1000 // sum(1 + len(layer.get("layers", [])) for layer in block))
    spec = {"layers": layers + [{"type": "Dense", "out_dim": 1}]}
    assert 990 <= Architecture.parse(spec).depth() <= MAX_LAYERS
    x1, x2 = duplicated_points(torch.float64)
    for name, value in kernel_fn(spec, x1, x2).items():
        assert torch.isfinite(value).all(), name
        assert value.abs().max() > 0, name


def test_depth_limit_is_the_setting():
    """NTK_MAX_LAYERS (default 1024), passed from the settings, counts layers inside Residual blocks too."""
    limit = Settings().max_layers
    assert limit == MAX_LAYERS == 1024  # the test environment does not set NTK_MAX_LAYERS
    dense = {"type": "Dense", "out_dim": 2}
    Architecture.parse({"layers": [dense] * 1024}).check((2,), max_layers=limit)
    nested = Architecture.parse({"layers": [{"type": "Residual", "layers": [dense] * 1000}, *[dense] * 24]})
    assert nested.depth() == 1025
    with pytest.raises(SpecError, match="1025 layers; at most 1024 .*NTK_MAX_LAYERS"):
        nested.check((2,), max_layers=limit)
    nested.check((2,))  # no limit: the engine's own check
    with pytest.raises(SpecError, match="at most 30"):
        Architecture.parse({"layers": [dense] * 31}).check((2,), max_layers=30)


@pytest.mark.parametrize("head", [[{"type": "Flatten"}],
                                  [{"type": "AvgPool", "window_shape": [2, 2]}, {"type": "Conv", "out_chan": 4, "filter_shape": [2, 2]},
                                   {"type": "Erf"}, {"type": "GlobalAvgPool"}]], ids=["flatten", "pooling"])
def test_identical_images_stay_identical(head):
    """Images repeated within x1 and between x1 and x2 (same-position and all-pairs covariances):
    the entry of two copies equals the image's own, through 80 Conv + Relu layers."""
    generator = torch.Generator().manual_seed(3)
    base = torch.randn(3, 5, 5, 2, generator=generator, dtype=torch.float64)
    x1 = torch.cat([base, base[:1]])
    x2 = torch.cat([torch.randn(2, 5, 5, 2, generator=generator, dtype=torch.float64), base[1:2]])
    block = [{"type": "Conv", "out_chan": 4, "filter_shape": [3, 3], "padding": "SAME", "w_std": W_STD}, {"type": "Relu"}]
    spec = {"layers": block * 40 + head + [{"type": "Dense", "out_dim": 1}]}
    symmetric, cross = kernel_fn(spec, x1), kernel_fn(spec, x1, x2)
    for name in ("nngp", "ntk"):
        own = symmetric[name][1, 1]
        assert symmetric[name][0, 3].item() == pytest.approx(symmetric[name][0, 0].item(), rel=1e-13, abs=0)
        assert cross[name][1, 2].item() == pytest.approx(own.item(), rel=1e-13, abs=0)
