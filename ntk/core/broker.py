"""The Dramatiq broker both sides share: its queues (lanes), the actors' names, retries and log context.

The API only enqueues (``enqueue`` builds the message an actor's ``send`` would), so it never
imports the actors and their torch code paths; the workers declare the actors (ntk.worker.tasks)
and add their own middleware (ntk.worker.middleware).

Lanes. A job runs in one of two lanes, decided at submission from its estimate
(ntk.core.estimate): ``interactive`` (under NTK_INTERACTIVE_S) or ``batch``. Each lane is a
queue of its own with its own actors, the interactive ones of a lower Dramatiq priority
number. A Dramatiq worker consumes every declared queue, each queue's consumer prefetching into
one priority queue from which the worker thread takes the lowest priority first; so the moment a
worker's current task ends, an interactive task waiting in the queue goes before any batch task,
even with one worker thread. Tasks are never preempted: an interactive job waits at most for the
batch tile in progress, which is sized to take at most NTK_TILE_TARGET_S.

Waking. An idle Dramatiq consumer sleeps between looks at its queue, up to the worker's timeout
(NTK_WORKER_POLL_MS): a task would wait half of it on average before a worker sees it, longer
than a small job takes. So every enqueue to a lane also pushes a token to the lane's wake list
(keys.queue_wake), and an idle consumer waits on that list (BLPOP, up to the same timeout)
instead of sleeping (``WakeableConsumer``): the first idle worker sees a new task at once. A
token pushed while no worker waits is at most a spurious look at the queue.
"""

from __future__ import annotations

import threading

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.errors import ConnectionClosed
from dramatiq.middleware import Middleware, Retries

from ntk.core import keys, logs
from ntk.core.settings import Settings

QUEUE = "ntk"  # the batch lane
INTERACTIVE_QUEUE = "ntk-interactive"
LANES = {"batch": QUEUE, "interactive": INTERACTIVE_QUEUE}
PLAN, TILE, FINISH = "plan_job", "compute_tile", "finish_job"
# Dramatiq takes the lowest priority number first: every interactive task before any batch task,
# and within a lane the plans and joins of started jobs before more tiles.
PRIORITIES = {("interactive", PLAN): 0, ("interactive", FINISH): 0, ("interactive", TILE): 10,
              ("batch", PLAN): 100, ("batch", FINISH): 100, ("batch", TILE): 110}
BROKER_NAMESPACE = "dramatiq"  # RedisBroker's default key prefix
# Wake tokens a lane's list keeps at most: one per idle worker is all that is ever useful.
WAKE_TOKENS = 64


def actor_name(step: str, lane: str = "batch") -> str:
    """The actor running ``step`` (PLAN, TILE, FINISH) in ``lane``."""
    return step if lane == "batch" else f"{step}_{lane}"


STEPS = {actor_name(step, lane): name for lane in LANES
         for step, name in ((PLAN, "plan"), (TILE, "tile"), (FINISH, "finish"))}


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
    broker = WakeableBroker(url=settings.broker, middleware=[*middleware, TrackMessages()],
                            heartbeat_timeout=int(settings.heartbeat_timeout_s * 1000),
                            maintenance_chance=settings.maintenance_chance)
    for queue in LANES.values():  # a worker consumes the queues declared when it starts
        broker.declare_queue(queue)
    return broker


class WakeableConsumer(_RedisConsumer):
    """A lane's consumer that, idle, waits for its lane's wake token rather than sleeping (module
    docstring: Waking). Dramatiq's own idle sleep is turned off (timeout 0), and replaced, up to
    the worker's timeout, by a BLPOP when this consumer could take a message (fewer outstanding
    than it may prefetch), or else by a wait for one of its messages to be acknowledged (by the
    worker thread, the moment its task ends): a busy worker never takes the token an idle one
    waits for, and is ready for the next task as soon as it is done with this one."""

    def __init__(self, broker, queue_name, prefetch, timeout):
        super().__init__(broker, queue_name, prefetch, 0)
        self.idle_s = timeout / 1000
        self.wake = keys.queue_wake(queue_name)
        self.settled = threading.Event()

    def __next__(self):
        message = super().__next__()
        if message is None:
            self.settled.clear()  # before looking: a message settled from now on sets it
            if self.outstanding_message_count < self.prefetch:
                try:
                    self.broker.client.blpop([self.wake], timeout=self.idle_s)
                except redis.TimeoutError:
                    pass  # the client's socket timeout (redis-py's default 5 s) came first: a look at the queue
                except redis.ConnectionError as e:
                    raise ConnectionClosed(e) from None
            else:
                self.settled.wait(self.idle_s)
        return message

    def ack(self, message):
        try:
            super().ack(message)
        finally:
            self.settled.set()

    def nack(self, message):
        try:
            super().nack(message)
        finally:
            self.settled.set()


class WakeableBroker(RedisBroker):
    """RedisBroker whose lanes' consumers are woken by enqueues (``WakeableConsumer``); the delay
    queues keep Dramatiq's consumer."""

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000):
        if queue_name in LANES.values():
            return WakeableConsumer(self, queue_name, prefetch, timeout)
        return super().consume(queue_name, prefetch, timeout)


def enqueue(broker: RedisBroker, step: str, job_id: str, *args, lane: str = "batch") -> None:
    """Queue one of a job's steps (PLAN, TILE, FINISH) in the job's lane."""
    broker.enqueue(dramatiq.Message(queue_name=LANES[lane], actor_name=actor_name(step, lane),
                                    args=(job_id, *args), kwargs={}, options={}))


def job_messages(job_id: str) -> str:
    """set of "queue<TAB>redis message id" of the job's messages, in the broker's Redis."""
    return f"ntk:job:{job_id}:messages"


class TrackMessages(Middleware):
    """Wakes an idle worker of the message's lane (module docstring: Waking), and remembers each
    job's messages (every actor's first argument is its job's id), so that the watchdog can tell a
    job whose tasks wait their turn from one whose tasks were lost (``waiting``). Retries
    re-enqueue a message under a new id: recorded too."""

    MESSAGES_TTL_S = 7 * 86400

    def after_enqueue(self, broker, message, delay):
        pipe = broker.client.pipeline(transaction=False)
        if message.args:
            key = job_messages(message.args[0])
            member = f"{message.queue_name}\t{message.options['redis_message_id']}"
            pipe.sadd(key, member).expire(key, self.MESSAGES_TTL_S)
        if message.queue_name in LANES.values():  # after the message is queued: a woken worker finds it
            wake = keys.queue_wake(message.queue_name)
            pipe.lpush(wake, 1).ltrim(wake, 0, WAKE_TOKENS - 1)
        pipe.execute()


def waiting(client: redis.Redis, job_id: str) -> bool:
    """Whether some message of the job is still in the broker: queued, delayed for a retry, or in
    a worker's hands (RedisBroker keeps a message in ``<queue>.msgs`` until it is acknowledged, and
    gives a dead worker's back to the queue). Forgets the messages that are gone."""
    members = [m.decode() for m in client.smembers(job_messages(job_id))]
    if not members:
        return False
    pipe = client.pipeline(transaction=False)
    for member in members:
        queue, message_id = member.split("\t")
        pipe.hexists(f"{BROKER_NAMESPACE}:{queue}.msgs", message_id)
    present = pipe.execute()
    gone = [m for m, p in zip(members, present) if not p]
    if gone:
        client.srem(job_messages(job_id), *gone)
    return any(present)


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
