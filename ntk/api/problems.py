"""RFC 9457 problem details for every error, the framework's own included.

Each answer is ``application/problem+json`` with ``type``, ``title``, ``status`` (the HTTP status)
and a ``detail`` saying what is wrong; validation problems add ``errors: [{"path", "message"}]``
with JSON paths like ``architecture.layers[2].w_std``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import get_type_hints

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from ntk.api.schemas import DatasetRef, ProblemDetails
from ntk.spec.architecture import LAYER_TYPES, MAX_RESIDUAL_NESTING, Architecture, format_path, layer_model, suggest
from ntk.core.problems import problem, redis_problem

log = logging.getLogger("ntk.api")

PROBLEM_JSON = "application/problem+json"

# Pydantic puts the tag of a discriminated union's member into an error's location
# (layers.0.Dense.w_std); the JSON path has no such step.
UNION_TAGS = set(LAYER_TYPES) | {"dataset-ref", "inline", "time", "times"}


class Problem(Exception):
    """Raise to answer with a problem; ``errors`` for a 422 that names paths."""

    def __init__(self, status: int, title: str, detail: str, *, errors: list[dict] | None = None,
                 headers: dict | None = None, **extra):
        super().__init__(detail)
        self.body = problem(status, title, detail, **({"errors": errors} if errors else {}), **extra)
        self.headers = headers


# What each problem status means, for the OpenAPI document; routes pick theirs with problem_responses.
PROBLEM_STATUSES = {
    400: "the body is not valid JSON, npy or npz",
    401: "the call lacks a valid bearer key (NTK_API_KEYS; for /metrics, NTK_METRICS_KEY)",
    404: "no such dataset or job (another tenant's is no such one either)",
    409: "the job has not finished yet, or was cancelled",
    410: "the job's result expired or was evicted: send the request again",
    413: "the body exceeds NTK_MAX_BODY_BYTES, or a JSON body NTK_MAX_JSON_BYTES",
    415: "the body's Content-Type is not one this call takes",
    422: "invalid input: `errors` names each offending JSON path",
    429: "more calls than NTK_RATE_LIMIT allows (Retry-After says when to call again), or a computation while "
         "the tenant has NTK_TENANT_MAX_ACTIVE_JOBS jobs queued or running",
    503: "Redis is unavailable, or no worker is alive",
    504: "the job ran past its deadline (its estimate × NTK_DEADLINE_MARGIN, capped by NTK_MAX_JOB_SECONDS)",
    507: "Redis is out of memory, or an upload would take the tenant's datasets over NTK_TENANT_MAX_BYTES: "
         "delete datasets (or raise Redis' maxmemory, or the setting)",
}
RETRY_AFTER = {"Retry-After": {"description": "seconds until this client may call again (a rate limit's 429)",
                               "schema": {"type": "integer", "minimum": 1}}}


def problem_responses(*statuses: int) -> dict:
    """The ``responses=`` entries of a route that answers these statuses with problem+json.

    Only problem+json is listed (no ``model``: FastAPI would list application/json too), and
    declaring 422 keeps FastAPI from adding its own validation-error schema, which this service
    never sends.
    """
    schema = ProblemDetails.model_json_schema()
    return {status: {"description": PROBLEM_STATUSES[status], "content": {PROBLEM_JSON: {"schema": schema}},
                     **({"headers": RETRY_AFTER} if status == 429 else {})}
            for status in statuses}


def invalid(path: str, message: str, title: str = "Invalid input") -> Problem:
    return Problem(422, title, f"{path}: {message}", errors=[{"path": path, "message": message}])


def malformed_json(error: ValueError | RecursionError) -> Problem:
    """The 400 for a body that json.loads refused, saying why."""
    reason = "it nests arrays or objects too deeply to parse" if isinstance(error, RecursionError) else str(error)
    return Problem(400, "Malformed JSON", f"the body is not valid JSON: {reason}")


# pydantic's recursion guard: "recursion_loop" in older versions, "recursion_depth_exceeded" in 2.14
RECURSION_ERRORS = ("recursion_loop", "recursion_depth_exceeded")


def nesting_message(error: dict) -> str:
    """pydantic's recursion guard stops validating deeply nested Residual blocks long before
    Architecture.check would count them: say which limit that is, not "cyclic reference"."""
    depth = sum(step in ("layers", "shortcut") for step in error["loc"]) - 1
    return f"Residual blocks nest more than {depth} deep; at most {MAX_RESIDUAL_NESTING} are allowed"


def layer_list_too_long(error: dict) -> dict:
    """A list of layers longer than any NTK_MAX_LAYERS may allow (ntk.spec.architecture.LAYERS_CEILING),
    refused while parsing (before its layers are built) as the limit it is: value, limit and setting,
    like ntk.api.limits.within (which refuses those over the setting itself)."""
    path, value, limit = json_path(error["loc"]), error["ctx"]["actual_length"], error["ctx"]["max_length"]
    message = f"the number of layers is {value}, over the limit of {limit} (NTK_MAX_LAYERS)"
    return problem(422, "Over a limit", f"{path}: {message}", errors=[{"path": path, "message": message}],
                   value=value, limit=limit, setting="NTK_MAX_LAYERS")


def respond(body: dict, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=body["status"], media_type=PROBLEM_JSON, headers=headers)


def json_path(loc: tuple) -> str:
    """A pydantic error location in a request as a JSON path ('body', 'x1', 0) -> 'x1[0]'."""
    steps = tuple(step for step in loc if step not in UNION_TAGS)
    if steps and steps[0] in ("body", "query", "path", "header"):
        steps = steps[1:]
    return format_path(steps) or "$"


CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client gone before its answer (no standard one)


def holder(request: Request, loc: tuple) -> type[BaseModel] | None:
    """The model whose field a request's error location names last: a layer type, the architecture,
    a dataset reference, or the route's ``body`` model (for suggesting a known spelling)."""
    parent = loc[-2] if len(loc) >= 2 else None
    if parent == "body":
        route = request.scope.get("route")
        return get_type_hints(route.endpoint).get("body") if route is not None else None
    return layer_model(loc) or {"architecture": Architecture, "dataset-ref": DatasetRef}.get(parent)


