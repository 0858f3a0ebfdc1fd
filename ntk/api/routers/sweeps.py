"""POST /v1/sweeps: many architectures on one dataset, one row of numbers per architecture.

The sweep is expanded (ntk.spec.sweep_grid, no torch) and every architecture checked against the
points here, so that a grid key no layer takes, a combination that makes no network, or one
architecture that cannot run on these points is refused with a 422 naming it before anything is
queued. One job then computes them all, in one worker task (ntk.worker.tasks.run_sweep): its
progress counts architectures, and one cancel stops it. The answer is a table, as JSON or, with
``Accept: text/csv``, as CSV (ntk.api.jobs.answer).
"""

from __future__ import annotations

import math

from fastapi import Request

from ntk.api import deps, jobs, limits
from ntk.api.inputs import Inputs, off_loop, same_features
from ntk.api.problems import Problem, invalid
from ntk.api.routers.compute import PROBLEMS, WAIT, job_router
from ntk.api.schemas import Accepted, SweepAnswer, SweepRequest
from ntk.core.job import SweepJob
from ntk.core.settings import Settings
from ntk.spec.architecture import SpecError
from ntk.spec.sweep_grid import SweepPoint, expand

router = job_router("sweeps")

ANSWERS = {200: {"model": SweepAnswer, "content": {jobs.CSV: {}}}, 202: {"model": Accepted}, **PROBLEMS}


@router.post("/sweeps", responses=ANSWERS)
async def sweeps(body: SweepRequest, request: Request, settings: deps.SettingsDep, tenant: deps.TenantDep,
                 wait: float = WAIT):
    points = await off_loop(request, expanded, settings, body)  # before any input is read: no data needed
    inputs = Inputs(request)
    x_train = await inputs.points(body.x_train, "x_train")
    y_train = await inputs.targets(body.y_train, "y_train", x_train["shape"][0])
    x_val = y_val = None
    if (body.x_val is None) != (body.y_val is None):
        raise invalid("x_val" if body.x_val is None else "y_val", "give both x_val and y_val, or neither")
    if body.x_val is not None:
        x_val = await inputs.points(body.x_val, "x_val")
        same_features(x_val, x_train, "x_val", "x_train")
        y_val = await inputs.targets(body.y_val, "y_val", x_val["shape"][0])
        if outputs(y_val) != outputs(y_train):
            raise invalid("y_val", f"has {outputs(y_val)} outputs per point but y_train has {outputs(y_train)}")
    limits.check_sweep(settings, [point.architecture for point in points], x_train, x_val)
    await off_loop(request, check_points_fit, points, body, x_train["shape"][1:])
    labels = list(body.architectures) if isinstance(body.architectures, dict) else None
    architectures = body.architectures if labels is None else list(body.architectures.values())
    job = SweepJob(**tenant.owner(settings), base=body.base, grid=None if body.grid is None else list(body.grid.items()),
                   architectures=architectures, labels=labels, dtype=body.dtype or settings.dtype,
                   x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val, diag_reg=body.diag_reg)
    return await jobs.compute(request, job, inputs.inline, wait, "x_train")


def outputs(targets: dict) -> int:
    shape = targets["shape"]
    return shape[1] if len(shape) == 2 else 1


def expanded(settings: Settings, body: SweepRequest) -> list[SweepPoint]:
    """The sweep's architectures, under NTK_MAX_SWEEP_ARCHITECTURES (counted before any is made)
    and NTK_MAX_LAYERS."""
    if body.architectures is not None:
        limits.within(settings, "max_sweep_architectures", len(body.architectures), "architectures",
                      "the number of architectures")
    else:
        limits.within(settings, "max_sweep_architectures", math.prod(map(len, (body.grid or {}).values())), "grid",
                      "the number of architectures (the product of the grid's lists)")
    try:
        points = expand(body.base, body.grid, body.architectures, max_architectures=settings.max_sweep_architectures,
                        max_layers=settings.max_layers)
    except SpecError as e:
        raise spec_problem(e.errors) from None
    for point in points:
        limits.within(settings, "max_layers", point.architecture.depth(), where(point, body),
                      f"the number of layers{at(point, body)} (those inside Residual blocks included)")
    return points


def check_points_fit(points: list[SweepPoint], body: SweepRequest, point_shape: list[int]) -> None:
    """Every architecture runs on points of this shape (as POST /v1/kernels checks its one)."""
    for point in points:
        try:
            point.architecture.check(tuple(point_shape))
        except SpecError as e:
            raise spec_problem([{"path": where(point, body), "message": describe(point, body, error)}
                                for error in e.errors]) from None


def where(point: SweepPoint, body: SweepRequest) -> str:
    """The request's path that made this architecture: its entry of ``architectures``, else the
    grid (or the base alone, without a grid)."""
    if body.architectures is not None:
        label = point.key["architecture"]
        return f"architectures[{label}]" if isinstance(label, int) else f"architectures.{label}"
    return "grid" if body.grid else "base"


def at(point: SweepPoint, body: SweepRequest) -> str:
    """`` at {grid values}`` for an architecture of a grid, else nothing (its path names it)."""
    return f" at {point.key}" if body.grid else ""


def describe(point: SweepPoint, body: SweepRequest, error: dict) -> str:
    """What is wrong with one architecture of the sweep: where in the grid, at which layer, what."""
    return ": ".join(([f"at {point.key}"] if body.grid else []) + ([error["path"]] if error["path"] else [])
                     + [error["message"]])


def spec_problem(errors: list[dict]) -> Problem:
    return Problem(422, "Invalid sweep", "; ".join(f"{e['path']}: {e['message']}" for e in errors), errors=errors)
