"""The API under load (issue 18), and large or broken-off bodies (issue 12, defects 5 and 6).

Issue 18: sixteen clients sending the same cold request with a large inline body, on a loaded
machine, got 503s (the API's Redis reads timed out while parsing starved its event loop) and two
jobs. Here 16 identical and 16 distinct cold requests of about 0.75 MB of JSON each arrive at once
while the worker computes: no answer may be a 5xx, and each distinct request makes exactly one
job. bench/load.py --rounds repeats issue 18's round and reports figures; nothing here is timed.
"""

from __future__ import annotations

import asyncio
import io
import json
import socket
import threading
import time
from collections import Counter

import httpx
import numpy as np
import pytest
import redis

from ntk.api.app import create_app
from ntk.core.settings import Settings
from service_helpers import MLP, assert_problem, metric, points
from ntk.core import keys

MAX_JSON_BYTES = 2 << 20
COLD_POINTS = (1200, 30)  # issue 18's inputs: about 0.75 MB of JSON


def cold_body(seed: int) -> bytes:
    x = np.random.default_rng([18, seed]).normal(size=COLD_POINTS)
    return json.dumps({"architecture": MLP, "x1": x.tolist(), "get": ["nngp"]}).encode()


def jobs_by_request(r: redis.Redis) -> Counter:
    """How many jobs Redis holds for each request key."""
    job_keys = [key for key in r.scan_iter(keys.job("*")) if key.count(b":") == 2]
    return Counter(r.hget(key, "request_key").decode() for key in job_keys)


@pytest.fixture(scope="module")
def svc(start_service, start_valkey):
    # 17 jobs of one (anonymous) tenant may be active at once: above the default quota of 16, which
    # tests/service/test_tenants.py tests; here a 429 would only say how fast the worker was.
    with start_valkey() as server, start_service(f"{server.connection_url}/0", workers=1, rate_limit="",
                                                 max_json_bytes=MAX_JSON_BYTES, log_format="json",
                                                 tenant_max_active_jobs=64) as svc:
        yield svc


