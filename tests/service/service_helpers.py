"""Small shared helpers of the service tests."""

from __future__ import annotations

import io
import re
import time

import httpx
import numpy as np
import torch

from ntk.engine import assemble, kernel_tile, tiles

MLP = {"layers": [{"type": "Dense", "out_dim": 512, "w_std": 1.5, "b_std": 0.05}, {"type": "Relu"},
                  {"type": "Dense", "out_dim": 1, "w_std": 1.5, "b_std": 0.05}]}
DEEP = {"layers": [{"type": "Dense", "out_dim": 64, "w_std": 1.4, "b_std": 0.1}, {"type": "Erf"},
                   {"type": "Dense", "out_dim": 64, "w_std": 1.4, "b_std": 0.1}, {"type": "Gelu"},
                   {"type": "Dense", "out_dim": 64, "w_std": 1.4, "b_std": 0.1}, {"type": "Relu"},
                   {"type": "Dense", "out_dim": 1}]}


def points(n: int, d: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d))


def npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def assert_problem(r: httpx.Response, status: int, path: str | None = None) -> dict:
    """``r`` is an RFC 9457 problem with this status (naming ``path`` among its errors), returned."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == status and body["title"] and body["detail"] and body["type"]
    if path is not None:
        assert path in [e["path"] for e in body["errors"]], body
    return body


def metric(base_url: str, name: str, labels: str = "") -> float:
    text = httpx.get(f"{base_url}/metrics").text
    match = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def tiles_computed(base_url: str) -> float:
    return metric(base_url, "ntk_tiles_computed_total")


def follow(client: httpx.Client, job_id: str, timeout: float = 120, until=lambda job: False) -> dict:
    """Poll a job until it ends (or ``until(job)``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled") or until(job):
            return job
        time.sleep(0.05)
    raise TimeoutError(f"job {job_id} still {job['status']} after {timeout} s: {job}")


def tiled_reference(arch, x1, x2, size: int) -> dict[str, np.ndarray]:
    """The Gram matrices exactly as the workers compute them: the engine's tiles, assembled."""
    n2 = None if x2 is None else len(x2)
    blocks = {t: kernel_tile(arch, torch.as_tensor(x1), None if x2 is None else torch.as_tensor(x2), t)
              for t in tiles(len(x1), n2, size)}
    return {k: v.numpy() for k, v in assemble(blocks, len(x1), n2).items()}
