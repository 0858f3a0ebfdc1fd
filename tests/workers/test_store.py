"""ntk.worker.store: values in chunks (ntk.core.keys, "Values in chunks") written and read exactly."""

from __future__ import annotations

import numpy as np
import pytest
import redis

from ntk.core import keys
from ntk.core.codec import Manifest
from ntk.worker.store import Store


@pytest.fixture
def store(redis_url):
    return Store(redis.Redis.from_url(redis_url), broker=None, cache_ttl_s=600, chunk_bytes=64 << 10)


def test_a_large_value_is_chunks_behind_a_manifest_and_comes_back_exactly(store):
    rng = np.random.default_rng(0)
    arrays = {"cholesky": np.tril(rng.standard_normal((300, 300))), "n": np.array(300),
              "format": np.array("f/1"), "half": rng.standard_normal(1000).astype(np.float32)}
    store.put("ntk:test:large", **arrays)
    manifest = Manifest.decode(store.redis.get("ntk:test:large"))
    assert manifest is not None and len(manifest.chunks) == -(-manifest.size // (64 << 10))
    assert all(0 < store.redis.ttl(keys.chunk(digest)) <= 600 for digest, _ in manifest.chunks)
    out = store.get("ntk:test:large")
    assert set(out) == set(arrays)
    for name, a in arrays.items():
        assert out[name].dtype == a.dtype
        np.testing.assert_array_equal(out[name], a)


def test_a_small_value_is_its_own_bytes(store):
    store.put("ntk:test:small", ntk=np.eye(3))
    assert store.redis.get("ntk:test:small").startswith(b"PK")
    np.testing.assert_array_equal(store.get("ntk:test:small")["ntk"], np.eye(3))


def test_the_same_value_written_twice_is_the_same_chunks(store):
    a = np.random.default_rng(1).standard_normal((200, 200))
    store.put("ntk:test:one", a=a)
    store.put("ntk:test:two", a=a)
    one, two = (Manifest.decode(store.redis.get(f"ntk:test:{k}")) for k in ("one", "two"))
    assert one.chunks[1:-1] == two.chunks[1:-1]  # the members' data; headers hold their write time


def test_a_value_missing_a_chunk_is_gone_and_so_is_its_manifest(store):
    store.put("ntk:test:evicted", a=np.random.default_rng(2).standard_normal((200, 200)))
    manifest = Manifest.decode(store.redis.get("ntk:test:evicted"))
    store.redis.delete(keys.chunk(manifest.chunks[len(manifest.chunks) // 2][0]))
    assert store.get("ntk:test:evicted") is None
    assert not store.redis.exists("ntk:test:evicted")
