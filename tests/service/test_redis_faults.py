"""Redis in trouble: out of memory (507, reads still served, datasets kept, recovery once memory is
freed) and restarted with its AOF (datasets and queued jobs survive). Redis down and back without a
restart of the service: test_resilience.py."""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest
import redis

from service_helpers import MLP, follow, npz, points, tiled_reference
from ntk.core.keys import eviction_risk


def until(condition, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)
    return value


def test_out_of_memory_is_507_while_reads_and_datasets_stay(start_service, start_valkey):
    """With the default rate limit on: the limiter cannot count without writing, and lets calls through."""
    with start_valkey() as server, start_service(f"{server.connection_url}/0", workers=1) as svc:
        r = redis.Redis.from_url(f"{server.connection_url}/0")
        r.config_set("maxmemory", r.info("memory")["used_memory"] + 2_000_000)
        with httpx.Client(base_url=svc.url, timeout=60) as client:
            uploaded, full = [], None
            for seed in range(40):  # 200 kB each: memory runs out within about ten
                answer = client.post("/v1/datasets", content=npz(x=points(100, 250, seed=seed)),
                                     headers={"Content-Type": "application/x-npz"})
                if answer.status_code != 201:
                    full = answer
                    break
                uploaded.append(answer.json()["id"])
            assert full is not None and full.status_code == 507, full and full.text
            assert full.headers["content-type"].startswith("application/problem+json")
            assert "out of memory" in full.json()["detail"] and full.headers["x-request-id"]
            # At the edge a small write may still pass (a big one's own query buffer counts against
            # maxmemory): go firmly over it, as when datasets alone fill the memory
            r.config_set("maxmemory", r.info("memory")["used_memory"] - 300_000)
            kernel = {"architecture": MLP, "x1": points(3, 2).tolist()}
            assert client.post("/v1/kernels", json=kernel).status_code == 507  # a job cannot be recorded
            for dataset in uploaded:  # reads are served, and no dataset was evicted
                assert client.get(f"/v1/datasets/{dataset}").status_code == 200
            # Delete all but one: a few hundred kB of room would be within the noise of client buffers
            for dataset in uploaded[1:]:
                assert client.delete(f"/v1/datasets/{dataset}").status_code == 204
            again = client.post("/v1/datasets", content=npz(x=points(100, 250, seed=99)),
                                headers={"Content-Type": "application/x-npz"})
            assert again.status_code == 201, again.text
            assert until(lambda: client.post("/v1/kernels", json=kernel).status_code == 200)


def test_datasets_and_queued_jobs_survive_a_restart_with_aof(start_service, start_valkey, tmp_path, free_tcp_port):
    port = free_tcp_port()
    url = f"redis://127.0.0.1:{port}/0"
    aof = {"appendonly": "yes", "appendfsync": "always"}  # every write on disk before it is answered
    x1, x2 = points(6, 3, seed=40), points(4, 3, seed=41)
    with start_service(url, workers=0) as api:  # no worker yet: the job stays queued
        with start_valkey(port=port, data_dir=tmp_path, **aof) as server:
            dataset = httpx.post(f"{api.url}/v1/datasets", content=npz(x=x1),
                                 headers={"Content-Type": "application/x-npz"}).json()["id"]
            accepted = httpx.post(f"{api.url}/v1/kernels?wait=0", timeout=60, json={
                "architecture": MLP, "x1": {"dataset": dataset}, "x2": x2.tolist()})
            assert accepted.status_code == 202, accepted.text
            job = accepted.json()["job"]
            server.terminate()  # SIGKILL: no shutdown, no final save
        with start_valkey(port=port, data_dir=tmp_path, **aof):
            until(lambda: httpx.get(f"{api.url}/v1/datasets/{dataset}").status_code == 200)
            assert httpx.get(f"{api.url}/v1/jobs/{job['id']}").json()["status"] == "queued"
            with start_service(url, workers=1), httpx.Client(base_url=api.url, timeout=60) as client:
                done = follow(client, job["id"])
                assert done["status"] == "succeeded", done
                answer = client.get(f"/v1/jobs/{job['id']}/result").json()
    reference = tiled_reference(MLP, x1, x2, 2048)
    for name in ("nngp", "ntk"):
        np.testing.assert_allclose(answer[name], reference[name], rtol=1e-12, atol=1e-14 * np.abs(reference[name]).max())


def test_a_job_that_cannot_be_queued_ends_failed(start_service, start_valkey, free_tcp_port):
    """The queue's Redis (NTK_BROKER_URL) is down: 503, and the job is not left for others to join."""
    with start_valkey() as server, start_service(f"{server.connection_url}/0", workers=0,
                                                 broker_url=f"redis://127.0.0.1:{free_tcp_port()}/0") as api:
        r = redis.Redis.from_url(f"{server.connection_url}/0")
        body = {"architecture": MLP, "x1": points(3, 2).tolist()}
        for attempt in (1, 2):
            answer = httpx.post(f"{api.url}/v1/kernels", json=body, timeout=60)
            assert answer.status_code == 503 and answer.headers["retry-after"], answer.text
            statuses = [r.hget(key, "status") for key in r.scan_iter("ntk:job:*") if key.count(b":") == 2]
            assert statuses == [b"failed"] * attempt  # each attempt made a job of its own, and ended it
        assert not list(r.scan_iter("ntk:inflight:*"))


@pytest.mark.parametrize("policy, risky", [("volatile-lru", False), ("volatile-lfu", False), ("volatile-ttl", False),
                                           ("allkeys-lru", True), ("allkeys-random", True), ("noeviction", True)])
def test_eviction_policies_that_put_data_at_risk_are_named(policy, risky):
    assert (eviction_risk(policy) is not None) == risky
