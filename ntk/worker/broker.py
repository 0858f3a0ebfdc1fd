"""The Dramatiq broker both sides share, and the poison-task guard.

The API only enqueues (``enqueue`` builds the message an actor's ``send`` would), so it never
imports the actors and their torch code paths; the workers declare the actors (ntk.worker.tasks).
"""

from __future__ import annotations

import logging

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Middleware, Retries, SkipMessage

from ntk.core import logs
from ntk.core.settings import Settings
from ntk.core import keys
from ntk.core.jobstate import Jobs, problem

QUEUE = "ntk"
PLAN, TILE, FINISH = "plan_job", "compute_tile", "finish_job"

log = logging.getLogger("ntk.worker")


def transient(retries: int, exception: BaseException) -> bool:
    """Retry a lost Redis connection, or a Redis out of memory before the task could even start its
    job (deletes or evictions may make room); a task's own failure ends its job instead."""
    return retries < 5 and isinstance(exception, (redis.ConnectionError, redis.TimeoutError, redis.OutOfMemoryError))


def build_broker(settings: Settings, *, guard: bool = False) -> RedisBroker:
    """The broker; ``guard`` adds what fails a job whose task gives up: FinalFailure and the
    poison-task guard (workers only). LogContext comes first, so that its context spans the other
    middleware's hooks (Dramatiq runs "after" hooks in reverse).

    No TimeLimit middleware: a tile may take as long as it takes. The heartbeat timeout and the
    maintenance chance decide how soon a dead worker's unacknowledged task goes back to the queue:
    idle workers poll every ``worker_poll_ms`` at least, so maintenance runs within a second of the
    timeout.
    """
    middleware = [LogContext(), Retries(retry_when=transient, min_backoff=500, max_backoff=10_000)]
    if guard:  # FinalFailure before Retries, so that its "after" hook runs after Retries' has judged
        middleware[1:1] = [FinalFailure(settings)]
        middleware.append(PoisonGuard(settings))
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


STEPS = {PLAN: "plan", TILE: "tile", FINISH: "finish"}


class FinalFailure(Middleware):
    """A task that will not run again fails its job, whichever actor it was: one whose exception
    Retries gave up on (``message.failed``: retries exhausted, or an error ``transient`` does not
    retry), or one a middleware skipped. Actors turn what a job's inputs can cause into a precise
    problem themselves (tasks.failing_job); this catches the rest, so that no job stays "running"
    with nothing left to run it. The problem names the step and the error's class, never the
    error's text (a Redis error's says which socket broke where)."""

    def __init__(self, settings: Settings):
        self.jobs = Jobs(redis.Redis.from_url(settings.redis), settings.job_ttl_s)

    def after_process_message(self, broker, message, *, result=None, exception=None):
        if exception is None or not message.failed:
            return
        step, error = STEPS.get(message.actor_name, message.actor_name), type(exception).__name__
        deliveries = message.options.get("retries", 1)
        if isinstance(exception, (redis.ConnectionError, redis.TimeoutError, redis.OutOfMemoryError,
                                  redis.ReadOnlyError)):
            status, advice = 503, "Redis was unreachable, full or read-only; send the request again later"
        else:
            status, advice = 500, "the workers' log has the trace under this job's id"
        self._fail(message, problem(status, "Task failed", f"the {step} step of this job failed on each of its "
                                    f"{deliveries} deliveries ({error}) and is not retried again: {advice}",
                                    step=step, error=error))

    def after_skip_message(self, broker, message):
        step = STEPS.get(message.actor_name, message.actor_name)
        self._fail(message, problem(500, "Task skipped", f"the {step} step of this job was skipped and will not "
                                    "run again", step=step))

    def _fail(self, message, error: dict) -> None:
        try:
            job = self.jobs.get(message.args[0]) if message.args else None
            if job and self.jobs.fail(job, error):
                log.error("%s: the job failed with its task", message.actor_name)
        except redis.RedisError as e:  # the watchdog fails or re-plans the job once Redis is back
            log.warning("could not fail the job of a failed %s task: %s", message.actor_name, type(e).__name__)


class PoisonGuard(Middleware):
    """Counts each task's deliveries in Redis; one delivered ``poison_deliveries`` times without
    finishing has killed its worker that often (OOM, a segfault in a kernel), so its job fails
    with a clear error instead of the task looping through every worker forever."""

    def __init__(self, settings: Settings):
        self.limit = settings.poison_deliveries
        self.redis = redis.Redis.from_url(settings.redis)
        self.jobs = Jobs(self.redis, settings.job_ttl_s)

    def before_process_message(self, broker, message):
        key = keys.deliveries(message.message_id)
        deliveries, _ = self.redis.pipeline().incr(key).expire(key, 86400).execute()
        if deliveries > self.limit:
            job = self.jobs.get(message.args[0])
            log.error("task %s of job %s delivered %d times; failing the job", message.actor_name,
                      message.args[0], deliveries)
            if job:
                self.jobs.fail(job, problem(500, "Task keeps crashing its worker",
                                            f"a {message.actor_name} task of this job killed its worker "
                                            f"{deliveries - 1} times (out of memory?); try smaller inputs "
                                            "or a smaller NTK_TILE"))
            raise SkipMessage()

    def after_process_message(self, broker, message, *, result=None, exception=None):
        self.redis.delete(keys.deliveries(message.message_id))

    after_skip_message = after_process_message
