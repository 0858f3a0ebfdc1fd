"""The tensor math of a job, on top of the engine: one tile, a whole block, a prediction."""

from __future__ import annotations

import numpy as np
import torch

from ntk.engine import KERNELS, Budget, kernel_tile
from ntk.engine.interrupt import Progress, ShouldStop
from ntk.engine.monte_carlo import monte_carlo_kernel_fn
from ntk.core.job import KernelJob, PredictJob, engine_times
from ntk.engine.predict import Factorization, class_targets, predict
from ntk.worker.plan import Block, Tile


def torch_dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "float64": torch.float64}[name]


class Cancelled(Exception):
    """The job was cancelled (or ended otherwise) while its tile was being computed."""


class DeadlineExceeded(Exception):
    """The job used up the worker seconds its deadline allows (ntk.core.estimate)."""

    def __init__(self, worked_s: float, deadline_s: float):
        self.worked_s, self.deadline_s = worked_s, deadline_s
        super().__init__(f"worked {worked_s:.1f} s of its {deadline_s:.1f} s")


def tile_values(request: KernelJob | PredictJob, block: Block, tile: Tile, x1: np.ndarray, x2: np.ndarray | None,
                device: torch.device, budget: Budget, *, should_stop: ShouldStop | None = None,
                progress: Progress | None = None) -> dict[str, np.ndarray]:
    """Both kernels on one tile (and their standard errors for Monte Carlo), as numpy arrays.

    ``should_stop``/``progress`` are asked and told per step (ntk.engine.interrupt): one layer of
    one block, or one sampled network for Monte Carlo (whose block is one tile: one set of random
    networks serves the whole matrix).
    """
    dtype = torch_dtype(request.dtype)
    if block.method == "monte_carlo":
        values = monte_carlo_kernel_fn(request.architecture, x1, x2, KERNELS, block.samples, block.seed,
                                       dtype, device, should_stop=should_stop, progress=progress)
    else:
        values = kernel_tile(request.architecture, x1, x2, tile, KERNELS, dtype, device, budget=budget,
                             should_stop=should_stop, progress=progress)
    return {name: value.detach().cpu().numpy() for name, value in values.items()}


def targets(request: PredictJob, y: np.ndarray) -> tuple[np.ndarray, list | None]:
    """The regression targets and, for ``targets: "one_hot"``, the classes in column order."""
    return (y, None) if request.targets != "one_hot" else class_targets(y)


def prediction(request: PredictJob, factorization: Factorization, y: np.ndarray, test_train, test_test) -> dict:
    p = predict(factorization, y, test_train, test_test, kernel=request.kernel, t=engine_times(request.t),
                learning_rate=request.learning_rate, compute_cov=request.compute_cov)
    out = p.as_numpy()
    del out["t"]  # echoed as sent, by the answer's metadata
    dtype = np.dtype(request.dtype)  # solved in float64 (tasks.factorize_train), answered as asked
    return {name: a.astype(dtype, copy=False) for name, a in out.items()}
