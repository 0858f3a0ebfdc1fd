"""Things break: a worker is SIGKILLed, a job is cancelled, Redis dies, memory runs out.

Each test runs a service instance of its own, on a Valkey of its own, with tiny tiles so that a job
spans many tasks, and a short broker heartbeat so that a dead worker's task is re-run quickly.
"""

from __future__ import annotations

import io
import os
import signal
import time

import httpx
import numpy as np
import pytest
import redis

from service_helpers import follow, metric, tiled_reference, tiles_computed

CONV = {"layers": [{"type": "Conv", "out_chan": 16, "filter_shape": [3, 3], "padding": "SAME", "w_std": 1.4, "b_std": 0.1},
                   {"type": "Relu"},
                   {"type": "Conv", "out_chan": 16, "filter_shape": [3, 3], "padding": "SAME", "w_std": 1.4, "b_std": 0.1},
                   {"type": "Relu"}, {"type": "GlobalAvgPool"}, {"type": "Dense", "out_dim": 1}]}
FAST_RECOVERY = {"heartbeat_timeout_s": 5, "maintenance_chance": 200_000, "worker_beat_s": 1}


def images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 6, 6, 2))


@pytest.fixture(scope="module")
def small_tiles(start_service, start_valkey):
    with start_valkey() as server, start_service(f"{server.connection_url}/0", workers=2, tile=8,
                                                 **FAST_RECOVERY) as svc:
        yield svc


def test_a_sigkilled_worker_does_not_lose_the_job(small_tiles):
    x = images(96, seed=30)  # 78 tiles of 8 x 8, ~30 ms each
    with httpx.Client(base_url=small_tiles.url, timeout=60) as client:
        job = client.post("/v1/kernels?wait=0", json={"architecture": CONV, "x1": x.tolist()}).json()["job"]
        follow(client, job["id"], until=lambda j: j["progress"]["done"] >= 15)
        victim = small_tiles.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        job = follow(client, job["id"], timeout=180)
        recovery = time.monotonic() - killed_at
        assert job["status"] == "succeeded", job
        answer = client.get(f"/v1/jobs/{job['id']}/result").json()
    print(f"job finished {recovery:.1f} s after a worker was SIGKILLed mid-job: {job}")
    reference = tiled_reference(CONV, x, None, 8)
    for name in ("nngp", "ntk"):  # equal up to BLAS rounding, which may vary with memory alignment
        np.testing.assert_allclose(answer[name], reference[name], rtol=1e-12, atol=1e-14 * np.abs(reference[name]).max())


def test_cancel_stops_the_workers_within_a_tile(small_tiles):
    x = images(96, seed=31)
    url = small_tiles.url
    with httpx.Client(base_url=url, timeout=60) as client:
        job = client.post("/v1/kernels?wait=0", json={"architecture": CONV, "x1": x.tolist()}).json()["job"]
        follow(client, job["id"], until=lambda j: j["progress"]["done"] >= 10)
        cancelled = client.delete(f"/v1/jobs/{job['id']}")
        at_cancel = tiles_computed(url)
        assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"
        # A job sent now is queued behind the cancelled job's remaining tasks (one queue, first in
        # first out, one task in hand per worker): once it is answered, each of those was taken
        # and skipped. Its one tile (new points: nothing cached) is computed.
        probe = client.post("/v1/kernels", json={"architecture": CONV, "x1": (x[:8] + 1).tolist()})
        assert probe.status_code == 200 and not probe.json()["cached"]
        assert metric(url, "ntk_queue_depth") == 0
        # Since the cancel: the probe's tile and at most the tile each of the 2 workers had in hand.
        assert tiles_computed(url) - at_cancel <= 1 + 2
        assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "cancelled"
        assert client.get(f"/v1/jobs/{job['id']}/result").status_code == 409


def wait_status(url: str, status: int, timeout: float = 60) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if httpx.get(url, timeout=2).status_code == status:
                return time.monotonic() - start
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} never answered {status}")


def test_redis_dies_and_comes_back(start_service, start_valkey, free_tcp_port):
    port = free_tcp_port()
    body = {"architecture": CONV, "x1": images(4, seed=32).tolist()}
    with start_valkey(port=port) as server, start_service(f"redis://127.0.0.1:{port}/0", workers=2,
                                                          **FAST_RECOVERY) as svc:
        assert httpx.post(f"{svc.url}/v1/kernels", json=body, timeout=60).status_code == 200
        server.terminate()  # SIGKILL
        wait_status(f"{svc.url}/readyz", 503, timeout=10)
        down = httpx.post(f"{svc.url}/v1/kernels", json=body, timeout=60)  # the rate limiter lets it through
        assert down.status_code == 503 and down.headers["content-type"].startswith("application/problem+json")
        assert down.json()["title"] == "Redis unavailable" and int(down.headers["retry-after"]) >= 1
        assert down.headers["x-request-id"]
        assert httpx.get(f"{svc.url}/healthz").status_code == 200  # alive, if not ready
        with start_valkey(port=port):
            back = wait_status(f"{svc.url}/readyz", 200)
            r = httpx.post(f"{svc.url}/v1/kernels", json=body, timeout=60)
            assert r.status_code == 200, r.text
    print(f"ready again {back:.1f} s after Redis restarted")


