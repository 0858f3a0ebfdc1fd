"""The Dramatiq broker both sides share: its queue, the actors' names, retries and log context.

The API only enqueues (``enqueue`` builds the message an actor's ``send`` would), so it never
imports the actors and their torch code paths; the workers declare the actors (ntk.worker.tasks)
and add their own middleware (ntk.worker.middleware).
"""

from __future__ import annotations

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Middleware, Retries

from ntk.core import logs
from ntk.core.settings import Settings

QUEUE = "ntk"
PLAN, TILE, FINISH = "plan_job", "compute_tile", "finish_job"
STEPS = {PLAN: "plan", TILE: "tile", FINISH: "finish"}


def transient(retries: int, exception: BaseException) -> bool:
    """Retry a lost Redis connection, or a Redis out of memory before the task could even start its
    job (deletes or evictions may make room); a task's own failure ends its job instead."""
    return retries < 5 and isinstance(exception, (redis.ConnectionError, redis.TimeoutError, redis.OutOfMemoryError))


def retries() -> Retries:
    return Retries(retry_when=transient, min_backoff=500, max_backoff=10_000)


def build_broker(settings: Settings, middleware: list[Middleware] | None = None) -> RedisBroker:
    """The broker, with ``middleware`` (default: the API's, LogContext and retries; the workers'
    is ntk.worker.middleware.worker_middleware). LogContext comes first, so that its context spans
    the other middleware's hooks (Dramatiq runs "after" hooks in reverse).

    No TimeLimit middleware: a tile may take as long as it takes. The heartbeat timeout and the
    maintenance chance decide how soon a dead worker's unacknowledged task goes back to the queue:
    idle workers poll every ``worker_poll_ms`` at least, so maintenance runs within a second of the
    timeout.
    """
    if middleware is None:
        middleware = [LogContext(), retries()]
    return RedisBroker(url=settings.broker, middleware=middleware,
                       heartbeat_timeout=int(settings.heartbeat_timeout_s * 1000),
                       maintenance_chance=settings.maintenance_chance)


def enqueue(broker: RedisBroker, actor: str, *args) -> None:
    broker.enqueue(dramatiq.Message(queue_name=QUEUE, actor_name=actor, args=args, kwargs={}, options={}))


class LogContext(Middleware):
    """A task's log lines carry its job's id (every actor's first argument) and the id of the HTTP
    request behind it, which travels in the message from whoever enqueued it (ntk.core.logs)."""

    def before_enqueue(self, broker, message, delay):
        if logs.request_id.get():
            message.options["request_id"] = logs.request_id.get()

    def before_process_message(self, broker, message):
        logs.request_id.set(message.options.get("request_id"))
        logs.job_id.set(message.args[0] if message.args else None)

    def after_process_message(self, broker, message, *, result=None, exception=None):
        logs.request_id.set(None)
        logs.job_id.set(None)

    after_skip_message = after_process_message
