"""ntk.worker.turns against a real Redis (or Valkey): a tenant's batch tiles in flight, shared by
its jobs in turn. What is asserted is which tiles go in flight, in which order."""

from __future__ import annotations

import threading
import uuid

import pytest
import redis

from ntk.core import keys
from ntk.core.broker import BROKER_NAMESPACE, QUEUE, job_messages
from ntk.worker.turns import TenantTurns, waits_its_turn


@pytest.fixture
def client(redis_url):
    return redis.Redis.from_url(redis_url)


def running_job(client) -> str:
    job_id = uuid.uuid4().hex
    client.hset(keys.job(job_id), "status", "running")
    return job_id


def row(n: int) -> list[tuple[str, list[int]]]:
    """``n`` tiles of one block."""
    return [("kernel", [0, 1, j, j + 1]) for j in range(n)]


def test_a_tenants_jobs_share_its_tiles_in_flight_in_turn_and_ended_jobs_leave(client):
    tenant, turns = uuid.uuid4().hex, TenantTurns(client, 1)
    first, second = running_job(client), running_job(client)
    assert turns.join(tenant, first, row(3)) == [(first, "kernel", [0, 1, 0, 1])]
    assert turns.join(tenant, second, row(2)) == []  # the tenant's one tile is in flight
    assert turns.passed(tenant, first, "kernel", [0, 1, 0, 1]) == [(second, "kernel", [0, 1, 0, 1])]
    assert turns.passed(tenant, second, "kernel", [0, 1, 0, 1]) == [(first, "kernel", [0, 1, 1, 2])]
    client.hset(keys.job(second), "status", "cancelled")  # its pending tile is never queued
    assert turns.passed(tenant, first, "kernel", [0, 1, 1, 2]) == [(first, "kernel", [0, 1, 2, 3])]
    assert client.lrange(keys.tenant_turns(tenant), 0, -1) == [first.encode()]
    assert turns.passed(tenant, first, "kernel", [0, 1, 2, 3]) == []
    assert not client.exists(keys.tenant_turns(tenant), keys.tenant_tiles_in_flight(tenant))


def test_workers_finishing_tiles_at_once_queue_each_tile_once_and_never_more_than_the_limit(client):
    tenant, limit = uuid.uuid4().hex, 3
    turns = TenantTurns(client, limit)
    jobs = [running_job(client) for _ in range(4)]
    queued = [t for job_id in jobs for t in turns.join(tenant, job_id, row(25))]  # the queue, shared
    done_tiles: list = []
    lock, most_in_flight = threading.Lock(), [len(queued)]

    def worker():
        while True:
            with lock:
                if not queued:
                    return
                done = queued.pop(0)
            taken = turns.passed(tenant, *done)
            with lock:
                queued.extend(taken)
                done_tiles.append(done)
                most_in_flight[0] = max(most_in_flight[0], client.scard(keys.tenant_tiles_in_flight(tenant)))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(map(str, done_tiles)) == sorted(str((j, "kernel", list(t))) for j in jobs for _, t in row(25))
    assert most_in_flight[0] <= limit


def test_a_job_with_tiles_pending_waits_its_turn_while_its_tenants_tiles_are_in_the_broker(client):
    tenant, turns = uuid.uuid4().hex, TenantTurns(client, 1)
    first, second = running_job(client), running_job(client)
    turns.join(tenant, first, row(1))
    turns.join(tenant, second, row(1))
    assert not waits_its_turn(client, client, second, tenant)  # the first's tile has no message: lost
    client.hset(f"{BROKER_NAMESPACE}:{QUEUE}.msgs", "m1", "{}")
    client.sadd(job_messages(first), f"{QUEUE}\tm1")
    assert waits_its_turn(client, client, second, tenant)
    assert not waits_its_turn(client, client, first, tenant)  # nothing pending: its own messages say
