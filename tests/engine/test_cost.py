"""The cost model (ntk/spec/cost.py): its scaling laws, its block and tile bookkeeping
against the engine's own tiling, and the issue's example job priced in years."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ntk.engine import tiles
from ntk.engine.kernel import default_block_size
from ntk.spec import cost
from ntk.spec.architecture import Architecture
from ntk.spec.cost import (Grid, block_work, estimate_seconds, grid, kernel_cost, monte_carlo_cost, prediction_cost,
                           prediction_job_cost, tile_grid, tile_side)

# The machine's calibration scale: ~1 ns per unit on the 2-core EPYC (bench/cost_accuracy.py).
SECONDS_PER_UNIT = 1e-9


def arch(*layers) -> Architecture:
    return Architecture.parse({"layers": list(layers)})


DENSE = {"type": "Dense", "out_dim": 64, "w_std": 1.4, "b_std": 0.1}
RELU = {"type": "Relu"}
FC = arch(DENSE, RELU, DENSE, RELU, {"type": "Dense", "out_dim": 1})


def cnn(pool: str) -> Architecture:
    conv = {"type": "Conv", "out_chan": 8, "filter_shape": [3, 3], "padding": "SAME"}
    return arch(conv, RELU, conv, RELU, {"type": pool}, {"type": "Dense", "out_dim": 1})


def test_the_cost_model_imports_no_torch():
    """The API estimates a job before queueing it, without loading torch."""
    probe = "import sys, ntk.spec.cost; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parents[2])
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("n1, n2, size", [(7, None, 3), (10, 10, 4), (129, None, 64), (5, 11, 2), (1, None, 8),
                                          (300, 17, 1024)])
def test_grid_sums_the_blocks_kernel_tiles_makes(n1, n2, size):
    blocks = list(tiles(n1, n2, size))
    points = sum((i1 - i0) + (0 if n2 is None and i0 == j0 else j1 - j0) for i0, i1, j0, j1 in blocks)
    assert grid(n1, n2, size) == Grid(len(blocks), sum((i1 - i0) * (j1 - j0) for i0, i1, j0, j1 in blocks), points)


@pytest.mark.parametrize("n1, n2, tile, block", [(23, None, 8, 3), (23, 9, 8, 3), (50, None, 16, 16), (5, None, 8, 2)])
def test_tile_grid_is_every_service_tile_cut_into_blocks(n1, n2, tile, block):
    count = pairs = 0
    service_tiles = list(tiles(n1, n2, tile))
    for i0, i1, j0, j1 in service_tiles:
        diagonal = n2 is None and i0 == j0
        inner = list(tiles(i1 - i0, None if diagonal else j1 - j0, block))
        count += len(inner)
        pairs += sum((b - a) * (d - c) for a, b, c, d in inner)
    total, tile_count = tile_grid(n1, n2, tile, block)
    assert (total.count, total.pairs, tile_count) == (count, pairs, len(service_tiles))


def test_work_is_proportional_to_n1_times_n2():
    one = kernel_cost(FC, (32,), 1024, 1024).units
    assert kernel_cost(FC, (32,), 2048, 1024).units == pytest.approx(2 * one, rel=1e-12)
    assert kernel_cost(FC, (32,), 4096, 4096).units == pytest.approx(16 * one, rel=1e-12)


def test_a_symmetric_gram_costs_about_half_of_a_rectangular_one():
    ratio = kernel_cost(FC, (32,), 16384).units / kernel_cost(FC, (32,), 16384, 16384).units
    assert 0.5 < ratio < 0.53  # the diagonal blocks are computed whole


def test_pooling_pays_for_every_pair_of_positions_and_flatten_only_for_each_position():
    # Doubling the side of an image multiplies its positions P by 4: pooling keeps P² numbers per
    # pair of points (×16), Flatten's networks P (×4).
    for pool, factor in (("GlobalAvgPool", 16), ("Flatten", 4)):
        small = block_work(cnn(pool), (8, 8, 3)).per_pair
        large = block_work(cnn(pool), (16, 16, 3)).per_pair
        assert large / small == pytest.approx(factor, rel=0.01)


def test_quadrature_costs_degree_squared_per_entry():
    def per_pair(degree):
        return block_work(arch(DENSE, {"type": "Elementwise", "fn": "tanh", "degree": degree}, DENSE), (8,)).per_pair

    assert per_pair(64) / per_pair(32) == pytest.approx(4, rel=0.02)


def test_each_layer_adds_work():
    deeper = arch(DENSE, RELU, DENSE, RELU, DENSE, RELU, {"type": "Dense", "out_dim": 1})
    assert kernel_cost(deeper, (32,), 500).units > kernel_cost(FC, (32,), 500).units


def test_the_issues_example_is_priced_far_beyond_an_hour():
    """(4000, 64, 64, 1) images, [Conv 8 3×3 SAME, Relu] × 2, GlobalAvgPool, Dense 1: one pair of
    images holds 4096² covariances per kernel, 8 M pairs in the upper triangle."""
    job = kernel_cost(cnn("GlobalAvgPool"), (64, 64, 1), 4000)
    assert estimate_seconds(job, SECONDS_PER_UNIT) > 30 * 86400          # a month at least, on this machine
    assert job.blocks == 4000 * 4001 // 2                               # one pair of images per block
    assert job.peak_bytes_per_tile > 1 << 30                             # ten 134 MB tensors per block
    assert estimate_seconds(job, SECONDS_PER_UNIT) > 3600


def test_block_side_is_the_engines_default():
    import torch

    for network, shape in ((FC, (32,)), (cnn("GlobalAvgPool"), (8, 8, 3)), (cnn("Flatten"), (16, 16, 3))):
        assert cost.block_side(network, shape, 8) == default_block_size(network, shape, torch.float64)
        assert cost.block_side(network, shape, 8, on_gpu=True) == default_block_size(network, shape, torch.float64,
                                                                                     torch.device("cuda"))


def test_tile_side_is_the_largest_tile_within_the_target():
    target = 0.5
    side = tile_side(cnn("GlobalAvgPool"), (16, 16, 3), SECONDS_PER_UNIT, target)

    def seconds(s):
        return estimate_seconds(kernel_cost(cnn("GlobalAvgPool"), (16, 16, 3), s, s, tile=s), SECONDS_PER_UNIT)

    assert 1 < side < 2048
    assert seconds(side) <= target < seconds(side + 1)
    assert tile_side(FC, (32,), SECONDS_PER_UNIT, 1e9) == 2048
    assert tile_side(cnn("GlobalAvgPool"), (64, 64, 1), SECONDS_PER_UNIT, 1e-6) == 1


def test_tile_side_respects_memory():
    side = tile_side(FC, (32,), SECONDS_PER_UNIT, 1e9, memory_bytes=64 << 20)
    assert kernel_cost(FC, (32,), side, side, tile=side).peak_bytes_per_tile <= 64 << 20
    assert kernel_cost(FC, (32,), side + 1, side + 1, tile=side + 1).peak_bytes_per_tile > 64 << 20


def test_monte_carlo_work_grows_with_samples_and_width():
    wide = arch({"type": "Dense", "out_dim": 1024}, RELU, {"type": "Dense", "out_dim": 1})
    narrow = arch({"type": "Dense", "out_dim": 64}, RELU, {"type": "Dense", "out_dim": 1})
    assert monte_carlo_cost(narrow, (16,), 100, None, 20).units == pytest.approx(
        2 * monte_carlo_cost(narrow, (16,), 100, None, 10).units)
    assert monte_carlo_cost(wide, (16,), 100, None, 10).units > 4 * monte_carlo_cost(narrow, (16,), 100, None, 10).units
    assert monte_carlo_cost(narrow, (16,), 100, None, 10).tiles == 1


def test_the_prediction_solve_is_cubic_in_the_training_set():
    assert prediction_cost(8000, 10).units / prediction_cost(4000, 10).units == pytest.approx(8, rel=0.01)
    assert prediction_cost(4000, 10, method="eigh").units > 10 * prediction_cost(4000, 10).units


def test_a_prediction_job_is_its_three_kernel_blocks_and_the_solve():
    job = prediction_job_cost(FC, (32,), 3000, 500, outputs=10, compute_cov=True)
    parts = (kernel_cost(FC, (32,), 3000), kernel_cost(FC, (32,), 500, 3000), kernel_cost(FC, (32,), 500),
             prediction_cost(3000, 500, 10, True))
    assert job.units == pytest.approx(sum(p.units for p in parts))
    assert job.tiles == sum(p.tiles for p in parts)
    assert job.parts == pytest.approx({"kernels": sum(p.units for p in parts[:3]), "solve": parts[3].units})


def test_a_sweep_is_priced_as_the_engine_computes_it_shared_prefixes_once():
    """One architecture alone costs its kernel; two with no layer in common cost less than their
    kernels (the input kernel is shared); a depth grid 1…D costs about one depth-D kernel (D blocks
    and D readouts), not the D(D+1)/2 blocks of computing each depth alone."""
    from ntk.spec.sweep_grid import expand

    kernel = kernel_cost(FC, (16,), 300)
    assert cost.sweep_kernel_cost([FC], (16,), 300) == kernel
    other = arch({**DENSE, "w_std": 2.0}, RELU, {"type": "Dense", "out_dim": 1})
    both = cost.sweep_kernel_cost([FC, other], (16,), 300)
    assert both.units < kernel.units + kernel_cost(other, (16,), 300).units
    depths = [p.architecture for p in expand({"block": [DENSE, RELU], "readout": [{"type": "Dense", "out_dim": 1}]},
                                             {"depth": list(range(1, 31))})]
    deepest, alone = kernel_cost(depths[-1], (16,), 300), sum(kernel_cost(a, (16,), 300).units for a in depths)
    swept = cost.sweep_kernel_cost(depths, (16,), 300)
    assert deepest.units < swept.units < 2 * deepest.units < alone / 5
