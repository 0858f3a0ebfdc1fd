"""Properties every kernel must have, whatever the architecture: symmetry, positive
semi-definiteness, and tiles that assemble to the whole matrix."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ntk.engine import assemble, kernel_fn, kernel_tile, tiles

FC = {"layers": [{"type": "Dense", "out_dim": 8, "w_std": 1.5, "b_std": 0.05}, {"type": "Relu"},
                 {"type": "Dense", "out_dim": 8, "w_std": 1.5, "b_std": 0.05}, {"type": "Relu"},
                 {"type": "Dense", "out_dim": 1}]}
CNN_GAP = {"layers": [{"type": "Conv", "out_chan": 4, "filter_shape": [3, 3], "padding": "SAME", "w_std": 1.4},
                      {"type": "Relu"}, {"type": "GlobalAvgPool"}, {"type": "Dense", "out_dim": 1}]}
CNN_FLAT = {"parameterization": "standard",
            "layers": [{"type": "Conv", "out_chan": 4, "filter_shape": [2, 2], "padding": "CIRCULAR", "b_std": 0.1},
                       {"type": "Relu"}, {"type": "Flatten"}, {"type": "Dense", "out_dim": 1}]}


def dense_arch(depth, w_std, b_std, activation, parameterization):
    layers = []
    for _ in range(depth):
        layers += [{"type": "Dense", "out_dim": 4, "w_std": w_std, "b_std": b_std}, activation]
    return {"parameterization": parameterization, "layers": layers + [{"type": "Dense", "out_dim": 2}]}


archs = st.builds(
    dense_arch,
    depth=st.integers(1, 5),
    w_std=st.floats(0.1, 3.0),
    b_std=st.one_of(st.none(), st.floats(0.0, 1.0)),
    activation=st.sampled_from([{"type": "Relu"}, {"type": "Abs"}, {"type": "LeakyRelu", "alpha": 0.1},
                                {"type": "ABRelu", "a": -0.5, "b": 2.0}, {"type": "Identity"}]),
    parameterization=st.sampled_from(["ntk", "standard"]),
)


@settings(max_examples=40, deadline=None)
@given(arch=archs, n=st.integers(1, 9), seed=st.integers(0, 2**16))
def test_symmetric_and_positive_semidefinite(arch, n, seed):
    x = np.random.default_rng(seed).normal(size=(n, 3))
    out = kernel_fn(arch, x)
    for name, k in out.items():
        assert torch.equal(k, k.T), name
        eigenvalues = torch.linalg.eigvalsh(k)
        assert eigenvalues.min() >= -1e-10 * max(eigenvalues.max().item(), 1.0), name


@settings(max_examples=15, deadline=None)
@given(arch=archs, n1=st.integers(1, 11), n2=st.integers(1, 7), size=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_tiles_assemble_to_the_whole(arch, n1, n2, size, seed):
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=(n1, 3)), rng.normal(size=(n2, 3))
    for other, n_other in ((None, None), (x2, n2)):
        whole = kernel_fn(arch, x1, other)
        blocks = {t: kernel_tile(arch, x1, other, t) for t in tiles(n1, n_other, size)}
        parts = assemble(blocks, n1, n_other)
        for name in whole:
            torch.testing.assert_close(parts[name], whole[name], rtol=1e-12, atol=1e-12 * whole[name].abs().max().item())


def test_symmetric_tiling_covers_only_the_upper_triangle_in_balanced_blocks():
    covered = list(tiles(5, None, 2))
    assert covered == [(0, 1, 0, 1), (0, 1, 1, 3), (0, 1, 3, 5), (1, 3, 1, 3), (1, 3, 3, 5), (3, 5, 3, 5)]
    assert len(list(tiles(5, 3, 2))) == 3 * 2


@pytest.mark.parametrize("arch", [FC, CNN_GAP, CNN_FLAT], ids=["fc", "cnn_gap", "cnn_flatten"])
def test_conv_tiles_assemble(arch):
    rng = np.random.default_rng(1)
    shape = (7, 3) if arch is FC else (7, 5, 4, 2)
    x = rng.normal(size=shape)
    whole = kernel_fn(arch, x)
    parts = assemble({t: kernel_tile(arch, x, None, t) for t in tiles(7, None, 3)}, 7, None)
    for name in whole:
        torch.testing.assert_close(parts[name], whole[name], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("arch", [FC, CNN_GAP, CNN_FLAT], ids=["fc", "cnn_gap", "cnn_flatten"])
def test_repeated_points_give_the_exact_diagonal(arch):
    """Equal inputs: the angle between them is 0, where arccos is ill-conditioned; the arctan2 form
    with a clamped root must give K(x, x') = K(x, x) to rounding."""
    rng = np.random.default_rng(2)
    point = rng.normal(size=(1, 3) if arch is FC else (1, 5, 4, 2))
    x = np.concatenate([point, point, 1e-3 * point, point * (1 + 1e-12)])
    out = kernel_fn(arch, x)
    for k in out.values():
        torch.testing.assert_close(k[0, 1], k[0, 0], rtol=1e-12, atol=0)
        torch.testing.assert_close(k[0, 3], k[0, 0], rtol=1e-9, atol=0)


def test_zero_input_rows_are_finite():
    x = np.zeros((3, 4))
    x[1] = 1.0
    for arch in (FC, dense_arch(3, 1.0, None, {"type": "Relu"}, "ntk")):
        out = kernel_fn(arch, x)
        for k in out.values():
            assert torch.isfinite(k).all()


def test_float32_on_request():
    x = np.random.default_rng(3).normal(size=(4, 3))
    out32 = kernel_fn(FC, x, dtype=torch.float32)
    out64 = kernel_fn(FC, x)
    assert out32["ntk"].dtype == torch.float32
    torch.testing.assert_close(out32["ntk"].double(), out64["ntk"], rtol=1e-5, atol=1e-6)


def test_get_returns_only_what_was_asked():
    x = np.random.default_rng(4).normal(size=(2, 3))
    assert set(kernel_fn(FC, x, get=("ntk",))) == {"ntk"}
    assert set(kernel_fn(FC, x, get=("nngp",))) == {"nngp"}


@pytest.mark.parametrize("arch", [FC, CNN_GAP, CNN_FLAT], ids=["fc", "cnn_gap", "cnn_flatten"])
def test_blocked_computation_equals_one_block(arch):
    rng = np.random.default_rng(5)
    shape = (3,) if arch is FC else (5, 4, 2)
    x1, x2 = rng.normal(size=(9, *shape)), rng.normal(size=(4, *shape))
    for other in (None, x2):
        whole = kernel_fn(arch, x1, other)
        blocked = kernel_fn(arch, x1, other, block_size=2)
        for name in whole:
            torch.testing.assert_close(blocked[name], whole[name], rtol=1e-12, atol=1e-14)
