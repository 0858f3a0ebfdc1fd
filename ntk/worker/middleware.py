"""The workers' Dramatiq middleware: which tasks run, and what becomes of their jobs when they fail.

Dramatiq runs middleware hooks around every task (its own AgeLimit and Retries are middleware), so
the actors (ntk.worker.tasks) hold only their job's steps:

- RunningJob: a task runs only while its job does (a plan task starts its queued job); the tasks
  of a cancelled, failed or finished job are skipped (the tile in progress is stopped by the
  worker's watch, ntk.worker.watch).
- JobProblems: an error a job's inputs caused fails the job with a precise problem (422 for an
  invalid architecture, 504 past its deadline, 507 for a full Redis, ...).
- FinalFailure: a task that will not run again (retries exhausted, or skipped by another
  middleware) fails its job, so that no job stays "running" with nothing left to run it.
- PoisonGuard: a task that keeps killing its worker fails its job.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar

import redis
from dramatiq.middleware import Middleware, SkipMessage

from ntk.core import keys
from ntk.core.broker import STEPS, LogContext, retries
from ntk.core.jobstate import Jobs
from ntk.core.problems import problem, redis_problem
from ntk.core.settings import Settings
from ntk.engine import NonFiniteKernel, SpecError
from ntk.engine.predict import NotPositiveDefinite, PredictError
from ntk.worker.compute import Cancelled, DeadlineExceeded
from ntk.worker.store import MissingInput

log = logging.getLogger("ntk.worker")

# The errors a job's inputs cause: the job fails with its problem, the task is not retried, and
# Dramatiq logs them as expected (the actors' ``throws``), without a traceback.
JOB_ERRORS = (Cancelled, DeadlineExceeded, SpecError, NonFiniteKernel, PredictError, MissingInput)

# The job of the task being processed, as RunningJob read it when the task started.
current_job: ContextVar[dict | None] = ContextVar("current_job", default=None)


def worker_middleware(settings: Settings, jobs: Jobs) -> list[Middleware]:
    """The API's middleware plus the workers'. Dramatiq runs "before" hooks in this order and
    "after" hooks in reverse: FinalFailure's after Retries' has judged, JobProblems' first."""
    return [LogContext(), FinalFailure(settings), retries(), PoisonGuard(settings), RunningJob(jobs),
            JobProblems(jobs)]


class RunningJob(Middleware):
    """Runs a task only while its job runs: a plan task first starts its queued job; any other
    task of a job that is not running (cancelled, failed, finished) is skipped. The job, as read
    here, is the task's ``current_job``."""

    def __init__(self, jobs: Jobs):
        self.jobs = jobs

    def before_process_message(self, broker, message):
        job_id = message.args[0]
        job = self.jobs.start(job_id) if STEPS.get(message.actor_name) == "plan" else self.jobs.get(job_id)
        if job.get("status") != "running":
            message.options["job_not_running"] = True  # for FinalFailure: nothing to fail
            raise SkipMessage()
        current_job.set(job)

    def after_process_message(self, broker, message, *, result=None, exception=None):
        current_job.set(None)

    after_skip_message = after_process_message


def job_problem(error: BaseException) -> dict | None:
    """The problem an error means for the job whose task raised it; None for what is not the job's
    to answer: a cancellation (already ended), or a Redis that is lost (Retries, then FinalFailure,
    whose problem names none of Redis' words)."""
    if isinstance(error, redis.OutOfMemoryError):
        return redis_problem(error)  # 507, as the API answers a full Redis
    if isinstance(error, (Cancelled, redis.RedisError)):
        return None
    if isinstance(error, DeadlineExceeded):
        return problem(504, "Deadline exceeded", f"the job used {error.worked_s:.1f} s of worker time, past its "
                       f"deadline of {error.deadline_s:.1f} s (its estimate × NTK_DEADLINE_MARGIN + "
                       "NTK_DEADLINE_SLACK_S, at most NTK_MAX_JOB_SECONDS × NTK_DEADLINE_MARGIN): the cost model "
                       "underestimated it, or the workers are overloaded; its work was stopped",
                       value=round(error.worked_s, 1), limit=round(error.deadline_s, 1), setting="NTK_MAX_JOB_SECONDS")
    if isinstance(error, SpecError):
        return problem(422, "Invalid architecture", str(error), errors=error.errors)
    if isinstance(error, NonFiniteKernel):
        return problem(422, "Non-finite kernel", str(error))
    if isinstance(error, NotPositiveDefinite):
        return problem(422, "Not positive definite", str(error))
    if isinstance(error, PredictError):
        return problem(422, "Invalid prediction", str(error))
    if isinstance(error, MissingInput):
        return problem(422, "Input deleted", str(error))
    return problem(500, "Internal error", f"{type(error).__name__}: {error}")


class JobProblems(Middleware):
    """Fails the job of a task that raised with the problem its error means (``job_problem``)."""

    def __init__(self, jobs: Jobs):
        self.jobs = jobs

    def after_process_message(self, broker, message, *, result=None, exception=None):
        error = None if exception is None else job_problem(exception)
        job = current_job.get()
        if error is not None and job is not None:
            self.jobs.fail(job, error)


class FinalFailure(Middleware):
    """A task that will not run again fails its job, whichever actor it was: one whose exception
    Retries gave up on (``message.failed``: retries exhausted, or an error ``transient`` does not
    retry), or one a middleware skipped. Actors turn what a job's inputs can cause into a precise
    problem (JobProblems); this catches the rest, so that no job stays "running"
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
        if message.options.get("job_not_running"):
            return
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
