"""GET/DELETE /v1/jobs/{id} and GET /v1/jobs/{id}/result."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from service import deps, jobs
from service.problems import Problem
from service.schemas import Job, ProblemDetails

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=[Depends(deps.authorize)])


async def existing(redis, job_id: str) -> dict:
    job = await jobs.read(redis, job_id)
    if job is None:
        raise jobs.not_found(job_id)
    return job


@router.get("/{job_id}", response_model=Job, responses={404: {"model": ProblemDetails}})
async def get_job(job_id: str, redis: deps.RedisDep):
    return jobs.render(await existing(redis, job_id))


@router.get("/{job_id}/result", responses={409: {"model": ProblemDetails}, 404: {"model": ProblemDetails}})
async def get_result(job_id: str, request: Request, redis: deps.RedisDep):
    """The 200 body of the request that made the job (JSON, or npz with ``Accept: application/x-npz``)."""
    job = await existing(redis, job_id)
    if job["status"] in ("queued", "running"):
        raise Problem(409, "Job not finished", f"job {job_id} is {job['status']}: poll GET /v1/jobs/{job_id}")
    return await jobs.conclude(request, job, joined=False)


@router.delete("/{job_id}", status_code=202, response_model=Job, responses={404: {"model": ProblemDetails}})
async def cancel_job(job_id: str, request: Request, redis: deps.RedisDep):
    """Cancel: the job ends ``cancelled``; its workers stop within one tile."""
    await jobs.cancel(request, await existing(redis, job_id))
    return JSONResponse(jobs.render(await existing(redis, job_id)), status_code=202)