def test_tiles_evicted_mid_job_are_recomputed_and_datasets_survive(start_service, start_valkey):
    mlp = {"layers": [{"type": "Dense", "out_dim": 8}, {"type": "Relu"}, {"type": "Dense", "out_dim": 1}]}
    rng = np.random.default_rng(33)
    x1, x2, warm_up = rng.normal(size=(3, 96, 8))
    with start_valkey() as server, start_service(f"{server.connection_url}/0", workers=2, tile=4) as svc:
        r = redis.Redis.from_url(f"{server.connection_url}/0")
        buffer = io.BytesIO()
        np.savez(buffer, x=x1)
        dataset = httpx.post(f"{svc.url}/v1/datasets", content=buffer.getvalue(),
                             headers={"Content-Type": "application/x-npz"}).json()["id"]

        def kernel(x2):
            return httpx.post(f"{svc.url}/v1/kernels?wait=120", timeout=180, json={
                "architecture": mlp, "x1": {"dataset": dataset}, "x2": x2.tolist(), "get": ["nngp"]})

        # the same job once without a limit opens every connection the real one will use
        assert kernel(warm_up).status_code == 200
        r.delete(*r.keys("ntk:tile:*"))
        # room for the answer (96 x 96 float64: 72 KiB, twice while it is written) but not for its
        # 576 tiles (both kernels, 256 B each, plus npz and key overheads: ~550 KiB)
        r.config_set("maxmemory", r.info("memory")["used_memory"] + 350_000)
        before = tiles_computed(svc.url)
        answer = kernel(x2)
        assert answer.status_code == 200, answer.text
        evicted = r.info("stats")["evicted_keys"]
        computed = tiles_computed(svc.url) - before
        assert evicted > 0 and computed > 576  # the evicted tiles were computed again
        assert httpx.get(f"{svc.url}/v1/datasets/{dataset}").status_code == 200
    print(f"{evicted} keys evicted, {computed:.0f} tiles computed for 576")
    reference = tiled_reference(mlp, x1, x2, 4)["nngp"]
    np.testing.assert_allclose(answer.json()["nngp"], reference, rtol=1e-12, atol=1e-14 * np.abs(reference).max())


def kill_workers(svc) -> None:
    for pid in svc.worker_pids():
        try:
            if b"worker" in open(f"/proc/{pid}/cmdline", "rb").read():  # never a recycled pid
                os.kill(pid, signal.SIGKILL)
        except (FileNotFoundError, ProcessLookupError):
            pass


def test_a_task_that_keeps_killing_its_worker_fails_its_job(start_service, start_valkey):
    long_task = {"architecture": {"layers": [{"type": "Dense", "out_dim": 256}, {"type": "Relu"}, {"type": "Dense", "out_dim": 1}]},
                 "x1": images(1, seed=34).reshape(1, -1).repeat(20, axis=0).tolist(),
                 "method": "monte_carlo", "samples": 100_000}  # one tile, minutes long
    with start_valkey() as server, start_service(f"{server.connection_url}/0", workers=2, poison_deliveries=2,
                                                 **FAST_RECOVERY) as svc:
        r = redis.Redis.from_url(f"{server.connection_url}/0")
        with httpx.Client(base_url=svc.url, timeout=60) as client:
            job = client.post("/v1/kernels?wait=0", json=long_task).json()["job"]

            def deliveries() -> dict[bytes, int]:
                """Each task in a worker's hands (or killed there, awaiting redelivery): its deliveries."""
                return {key: int(r.get(key) or 0) for key in r.keys("ntk:deliveries:*")}

            # Kill the workers at every new delivery, of whichever task (the plan, then the tile, which
            # runs for minutes), until the job ends: the task delivered a third time is refused.
            killed: dict[bytes, int] = {}
            deadline = time.monotonic() + 180
            while client.get(f"/v1/jobs/{job['id']}").json()["status"] not in ("succeeded", "failed", "cancelled"):
                assert time.monotonic() < deadline, f"the job never failed; deliveries killed: {killed}"
                now = deliveries()
                if any(count > killed.get(key, 0) for key, count in now.items()):
                    kill_workers(svc)  # counted as the worker took it: it holds the task, unacknowledged
                    killed.update(now)
                time.sleep(0.2)
            job = follow(client, job["id"], timeout=120)
    assert job["status"] == "failed" and job["error"]["title"] == "Task keeps crashing its worker", job
