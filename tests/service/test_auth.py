"""NTK_API_KEYS: every /v1 call needs one of the bearer keys; health and metrics stay open."""

from __future__ import annotations

import httpx


def test_bearer_keys(start_service, start_valkey):
    with start_valkey() as server, start_service(f"{server.connection_url}/0", workers=1, api_keys="alpha,beta") as svc:
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
        assert httpx.get(f"{svc.url}/metrics").status_code == 200