HTTP_TITLES = {400: "Bad request", 401: "Unauthorized", 404: "Not found", 405: "Method not allowed",
               406: "Not acceptable", 409: "Conflict", 413: "Content too large", 415: "Unsupported media type"}


def install(app: FastAPI, authorize: Callable[[Request], Awaitable[None]]) -> None:
    """Answer every error as a problem. ``authorize`` raises the 401 of a /v1 call without a valid
    key: a /v1 path or method that does not exist gets it first, as any /v1 call would."""

    @app.exception_handler(Problem)
    async def on_problem(request: Request, exc: Problem):
        return respond(exc.body, exc.headers)

    @app.exception_handler(HTTPException)
    async def on_http(request: Request, exc: HTTPException):
        if exc.status_code in (404, 405) and request.url.path.startswith("/v1/"):
            try:
                await authorize(request)
            except Problem as refused:
                return respond(refused.body, refused.headers)
        title = HTTP_TITLES.get(exc.status_code, "Error")
        detail = exc.detail if isinstance(exc.detail, str) else title
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no resource at {request.url.path}"
        if exc.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path}"
        if exc.status_code == 400 and isinstance(exc.__cause__, (ValueError, RecursionError)):
            return respond(malformed_json(exc.__cause__).body)  # FastAPI's "error parsing the body"
        return respond(problem(exc.status_code, title, detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        decode = [e for e in errors if e.get("type") == "json_invalid"]
        if decode:
            return respond(problem(400, "Malformed JSON", f"the body is not valid JSON: {decode[0]['ctx']['error']} "
                                   f"(at character {decode[0]['loc'][-1]})"))
        if any(e["type"] == "missing" and tuple(e["loc"]) == ("body",) for e in errors):
            return respond(problem(400, "Malformed JSON", "the body is empty: this call takes a JSON object"))
        too_deep = [e for e in errors if e["type"] == "too_long" and e["loc"][-1] in ("layers", "shortcut")]
        if too_deep:
            return respond(layer_list_too_long(too_deep[0]))
        paths = [suggest({"path": json_path(e["loc"]),
                          "message": nesting_message(e) if e["type"] in RECURSION_ERRORS else e["msg"]},
                         e, holder(request, e["loc"]))
                 for e in errors]
        detail = "; ".join(f"{p['path']}: {p['message']}" for p in paths[:5])
        return respond(problem(422, "Invalid input", detail, errors=paths))

    @app.exception_handler(ClientDisconnect)
    async def on_client_gone(request: Request, exc: ClientDisconnect):
        # A client event, not a server error: counted and logged (ntk.api.middleware.RequestContext)
        # with nginx's 499 "client closed request"; nobody is left to read the answer.
        log.info("the client closed the connection before its request body arrived")
        return Response(status_code=CLIENT_CLOSED_REQUEST)

    @app.exception_handler(redis.RedisError)
    async def on_redis(request: Request, exc: redis.RedisError):
        log.warning("Redis error on %s: %s", request.url.path, exc)
        body = redis_problem(exc)
        return respond(body, {"Retry-After": "1"} if body["status"] == 503 else None)

    @app.exception_handler(Exception)
    async def on_bug(request: Request, exc: Exception):
        # logged, with the request's context, by ntk.api.middleware.RequestContext, inside which this is not
        return respond(problem(500, "Internal error", f"{type(exc).__name__}: the service failed; this is a bug"),
                       {"X-Request-ID": request.state.request_id})
