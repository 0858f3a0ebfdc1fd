"""ntk.worker.watch: a running tile's stop signal and progress, against a real Redis; state, never time."""

from __future__ import annotations

import uuid

import pytest
import redis

from ntk.core import keys
from ntk.worker.watch import Watch


@pytest.fixture
def client(redis_url):
    return redis.Redis.from_url(redis_url)


def job(client, status: str, **fields) -> dict:
    job = {"id": uuid.uuid4().hex, "status": status, **fields}
    client.hset(keys.job(job["id"]), mapping=job)
    return job


def test_a_cancelled_job_stops_its_tile_at_the_next_step_and_the_steps_are_recorded(client):
    watch = Watch(client, "w1")
    running_job = job(client, "running")
    with watch.tile(running_job) as running:
        running.progress(3, 10)
        watch.check([running])
        assert not running.should_stop()
        assert client.hget(keys.job(running_job["id"]), "partial:w1") == b"0.3"
        client.hset(keys.job(running_job["id"]), "status", "cancelled")
        watch.check([running])
        running.progress(4, 10)  # the step in progress when the flag was set ends
        assert running.should_stop() and running.reason == "cancelled"
    fields = client.hgetall(keys.job(running_job["id"]))
    assert (fields[b"stop_noticed_step"], fields[b"stopped_step"]) == (b"3", b"4")
    assert b"partial:w1" not in fields and float(fields[b"worked_s"]) > 0


def test_the_deadline_counts_the_worker_seconds_the_job_already_used(client):
    watch = Watch(client, "w1")
    with watch.tile(job(client, "running", deadline_s="100", worked_s="100")) as running:
        assert running.should_stop() and running.reason == "deadline"
    with watch.tile(job(client, "running", deadline_s="100", worked_s="10")) as running:
        assert not running.should_stop()
    with watch.tile(job(client, "running")) as running:  # no deadline (a job from before estimates)
        assert not running.should_stop()
