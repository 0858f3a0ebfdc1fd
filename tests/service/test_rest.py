"""The REST contract (SPEC §3) end to end: a real uvicorn, real workers, real Redis."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from ntk_client._arrays import dataset_id

from service_helpers import MLP, assert_problem, follow, npz, points, tiles_computed
from ntk.engine import kernel_fn
from ntk.engine.predict import predict_from_spec


@pytest.fixture
def client(service_url):
    with httpx.Client(base_url=service_url, timeout=120) as c:
        yield c


def test_health(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["workers"] >= 2
    text = client.get("/metrics").text
    for name in ("ntk_http_requests_total", "ntk_http_request_duration_seconds", "ntk_queue_depth",
                 "ntk_jobs_finished_total", "ntk_cache_hits_total", "ntk_cache_misses_total",
                 "ntk_tiles_computed_total", "ntk_workers"):
        assert name in text


def test_datasets(client):
    x, y = points(10, 4, seed=1), points(10, 2, seed=2)
    r = client.post("/v1/datasets", json={"x": x.tolist(), "y": y.tolist()})
    assert r.status_code == 201, r.text
    meta = r.json()
    assert meta == {"id": dataset_id(x, y), "x_shape": [10, 4], "y_shape": [10, 2], "dtype": "float64",
                    "bytes": x.nbytes + y.nbytes}
    assert client.post("/v1/datasets", json={"x": x.tolist(), "y": y.tolist()}).status_code == 200
    assert client.get(f"/v1/datasets/{meta['id']}").json() == meta

    x32 = x.astype(np.float32)
    r = client.post("/v1/datasets", content=npz(x=x32, y=y), headers={"Content-Type": "application/x-npz"})
    assert r.status_code == 201 and r.json()["id"] == dataset_id(x32, y) and r.json()["dtype"] == "float32"
    buffer = io.BytesIO()
    np.save(buffer, x)
    r = client.post("/v1/datasets", content=buffer.getvalue(), headers={"Content-Type": "application/x-npy"})
    assert r.status_code == 201 and r.json()["id"] == dataset_id(x) and r.json()["y_shape"] is None

    assert client.delete(f"/v1/datasets/{meta['id']}").status_code == 204
    assert_problem(client.get(f"/v1/datasets/{meta['id']}"), 404)
    assert_problem(client.delete(f"/v1/datasets/{meta['id']}"), 404)
    assert_problem(client.get("/v1/datasets/not-a-hash"), 404)
    assert_problem(client.post("/v1/datasets", content=b"\x93NUMPY garbage", headers={"Content-Type": "application/x-npy"}), 400)
    assert_problem(client.post("/v1/datasets", content=b"x", headers={"Content-Type": "text/csv"}), 415)
    assert_problem(client.post("/v1/datasets", json={"x": [[1, 2], [3]]}), 422, "x")
    assert_problem(client.post("/v1/datasets", json={"x": [[1, 2]], "y": [1, 2]}), 422, "y")


def test_kernels_match_the_engine(client):
    x1, x2 = points(100, seed=3), points(30, seed=4)  # 2 x 1 tiles of 64
    r = client.post("/v1/kernels", json={"architecture": MLP, "x1": x1.tolist(), "x2": x2.tolist()})
    assert r.status_code == 200, r.text
    answer = r.json()
    reference = kernel_fn(MLP, x1, x2)
    assert answer["shape"] == [100, 30] and answer["cached"] is False and len(answer["id"]) == 64
    for name in ("nngp", "ntk"):
        np.testing.assert_allclose(answer[name], reference[name].numpy(), rtol=1e-12, atol=0)

    r = client.post("/v1/kernels", json={"architecture": MLP, "x1": x1.tolist(), "get": ["ntk"], "dtype": "float32"},
                    headers={"Accept": "application/x-npz"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-npz"
    with np.load(io.BytesIO(r.content)) as answer:
        assert set(answer.files) == {"id", "shape", "cached", "ntk"}
        ntk = answer["ntk"]
    assert ntk.dtype == np.float32 and np.array_equal(ntk, ntk.T)  # symmetric from the upper-triangle tiles
    reference = kernel_fn(MLP, x1)["ntk"].numpy()
    np.testing.assert_allclose(ntk, reference, rtol=1e-4, atol=1e-5 * np.abs(reference).max())


def test_kernels_from_a_dataset_share_the_cache(client, service_url):
    x = points(40, seed=5)  # one tile: asked for both kernels, the tile is copied as the answer
    first = client.post("/v1/kernels", json={"architecture": MLP, "x1": x.tolist()}).json()
    reference = kernel_fn(MLP, x)
    for name in ("nngp", "ntk"):
        np.testing.assert_allclose(first[name], reference[name].numpy(), rtol=1e-12, atol=0)
        assert np.array_equal(first[name], np.transpose(first[name]))
    dataset = client.post("/v1/datasets", content=npz(x=x), headers={"Content-Type": "application/x-npz"}).json()["id"]
    before = tiles_computed(service_url)
    second = client.post("/v1/kernels", json={"architecture": MLP, "x1": {"dataset": dataset}, "get": ["nngp"]}).json()
    assert second["cached"] is True and second["id"] == first["id"] and "ntk" not in second
    assert tiles_computed(service_url) == before
    np.testing.assert_array_equal(second["nngp"], first["nngp"])


def test_predict_matches_the_engine(client):
    x_train, x_test = points(50, seed=6), points(12, seed=7)
    y_train = np.sin(x_train[:, :2])
    body = {"architecture": MLP, "x_train": x_train.tolist(), "y_train": y_train.tolist(), "x_test": x_test.tolist(),
            "diag_reg": 1e-3}
    for extra in ({}, {"t": [0.5, None], "kernel": "nngp"}, {"t": 2.0, "compute_cov": False}):
        r = client.post("/v1/predict", json={**body, **extra})
        assert r.status_code == 200, r.text
        answer = r.json()
        t = extra.get("t")
        expected = predict_from_spec(MLP, x_train, y_train, x_test, kernel=extra.get("kernel", "ntk"), diag_reg=1e-3,
                                     t=[0.5, float("inf")] if isinstance(t, list) else t,
                                     compute_cov=extra.get("compute_cov", True))
        assert answer["t"] == t
        np.testing.assert_allclose(answer["mean"], expected.mean.numpy(), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(answer["max_learning_rate"], expected.extras["max_learning_rate"], rtol=1e-9)
        if extra.get("compute_cov", True):
            np.testing.assert_allclose(answer["covariance"], expected.covariance.numpy(), rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(answer["variance"], expected.variance.numpy(), rtol=1e-9, atol=1e-12)
        else:
            assert "covariance" not in answer and "variance" not in answer


def test_predict_classification_from_a_dataset(client):
    x_train, x_test = points(30, seed=8), points(5, seed=9)
    labels = (x_train[:, 0] > 0).astype(np.int64) * 3  # classes 0 and 3
    dataset = client.post("/v1/datasets", content=npz(x=x_train, y=labels),
                          headers={"Content-Type": "application/x-npz"}).json()["id"]
    r = client.post("/v1/predict", json={"architecture": MLP, "x_train": {"dataset": dataset},
                                         "y_train": {"dataset": dataset, "field": "y"}, "x_test": x_test.tolist(),
                                         "targets": "one_hot", "diag_reg": 1e-3})
    assert r.status_code == 200, r.text
    assert r.json()["labels"] == [0, 3]
    one_hot = np.eye(2)[(labels == 3).astype(int)] - 0.5
    expected = predict_from_spec(MLP, x_train, one_hot, x_test, diag_reg=1e-3)
    np.testing.assert_allclose(r.json()["mean"], expected.mean.numpy(), rtol=1e-9, atol=1e-12)


def test_jobs(client):
    x = points(200, seed=10)
    r = client.post("/v1/kernels?wait=0", json={"architecture": MLP, "x1": x.tolist()})
    assert r.status_code == 202, r.text
    job = r.json()["job"]
    assert job["kind"] == "kernels" and job["status"] in ("queued", "running") and job["created_at"]
    early = client.get(f"/v1/jobs/{job['id']}/result")
    if follow(client, job["id"], timeout=0.01, until=lambda j: True)["status"] != "succeeded":
        assert_problem(early, 409)
    job = follow(client, job["id"])
    assert job["status"] == "succeeded" and job["progress"]["done"] == job["progress"]["total"] == 10
    answer = client.get(f"/v1/jobs/{job['id']}/result").json()
    np.testing.assert_allclose(answer["nngp"], kernel_fn(MLP, x)["nngp"].numpy(), rtol=1e-12)
    assert_problem(client.get("/v1/jobs/0123abcd"), 404)
    assert_problem(client.delete("/v1/jobs/0123abcd"), 404)


def test_errors_are_problems(client):
    good = {"architecture": MLP, "x1": [[1.0, 2.0, 3.0]]}
    bad_std = {"layers": [MLP["layers"][0], {"type": "Relu"}, {**MLP["layers"][2], "w_std": -1}]}
    assert_problem(client.post("/v1/kernels", json={**good, "architecture": bad_std}), 422, "architecture.layers[2].w_std")
    no_input = {"layers": [{"type": "Relu"}, *MLP["layers"]]}
    assert_problem(client.post("/v1/kernels", json={**good, "architecture": no_input}), 422, "architecture.layers[0]")
    assert_problem(client.post("/v1/kernels", json={**good, "x1": [[1, 2], [3]]}), 422, "x1")
    assert_problem(client.post("/v1/kernels", json={**good, "x2": [[1.0, 2.0]]}), 422, "x2")
    assert_problem(client.post("/v1/kernels", json={**good, "get": ["nngp", "cntk"]}), 422, "get[1]")
    assert_problem(client.post("/v1/kernels", json={**good, "x1": {"dataset": "f" * 64}}), 422, "x1.dataset")
    assert_problem(client.post("/v1/kernels", json={**good, "x1": {"dataset": "nope"}}), 422, "x1.dataset")
    assert_problem(client.post("/v1/kernels?wait=301", json=good), 422, "wait")
    assert_problem(client.post("/v1/kernels", json={**good, "colour": 1}), 422, "colour")
    assert_problem(client.post("/v1/kernels", content=b'{"architecture": ', headers={"Content-Type": "application/json"}), 400)
    assert_problem(client.post("/v1/kernels", content=b"{}", headers={"Content-Type": "text/plain"}), 415)
    assert_problem(client.put("/v1/kernels", json=good), 405)
    assert_problem(client.get("/v2/anything"), 404)
    predict = {"architecture": MLP, "x_train": [[1.0, 2, 3]], "y_train": [[1.0]], "x_test": [[1.0, 2, 3]]}
    assert_problem(client.post("/v1/predict", json={**predict, "t": -1}), 422, "t")
    assert_problem(client.post("/v1/predict", json={**predict, "diag_reg": -1}), 422, "diag_reg")
    assert_problem(client.post("/v1/predict", json={**predict, "learning_rate": 0}), 422, "learning_rate")
    assert_problem(client.post("/v1/predict", json={**predict, "kernel": "rbf"}), 422, "kernel")
    assert_problem(client.post("/v1/predict", json={**predict, "y_train": [[1.0], [2.0]]}), 422, "y_train")
    singular = {**predict, "x_train": [[1.0, 2, 3], [1.0, 2, 3]], "y_train": [[1.0], [2.0]]}
    body = assert_problem(client.post("/v1/predict", json=singular), 422)
    assert "diag_reg" in body["detail"]
    huge = {"layers": [{"type": "Dense", "out_dim": 8, "w_std": 1000, "b_std": 1000}, {"type": "Relu"}] * 6
            + [{"type": "Dense", "out_dim": 1, "w_std": 1000}]}
    assert_problem(client.post("/v1/kernels", json={**good, "architecture": huge, "dtype": "float32"}), 422)
    assert_problem(client.post("/v1/datasets", content=b"0" * (9 << 20), headers={"Content-Type": "application/json"}), 413)
    streamed = (b" " * (1 << 20) for _ in range(9))  # no Content-Length: cut off as it arrives
    assert_problem(client.post("/v1/kernels", content=streamed, headers={"Content-Type": "application/json"}), 413)


def test_monte_carlo_kernels(client):
    from ntk.engine.monte_carlo import monte_carlo_kernel_fn

    x1, x2 = points(6, seed=11), points(4, seed=12)
    arch = {"layers": [{"type": "Dense", "out_dim": 64, "w_std": 1.5, "b_std": 0.05}, {"type": "Relu"},
                       {"type": "Dense", "out_dim": 1}]}
    r = client.post("/v1/kernels", json={"architecture": arch, "x1": x1.tolist(), "x2": x2.tolist(), "get": ["ntk"],
                                         "method": "monte_carlo", "samples": 8, "seed": 1})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert set(answer) == {"id", "shape", "cached", "ntk", "ntk_stderr"}
    expected = monte_carlo_kernel_fn(arch, x1, x2, ("nngp", "ntk"), 8, 1)
    np.testing.assert_allclose(answer["ntk"], expected["ntk"].numpy(), rtol=1e-10)
    np.testing.assert_allclose(answer["ntk_stderr"], expected["ntk_stderr"].numpy(), rtol=1e-10)
    analytic = client.post("/v1/kernels", json={"architecture": arch, "x1": x1.tolist(), "x2": x2.tolist()}).json()
    assert analytic["id"] != answer["id"]
    assert_problem(client.post("/v1/kernels", json={"architecture": arch, "x1": x1.tolist(), "method": "monte_carlo",
                                                    "samples": 1}), 422, "samples")
