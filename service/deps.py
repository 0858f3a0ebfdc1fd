"""FastAPI dependencies: settings, the Redis client, the broker, and bearer-key auth."""

from __future__ import annotations

import hmac

from typing import Annotated

import redis.asyncio as aioredis
from fastapi import Depends, Request

from service.problems import Problem
from service.settings import Settings


def settings(request: Request) -> Settings:
    return request.app.state.settings


def redis(request: Request) -> aioredis.Redis:
    """The API's redis.asyncio client (one connection pool per process, made at startup)."""
    return request.app.state.redis


SettingsDep = Annotated[Settings, Depends(settings)]
RedisDep = Annotated[aioredis.Redis, Depends(redis)]


async def authorize(request: Request) -> None:
    """With NTK_API_KEYS set, every /v1 call needs ``Authorization: Bearer <key>``.

    Every key is compared in constant time, and all of them always, so neither the time taken
    nor which key matched leaks how much of a guess was right.
    """
    allowed = request.app.state.settings.keys
    if not allowed:
        return
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    matched = False
    for key in allowed:
        matched |= hmac.compare_digest(token.strip().encode(), key.encode())
    if scheme.lower() != "bearer" or not matched:
        raise Problem(401, "Unauthorized", "this call needs an Authorization: Bearer <key> header with a valid key",
                      headers={"WWW-Authenticate": 'Bearer realm="ntk"'})


async def json_body(request: Request) -> None:
    """Bodies of computations are JSON (large arrays travel as uploaded datasets)."""
    content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if content_type != "application/json" and not content_type.endswith("+json"):
        raise Problem(415, "Unsupported media type", f"this call takes application/json, not {content_type or 'an untyped body'}; "
                      "send arrays inline or as {\"dataset\": id} after POST /v1/datasets")
