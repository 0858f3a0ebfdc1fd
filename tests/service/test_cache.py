"""SPEC §4: the same request never computes twice, not even when sixteen arrive at once."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np

from service_helpers import DEEP, MLP, points, tiles_computed


def test_a_repeat_is_served_from_the_cache(service_url):
    body = {"architecture": MLP, "x1": points(150, seed=20).tolist()}
    with httpx.Client(base_url=service_url, timeout=120) as client:
        first = client.post("/v1/kernels", json=body).json()
        before = tiles_computed(service_url)
        start = time.perf_counter()
        second = client.post("/v1/kernels", json=body)
        latency = time.perf_counter() - start
    assert second.status_code == 200 and second.json()["cached"] is True and first["cached"] is False
    assert tiles_computed(service_url) == before
    np.testing.assert_array_equal(second.json()["ntk"], first["ntk"])
    print(f"cached request of a 150x150 kernel answered in {latency * 1000:.1f} ms")


def test_sixteen_identical_requests_compute_each_tile_once(service_url):
    body = {"architecture": DEEP, "x1": points(300, d=8, seed=21).tolist()}  # 15 upper-triangle tiles of 64
    before = tiles_computed(service_url)

    def ask(_):
        return httpx.post(f"{service_url}/v1/kernels", json=body, timeout=120)

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(ask, range(16)))
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers if a.status_code != 200]
    assert tiles_computed(service_url) - before == 15
    assert sum(not a.json()["cached"] for a in answers) == 1
    reference = answers[0].json()["nngp"]
    assert all(a.json()["nngp"] == reference for a in answers)
