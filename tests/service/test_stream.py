"""ntk.api.jobs.stream_npz: a stored npz sent in ranges, with the answer's scalars appended."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest

from ntk.api import jobs
from ntk.api.problems import Problem
from ntk.core import keys
from ntk.core.codec import Manifest, chunk_digest, pack


class FakeRedis:
    """The string commands stream_npz uses, on one dict; after ``evict_after`` reads, ``evicts``
    (default: every key) goes."""

    def __init__(self, values: dict[str, bytes], evict_after: int | None = None, evicts: str | None = None):
        self.values, self.evict_after, self.evicts, self.reads = values, evict_after, evicts, 0

    def pipeline(self, transaction=True):
        redis, calls = self, []

        class Pipeline:
            def strlen(self, key):
                calls.append(lambda: len(redis.values.get(key, b"")))

            def getrange(self, key, start, end):
                calls.append(lambda: redis._range(key, start, end))

            async def execute(self):
                return [call() for call in calls]

        return Pipeline()

    async def get(self, key):
        return self.values.get(key)

    async def delete(self, key):
        self.values.pop(key, None)

    async def getrange(self, key, start, end):
        self.reads += 1
        if self.evict_after is not None and self.reads > self.evict_after:
            for gone in [self.evicts] if self.evicts else list(self.values):
                self.values.pop(gone, None)
        return self._range(key, start, end)

    def _range(self, key, start, end):
        data = self.values.get(key, b"")
        start, end = (max(len(data) + i, 0) if i < 0 else i for i in (start, end))
        return data[start:end + 1]


async def body_of(response) -> bytes:
    return b"".join([chunk async for chunk in response.body_iterator])


@pytest.fixture
def small_ranges(monkeypatch):
    monkeypatch.setattr(jobs, "STREAM_CHUNK_BYTES", 1000)


def test_streams_the_stored_arrays_then_the_scalars(small_ranges):
    ntk = np.random.default_rng(0).standard_normal((30, 30))
    redis = FakeRedis({"result": pack(ntk=ntk)})
    response = asyncio.run(jobs.stream_npz(redis, "result", {"id": "abc", "t": [1.0, None], "cached": True}, "job"))
    body = asyncio.run(body_of(response))
    assert int(response.headers["content-length"]) == len(body) and redis.reads == 8  # 7.3 kB in 1 kB ranges
    with np.load(io.BytesIO(body)) as answer:
        np.testing.assert_array_equal(answer["ntk"], ntk)
        np.testing.assert_array_equal(answer["t"], [1.0, np.inf])
        assert answer["id"] == "abc" and answer["cached"]


def test_a_missing_result_is_gone_and_an_evicted_one_stops_short(small_ranges):
    with pytest.raises(Problem) as gone:
        asyncio.run(jobs.stream_npz(FakeRedis({}), "result", {"cached": False}, "job"))
    assert gone.value.body["status"] == 410
    redis = FakeRedis({"result": pack(ntk=np.zeros((30, 30)))}, evict_after=3)
    response = asyncio.run(jobs.stream_npz(redis, "result", {"cached": False}, "job"))
    with pytest.raises(RuntimeError, match="evicted while it was being sent"):
        asyncio.run(body_of(response))


def chunked(key: str, data: bytes, size: int) -> dict[str, bytes]:
    """``data`` stored at ``key`` as chunks of ``size`` bytes (ntk.core.keys: "Values in chunks")."""
    pieces = [data[i:i + size] for i in range(0, len(data), size)]
    manifest = Manifest(tuple((chunk_digest(p), len(p)) for p in pieces))
    return {key: manifest.encode(), **{keys.chunk(chunk_digest(p)): p for p in pieces}}


def test_streams_a_chunked_result_across_its_chunks(small_ranges):
    ntk = np.random.default_rng(1).standard_normal((40, 40))
    redis = FakeRedis(chunked("result", pack(ntk=ntk), 2500))  # ranges of 1000 B cut across chunks of 2500 B
    response = asyncio.run(jobs.stream_npz(redis, "result", {"t": None, "cached": False}, "job"))
    body = asyncio.run(body_of(response))
    assert int(response.headers["content-length"]) == len(body)
    with np.load(io.BytesIO(body)) as answer:
        np.testing.assert_array_equal(answer["ntk"], ntk)
        assert not answer["cached"]


def test_a_result_missing_a_chunk_is_gone_and_its_manifest_with_it(small_ranges):
    values = chunked("result", pack(ntk=np.zeros((40, 40))), 2500)
    del values[next(k for k in values if k.startswith("ntk:chunk:"))]
    redis = FakeRedis(values)
    with pytest.raises(Problem) as gone:
        asyncio.run(jobs.stream_npz(redis, "result", {"cached": False}, "job"))
    assert gone.value.body["status"] == 410 and "result" not in redis.values
