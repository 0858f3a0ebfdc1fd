"""What a job will cost, decided when it is submitted: its tile side, estimate, deadline and lane.

The work comes from the torch-free cost model (ntk.spec.cost) and the job's shapes; seconds from
the workers' calibration: each worker measures its device's seconds per unit of work when it
starts (ntk.engine.calibrate) and reports it in Redis (``keys.CALIBRATIONS``) with the memory a
tile may use there. A job is priced for the fastest live worker (``Capacity``); before any worker
has reported, for NTK_DEFAULT_SECONDS_PER_UNIT, a slow CPU's.

* tile: NTK_TILE, halved until one full tile is estimated to take at most NTK_TILE_TARGET_S and to
  fit in a worker's memory (``cost.tile_side``), so a cancel, a deadline or an interactive job
  waits at most about that long for the tile in progress. Powers of two of NTK_TILE, so that a
  calibration that drifts a little leaves the tiles, and thus the cache's keys, as they were.
* estimate_s: the job's work in units × seconds per unit;
* deadline_s: the worker seconds the job may use, estimate × NTK_DEADLINE_MARGIN +
  NTK_DEADLINE_SLACK_S, at most NTK_MAX_JOB_SECONDS × NTK_DEADLINE_MARGIN (ntk.worker.watch
  stops it past them);
* lane: "interactive" under NTK_INTERACTIVE_S, else "batch" (ntk.core.broker).
"""

from __future__ import annotations

import json
import operator
import sys
from dataclasses import dataclass
from functools import reduce

from ntk.core.job import AnyJob, SweepJob
from ntk.core.settings import Settings
from ntk.spec import cost as C
from ntk.spec.architecture import Architecture
from ntk.spec.sweep_grid import expand

DTYPE_BYTES = {"float32": 4, "float64": 8}


@dataclass(frozen=True)
class Capacity:
    """The fastest live worker's calibration: ``seconds_per_unit`` of ntk.spec.cost's work, whether
    its device is a GPU, and ``memory_bytes`` one tile may use on any live worker (the smallest)."""

    seconds_per_unit: float
    memory_bytes: int
    on_gpu: bool = False
    calibrated: bool = False

    @classmethod
    def of(cls, settings: Settings, reports: list[dict], default_memory_bytes: int) -> Capacity:
        """From the live workers' ``reports`` (``report``); NTK_WORKER_MEMORY_BYTES, when set, is
        the memory whatever they say."""
        memory = settings.worker_memory_bytes or min((r["memory_bytes"] for r in reports),
                                                     default=default_memory_bytes)
        if not reports:
            return cls(settings.default_seconds_per_unit, memory)
        fastest = min(reports, key=lambda r: r["seconds_per_unit"])
        return cls(fastest["seconds_per_unit"], memory, fastest["device"] != "cpu", True)


def report(device: str, seconds_per_unit: float, memory_bytes: int) -> str:
    """A worker's calibration as it stores it under its id in ``keys.CALIBRATIONS``."""
    return json.dumps({"device": device, "seconds_per_unit": seconds_per_unit, "memory_bytes": memory_bytes})


@dataclass(frozen=True)
class Estimate:
    cost: C.Cost
    tile: int
    estimate_s: float
    deadline_s: float
    lane: str

    def fields(self) -> dict[str, str]:
        """What the job's hash keeps of it (ntk.core.jobstate.SUBMIT)."""
        return {"tile": str(self.tile), "estimate_s": repr(self.estimate_s), "deadline_s": repr(self.deadline_s),
                "lane": self.lane}


