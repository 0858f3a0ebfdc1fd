"""POST /v1/kernels: NNGP/NTK Gram matrices, answered within ``wait`` seconds or as a job."""

from __future__ import annotations

from fastapi import Request

from ntk.api import deps, jobs, limits
from ntk.api.inputs import Inputs, fits, same_features
from ntk.api.routers.compute import PROBLEMS, WAIT, job_router
from ntk.api.schemas import Accepted, KernelAnswer, KernelRequest
from ntk.core.job import KernelJob
from ntk.spec.limits import DEFAULT_SAMPLES

router = job_router("kernels")
ANSWERS = {200: {"model": KernelAnswer, "content": {jobs.NPZ: {}}}, 202: {"model": Accepted}, **PROBLEMS}


@router.post("/kernels", responses=ANSWERS)
async def kernels(body: KernelRequest, request: Request, settings: deps.SettingsDep, tenant: deps.TenantDep,
                  wait: float = WAIT):
    limits.check_depth(settings, body.architecture)  # before any input is read: the cheapest check
    inputs = Inputs(request)
    x1 = await inputs.points(body.x1, "x1")
    x2 = None if body.x2 is None else await inputs.points(body.x2, "x2")
    if x2 is not None:
        same_features(x2, x1, "x2", "x1")
    samples = (body.samples or DEFAULT_SAMPLES) if body.method == "monte_carlo" else None
    architecture = fits(body.architecture, x1["shape"][1:])
    limits.check_kernels(settings, body, x1, x2, samples)
    job = KernelJob(**tenant.owner(settings), architecture=architecture, dtype=body.dtype or settings.dtype, x1=x1, x2=x2,
                    get=sorted(set(body.get)), method=body.method, samples=samples,
                    seed=(body.seed or 0) if body.method == "monte_carlo" else None)
    return await jobs.compute(request, job, inputs.inline, wait, "x1" if x2 is None else "x2")
