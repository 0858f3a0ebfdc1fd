"""What the routes that make jobs (kernels, predict, sweeps) share: their router, ``wait`` and problems."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from ntk.api import deps
from ntk.api.inputs import OffLoopJson
from ntk.api.problems import problem_responses

WAIT = Query(30.0, ge=0, le=300, allow_inf_nan=False, description="seconds to wait for the answer before answering 202 with the job")
# A job's own problem (422 for inputs the workers refuse, 503, 504) is answered as the request's; 429
# when the tenant has its most active jobs (ntk.api.tenants).
PROBLEMS = problem_responses(400, 401, 409, 410, 413, 415, 422, 429, 503, 504)


def job_router(tag: str) -> APIRouter:
    """A /v1 router whose JSON bodies are authorized, checked as JSON and parsed off the event loop."""
    return APIRouter(prefix="/v1", tags=[tag], dependencies=[Depends(deps.authorize), Depends(deps.json_body)],
                     route_class=OffLoopJson)
