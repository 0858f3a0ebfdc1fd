"""Values over Redis' largest string (proto-max-bulk-len) go in chunks, and a task that fails every
delivery fails its job (issue 17).

A Valkey whose proto-max-bulk-len is 1 MB, its smallest, stands for the 512 MB of a default
Redis: with chunks of 256 kB, a factorization and an answer of over 1 MB round-trip exactly; with
chunks of 2 MB (a misconfiguration: larger than the Redis takes) every write of the answer breaks
the connection, as a 1.15 GB factorization did before chunks, and the job fails with a problem
that names the step. No test hook in the service: the failure is a real one.
"""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
import redis
import torch

from service_helpers import MLP, assert_problem, npz, points, tiled_reference
from ntk.core import keys
from ntk.core.codec import Manifest
from ntk.engine import assemble, kernel_tile, tiles
from ntk.engine.predict import predict_from_spec

BULK_LIMIT = {"proto-max-bulk-len": "1mb"}


@pytest.fixture(scope="module")
def small_strings(start_valkey):
    with start_valkey(**BULK_LIMIT) as server:
        yield f"{server.connection_url}/0"


@pytest.fixture(scope="module")
def chunked_service(small_strings, start_service):
    with start_service(small_strings, workers=1, tile=64, value_chunk_bytes=256 << 10, rate_limit="") as svc:
        yield svc


def manifest_at(r: redis.Redis, key: str) -> Manifest:
    manifest = Manifest.decode(r.get(key))
    assert manifest is not None and manifest.size > 1 << 20 and len(manifest.chunks) > 4, key
    return manifest


def test_a_factorization_and_an_answer_over_the_bulk_limit_round_trip_exactly(small_strings, chunked_service):
    x_train, x_test = points(400, 3, seed=1), points(20, 3, seed=2)  # factorization: 400² float64 = 1.28 MB
    y_train = points(400, 1, seed=3)
    x1 = points(300, 3, seed=4)  # answer: both kernels of 300² float64 = 1.44 MB
    r = redis.Redis.from_url(small_strings)
    with httpx.Client(base_url=chunked_service.url, timeout=120) as client:
        dataset = client.post("/v1/datasets", content=npz(x=x_train, y=y_train),
                              headers={"Content-Type": "application/x-npz"}).json()["id"]
        for test, seed in ((x_test, 2), (points(7, 3, seed=5), 5)):  # the second reads the cached factorization
            body = {"architecture": MLP, "x_train": {"dataset": dataset}, "y_train": {"dataset": dataset, "field": "y"},
                    "x_test": test.tolist(), "t": None, "compute_cov": False, "diag_reg": 1e-3}
            answer = client.post("/v1/predict?wait=120", json=body)
            assert answer.status_code == 200, answer.text
            expected = predict_from_spec(MLP, x_train, y_train, test, t=None, compute_cov=False, diag_reg=1e-3)
            np.testing.assert_allclose(answer.json()["mean"], expected.mean.numpy(), rtol=1e-10, atol=1e-12)
        factorizations = r.keys(keys.factorization("*"))
        assert len(factorizations) == 1
        manifest_at(r, factorizations[0])

        kernels = client.post("/v1/kernels?wait=120", json={"architecture": MLP, "x1": x1.tolist()})
        assert kernels.status_code == 200, kernels.text
        reference = tiled_reference(MLP, x1, None, 64)
        for name in ("nngp", "ntk"):
            np.testing.assert_array_equal(kernels.json()[name], reference[name])
        streamed = client.post("/v1/kernels?wait=120", json={"architecture": MLP, "x1": x1.tolist()},
                               headers={"Accept": "application/x-npz"})
        assert streamed.status_code == 200, streamed.text
        with np.load(io.BytesIO(streamed.content)) as npz_answer:
            for name in ("nngp", "ntk"):
                np.testing.assert_array_equal(npz_answer[name], reference[name])
            assert npz_answer["cached"]
        results = [key for key in r.keys(keys.job_result("*")) if Manifest.decode(r.get(key))]
        assert results, "the answer was stored in chunks"
        manifest_at(r, results[0])


def test_a_task_failing_every_delivery_fails_its_job_and_the_wait_returns_it(start_valkey, start_service):
    x1 = points(300, 3, seed=6)  # its answer (1.44 MB) is one chunk of 2 MB: a write the Redis refuses
    with start_valkey(**BULK_LIMIT) as server, \
            start_service(f"{server.connection_url}/0", workers=1, tile=64, value_chunk_bytes=2 << 20,
                          rate_limit="") as svc, \
            httpx.Client(base_url=svc.url, timeout=200) as client:
        answer = client.post("/v1/kernels?wait=180", json={"architecture": MLP, "x1": x1.tolist()})
        # Valkey drops the connection (ConnectionError: retried, 6 deliveries), or when it has read the
        # whole command first, answers "Protocol error: invalid bulk length" (ResponseError: not retried)
        problem = assert_problem(answer, {"ConnectionError": 503, "ResponseError": 500}[answer.json()["error"]])
        assert problem["title"] == "Task failed" and problem["step"] == "finish"
        assert "deliveries" in problem["detail"] and problem["error"] in problem["detail"]
        for internal in ("socket", "Broken pipe", "bulk length", "Protocol"):
            assert internal not in problem["detail"]
        assert svc.redis.zcard(keys.ACTIVE_JOBS) == 0  # nothing left "running"


def test_float32_kernels_are_solved_in_float64_and_answered_in_float32(chunked_service):
    x_train, y_train, x_test = points(150, 3, seed=7), points(150, 2, seed=8), points(9, 3, seed=9)
    with httpx.Client(base_url=chunked_service.url, timeout=120) as client:
        answer = client.post("/v1/predict?wait=120", headers={"Accept": "application/x-npz"}, json={
            "architecture": MLP, "x_train": x_train.tolist(), "y_train": y_train.tolist(), "x_test": x_test.tolist(),
            "t": None, "compute_cov": False, "diag_reg": 1e-6, "dtype": "float32"})
    assert answer.status_code == 200, answer.text
    with np.load(io.BytesIO(answer.content)) as npz_answer:
        mean = npz_answer["mean"]
    a, ntk_td = float32_ntk(x_train, None).astype(np.float64), float32_ntk(x_test, x_train)
    expected = ntk_td.astype(np.float64) @ np.linalg.solve(a + 1e-6 * np.trace(a) / len(a) * np.eye(len(a)), y_train)
    assert mean.dtype == np.float32
    np.testing.assert_allclose(mean, expected, rtol=1e-6, atol=1e-7)  # a float32 solve is off by ~1e-3


def float32_ntk(x1: np.ndarray, x2: np.ndarray | None) -> np.ndarray:
    """The NTK as the workers compute it for ``dtype: float32``: float32 tiles of 64, assembled."""
    as32 = lambda x: None if x is None else torch.as_tensor(x, dtype=torch.float32)  # noqa: E731
    n2 = None if x2 is None else len(x2)
    blocks = {t: kernel_tile(MLP, as32(x1), as32(x2), t, ("ntk",), torch.float32) for t in tiles(len(x1), n2, 64)}
    return assemble(blocks, len(x1), n2, ("ntk",))["ntk"].numpy()
