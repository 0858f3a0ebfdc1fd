"""NTK_RATE_LIMIT: /v1 calls per API key (per address without one), 429 + Retry-After beyond.

A window of 15 s: long enough that four calls on localhost always fall in one, short enough to wait
out once. Every test spends a budget of its own (its own key), so their order does not matter.
"""

from __future__ import annotations

import hashlib
import time

import httpx
import pytest
import redis

KEYS = ("alpha", "beta", "gamma", "delta")
LIMIT = 3


@pytest.fixture(scope="module")
def limited(start_service, start_valkey):
    with start_valkey() as server, start_service(f"{server.connection_url}/0", workers=1, api_keys=",".join(KEYS),
                                                 rate_limit=f"{LIMIT} per 15 seconds") as svc:
        yield svc


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def spend(url: str, headers: dict) -> tuple[list[int], httpx.Response]:
    """Call until refused: the statuses before the 429, and the 429."""
    statuses = []
    for _ in range(2 * LIMIT + 2):
        r = httpx.get(f"{url}/v1/jobs/{'0' * 32}", headers=headers)
        if r.status_code == 429:
            return statuses, r
        statuses.append(r.status_code)
    raise AssertionError(f"no 429 after {statuses}")


def test_each_key_has_its_own_budget(limited):
    statuses, refused = spend(limited.url, {**bearer("alpha"), "X-Request-ID": "rate-1"})
    assert statuses == [404] * LIMIT  # authorized calls, for a job that does not exist
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.headers["x-request-id"] == "rate-1"
    assert 1 <= int(refused.headers["retry-after"]) <= 15
    body = refused.json()
    assert body["status"] == 429 and "NTK_RATE_LIMIT" in body["detail"] and "API key" in body["detail"]
    assert httpx.get(f"{limited.url}/v1/jobs/{'0' * 32}", headers=bearer("beta")).status_code == 404


def test_calls_without_a_key_are_counted_by_address(limited):
    statuses, refused = spend(limited.url, {})
    assert statuses == [401] * LIMIT
    assert "address" in refused.json()["detail"]


def test_probes_metrics_and_docs_are_not_limited(limited):
    spend(limited.url, bearer("gamma"))
    for _ in range(2 * LIMIT):
        for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
            assert httpx.get(f"{limited.url}{path}", headers=bearer("gamma")).status_code == 200, path


def test_retry_after_is_when_a_call_is_accepted_again(limited):
    _, refused = spend(limited.url, bearer("delta"))
    time.sleep(int(refused.headers["retry-after"]))
    assert httpx.get(f"{limited.url}/v1/jobs/{'0' * 32}", headers=bearer("delta")).status_code == 404


def test_keys_are_counted_under_their_hash(limited):
    spend(limited.url, bearer("alpha"))
    stored = [key.decode() for key in redis.Redis.from_url(limited.redis_url).keys("*")]
    counted = [key for key in stored if key.startswith("ntk:ratelimit")]
    assert any(hashlib.sha256(b"alpha").hexdigest() in key for key in counted), counted
    assert not [key for key in stored if any(k in key for k in KEYS)]


def test_the_429_is_in_the_openapi_document(limited):
    paths = httpx.get(f"{limited.url}/openapi.json").json()["paths"]
    for path, method in (("/v1/kernels", "post"), ("/v1/predict", "post"), ("/v1/datasets", "post"),
                         ("/v1/jobs/{job_id}", "get")):
        answer = paths[path][method]["responses"]["429"]
        assert "application/problem+json" in answer["content"] and "Retry-After" in answer["headers"]
    assert "429" not in paths["/healthz"]["get"]["responses"]
