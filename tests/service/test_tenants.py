"""Tenants and quotas (ntk.api.tenants), end to end: each API key sees only its own datasets, jobs
and results, computes its own tiles unless NTK_SHARED_CACHE, and has quotas of its own; an admin
key sees everything; calls with invalid keys are limited per address.

Jobs that must still be queued when a test looks at them are made while the only worker is
stopped (SIGSTOP), so what is asserted never depends on how fast anything ran.
"""

from __future__ import annotations

import io
import os
import signal
import uuid
from contextlib import contextmanager

import httpx
import numpy as np
import pytest

from service_helpers import MLP, assert_problem, follow, points, tiles_computed
from ntk.api.tenants import DEFAULT, Tenant, identify, tenant_id
from ntk.core import keys
from ntk.core.settings import Settings

ALICE, BOB, CAROL, DAVE, ROOT = "key-alice", "key-bob", "key-carol", "key-dave", "key-root"
MAX_BYTES = 10_000  # a 600 × 1 float64 dataset is 4800 bytes: two fit, a third does not
MAX_ACTIVE_JOBS = 2
ABSENT = "0" * 64  # a dataset id nobody uploaded


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def tenants(start_service, start_valkey):
    with start_valkey() as server, start_service(
            f"{server.connection_url}/0", workers=1, tile=8, rate_limit="", api_keys=f"{ALICE},{BOB},{CAROL},{DAVE}",
            admin_keys=ROOT, tenant_max_bytes=MAX_BYTES, tenant_max_active_jobs=MAX_ACTIVE_JOBS) as svc:
        yield svc


@contextmanager
def as_tenant(svc, key: str):
    with httpx.Client(base_url=svc.url, timeout=120, headers=bearer(key)) as client:
        yield client


