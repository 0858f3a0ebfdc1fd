"""/healthz (the process answers), /readyz (Redis answers and a worker is alive), /metrics."""

from __future__ import annotations

import logging
import time

import redis
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from ntk.api import deps
from ntk.api.problems import problem_responses, respond
from ntk.core import keys
from ntk.core.problems import problem

log = logging.getLogger("ntk.api")
router = APIRouter(tags=["health"])

FORGET_WORKERS_S = 3600  # prune workers silent this long from the live-worker set


# Probes answer HEAD as GET, without the body (load balancers probe with HEAD); only GET is documented.
@router.head("/healthz", include_in_schema=False)
@router.get("/healthz")
async def healthz():
    return {"status": "ok"}


@router.head("/readyz", include_in_schema=False)
@router.get("/readyz", responses=problem_responses(503))
async def readyz(settings: deps.SettingsDep, r: deps.RedisDep):
    now = time.time()
    try:
        pipe = r.pipeline(transaction=False)
        pipe.zremrangebyscore(keys.WORKERS, 0, now - FORGET_WORKERS_S)
        pipe.zcount(keys.WORKERS, now - settings.live_worker_s, "+inf")
        _, workers = await pipe.execute()
    except redis.RedisError as e:
        log.warning("/readyz: Redis does not answer: %s", e)  # the details stay in the log
        return respond(problem(503, "Not ready", "Redis does not answer"), {"Retry-After": "1"})
    if workers == 0:
        return respond(problem(503, "Not ready", f"no live worker (none reported within {settings.live_worker_s:g} s)"),
                       {"Retry-After": "1"})
    return JSONResponse({"status": "ready", "workers": workers})


@router.get("/metrics", response_class=PlainTextResponse, dependencies=[Depends(deps.authorize_metrics)],
            responses=problem_responses(401, 503))
async def metrics(request: Request, settings: deps.SettingsDep, r: deps.RedisDep):
    body = await request.app.state.metrics.scrape(r, settings.live_worker_s)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
