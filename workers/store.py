"""What the workers read and write in Redis: inputs, tiles, factorizations, progress."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import redis

from workers import keys
from workers.broker import FINISH, enqueue
from workers.codec import pack, unpack, unpack_array


class MissingInput(LookupError):
    """An array a job reads is gone (its dataset was deleted while the job ran)."""


class Store:
    INPUTS_KEPT = 4  # arrays kept in memory: a job's tiles all read the same few (x_train, x_test, y)

    def __init__(self, client: redis.Redis, broker, cache_ttl_s: int):
        self.redis = client
        self.broker = broker
        self.ttl = cache_ttl_s
        self._inputs: OrderedDict[str, np.ndarray] = OrderedDict()

    # -- inputs: content-addressed, so a digest names one array forever and caching it is safe
    def array(self, job_id: str, ref: dict) -> np.ndarray:
        digest = ref["digest"]
        if digest in self._inputs:
            self._inputs.move_to_end(digest)
            return self._inputs[digest]
        if ref["dataset"] is None:
            data = self.redis.hget(keys.job_inputs(job_id), digest)
        else:
            data = self.redis.hget(keys.dataset(ref["dataset"]), ref["field"])
        if data is None:
            where = f"dataset {ref['dataset']}" if ref["dataset"] else "the job's inputs"
            raise MissingInput(f"{where} vanished while the job ran (deleted, or the job expired)")
        self._inputs[digest] = array = unpack_array(data)
        if len(self._inputs) > self.INPUTS_KEPT:
            self._inputs.popitem(last=False)
        return array

    # -- cache entries (TTL, evictable)
    def tiles(self, tile_keys: list[str]) -> list[dict[str, np.ndarray] | None]:
        return [None if data is None else unpack(data) for data in self.redis.mget(tile_keys)] if tile_keys else []

    def present(self, tile_keys: list[str]) -> list[bool]:
        pipe = self.redis.pipeline(transaction=False)
        for key in tile_keys:
            pipe.exists(key)
        return [bool(n) for n in pipe.execute()]

    def put(self, key: str, **arrays: np.ndarray) -> None:
        """Idempotent: a tile's key names its content, so a re-run task writes the same bytes."""
        self.redis.set(key, pack(**arrays), ex=self.ttl)

    def get(self, key: str) -> dict[str, np.ndarray] | None:
        data = self.redis.get(key)
        return None if data is None else unpack(data)

    def count(self, counter: str, by: int = 1) -> None:
        self.redis.hincrby(keys.STATS, counter, by)

    # -- progress and the join
    def set_total(self, job_id: str, total: int, done: list[str]) -> None:
        pipe = self.redis.pipeline()
        pipe.hset(keys.job(job_id), "total", total)
        pipe.delete(keys.job_tiles_done(job_id))
        if done:
            pipe.sadd(keys.job_tiles_done(job_id), *done)
        pipe.hdel(keys.job(job_id), "finish_enqueued")
        pipe.execute()

    def tile_done(self, job_id: str, tile_key: str) -> None:
        """Count a tile; the task that completes the set enqueues the join, exactly once per round."""
        pipe = self.redis.pipeline()
        pipe.sadd(keys.job_tiles_done(job_id), tile_key)
        pipe.scard(keys.job_tiles_done(job_id))
        pipe.hget(keys.job(job_id), "total")
        _, done, total = pipe.execute()
        if total is not None and done >= int(total):
            self.enqueue_finish(job_id)

    def enqueue_finish(self, job_id: str) -> None:
        if self.redis.hsetnx(keys.job(job_id), "finish_enqueued", 1):
            enqueue(self.broker, FINISH, job_id)
