"""GET/DELETE /v1/jobs/{id} and GET /v1/jobs/{id}/result."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from ntk.api import deps, jobs

from ntk.core import logs
from ntk.api.problems import Problem, problem_responses
from ntk.api.schemas import Job
from ntk.api.tenants import Tenant

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=[Depends(deps.authorize)])


async def existing(redis, tenant: Tenant, job_id: str) -> dict:
    """The job, looked up only when ``job_id`` is one (its keys share their prefix with other keys);
    another tenant's job is not found, exactly as an unknown id is not (ntk.api.tenants)."""
    job = await jobs.read(redis, job_id) if jobs.JOB_ID.fullmatch(job_id) else None
    if job is None or not tenant.sees(job.get("tenant")):
        raise jobs.not_found(job_id)
    logs.job_id.set(job_id)
    return job


@router.get("/{job_id}", response_model=Job, responses=problem_responses(401, 404, 422, 503))
async def get_job(job_id: str, redis: deps.RedisDep, tenant: deps.TenantDep):
    return jobs.render(await existing(redis, tenant, job_id))


@router.get("/{job_id}/result", responses={200: {"content": {jobs.NPZ: {}}},
                                           **problem_responses(401, 404, 409, 410, 422, 503)})
async def get_result(job_id: str, request: Request, redis: deps.RedisDep, tenant: deps.TenantDep):
    """The 200 body of the request that made the job (JSON, or npz with ``Accept: application/x-npz``)."""
    job = await existing(redis, tenant, job_id)
    if job["status"] in ("queued", "running"):
        raise Problem(409, "Job not finished", f"job {job_id} is {job['status']}: poll GET /v1/jobs/{job_id}")
    return await jobs.conclude(request, job, joined=False)


@router.delete("/{job_id}", status_code=202, response_model=Job, responses=problem_responses(401, 404, 422, 503))
async def cancel_job(job_id: str, request: Request, redis: deps.RedisDep, tenant: deps.TenantDep):
    """Cancel: the job ends ``cancelled``; its running tiles stop within about a layer of one block."""
    await jobs.cancel(request, await existing(redis, tenant, job_id))
    return JSONResponse(jobs.render(await existing(redis, tenant, job_id)), status_code=202)
