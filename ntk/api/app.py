"""The FastAPI application: routers, problem+json errors, middleware, metrics, Redis and broker."""

from __future__ import annotations

import asyncio
import logging
import os
from contextlib import asynccontextmanager

import anyio
import redis
import redis.asyncio as aioredis
from fastapi import FastAPI

from ntk.api import deps, jobs, openapi, problems, tenants
from ntk.api.metrics import Instrument, Metrics
from ntk.api.middleware import BodyLimit, RateLimit, RequestContext
from ntk.api.problems import problem_responses
from ntk.api.routers import datasets, health, kernels, predict, sweeps
from ntk.api.routers import jobs as job_routes
from ntk.core.settings import Settings, get_settings
from ntk.core import keys
from ntk.core.broker import build_broker
from ntk.core.jobstate import END, SUBMIT

log = logging.getLogger("ntk.api")


def v1_problems(settings: Settings) -> dict:
    """What any /v1 call may answer, whatever its route: a rate limit, and a Redis out of memory."""
    return problem_responses(507, 429) if settings.rate_limit else problem_responses(507)


async def check_eviction_policy(r: aioredis.Redis) -> None:
    try:
        policy = (await r.config_get("maxmemory-policy")).get("maxmemory-policy")
    except redis.RedisError as e:  # down for now, or CONFIG disabled (managed Redis): nothing to check
        log.info("could not read Redis maxmemory-policy: %s", e)
        return
    risk = keys.eviction_risk(policy)
    if risk:
        log.warning(risk)


def cores() -> int:
    """The cores this process may run on (its affinity, where the platform tells)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.redis = deps.redis_client(settings)
        app.state.cpu_slots = anyio.CapacityLimiter(settings.parse_concurrency or cores())
        app.state.submit = app.state.redis.register_script(SUBMIT)
        app.state.end = app.state.redis.register_script(END)
        app.state.store_dataset = app.state.redis.register_script(tenants.STORE)
        app.state.delete_dataset = app.state.redis.register_script(tenants.DELETE)
        app.state.answered = app.state.redis.register_script(jobs.ANSWERED)
        app.state.encoded = jobs.EncodedArrays()
        app.state.broker = build_broker(settings)
        # its own connection: a subscribed one takes no other command (ntk.api.jobs.Endings)
        subscriber = aioredis.Redis.from_url(settings.redis, socket_connect_timeout=settings.redis_connect_timeout_s,
                                             socket_timeout=settings.redis_timeout_s)
        app.state.endings = jobs.Endings(subscriber)
        listening = asyncio.create_task(app.state.endings.listen())
        await check_eviction_policy(app.state.redis)
        yield
        listening.cancel()
        await subscriber.aclose()
        await app.state.redis.aclose()

    # No redirects: a redirect of /v1/kernels/ would answer before auth, and a POST redirected is a body sent twice.
    app = FastAPI(title="NTK service", version="0.1.0", lifespan=lifespan, redirect_slashes=False,
                  docs_url=None, redoc_url=None,
                  description="Neural tangent and NNGP kernels of infinitely wide networks, and the predictions "
                              "of their infinite ensembles. Errors are RFC 9457 application/problem+json.")
    app.state.settings = settings
    app.state.metrics = Metrics()
    problems.install(app, authorize=deps.authorize)
    openapi.serve_docs(app)
    openapi.declare_security(app, settings)
    app.include_router(health.router)
    for router in (datasets.router, kernels.router, predict.router, sweeps.router, job_routes.router):
        app.include_router(router, responses=v1_problems(settings))
    # added innermost first: a call meets RequestContext, Instrument, RateLimit, then BodyLimit
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, max_json_bytes=settings.max_json_bytes)
    if settings.rate_limit:
        app.add_middleware(RateLimit, settings=settings)
    app.add_middleware(Instrument, metrics=app.state.metrics)
    app.add_middleware(RequestContext)
    return app
