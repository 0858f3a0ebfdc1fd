"""Sharing one worker: cost-based admission, an interactive lane ahead of a big job, prompt cancel,
a watchdog that leaves waiting jobs alone (issue 13, items 1-5). Real processes: ``ntk serve
--workers 1`` on a Valkey of its own. What is asserted is order and state, never time.

The big job's tiles are NTK_TILE = 64 points a side (a target of 1000 s leaves them so, whatever
the calibration on a loaded machine says), seconds each; the watchdog looks for stalled jobs every
quarter of NTK_JOB_STALL_S = 1 s, and NTK_INTERACTIVE_S is low enough that the small batch job is
not interactive.
"""

from __future__ import annotations

import io
import time

import httpx
import numpy as np
import pytest

from service_helpers import follow

CNN = {"layers": [{"type": "Conv", "out_chan": 8, "filter_shape": [3, 3], "padding": "SAME"}, {"type": "Relu"}] * 2
       + [{"type": "GlobalAvgPool"}, {"type": "Dense", "out_dim": 1}]}
TINY = {"architecture": {"layers": [{"type": "Dense", "out_dim": 1}]}, "x1": [[1.0, 2.0]]}


def images(n: int, side: int, seed: int = 0) -> list:
    return np.random.default_rng(seed).normal(size=(n, side, side, 1)).tolist()


@pytest.fixture(scope="module")
def one_worker(start_service, start_valkey):
    # Lanes by estimate, whatever the calibration (0.6-36 ns per unit seen on a loaded 2-core VM):
    # TINY's 2.6e5 units stay under NTK_INTERACTIVE_S = 0.02 s, and 24 images' 1.4e8 units over it.
    # Tiles of 256 images take seconds even on a quiet machine, so the DELETE lands inside one.
    with start_valkey() as server, start_service(f"{server.connection_url}/0", workers=1, rate_limit="",
                                                 tile=256, tile_target_s=1000, job_stall_s=1, interactive_s=0.02,
                                                 log_format="text") as svc:
        with httpx.Client(base_url=svc.url, timeout=60) as client:
            yield svc, client


def test_the_issues_example_is_refused_with_its_estimate_before_anything_is_queued(one_worker):
    svc, client = one_worker
    upload = io.BytesIO()
    np.savez_compressed(upload, x=np.zeros((4000, 64, 64, 1), np.float32))
    dataset = client.post("/v1/datasets", content=upload.getvalue(), headers={"Content-Type": "application/x-npz"})
    assert dataset.status_code in (200, 201), dataset.text
    jobs_before = svc.redis.zcard("ntk:jobs:active"), len(svc.redis.keys("ntk:job:*"))
    r = client.post("/v1/kernels", json={"architecture": CNN, "x1": {"dataset": dataset.json()["id"]}})
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["setting"] == "NTK_MAX_JOB_SECONDS" and problem["limit"] == 3600
    assert problem["value"] > 30 * 86400 and problem["estimate_s"] == pytest.approx(problem["value"], rel=1e-3)
    assert "years" in problem["detail"] or "days" in problem["detail"]
    assert (svc.redis.zcard("ntk:jobs:active"), len(svc.redis.keys("ntk:job:*"))) == jobs_before


def test_a_tiny_request_passes_a_big_job_which_a_delete_stops_within_its_block(one_worker):
    svc, client = one_worker
    r = client.post("/v1/kernels?wait=0", json={"architecture": CNN, "x1": images(600, 8)})
    assert r.status_code == 202, r.text
    big = r.json()["job"]
    assert big["estimate_s"] > 0 and big["lane"] == "batch" and big["eta_s"] > 0  # its value is the calibration's
    assert big["progress"] == {"done": 0, "total": 0, "fraction": 0.0}

    # A small batch job queued behind the big one's tiles: it waits its turn longer than the
    # stall timeout, and the watchdog must leave it alone (it re-planned, then failed, such jobs).
    r = client.post("/v1/kernels?wait=0", json={"architecture": CNN, "x1": images(24, 8, seed=1)})
    waiting = r.json()["job"]
    assert waiting["lane"] == "batch"

    # Once the big job is inside a tile, by its worker's report of the layers done:
    follow(client, big["id"], until=lambda job: 0 < job["progress"]["fraction"] * job["progress"]["total"] % 1 < 0.5)
    tiny = client.post("/v1/kernels?wait=60", json=TINY)
    assert tiny.status_code == 200, tiny.text
    assert client.get(f"/v1/jobs/{big['id']}").json()["status"] == "running"  # the tiny one finished first

    follow(client, big["id"], until=lambda job: 0 < job["progress"]["fraction"] * job["progress"]["total"] % 1 < 0.5)
    assert client.delete(f"/v1/jobs/{big['id']}").status_code == 202
    stopped = wait_for_fields(svc, big["id"], "stopped_step")
    depth = len(CNN["layers"])
    assert 0 <= int(stopped["stopped_step"]) - int(stopped["stop_noticed_step"]) <= depth  # within one block

    done = follow(client, waiting["id"])
    assert done["status"] == "succeeded" and done["progress"]["fraction"] == 1.0
    assert svc.redis.hget(f"ntk:job:{waiting['id']}", "replans") is None
    assert client.post("/v1/kernels?wait=60", json={**TINY, "x1": [[3.0, 4.0]]}).status_code == 200  # worker idle


def wait_for_fields(svc, job_id: str, *fields: str, polls: int = 600) -> dict:
    """The job's hash once it has ``fields`` (a worker event), polled every 0.05 s at most ``polls`` times."""
    for _ in range(polls):
        values = {k.decode(): v.decode() for k, v in svc.redis.hgetall(f"ntk:job:{job_id}").items()}
        if all(field in values for field in fields):
            return values
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never recorded {fields}: {values}")
