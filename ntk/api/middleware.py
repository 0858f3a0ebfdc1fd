"""The API's ASGI middleware, outermost first: request context, rate limit, body limit (with
ntk.api.metrics.Instrument between the first two).

They are plain ASGI (no BaseHTTPMiddleware): they run before a body is read, so a refused call
costs nothing, and they keep the request's context variables visible to the logs of what they wrap.
"""

from __future__ import annotations

import logging
import math
import re
import time
import uuid

import limits
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError

from ntk.core import logs
from ntk.api.problems import Problem, respond
from ntk.api.tenants import identify, keys_required
from ntk.core.settings import Settings
from ntk.core.problems import problem

access_log = logging.getLogger("ntk.access")
log = logging.getLogger("ntk.api")

# An incoming X-Request-ID is kept when it is this sane (it ends up in logs and job records), else replaced.
REQUEST_ID = re.compile(r"[A-Za-z0-9._:=+/-]{1,128}")
# Probes and scrapes: logged at debug level, so that they do not drown the calls that matter.
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def header(scope, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return ""


class RequestContext:
    """Give every call a request id and write one access line for it.

    The id is the caller's ``X-Request-ID`` when sane, else a new one; it is echoed in the answer's
    ``X-Request-ID`` (refusals by the middleware below included), bound to every log line written
    while answering, and stored with any job the call creates, whose workers log it too. A 500 is
    answered outside this middleware (ntk.api.problems), which reads the id from request.state.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        sent = header(scope, b"x-request-id")
        request_id = sent if REQUEST_ID.fullmatch(sent) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500  # unless an answer starts: an exception escaped and the 500 is answered outside
        start = time.perf_counter()

        async def send_with_id(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", request_id.encode())]}
            await send(message)

        with logs.bound(request_id=request_id, job_id=None):
            try:
                await self.app(scope, receive, send_with_id)
            except Exception:
                log.exception("unhandled error on %s %s", scope["method"], scope["path"])
                raise
            finally:
                level = logging.DEBUG if scope["path"] in QUIET_PATHS else logging.INFO
                duration_ms = round((time.perf_counter() - start) * 1000, 2)
                access_log.log(level, "%s %s %d", scope["method"], scope["path"], status,
                               extra={"method": scope["method"], "path": scope["path"], "status": status,
                                      "duration_ms": duration_ms})


class RateLimit:
    """At most NTK_RATE_LIMIT /v1 calls per client in any window of its period; 429 beyond.

    A client is its tenant (ntk.api.tenants: the hash of its key; keys are never stored or logged
    in clear) when it sends a valid key, else its address: calls without keys configured, and calls
    with a missing or invalid key, which are thus limited too, under one Redis entry per address
    however many random keys they try. Counts live in Redis (``limits``' moving window, under
    ``ntk:ratelimit:``), so every API process shares them, and each entry expires with its window.
    Health probes, /metrics and the docs are not limited.

    When Redis cannot count (down, out of memory) the call goes through: the limiter protects
    capacity, it is not access control, and refusing every call while Redis is unwell would
    also refuse the reads that still work (an out-of-memory Redis still answers GETs). Calls
    that need a Redis that is down get their own 503. For the same reason the limiter does not
    wait for a slow Redis longer than NTK_REDIS_CONNECT_TIMEOUT_S: a count missed under load
    costs less than a call held back.
    """

    def __init__(self, app, settings: Settings):
        self.app = app
        self.limit = limits.parse(settings.rate_limit)
        self.settings = settings
        storage = RedisStorage(f"async+{settings.redis}", implementation="redispy", wrap_exceptions=True,
                               key_prefix="ntk:ratelimit", socket_connect_timeout=settings.redis_connect_timeout_s,
                               socket_timeout=settings.redis_connect_timeout_s)
        self.window = MovingWindowRateLimiter(storage)
        self.counting = True  # whether Redis answered last time: its failures are logged once, not per call

    def client(self, scope) -> str:
        tenant = identify(header(scope, b"authorization"), self.settings)
        if tenant is not None and keys_required(self.settings):
            return f"key:{tenant.id}"
        host = scope.get("client")[0] if scope.get("client") else "unknown"
        return f"address:{host}"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            return await self.app(scope, receive, send)
        client = self.client(scope)
        try:
            allowed = await self.window.hit(self.limit, client)
            reset_at = None if allowed else (await self.window.get_window_stats(self.limit, client)).reset_time
        except StorageError as e:
            if self.counting:
                log.warning("rate limit not enforced: Redis cannot count calls (%s)", e.storage_error)
                self.counting = False
            return await self.app(scope, receive, send)
        if not self.counting:
            log.info("rate limit enforced again")
            self.counting = True
        if allowed:
            return await self.app(scope, receive, send)
        seconds = max(1, math.ceil(reset_at - time.time()))
        who = "API key" if client.startswith("key:") else "address"
        setting = Settings.env("rate_limit")
        body = problem(429, "Too many requests", f"this {who} made {self.limit.amount} calls in the last "
                       f"{self.limit.get_expiry()} s, the most {setting} allows ({self.limit}); retry in {seconds} s",
                       limit=str(self.limit), setting=setting)
        await respond(body, {"Retry-After": str(seconds)})(scope, receive, send)


def is_json(content_type: str) -> bool:
    media_type = content_type.split(";")[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


class BodyLimit:
    """A body over NTK_MAX_BODY_BYTES, or a JSON one over NTK_MAX_JSON_BYTES, is a 413, whether
    declared or streamed.

    JSON has its own, lower limit: parsed, its numbers take several times the bytes they arrived
    in, and parsing holds a core; large arrays belong in npy or npz. A declared body is refused
    before it is read. A streamed one is cut off when it passes the limit; whatever the app then
    answers (FastAPI turns a failed body read into a 400) is replaced by the 413.
    """

    def __init__(self, app, max_bytes: int, max_json_bytes: int):
        self.app = app
        self.max_bytes = max_bytes
        self.max_json_bytes = max_json_bytes

    def limit(self, scope) -> tuple[int, str]:
        """The most bytes this call's body may have, and the setting that says so."""
        if is_json(header(scope, b"content-type")) and self.max_json_bytes < self.max_bytes:
            return self.max_json_bytes, "max_json_bytes"
        return self.max_bytes, "max_body_bytes"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit, setting = self.limit(scope)
        declared = header(scope, b"content-length")
        if declared.isdigit() and int(declared) > limit:
            return await self.refuse(scope, receive, send, int(declared), "is", limit, setting)
        received = 0
        exceeded = False

        async def limited():
            nonlocal received, exceeded
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                exceeded = True
                raise Problem(413, "Content too large", "body over the limit")
            return message

        async def answer(message):
            if not exceeded:
                await send(message)
            elif message["type"] == "http.response.start":
                await self.refuse(scope, receive, send, received, "passed", limit, setting)

        await self.app(scope, limited, answer)

    async def refuse(self, scope, receive, send, size: int, verb: str, limit: int, setting: str) -> None:
        env = Settings.env(setting)
        if setting == "max_json_bytes":
            advice = ("send large arrays as npy or npz instead: upload them with POST /v1/datasets "
                      "(application/x-npy or application/x-npz) and refer to them as {\"dataset\": id}")
            what = "the JSON body"
        else:
            advice = "upload large arrays as npz datasets and refer to them"
            what = "the body"
        body = problem(413, "Content too large", f"{what} {verb} {size} bytes, over the limit of {limit} bytes "
                       f"({env}); {advice}", value=size, limit=limit, setting=env)
        await respond(body)(scope, receive, send)