def test_sixteen_identical_and_sixteen_distinct_cold_requests_make_one_job_each_and_no_5xx(svc):
    bodies = [cold_body(0)] * 16 + [cold_body(seed) for seed in range(1, 17)]
    start = threading.Barrier(len(bodies) + 1)
    answers: list = [None] * len(bodies)
    probes: list[int] = []

    def send(i: int) -> None:
        with httpx.Client(timeout=300) as client:
            start.wait()
            answers[i] = client.post(f"{svc.url}/v1/kernels", params={"wait": 0}, content=bodies[i],
                                     headers={"Content-Type": "application/json"})

    def probe() -> None:  # health probes keep being answered while the bodies are parsed
        with httpx.Client(timeout=300) as client:
            start.wait()
            while any(answer is None for answer in answers):
                probes.append(client.get(f"{svc.url}/healthz").status_code)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))] + [threading.Thread(target=probe)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(a.status_code in (200, 202) for a in answers), [(a.status_code, a.text[:300]) for a in answers]
    assert probes and set(probes) == {200}
    # An identical request that arrives after the job ended is answered 200 with the result's id,
    # the others 202 with the job's: one of each at most, and Redis holds one job per request.
    queued = {a.json()["job"]["id"] for a in answers[:16] if a.status_code == 202}
    answered = {a.json()["id"] for a in answers[:16] if a.status_code == 200}
    assert len(queued) <= 1 and len(answered) <= 1, (queued, answered)
    per_request = jobs_by_request(svc.redis)
    assert len(per_request) == 17 and set(per_request.values()) == {1}, per_request


def test_a_json_body_over_its_own_limit_is_413_and_points_to_npy_or_npz(svc):
    """Defect 5: JSON is bounded apart from other bodies (NTK_MAX_JSON_BYTES); the same numbers as npy pass."""
    x = points(MAX_JSON_BYTES // 240 + 1000, 30)  # about 1.2 MB of npy, well over 2 MiB of JSON
    body = json.dumps({"architecture": MLP, "x1": x.tolist()}).encode()
    declared = client_post(svc, "/v1/kernels", body, "application/json")
    streamed = httpx.post(f"{svc.url}/v1/datasets", content=iter([body[i:i + 65536] for i in range(0, len(body), 65536)]),
                          headers={"Content-Type": "application/json"}, timeout=60)
    for answer, value in ((declared, len(body)), (streamed, None)):
        problem = assert_problem(answer, 413)
        assert (problem["setting"], problem["limit"]) == ("NTK_MAX_JSON_BYTES", MAX_JSON_BYTES)
        assert value is None or problem["value"] == value
        assert "npz" in problem["detail"] and "POST /v1/datasets" in problem["detail"] and "NTK_MAX_JSON_BYTES" in problem["detail"]
    buffer = io.BytesIO()
    np.save(buffer, x)
    assert client_post(svc, "/v1/datasets", buffer.getvalue(), "application/x-npy").status_code == 201


def client_post(svc, path: str, body: bytes, content_type: str) -> httpx.Response:
    return httpx.post(f"{svc.url}{path}", content=body, headers={"Content-Type": content_type}, timeout=60)


def test_a_client_gone_mid_body_is_a_499_not_a_500(svc):
    """Defect 6: a client that disconnects mid-body is a client event: counted as 499, logged below ERROR."""
    routes = {"/v1/kernels": "application/json", "/v1/datasets": "application/x-npy"}
    for path, content_type in routes.items():
        with socket.create_connection(("127.0.0.1", svc.port)) as s:
            s.sendall(f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: {content_type}\r\n"
                      f"Content-Length: 1000000\r\n\r\n".encode() + b"[" * 10_000)
    label = '{{method="POST",route="{}",status="{}"}}'
    deadline = time.monotonic() + 60
    while not all(metric(svc.url, "ntk_http_requests_total", label.format(path, 499)) for path in routes):
        assert time.monotonic() < deadline, httpx.get(f"{svc.url}/metrics").text
        time.sleep(0.1)
    for path in routes:
        assert metric(svc.url, "ntk_http_requests_total", label.format(path, 499)) == 1
        assert metric(svc.url, "ntk_http_requests_total", label.format(path, 500)) == 0
    lines = [json.loads(line) for line in open(svc.log.name).read().splitlines() if line.startswith("{")]
    assert not [line for line in lines if line["level"] in ("ERROR", "CRITICAL")]
    gone = [line for line in lines if line.get("status") == 499]
    assert sorted(line["path"] for line in gone) == sorted(routes) and {line["level"] for line in gone} == {"INFO"}


def test_json_bodies_are_parsed_off_the_event_loop_a_few_at_a_time(start_valkey, monkeypatch):
    """Defect 5 and issue 18: parsing a large body never runs on the event loop (which would stall
    Redis replies and health probes), and at most NTK_PARSE_CONCURRENCY bodies are parsed at once."""
    parsing = {"now": 0, "most": 0, "threads": []}
    lock = threading.Lock()
    real_loads = json.loads

    def loads(document, *args, **kwargs):
        if len(document) < 100_000:
            return real_loads(document, *args, **kwargs)
        with lock:
            parsing["now"] += 1
            parsing["most"] = max(parsing["most"], parsing["now"])
            parsing["threads"].append(threading.get_ident())
        try:
            time.sleep(0.05)  # hold the slot a moment, so that the other bodies ask for one meanwhile
            return real_loads(document, *args, **kwargs)
        finally:
            with lock:
                parsing["now"] -= 1

    monkeypatch.setattr(json, "loads", loads)

    async def eight_bodies_at_once(url: str) -> tuple[list[int], int]:
        app = create_app(Settings(redis_url=url, rate_limit="", parse_concurrency=2))
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client:
                answers = await asyncio.gather(*(client.post("/v1/kernels", params={"wait": 0}, content=cold_body(i),
                                                             headers={"Content-Type": "application/json"})
                                                 for i in range(8)))
        return [a.status_code for a in answers], threading.get_ident()

    with start_valkey() as server:
        statuses, loop_thread = asyncio.run(eight_bodies_at_once(f"{server.connection_url}/0"))
    assert statuses == [202] * 8
    assert len(parsing["threads"]) == 8 and loop_thread not in parsing["threads"]
    assert parsing["most"] <= 2


def test_a_redis_reply_later_than_the_read_timeout_is_waited_for_not_a_503(start_service, start_valkey):
    """Issue 18: slow is not down. Redis holds every reply for 12 s; the API's first try gives up
    after NTK_REDIS_TIMEOUT_S (7 s), its retry gets the answer. The submit script ran twice then
    (its first run's reply was lost), and it made one job."""
    with start_valkey() as server, start_service(f"{server.connection_url}/0", workers=0, rate_limit="",
                                                 redis_timeout_s=7) as api:
        api.redis.client_pause(12_000)
        answer = httpx.post(f"{api.url}/v1/kernels", params={"wait": 0}, timeout=120,
                            json={"architecture": MLP, "x1": points(3, 2).tolist()})
        assert answer.status_code == 202, answer.text
        assert list(jobs_by_request(api.redis).values()) == [1]
