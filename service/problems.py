"""RFC 9457 problem details for every error, the framework's own included.

Each answer is ``application/problem+json`` with ``type``, ``title``, ``status`` (the HTTP status)
and a ``detail`` saying what is wrong; validation problems add ``errors: [{"path", "message"}]``
with JSON paths like ``architecture.layers[2].w_std``.
"""

from __future__ import annotations

import logging

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from workers.engine.spec import Layer, format_path
from workers.jobstate import problem

log = logging.getLogger("ntk.api")

PROBLEM_JSON = "application/problem+json"

# Pydantic puts the tag of a discriminated union's member into an error's location
# (layers.0.Dense.w_std); the JSON path has no such step.
UNION_TAGS = {cls.__name__ for cls in Layer.__subclasses__()} | {"dataset-ref", "inline", "time", "times"}


class Problem(Exception):
    """Raise to answer with a problem; ``errors`` for a 422 that names paths."""

    def __init__(self, status: int, title: str, detail: str, *, errors: list[dict] | None = None,
                 headers: dict | None = None, **extra):
        super().__init__(detail)
        self.body = problem(status, title, detail, **({"errors": errors} if errors else {}), **extra)
        self.headers = headers


def invalid(path: str, message: str, title: str = "Invalid input") -> Problem:
    return Problem(422, title, f"{path}: {message}", errors=[{"path": path, "message": message}])


def respond(body: dict, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=body["status"], media_type=PROBLEM_JSON, headers=headers)


def json_path(loc: tuple) -> str:
    """A pydantic error location in a request as a JSON path ('body', 'x1', 0) -> 'x1[0]'."""
    steps = tuple(step for step in loc if step not in UNION_TAGS)
    if steps and steps[0] in ("body", "query", "path", "header"):
        steps = steps[1:]
    return format_path(steps) or "$"


HTTP_TITLES = {400: "Bad request", 401: "Unauthorized", 404: "Not found", 405: "Method not allowed",
               406: "Not acceptable", 409: "Conflict", 413: "Content too large", 415: "Unsupported media type"}


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def on_problem(request: Request, exc: Problem):
        return respond(exc.body, exc.headers)

    @app.exception_handler(HTTPException)
    async def on_http(request: Request, exc: HTTPException):
        title = HTTP_TITLES.get(exc.status_code, "Error")
        detail = exc.detail if isinstance(exc.detail, str) else title
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no resource at {request.url.path}"
        if exc.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path}"
        return respond(problem(exc.status_code, title, detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        decode = [e for e in errors if e.get("type") == "json_invalid"]
        if decode:
            return respond(problem(400, "Malformed JSON", f"the body is not valid JSON: {decode[0].get('msg')} "
                                   f"(at character {decode[0]['loc'][-1]})"))
        paths = [{"path": json_path(e["loc"]), "message": e["msg"]} for e in errors]
        detail = "; ".join(f"{p['path']}: {p['message']}" for p in paths[:5])
        return respond(problem(422, "Invalid input", detail, errors=paths))

    @app.exception_handler(redis.RedisError)
    async def on_redis(request: Request, exc: redis.RedisError):
        log.warning("Redis error on %s: %s", request.url.path, exc)
        return respond(problem(503, "Redis unavailable", f"the service cannot reach its Redis: {exc}"),
                       {"Retry-After": "1"})

    @app.exception_handler(Exception)
    async def on_bug(request: Request, exc: Exception):
        log.exception("unhandled error on %s", request.url.path)
        return respond(problem(500, "Internal error", f"{type(exc).__name__}: the service failed; this is a bug"))