@contextmanager
def worker_stopped(svc):
    """The only worker SIGSTOPped: jobs submitted meanwhile stay queued."""
    (worker,) = svc.worker_pids()
    os.kill(worker, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(worker, signal.SIGCONT)


def assert_same_as_absent(answer: httpx.Response, its_id: str, absent: httpx.Response, absent_id: str) -> None:
    """Another tenant's resource is answered as an absent one: same status, same body but for the id."""
    assert answer.status_code == absent.status_code and answer.status_code in (404, 422), answer.text
    assert answer.headers["content-type"] == absent.headers["content-type"]
    assert answer.text == absent.text.replace(absent_id, its_id)


def test_who_a_key_is():
    settings = Settings(api_keys="a,b", admin_keys="b,root")
    assert identify("Bearer a", settings) == Tenant(tenant_id("a"))
    assert identify("bearer  b ", settings) == Tenant(tenant_id("b"), admin=True)  # listed in both: an admin
    assert identify("Bearer root", settings) == Tenant(tenant_id("root"), admin=True)
    assert [identify(header, settings) for header in ("Bearer c", "Basic a", "Bearer", "")] == [None] * 4
    assert identify("", Settings(api_keys="", admin_keys="")) == Tenant(DEFAULT)  # no keys: one tenant
    assert identify("", Settings(api_keys="", admin_keys="root")) is None  # admin keys alone need a key too


def kernel_body(seed: int, n: int = 12) -> dict:
    return {"architecture": MLP, "x1": points(n, seed=seed).tolist()}


def test_datasets_are_each_tenants_own(tenants):
    x = points(20, seed=1)
    with as_tenant(tenants, ALICE) as alice, as_tenant(tenants, BOB) as bob, as_tenant(tenants, ROOT) as root:
        created = alice.post("/v1/datasets", json={"x": x.tolist()})
        assert created.status_code == 201
        ds = created.json()["id"]

        for method in ("GET", "DELETE"):
            assert_same_as_absent(bob.request(method, f"/v1/datasets/{ds}"), ds,
                                  bob.request(method, f"/v1/datasets/{ABSENT}"), ABSENT)
        for refer in ({"x1": {"dataset": ds}}, {"x1": {"dataset": ds, "field": "y"}}):
            assert_same_as_absent(bob.post("/v1/kernels", json={"architecture": MLP, **refer}), ds,
                                  bob.post("/v1/kernels", json={"architecture": MLP, **{
                                      "x1": {**refer["x1"], "dataset": ABSENT}}}), ABSENT)
        predict = {"architecture": MLP, "x_train": {"dataset": ds}, "y_train": [[0.0]] * 20, "x_test": [[0.0] * 3]}
        assert_same_as_absent(bob.post("/v1/predict", json=predict), ds,
                              bob.post("/v1/predict", json={**predict, "x_train": {"dataset": ABSENT}}), ABSENT)

        # the same content is Bob's own dataset: new to him (201), and his deleting it leaves Alice's
        assert bob.post("/v1/datasets", json={"x": x.tolist()}).status_code == 201
        assert bob.delete(f"/v1/datasets/{ds}").status_code == 204
        assert alice.get(f"/v1/datasets/{ds}").json() == created.json()
        assert alice.post("/v1/kernels", json={"architecture": MLP, "x1": {"dataset": ds}}).status_code == 200

        assert root.get(f"/v1/datasets/{ds}").json() == created.json()  # an admin sees every tenant's
        assert root.get(f"/v1/datasets/{ABSENT}").status_code == 404

    stored = {key.decode() for key in tenants.redis.keys("*")}
    assert keys.dataset(tenant_id(ALICE), ds) in stored and keys.dataset(tenant_id(BOB), ds) not in stored
    assert not [key for key in stored if "key-" in key]  # tenants are named by their key's hash, never the key


def test_jobs_results_and_cancel_are_each_tenants_own(tenants):
    before = tiles_computed(tenants.url)
    body = kernel_body(seed=2)
    with as_tenant(tenants, ALICE) as alice, as_tenant(tenants, BOB) as bob, as_tenant(tenants, ROOT) as root:
        with worker_stopped(tenants):
            alices = alice.post("/v1/kernels?wait=0", json=body).json()["job"]
            bobs = bob.post("/v1/kernels?wait=0", json=body).json()["job"]  # the identical request: a job of his own
            assert alices["id"] != bobs["id"] and alices["status"] == bobs["status"] == "queued"
            absent = uuid.uuid4().hex
            for method, path in (("GET", "/v1/jobs/{}"), ("GET", "/v1/jobs/{}/result"), ("DELETE", "/v1/jobs/{}")):
                assert_same_as_absent(bob.request(method, path.format(alices["id"])), alices["id"],
                                      bob.request(method, path.format(absent)), absent)
            assert alice.get(f"/v1/jobs/{alices['id']}").json()["status"] == "queued"  # Bob's DELETE did nothing
            assert root.get(f"/v1/jobs/{alices['id']}").json()["id"] == alices["id"]  # an admin sees both
            assert root.get(f"/v1/jobs/{bobs['id']}").json()["id"] == bobs["id"]
            sweep = alice.post("/v1/sweeps?wait=0", json={
                "x_train": body["x1"], "y_train": [[0.0]] * 12, "grid": {"depth": [1, 2]},
                "base": {"block": [{"type": "Dense", "out_dim": 8}, {"type": "Relu"}], "readout": MLP["layers"][-1:]}})
            assert sweep.status_code == 202, sweep.text
            sweep = sweep.json()["job"]["id"]
            assert_same_as_absent(bob.get(f"/v1/jobs/{sweep}"), sweep, bob.get(f"/v1/jobs/{absent}"), absent)
            assert alice.delete(f"/v1/jobs/{sweep}").status_code == 202  # her quota back for later tests
        finished = [follow(client, job["id"]) for client, job in ((alice, alices), (bob, bobs))]
        assert [job["status"] for job in finished] == ["succeeded", "succeeded"]
        answers = [client.get(f"/v1/jobs/{job['id']}/result").json() for client, job in ((alice, alices), (bob, bobs))]
        assert [answer["cached"] for answer in answers] == [False, False]  # neither is served the other's work
        assert answers[0]["ntk"] == answers[1]["ntk"] and answers[0]["id"] != answers[1]["id"]
        # each tenant computed every tile of its own: none came from the other's cache
        assert tiles_computed(tenants.url) - before == sum(job["progress"]["total"] for job in finished)
        assert root.get(f"/v1/jobs/{bobs['id']}/result").json()["ntk"] == answers[1]["ntk"]
        repeat = alice.post("/v1/kernels", json=body).json()
        assert repeat["cached"] is True  # her own answer, cached


def test_an_admin_cancels_any_tenants_job(tenants):
    with as_tenant(tenants, ALICE) as alice, as_tenant(tenants, ROOT) as root:
        with worker_stopped(tenants):
            job = alice.post("/v1/kernels?wait=0", json=kernel_body(seed=3)).json()["job"]
            cancelled = root.delete(f"/v1/jobs/{job['id']}")
            assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"
        assert alice.get(f"/v1/jobs/{job['id']}").json()["status"] == "cancelled"


def test_active_jobs_quota_is_released_when_a_job_is_cancelled_or_ends(tenants):
    with as_tenant(tenants, CAROL) as carol, as_tenant(tenants, DAVE) as dave:
        with worker_stopped(tenants):
            queued = [carol.post("/v1/kernels?wait=0", json=kernel_body(seed=10 + i)).json()["job"]
                      for i in range(MAX_ACTIVE_JOBS)]
            refused = assert_problem(carol.post("/v1/kernels?wait=0", json=kernel_body(seed=20)), 429)
            assert (refused["value"], refused["limit"], refused["setting"]) == (
                MAX_ACTIVE_JOBS + 1, MAX_ACTIVE_JOBS, "NTK_TENANT_MAX_ACTIVE_JOBS")
            # joining a job already queued makes no job: not refused
            assert carol.post("/v1/kernels?wait=0", json=kernel_body(seed=10)).json()["job"]["id"] == queued[0]["id"]
            assert dave.post("/v1/kernels?wait=0", json=kernel_body(seed=20)).status_code == 202  # his own quota

            assert carol.delete(f"/v1/jobs/{queued[0]['id']}").json()["status"] == "cancelled"
            third = carol.post("/v1/kernels?wait=0", json=kernel_body(seed=20))
            assert third.status_code == 202, third.text
            assert_problem(carol.post("/v1/kernels?wait=0", json=kernel_body(seed=21)), 429)
        for job in (queued[1], third.json()["job"]):
            assert follow(carol, job["id"])["status"] == "succeeded"
        active = tenants.redis.smembers(keys.tenant_active_jobs(tenant_id(CAROL)))
        assert active == set()  # every job left the set as it ended
        assert carol.post("/v1/kernels", json=kernel_body(seed=21)).status_code == 200


def npz_compressed(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def test_stored_bytes_quota_counts_decompressed_arrays_and_is_released_on_delete(tenants):
    first, second = points(600, 1, seed=30), points(600, 1, seed=31)  # 4800 bytes each
    zeros = np.zeros((600, 1))  # 4800 bytes, a few hundred compressed
    held = lambda: int(tenants.redis.hget(keys.STORED_BYTES, tenant_id(CAROL)) or 0)  # noqa: E731
    with as_tenant(tenants, CAROL) as carol, as_tenant(tenants, DAVE) as dave:
        ids = [carol.post("/v1/datasets", json={"x": x.tolist()}).json()["id"] for x in (first, second)]
        assert held() == 9600
        compressed = npz_compressed(x=zeros)
        assert len(compressed) < 1000
        refused = assert_problem(carol.post("/v1/datasets", content=compressed,
                                            headers={"Content-Type": "application/x-npz"}), 507)
        assert (refused["value"], refused["limit"], refused["setting"]) == (14_400, MAX_BYTES, "NTK_TENANT_MAX_BYTES")
        assert held() == 9600
        assert carol.post("/v1/datasets", json={"x": first.tolist()}).status_code == 200  # held already: not counted again
        assert dave.post("/v1/datasets", content=compressed, headers={"Content-Type": "application/x-npz"}).status_code == 201

        assert carol.delete(f"/v1/datasets/{ids[0]}").status_code == 204
        assert held() == 4800
        assert carol.post("/v1/datasets", content=compressed, headers={"Content-Type": "application/x-npz"}).status_code == 201
        assert held() == 9600


def test_an_admin_deletes_every_tenants_copy_and_releases_their_bytes(tenants):
    x = points(100, 1, seed=40)
    with as_tenant(tenants, ALICE) as alice, as_tenant(tenants, BOB) as bob, as_tenant(tenants, ROOT) as root:
        before = {key: int(tenants.redis.hget(keys.STORED_BYTES, tenant_id(key)) or 0) for key in (ALICE, BOB)}
        ds = alice.post("/v1/datasets", json={"x": x.tolist()}).json()["id"]
        assert bob.post("/v1/datasets", json={"x": x.tolist()}).status_code == 201
        assert root.delete(f"/v1/datasets/{ds}").status_code == 204
        for client in (alice, bob, root):
            assert client.get(f"/v1/datasets/{ds}").status_code == 404
    after = {key: int(tenants.redis.hget(keys.STORED_BYTES, tenant_id(key)) or 0) for key in (ALICE, BOB)}
    assert after == before


@pytest.fixture(scope="module")
def shared(start_service, start_valkey):
    with start_valkey() as server, start_service(f"{server.connection_url}/0", workers=1, tile=8,
                                                 api_keys=f"{ALICE},{BOB}", shared_cache="true",
                                                 rate_limit="10 per 60 seconds") as svc:
        yield svc


def test_a_shared_cache_serves_one_tenants_tiles_to_another(shared):
    body = kernel_body(seed=50)
    with as_tenant(shared, ALICE) as alice, as_tenant(shared, BOB) as bob:
        first = alice.post("/v1/kernels", json=body)
        computed = tiles_computed(shared.url)
        assert first.status_code == 200 and computed > 0
        second = bob.post("/v1/kernels", json=body)
        assert second.status_code == 200 and tiles_computed(shared.url) == computed  # none computed again
        assert second.json()["ntk"] == first.json()["ntk"]


def test_invalid_keys_are_limited_per_address_without_a_redis_key_each(shared):
    """A flood of random keys is one client, its address: 429 with Retry-After once it spent the
    rate limit, and no Redis key per key tried; a valid key from the same address is still served."""
    count_before = shared.redis.dbsize()
    statuses = []
    for _ in range(40):
        answer = httpx.get(f"{shared.url}/v1/jobs/{'0' * 32}", headers=bearer(uuid.uuid4().hex))
        statuses.append(answer.status_code)
        if answer.status_code == 429:
            assert int(answer.headers["retry-after"]) >= 1
            assert answer.json()["setting"] == "NTK_RATE_LIMIT" and "address" in answer.json()["detail"]
    assert statuses[:10] == [401] * 10 and set(statuses[10:]) == {429}
    assert shared.redis.dbsize() - count_before <= 1  # the address's window, if it was not there yet
    assert httpx.get(f"{shared.url}/v1/jobs/{'0' * 32}", headers=bearer(ALICE)).status_code == 404
