#!/usr/bin/env python3
"""What depth and numerical activations cost: seconds per kernel against depth and quadrature degree.

    python3 bench/depth_and_quadrature.py [--points 64 256] [--depths 10 100 1000] [--degrees 64 96]

``depth``: K(x, x) and Θ(x, x) of ``[Dense 64 (w_std √2), Relu] × L, Dense 1`` on N standard
normal points in 16 dims; the cost is linear in L. ``quadrature``: one ``[Dense 32 (w_std 1.5,
b_std 0.05), Elementwise tanh]`` pair of layers at each degree (degree² evaluations of φ and φ'
per entry). Each time is the best of ``--repeat`` runs after one warm-up.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from ntk.engine import kernel_fn  # noqa: E402
from ntk.spec.architecture import Architecture  # noqa: E402


def best_time(arch, x, repeat: int) -> float:
    kernel_fn(arch, x)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        kernel_fn(arch, x)
        times.append(time.perf_counter() - start)
    return min(times)


def relu_stack(depth: int) -> Architecture:
    """Depth 1000 is 2001 layers, past NTK_MAX_LAYERS' default: a limit of the service, not of the engine."""
    block = [{"type": "Dense", "out_dim": 64, "w_std": 2**0.5}, {"type": "Relu"}]
    return Architecture.parse({"layers": block * depth + [{"type": "Dense", "out_dim": 1}]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--depths", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--degrees", type=int, nargs="+", default=[64, 96])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)

    print(f"{'N':>6} {'depth':>6} {'s':>9} {'µs/entry/layer':>15}")
    for n in args.points:
        x = rng.standard_normal((n, 16))
        for depth in args.depths:
            seconds = best_time(relu_stack(depth), x, args.repeat)
            print(f"{n:6d} {depth:6d} {seconds:9.4f} {1e6 * seconds / (n * n * (2 * depth + 1)):15.4f}", flush=True)

    print(f"\n{'N':>6} {'degree':>6} {'s':>9} {'µs/entry':>9}")
    for n in args.points:
        x = rng.standard_normal((n, 5))
        for degree in args.degrees:
            arch = {"layers": [{"type": "Dense", "out_dim": 32, "w_std": 1.5, "b_std": 0.05},
                               {"type": "Elementwise", "fn": "tanh", "degree": degree}]}
            seconds = best_time(arch, x, args.repeat)
            print(f"{n:6d} {degree:6d} {seconds:9.4f} {1e6 * seconds / (n * (n + 1) / 2):9.2f}", flush=True)


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", torch.get_num_threads())))
    main()
