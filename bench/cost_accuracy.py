#!/usr/bin/env python3
"""How well the cost model predicts the engine: estimated against measured seconds, per architecture.

    python3 bench/cost_accuracy.py [--scale 1.0] [--threads N] [--device cpu]

Calibrates seconds per unit on the device (``ntk.engine.calibrate``, what a worker does at
start) before each row (on a shared machine the load drifts between rows; ``ns/unit`` shows it),
then estimates the job (``ntk.spec.cost``) and times the engine
computing it as the service does: every tile of ``--tile`` points (the upper ones for K(x, x)),
each through ``kernel_tile``, or one Monte Carlo estimate. ``ratio`` is actual / estimate; the
model aims within 2× (0.5–2). ``--scale`` multiplies every row's point count (the smoke test
runs a toy size).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from ntk.engine import kernel_tile, tiles  # noqa: E402
from ntk.engine.calibrate import calibrate  # noqa: E402
from ntk.spec.cost import estimate_seconds, kernel_cost, monte_carlo_cost  # noqa: E402
from ntk.engine.monte_carlo import monte_carlo_kernel_fn  # noqa: E402
from ntk.spec.architecture import Architecture  # noqa: E402
from ntk.worker.allocator import keep_freed_memory  # noqa: E402


def dense(width=256, **kw):
    return {"type": "Dense", "out_dim": width, "w_std": 1.4, "b_std": 0.1, **kw}


def conv(padding="SAME", chan=16, size=3):
    return {"type": "Conv", "out_chan": chan, "filter_shape": [size, size], "padding": padding, "w_std": 1.4}


RELU = {"type": "Relu"}
# (name, layers, point shape, n1, n2 (None: K(x1, x1)), Monte Carlo samples or None)
ROWS = [
    ("FC-2 relu", [dense(), RELU, dense(1)], (64,), 3000, None, None),
    ("FC-20 relu", [dense(), RELU] * 20 + [dense(1)], (64,), 1500, None, None),
    ("FC-3 erf x1 x2", [dense(), {"type": "Erf"}] * 3 + [dense(1)], (16,), 1500, 1000, None),
    ("FC-2 tanh deg 24", [dense(), {"type": "Elementwise", "fn": "tanh", "degree": 24}] * 2 + [dense(1)],
     (16,), 100, None, None),
    ("FC-4 layernorm", [dense(), {"type": "LayerNorm"}, RELU] * 4 + [dense(1)], (32,), 2000, None, None),
    ("FC residual", [dense(), RELU, {"type": "Residual", "layers": [dense(), RELU, dense()], "shortcut": [dense()]},
                     RELU, dense(1)],
     (32,), 2000, None, None),
    ("CNN SAME flatten 16x16", [conv(), RELU, conv(), RELU, {"type": "Flatten"}, dense(1)], (16, 16, 3),
     300, None, None),
    ("CNN VALID flatten 16x16", [conv("VALID"), RELU, conv("VALID"), RELU, {"type": "Flatten"}, dense(1)],
     (16, 16, 3), 300, None, None),
    ("CNN GAP 8x8", [conv(), RELU, conv(), RELU, {"type": "GlobalAvgPool"}, dense(1)], (8, 8, 3), 64, None, None),
    ("CNN AvgPool GAP 8x8", [conv(), RELU, {"type": "AvgPool", "window_shape": [2, 2], "strides": [2, 2]}, conv(),
                             RELU, {"type": "GlobalAvgPool"}, dense(1)], (8, 8, 3), 64, None, None),
    ("CNN GAP 32x32 (pairs)", [conv(chan=8), RELU, conv(chan=8), RELU, {"type": "GlobalAvgPool"}, dense(1)],
     (32, 32, 1), 4, None, None),
    ("CNN GAP 64x64 (one pair)", [conv(chan=8), RELU, conv(chan=8), RELU, {"type": "GlobalAvgPool"}, dense(1)],
     (64, 64, 1), 1, 1, None),
    ("MC FC-2 w512 x64", [dense(512), RELU, dense(512), RELU, dense(1)], (32,), 400, None, 64),
    ("MC CNN GAP x16", [conv(chan=32), RELU, conv(chan=32), RELU, {"type": "GlobalAvgPool"}, dense(1)],
     (8, 8, 3), 64, None, 16),
]


def run(arch: Architecture, x1, x2, tile: int, samples: int | None, device) -> float:
    start = time.perf_counter()
    if samples:
        monte_carlo_kernel_fn(arch, x1, x2, samples=samples, device=device)
    else:
        for t in tiles(len(x1), None if x2 is None else len(x2), tile):
            kernel_tile(arch, x1, x2, t, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every row's point count")
    parser.add_argument("--tile", type=int, default=2048, help="the service's NTK_TILE")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", default=None, help="rows whose name contains this")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory()  # as a worker does at start (the engine no longer does it on import)
    device = torch.device(args.device)
    print(f"calibrated on {device} before each row: ns per unit in column ns/unit")
    print(f"{'architecture':<26} {'point':>9} {'N1':>5} {'N2':>5} {'tiles':>5} {'ns/unit':>7} {'estimate s':>10} "
          f"{'actual s':>9} {'ratio':>6}")
    rng = np.random.default_rng(0)
    ratios = []
    for name, layers, shape, n1, n2, samples in ROWS:
        if args.only and args.only not in name:
            continue
        n1 = max(1, round(n1 * args.scale))
        n2 = None if n2 is None else max(1, round(n2 * args.scale))
        arch = Architecture.parse({"layers": layers})
        x1 = rng.standard_normal((n1, *shape))
        x2 = None if n2 is None else rng.standard_normal((n2, *shape))
        on_gpu = device.type != "cpu"
        if samples:
            cost = monte_carlo_cost(arch, shape, n1, n2, samples)
        else:
            cost = kernel_cost(arch, shape, n1, n2, tile=args.tile, on_gpu=on_gpu)
        seconds_per_unit = calibrate(device)
        estimate = estimate_seconds(cost, seconds_per_unit)
        run(arch, x1[:2], None, args.tile, samples and 2, device)  # warm-up: quadrature nodes, dispatch caches
        actual = run(arch, x1, x2, args.tile, samples, device)
        ratios.append(actual / estimate)
        print(f"{name:<26} {'x'.join(map(str, shape)):>9} {n1:>5} {'-' if n2 is None else n2:>5} {cost.tiles:>5} "
              f"{seconds_per_unit * 1e9:>7.3f} {estimate:>10.3g} {actual:>9.3g} {actual / estimate:>6.2f}", flush=True)
    within = sum(0.5 <= r <= 2 for r in ratios)
    print(f"within 2x: {within} of {len(ratios)}; ratio range {min(ratios):.2f}-{max(ratios):.2f}")


if __name__ == "__main__":
    main()
