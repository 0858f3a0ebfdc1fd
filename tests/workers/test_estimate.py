"""ntk.core.estimate: what a job is priced at, its tiles, deadline and lane (torch-free, no Redis)."""

from __future__ import annotations

import pytest

from ntk.core.estimate import Capacity, estimate, job_cost
from ntk.core.job import ArrayRef, KernelJob, PredictJob
from ntk.core.settings import Settings
from ntk.spec import cost

CNN = {"layers": [{"type": "Conv", "out_chan": 8, "filter_shape": [3, 3], "padding": "SAME"}, {"type": "Relu"}] * 2
       + [{"type": "GlobalAvgPool"}, {"type": "Dense", "out_dim": 1}]}
DENSE = {"layers": [{"type": "Dense", "out_dim": 1}]}
SETTINGS = Settings(redis_url="redis://unused")


def kernels(architecture, shape, **fields) -> KernelJob:
    return KernelJob(tenant="default", cache_scope="default", architecture=architecture, dtype="float64",
                     x1=ArrayRef(digest="a", shape=list(shape)), get=["ntk"], **fields)


def test_the_fastest_live_worker_prices_jobs_and_the_smallest_memory_bounds_tiles():
    reports = [{"device": "cpu", "seconds_per_unit": 3e-9, "memory_bytes": 8 << 30},
               {"device": "cuda", "seconds_per_unit": 1e-11, "memory_bytes": 80 << 30}]
    capacity = Capacity.of(SETTINGS, reports, default_memory_bytes=1)
    assert (capacity.seconds_per_unit, capacity.memory_bytes, capacity.on_gpu, capacity.calibrated) == (
        1e-11, 8 << 30, True, True)
    before = Capacity.of(SETTINGS, [], default_memory_bytes=1 << 30)
    assert (before.seconds_per_unit, before.memory_bytes, before.calibrated) == (2e-9, 1 << 30, False)
    assert Capacity.of(Settings(redis_url="redis://unused", worker_memory_bytes=5), reports, 1).memory_bytes == 5


def test_the_issues_example_is_estimated_at_months_of_work():
    capacity = Capacity(1e-9, 64 << 30)
    e = estimate(kernels(CNN, (4000, 64, 64, 1)), SETTINGS, capacity)
    assert e.estimate_s > 100 * 86400 and e.lane == "batch"  # ~4 s a pair of 64 × 64 images
    assert e.deadline_s == SETTINGS.max_job_seconds * SETTINGS.deadline_margin  # capped


def test_tiles_are_powers_of_two_of_ntk_tile_taking_at_most_the_target():
    capacity = Capacity(1e-9, 64 << 30)
    job = kernels(CNN, (3000, 8, 8, 1))
    e = estimate(job, SETTINGS, capacity)
    assert SETTINGS.tile % e.tile == 0 and (SETTINGS.tile // e.tile) & (SETTINGS.tile // e.tile - 1) == 0
    one_tile = job_cost(kernels(CNN, (2 * e.tile, 8, 8, 1)), e.tile, False).units_per_tile
    assert one_tile * capacity.seconds_per_unit <= SETTINGS.tile_target_s
    twice = job_cost(kernels(CNN, (4 * e.tile, 8, 8, 1)), 2 * e.tile, False).units_per_tile
    assert twice * capacity.seconds_per_unit > SETTINGS.tile_target_s
    assert estimate(kernels(DENSE, (10, 2)), SETTINGS, capacity).tile == SETTINGS.tile  # tiny: NTK_TILE, the cache's


def test_deadline_and_lane_follow_the_estimate():
    e = estimate(kernels(DENSE, (10, 2)), SETTINGS, Capacity(1e-9, 1 << 30))
    assert e.lane == "interactive" and e.estimate_s < SETTINGS.interactive_s
    assert e.deadline_s == pytest.approx(e.estimate_s * SETTINGS.deadline_margin + SETTINGS.deadline_slack_s)
    assert e.fields()["lane"] == "interactive" and float(e.fields()["deadline_s"]) == e.deadline_s


def test_costs_follow_the_workers_computation():
    """Both kernels are computed whatever was asked (a tile serves either); x2 equal to x1 is K(x1, x1);
    a prediction adds its solve."""
    arch = cost.S.Architecture.parse(DENSE)
    assert job_cost(kernels(DENSE, (100, 2)), 2048, False).units == pytest.approx(
        cost.kernel_cost(arch, (2,), 100, None, tile=2048).units)
    same = kernels(DENSE, (100, 2), x2=ArrayRef(digest="a", shape=[100, 2]))
    assert job_cost(same, 2048, False).units == job_cost(kernels(DENSE, (100, 2)), 2048, False).units
    predict = PredictJob(tenant="default", cache_scope="default", architecture=DENSE, dtype="float64",
                         x_train=ArrayRef(digest="a", shape=[100, 2]),
                         y_train=ArrayRef(digest="y", shape=[100, 3]), x_test=ArrayRef(digest="b", shape=[10, 2]))
    assert job_cost(predict, 2048, False).parts["solve"] == pytest.approx(
        cost.prediction_cost(100, 10, 3, True, "cholesky").units)
