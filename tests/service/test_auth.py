"""NTK_API_KEYS: every /v1 call needs one of the bearer keys; health stays open. /metrics is open
unless NTK_METRICS_KEY is set (the session service's has none: test_rest.py), then needs that key."""

from __future__ import annotations

import httpx


def test_bearer_keys(start_service, start_valkey):
    with start_valkey() as server, start_service(f"{server.connection_url}/0", workers=1, api_keys="alpha,beta",
                                                 metrics_key="scraper") as svc:
        anonymous = httpx.get(f"{svc.url}/v1/jobs/0123")
        assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"].startswith("Bearer")
        assert anonymous.headers["content-type"].startswith("application/problem+json")
        assert httpx.get(f"{svc.url}/v1/jobs/0123", headers={"Authorization": "Bearer gamma"}).status_code == 401
        assert httpx.get(f"{svc.url}/v1/jobs/0123", headers={"Authorization": "Basic beta"}).status_code == 401
        assert httpx.get(f"{svc.url}/v1/jobs/0123", headers={"Authorization": "Bearer beta"}).status_code == 404
        r = httpx.post(f"{svc.url}/v1/kernels", headers={"Authorization": "Bearer alpha"}, timeout=60,
                       json={"architecture": {"layers": [{"type": "Dense", "out_dim": 1}]}, "x1": [[1.0]]})
        assert r.status_code == 200, r.text
        assert httpx.get(f"{svc.url}/healthz").status_code == 200
        for headers in ({}, {"Authorization": "Bearer alpha"}, {"Authorization": "Bearer scrape"}):
            refused = httpx.get(f"{svc.url}/metrics", headers=headers)
            assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
        assert httpx.get(f"{svc.url}/metrics", headers={"Authorization": "Bearer scraper"}).status_code == 200
