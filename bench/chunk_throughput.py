#!/usr/bin/env python3
"""Throughput of a large value stored in chunks (ntk.core.keys, "Values in chunks").

    python3 bench/chunk_throughput.py [--gb 1] [--chunk-mb 1,4,16] [--redis URL]

A float64 matrix of ``--gb`` gigabytes (a 11,585-point factorization for 1 GB) is written with
``Store.put`` (serialized straight into chunks, ``PIPELINED_CHUNKS`` per round trip, manifest
last), read back with ``Store.get`` (numpy reading a file that fetches chunks as it goes), and
streamed as the API streams an answer (``ntk.api.jobs.stream_npz``: GETRANGEs of the chunks, the
next read while the last is handed on); each in MB/s (10⁶ bytes), with the value checked equal.
Without ``--redis`` an embedded Valkey (as ``ntk serve`` starts) holds it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import numpy as np  # noqa: E402
import redis  # noqa: E402
import redis.asyncio as aioredis  # noqa: E402

from ntk.cli.serve import embedded_valkey  # noqa: E402
from ntk.api.jobs import stream_npz  # noqa: E402
from ntk.worker.store import Store  # noqa: E402

KEY = "ntk:bench:value"


async def streamed_bytes(url: str) -> int:
    client = aioredis.Redis.from_url(url)
    try:
        response = await stream_npz(client, KEY, {}, "bench")
        return sum([len(chunk) async for chunk in response.body_iterator])
    finally:
        await client.aclose()


def measure(url: str, matrix: np.ndarray, chunk_bytes: int) -> dict[str, float]:
    client = redis.Redis.from_url(url)
    client.flushdb()
    store = Store(client, broker=None, cache_ttl_s=3600, chunk_bytes=chunk_bytes)
    start = time.perf_counter()
    store.put(KEY, cholesky=matrix)
    put_s = time.perf_counter() - start
    start = time.perf_counter()
    back = store.get(KEY)["cholesky"]
    get_s = time.perf_counter() - start
    assert np.array_equal(back, matrix)
    del back
    start = time.perf_counter()
    sent = asyncio.run(streamed_bytes(url))
    stream_s = time.perf_counter() - start
    assert sent > matrix.nbytes
    client.flushdb()
    return {"write": matrix.nbytes / put_s / 1e6, "read": matrix.nbytes / get_s / 1e6,
            "stream": sent / stream_s / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gb", type=float, default=1.0)
    parser.add_argument("--chunk-mb", default="1,4,16")
    parser.add_argument("--redis", help="a Redis to use (its db is flushed); default: an embedded Valkey")
    args = parser.parse_args()
    n = int((args.gb * 1e9 / 8) ** 0.5)
    matrix = np.tril(np.random.default_rng(0).standard_normal((n, n)))
    server = None
    if args.redis is None:
        server = embedded_valkey(str(int(3 * matrix.nbytes)))
    url = args.redis or f"{server.connection_url}/0"
    try:
        print(f"value: {n} x {n} float64, {matrix.nbytes / 1e9:.2f} GB")
        print(f"{'chunk':>8} {'write MB/s':>11} {'read MB/s':>10} {'stream MB/s':>12}")
        for mb in (float(v) for v in args.chunk_mb.split(",")):
            rates = measure(url, matrix, int(mb * (1 << 20)))
            print(f"{mb:>6g} MiB {rates['write']:>11.0f} {rates['read']:>10.0f} {rates['stream']:>12.0f}")
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
