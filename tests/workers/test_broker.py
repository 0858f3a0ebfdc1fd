"""ntk.core.broker: which task failures Dramatiq retries (transient), and that a task which will not run
again fails its job (FinalFailure)."""

from __future__ import annotations

import json
import threading
import time
import uuid

import dramatiq
import pytest
import redis
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Middleware, Retries, SkipMessage

from ntk.core.settings import Settings
from ntk.core import keys
from ntk.core.broker import FINISH, PLAN, QUEUE, TILE, WakeableConsumer, build_broker, enqueue, transient
from ntk.worker.middleware import FinalFailure
from ntk.core.jobstate import Jobs


def test_a_lost_or_full_redis_is_retried_a_few_times_and_nothing_else():
    for error in (redis.ConnectionError("down"), redis.TimeoutError("slow"), redis.OutOfMemoryError("full")):
        assert transient(0, error) and transient(4, error) and not transient(5, error)
    for error in (redis.ResponseError("WRONGTYPE"), ValueError("bad input"), RuntimeError("bug")):
        assert not transient(0, error)


# -- FinalFailure, in-process: Dramatiq's StubBroker with the middleware the workers run


class SkipEverything(Middleware):
    def before_process_message(self, broker, message):
        raise SkipMessage()


def run_one(redis_url: str, actor_name: str, failure, *extra_middleware) -> dict:
    """A running job whose one task, ``actor_name``, runs ``failure`` on every delivery until
    Dramatiq gives up; the job as it is afterwards."""
    client = redis.Redis.from_url(redis_url)
    job_id = uuid.uuid4().hex
    client.hset(keys.job(job_id), mapping={"id": job_id, "status": "running", "request_key": uuid.uuid4().hex})
    broker = StubBroker(middleware=[FinalFailure(Settings(redis_url=redis_url)),
                                    Retries(retry_when=transient, min_backoff=1, max_backoff=5), *extra_middleware])
    broker.emit_after("process_boot")
    actor = dramatiq.actor(failure, broker=broker, actor_name=actor_name, queue_name=QUEUE)
    actor.send(job_id)
    worker = dramatiq.Worker(broker, worker_timeout=10)
    worker.start()
    try:
        broker.join(QUEUE, fail_fast=False)
        worker.join()
    finally:
        worker.stop()
    return Jobs(client, 60).get(job_id)


def test_a_task_that_exhausts_its_retries_fails_its_job_naming_step_and_error_class(redis_url):
    def lost_redis(job_id):
        raise redis.ConnectionError("Error 104 while writing to socket. Connection reset by peer.")

    job = run_one(redis_url, FINISH, lost_redis)
    assert job["status"] == "failed"
    error = json.loads(job["error"])
    assert (error["status"], error["title"], error["step"], error["error"]) == (503, "Task failed", "finish",
                                                                               "ConnectionError")
    assert "6 deliveries" in error["detail"] and "104" not in error["detail"] and "socket" not in error["detail"]


def test_an_error_that_is_not_retried_fails_the_job_at_once(redis_url):
    def bug(job_id):
        raise KeyError("request")

    error = json.loads(run_one(redis_url, PLAN, bug)["error"])
    assert (error["status"], error["step"], error["error"]) == (500, "plan", "KeyError")
    assert "1 deliveries" in error["detail"]


def test_a_skipped_task_fails_its_job(redis_url):
    job = run_one(redis_url, TILE, lambda job_id: None, SkipEverything())
    error = json.loads(job["error"])
    assert job["status"] == "failed" and (error["title"], error["step"]) == ("Task skipped", "tile")


def test_a_task_that_succeeds_leaves_its_job_alone(redis_url):
    assert run_one(redis_url, TILE, lambda job_id: None)["status"] == "running"



# -- waking: an idle lane's consumer waits on its wake list, and an enqueue wakes it


@pytest.fixture(scope="module")
def own_redis(start_valkey):
    """A Redis of these tests' own: the session's running service consumes the lanes of the shared
    one (``redis_url``), and its workers would take the message and the wake token under test."""
    with start_valkey() as server:
        yield f"{server.connection_url}/0"


def test_an_idle_consumer_is_woken_by_an_enqueue_not_by_its_timeout(own_redis):
    settings = Settings(redis_url=own_redis)
    broker = build_broker(settings)
    client = redis.Redis.from_url(own_redis)
    client.delete(keys.queue_wake(QUEUE))
    consumer = broker.consume(QUEUE, prefetch=1, timeout=600_000)  # idle for up to ten minutes
    assert isinstance(consumer, WakeableConsumer)
    seen: list = []

    def consume() -> None:
        while not seen or seen[-1] is None:
            seen.append(next(consumer))  # None once the wait is over: woken (or timed out)

    waiting = threading.Thread(target=consume, daemon=True)
    waiting.start()
    while not any(c.get("cmd") == "blpop" for c in client.client_list()):
        time.sleep(0.01)  # until the consumer waits on its wake list
    enqueue(broker, PLAN, uuid.uuid4().hex)
    waiting.join(120)
    assert not waiting.is_alive() and seen[-1] is not None and seen[-1].actor_name == PLAN
    assert client.llen(keys.queue_wake(QUEUE)) == 0  # its token was taken by the consumer it woke
    consumer.ack(seen[-1])
    consumer.close()
    broker.close()


def test_a_wait_longer_than_the_clients_socket_timeout_is_a_look_at_the_queue_not_an_error(own_redis):
    """redis-py 8 reads with a 5 s socket timeout by default: a BLPOP waiting longer (a large
    NTK_WORKER_POLL_MS) ends in its TimeoutError, which is one more idle round, not a crash."""
    broker = build_broker(Settings(redis_url=f"{own_redis}?socket_timeout=0.05"))
    redis.Redis.from_url(own_redis).delete(keys.queue_wake(QUEUE))
    consumer = broker.consume(QUEUE, prefetch=1, timeout=60_000)
    assert next(consumer) is None
    consumer.close()
    broker.close()
