"""Seconds per unit of ``cost``'s work on one device: a short benchmark of the engine itself.

``cost`` counts work in units whose relative weights (a Relu pass against a filter tap against a
BLAS flop) were measured once; what a unit takes in seconds depends on the device, its clock and
its load. ``calibrate`` runs two reference kernels, a dense network and a small pooled CNN, on
``device``, and divides their time by their estimated units. Each reference is grown (points ×2)
until one run takes ``min_run_s``, so a fast GPU is timed on work big enough to occupy it rather
than on its launch overhead; the final size is timed twice and the faster run kept, as a busy
machine only ever slows a run down. The whole takes about a second on a CPU.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ntk.spec.cost import kernel_cost
from .kernel import kernel_fn
from ntk.spec.architecture import Architecture

REFERENCES = (
    (Architecture.parse({"layers": [{"type": "Dense", "out_dim": 64, "w_std": 1.4, "b_std": 0.1}, {"type": "Relu"}] * 3
                         + [{"type": "Dense", "out_dim": 1}]}), (32,)),
    (Architecture.parse({"layers": [{"type": "Conv", "out_chan": 8, "filter_shape": [3, 3], "padding": "SAME"},
                                    {"type": "Relu"}] * 2 + [{"type": "GlobalAvgPool"}, {"type": "Dense", "out_dim": 1}]}),
     (8, 8, 3)),
)
MAX_POINTS = 1 << 14


def calibrate(device: str | torch.device, dtype: torch.dtype = torch.float64, min_run_s: float = 0.15) -> float:
    """Seconds per cost unit on ``device`` in ``dtype``: Σ time / Σ estimated units over REFERENCES."""
    device = torch.device(device)
    rng = np.random.default_rng(0)
    seconds = units = 0.0
    for arch, point_shape in REFERENCES:
        points = 16
        while True:
            x = torch.as_tensor(rng.standard_normal((points, *point_shape)), dtype=dtype, device=device)
            elapsed = _timed(arch, x, dtype, device)
            if elapsed >= min_run_s or points >= MAX_POINTS:
                break
            points *= 2
        seconds += min(elapsed, _timed(arch, x, dtype, device))  # the less disturbed of two runs
        units += kernel_cost(arch, point_shape, points, None, dtype_bytes=torch.finfo(dtype).bits // 8, tile=points,
                             on_gpu=device.type != "cpu").units
    return seconds / units


def _timed(arch: Architecture, x: torch.Tensor, dtype: torch.dtype, device: torch.device) -> float:
    """Seconds of one K(x, x) after a warm-up run (first calls pay for allocation and dispatch setup)."""
    kernel_fn(arch, x[:4], dtype=dtype, device=device)
    _synchronize(device)
    start = time.perf_counter()
    kernel_fn(arch, x, dtype=dtype, device=device)
    _synchronize(device)
    return time.perf_counter() - start


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
