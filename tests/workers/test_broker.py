"""workers.broker.transient: which task failures Dramatiq retries."""

from __future__ import annotations

import redis

from workers.broker import transient


def test_a_lost_or_full_redis_is_retried_a_few_times_and_nothing_else():
    for error in (redis.ConnectionError("down"), redis.TimeoutError("slow"), redis.OutOfMemoryError("full")):
        assert transient(0, error) and transient(4, error) and not transient(5, error)
    for error in (redis.ResponseError("WRONGTYPE"), ValueError("bad input"), RuntimeError("bug")):
        assert not transient(0, error)
