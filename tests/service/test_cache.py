"""SPEC §4: the same request never computes twice, not even when sixteen arrive at once."""

from __future__ import annotations

import io
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import redis

from service_helpers import DEEP, MLP, assert_problem, follow, points, tiled_reference, tiles_computed
from ntk.core import keys
from ntk.core.broker import INTERACTIVE_QUEUE, job_messages


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


def test_a_large_npz_answer_streams_whole_and_an_evicted_one_is_gone(service_url, redis_url):
    """An npz answer is sent from Redis in 4 MiB ranges (ntk.api.jobs.stream_npz): a 10 MB one
    arrives whole and valid (np.load checks each member's CRC); once evicted it is a 410."""
    x = points(800, seed=22)
    with httpx.Client(base_url=service_url, timeout=120) as client:
        job = client.post("/v1/kernels", params={"wait": 0}, json={"architecture": MLP, "x1": x.tolist()}).json()["job"]
        assert follow(client, job["id"])["status"] == "succeeded"
        npz_answer = client.get(f"/v1/jobs/{job['id']}/result", headers={"Accept": "application/x-npz"})
        assert npz_answer.status_code == 200 and int(npz_answer.headers["content-length"]) > 10_000_000
        with np.load(io.BytesIO(npz_answer.content)) as answer:
            assert set(answer.files) == {"id", "shape", "cached", "nngp", "ntk"} and not answer["cached"]
            reference = tiled_reference(MLP, x, None, 64)
            for name in ("nngp", "ntk"):
                np.testing.assert_array_equal(answer[name], reference[name])

        redis.Redis.from_url(redis_url).delete(keys.job_result(job["id"]))
        for accept in ("application/x-npz", "application/json"):
            gone = assert_problem(client.get(f"/v1/jobs/{job['id']}/result", headers={"Accept": accept}), 410)
            assert job["id"] in gone["detail"]


def job_ids(r: redis.Redis) -> set[str]:
    return {key.decode().split(":")[2] for key in r.scan_iter(keys.job("*")) if key.count(b":") == 2}


def test_a_small_new_kernel_is_one_task_and_its_repeat_is_answered_without_a_job(running_service):
    """The fast path (ntk.worker.tasks.run_fast): a 20-point kernel, one tile of NTK_TILE 64, is
    queued once (its plan) and never as tiles and a join; the same request again makes no job."""
    body = {"architecture": MLP, "x1": points(20, seed=21).tolist()}
    before = job_ids(running_service.redis)
    with httpx.Client(base_url=running_service.url, timeout=120) as client:
        first = client.post("/v1/kernels", json=body)
        (job_id,) = job_ids(running_service.redis) - before
        again = client.post("/v1/kernels", json=body)
    assert first.status_code == 200 and first.json()["cached"] is False
    assert again.status_code == 200 and again.json()["cached"] is True
    assert job_ids(running_service.redis) - before == {job_id}  # the repeat made no job
    messages = running_service.redis.smembers(job_messages(job_id))
    assert [m.decode().split("\t")[0] for m in messages] == [INTERACTIVE_QUEUE]  # its plan task, nothing else
    assert running_service.redis.hget(keys.job(job_id), "total") == b"1"
    np.testing.assert_array_equal(again.json()["ntk"], first.json()["ntk"])
