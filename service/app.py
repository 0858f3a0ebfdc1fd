"""The FastAPI application: routers, problem+json errors, body limit, metrics, Redis and broker."""

from __future__ import annotations

import json
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from fastapi import FastAPI

from service import problems
from service.metrics import Instrument, Metrics
from service.problems import PROBLEM_JSON, Problem
from service.routers import datasets, health, jobs, kernels, predict
from service.settings import Settings, get_settings
from workers.broker import build_broker
from workers.jobstate import END, SUBMIT, problem


class BodyLimit:
    """ASGI middleware: a body over ``max_bytes`` is a 413, whether declared or streamed.

    A declared one is refused before it is read. A streamed one is cut off when it passes the
    limit; whatever the app then answers (FastAPI turns a failed body read into a 400) is
    replaced by the 413.
    """

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return await self.refuse(send)
        received = 0
        exceeded = False

        async def limited():
            nonlocal received, exceeded
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                exceeded = True
                raise Problem(413, "Content too large", "body over the limit")
            return message

        async def answer(message):
            if not exceeded:
                await send(message)
            elif message["type"] == "http.response.start":
                await self.refuse(send)

        await self.app(scope, limited, answer)

    async def refuse(self, send) -> None:
        body = json.dumps(problem(413, "Content too large", f"the body exceeds {self.max_bytes} bytes "
                                  "(NTK_MAX_BODY_BYTES); upload large arrays as npz datasets")).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.redis = aioredis.Redis.from_url(settings.redis, socket_connect_timeout=2, socket_timeout=10)
        app.state.submit = app.state.redis.register_script(SUBMIT)
        app.state.end = app.state.redis.register_script(END)
        app.state.broker = build_broker(settings)
        yield
        await app.state.redis.aclose()

    app = FastAPI(title="NTK service", version="0.1.0", lifespan=lifespan,
                  description="Neural tangent and NNGP kernels of infinitely wide networks, and the predictions "
                              "of their infinite ensembles. Errors are RFC 9457 application/problem+json.")
    app.state.settings = settings
    app.state.metrics = Metrics()
    problems.install(app)
    for router in (health.router, datasets.router, kernels.router, predict.router, jobs.router):
        app.include_router(router)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(Instrument, metrics=app.state.metrics)
    return app
