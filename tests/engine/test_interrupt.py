"""Cooperative stop and progress (ntk/engine/interrupt.py) in the analytic and Monte Carlo kernels:
the engine asks should_stop() before each step and counts steps; asserted by order and counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ntk.engine import Stopped, kernel_fn, kernel_tile
from ntk.engine.monte_carlo import monte_carlo_kernel_fn
from ntk.spec.architecture import Architecture

ARCH = Architecture.parse({"layers": [{"type": "Dense", "out_dim": 8, "b_std": 0.1}, {"type": "Relu"},
                                      {"type": "Residual", "layers": [{"type": "Dense", "out_dim": 8}]},
                                      {"type": "Dense", "out_dim": 1}]})
PLAIN = Architecture.parse({"layers": [{"type": "Dense", "out_dim": 8}, {"type": "Relu"}] * 2
                                      + [{"type": "Dense", "out_dim": 1}]})
X = np.random.default_rng(0).standard_normal((6, 5))


class StopAfter:
    """should_stop answering True from its (k+1)-th call on, counting its calls."""

    def __init__(self, k: int):
        self.k, self.calls = k, 0

    def __call__(self) -> bool:
        self.calls += 1
        return self.calls > self.k


def test_every_layer_of_every_block_is_a_step_and_the_result_is_unchanged():
    progress = []
    out = kernel_fn(ARCH, X, block_size=2, should_stop=lambda: False, progress=lambda *p: progress.append(p))
    blocks = 6  # 3 row blocks: the upper triangle of 3 × 3
    total = blocks * ARCH.depth()
    assert ARCH.depth() == 5  # the Residual block and the layer inside it both count
    assert progress == [(done, total) for done in range(1, total + 1)]
    plain = kernel_fn(ARCH, X, block_size=2)
    for name in out:
        torch.testing.assert_close(out[name], plain[name], rtol=0, atol=0)


@pytest.mark.parametrize("k", [0, 3, 12])
def test_a_stop_lands_before_the_next_layer(k):
    stop, progress = StopAfter(k), []
    with pytest.raises(Stopped) as raised:
        kernel_fn(PLAIN, X, block_size=2, should_stop=stop, progress=lambda *p: progress.append(p))
    assert stop.calls == k + 1                 # asked once per step, and not again after answering True
    assert raised.value.done == len(progress) == k
    assert raised.value.total == 6 * PLAIN.depth()


def test_a_tile_of_one_block_stops_between_its_layers():
    stop = StopAfter(2)
    with pytest.raises(Stopped) as raised:
        kernel_tile(ARCH, X, None, (0, 6, 0, 6), should_stop=stop)
    assert (raised.value.done, raised.value.total) == (2, ARCH.depth())


def test_monte_carlo_stops_between_networks_and_reports_each():
    stop, progress = StopAfter(3), []
    with pytest.raises(Stopped):
        monte_carlo_kernel_fn(ARCH, X, samples=10, should_stop=stop, progress=lambda *p: progress.append(p))
    assert progress == [(1, 10), (2, 10), (3, 10)] and stop.calls == 4


def test_monte_carlo_stops_between_blocks_of_points():
    # batch_size 2 on 6 points: 6 pairs of point blocks per network, each preceded by a check.
    stop = StopAfter(4)
    with pytest.raises(Stopped):
        monte_carlo_kernel_fn(ARCH, X, samples=3, batch_size=2, should_stop=stop)
    assert stop.calls == 5


def test_monte_carlo_without_a_stop_runs_every_network():
    progress = []
    monte_carlo_kernel_fn(ARCH, X, samples=4, should_stop=lambda: False, progress=lambda *p: progress.append(p))
    assert progress == [(i, 4) for i in range(1, 5)]
