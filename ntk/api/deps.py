"""FastAPI dependencies: settings, the Redis client, and bearer-key auth (tenants' keys, the metrics key)."""

from __future__ import annotations

from typing import Annotated

import redis.asyncio as aioredis
from fastapi import Depends, Request
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from ntk.api.problems import Problem
from ntk.api.tenants import Tenant, bearer_key, identify
from ntk.core.settings import Settings


def redis_client(settings: Settings) -> aioredis.Redis:
    """The API's Redis client, one per process, its timeouts each with one purpose.

    A Redis that is down refuses or ignores a connection: that is noticed within
    NTK_REDIS_CONNECT_TIMEOUT_S and answered 503. On a loaded machine a reply may be late, the
    more so as a timeout counts the time this process's event loop was busy elsewhere: a reply
    gets NTK_REDIS_TIMEOUT_S, and a late or failed one is sent once more on a fresh connection
    before the call answers 503. Sending a command twice is safe: reads are, writes set what
    they set again, and job transitions are scripts that end in the same state when run twice
    (ntk.core.jobstate.SUBMIT). At most NTK_REDIS_MAX_CONNECTIONS connections: a call beyond them
    waits for one to be free (BlockingConnectionPool), rather than opening ever more or failing.
    """
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis, max_connections=settings.redis_max_connections, timeout=settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_connect_timeout_s, socket_timeout=settings.redis_timeout_s,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=1))
    return aioredis.Redis.from_pool(pool)


def settings(request: Request) -> Settings:
    return request.app.state.settings


def redis(request: Request) -> aioredis.Redis:
    """The API's redis.asyncio client (one connection pool per process, made at startup)."""
    return request.app.state.redis


SettingsDep = Annotated[Settings, Depends(settings)]
RedisDep = Annotated[aioredis.Redis, Depends(redis)]


def unauthorized(detail: str) -> Problem:
    return Problem(401, "Unauthorized", detail, headers={"WWW-Authenticate": 'Bearer realm="ntk"'})


async def authorize(request: Request) -> Tenant:
    """With NTK_API_KEYS (or NTK_ADMIN_KEYS) set, every /v1 call needs ``Authorization: Bearer <key>``;
    the call's tenant (ntk.api.tenants) is kept in ``request.state.tenant`` for what it submits."""
    tenant = identify(request.headers.get("Authorization", ""), request.app.state.settings)
    if tenant is None:
        raise unauthorized("this call needs an Authorization: Bearer <key> header with a valid key")
    request.state.tenant = tenant
    return tenant


async def authorize_metrics(request: Request) -> None:
    """With NTK_METRICS_KEY set, /metrics needs ``Authorization: Bearer <that key>`` (a scraper's
    credential, apart from the API keys); without it /metrics is open, as Prometheus expects."""
    key = request.app.state.settings.metrics_key
    if key and bearer_key(request.headers.get("Authorization", ""), [key]) is None:
        raise unauthorized("/metrics needs an Authorization: Bearer <NTK_METRICS_KEY> header")


TenantDep = Annotated[Tenant, Depends(authorize)]  # the router's own authorize, run once per call


async def json_body(request: Request) -> None:
    """Bodies of computations are JSON (large arrays travel as uploaded datasets)."""
    content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if content_type != "application/json" and not content_type.endswith("+json"):
        raise Problem(415, "Unsupported media type", f"this call takes application/json, not {content_type or 'an untyped body'}; "
                      "send arrays inline or as {\"dataset\": id} after POST /v1/datasets")