def sweep_cost(job: SweepJob, tile: int, on_gpu: bool) -> C.Cost:
    """The sweep as ntk.engine.sweep computes it: every architecture's train × train and
    val × train kernels, shared layer prefixes once (a depth grid 1…D costs about one depth-D
    pass, not D(D+1)/2 layers), and every architecture's solve."""
    shape, n_train = tuple(job.x_train.shape[1:]), job.x_train.shape[0]
    n_val = 0 if job.x_val is None else job.x_val.shape[0]
    dtype_bytes = DTYPE_BYTES[job.dtype]
    # the API refused a sweep over NTK_MAX_SWEEP_ARCHITECTURES before pricing it
    architectures = [point.architecture for point in expand(**job.expand_arguments(), max_architectures=sys.maxsize)]
    cost = C.sweep_kernel_cost(architectures, shape, n_train, None, dtype_bytes=dtype_bytes, tile=tile, on_gpu=on_gpu)
    if n_val:
        cost = cost + C.sweep_kernel_cost(architectures, shape, n_val, n_train, dtype_bytes=dtype_bytes, tile=tile,
                                          on_gpu=on_gpu)
    return reduce(operator.add, [C.prediction_cost(n_train, n_val, method="eigh")] * len(architectures), cost)


def job_cost(job: AnyJob, tile: int, on_gpu: bool) -> C.Cost:
    """The job's work and per-tile memory as the workers compute it: both kernels in every tile
    (a tile serves any later request for either), x2 equal to x1 computed as K(x1, x1)."""
    if job.kind == "sweep":
        return sweep_cost(job, tile, on_gpu)
    arch = Architecture.parse(job.architecture)
    dtype_bytes = DTYPE_BYTES[job.dtype]
    if job.kind == "kernels":
        shape, n1 = tuple(job.x1.shape[1:]), job.x1.shape[0]
        n2 = None if job.x2 is None or job.x2.digest == job.x1.digest else job.x2.shape[0]
        if job.method == "monte_carlo":
            return C.monte_carlo_cost(arch, shape, n1, n2, job.samples, dtype_bytes=dtype_bytes)
        return C.kernel_cost(arch, shape, n1, n2, dtype_bytes=dtype_bytes, tile=tile, on_gpu=on_gpu)
    y = job.y_train.shape
    outputs = y[1] if len(y) > 1 and job.targets != "one_hot" else 1  # classes are not known before the join
    times = len(job.t) if isinstance(job.t, list) else 1
    return C.prediction_job_cost(arch, tuple(job.x_train.shape[1:]), job.x_train.shape[0], job.x_test.shape[0],
                                 outputs, job.compute_cov, "cholesky" if job.t is None else "eigh", times,
                                 dtype_bytes, tile, on_gpu)


def tile_for(job: AnyJob, settings: Settings, capacity: Capacity) -> int:
    """NTK_TILE, or the largest power-of-two fraction of it whose tile takes at most
    NTK_TILE_TARGET_S and fits in ``capacity.memory_bytes`` (1 when not even one pair does)."""
    if job.kind == "sweep" or (job.kind == "kernels" and job.method == "monte_carlo"):
        return settings.tile  # one task whatever its side (ntk.worker.plan, ntk.worker.tasks.run_sweep)
    shape = tuple((job.x1 if job.kind == "kernels" else job.x_train).shape[1:])
    side = C.tile_side(Architecture.parse(job.architecture), shape, capacity.seconds_per_unit,
                       settings.tile_target_s, settings.tile, dtype_bytes=DTYPE_BYTES[job.dtype],
                       on_gpu=capacity.on_gpu, memory_bytes=capacity.memory_bytes)
    tile = settings.tile
    while tile > side and tile > 1:
        tile //= 2
    return tile


def estimate(job: AnyJob, settings: Settings, capacity: Capacity) -> Estimate:
    tile = tile_for(job, settings, capacity)
    cost = job_cost(job, tile, capacity.on_gpu)
    seconds = C.estimate_seconds(cost, capacity.seconds_per_unit)
    deadline = min(seconds * settings.deadline_margin + settings.deadline_slack_s,
                   settings.max_job_seconds * settings.deadline_margin)
    lane = "interactive" if seconds < settings.interactive_s else "batch"
    return Estimate(cost, tile, seconds, deadline, lane)
