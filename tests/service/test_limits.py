"""Request limits: each refusal is a 413 or 422 problem naming the limit, the value and its setting.

One service with every NTK_MAX_* setting small, so that small requests cross them.
"""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest

from service_helpers import points

LIMITS = {"max_body_bytes": 20_000, "max_points": 50, "max_features": 200, "max_kernel_entries": 400,
          "max_pair_covariances": 100, "max_train_points": 10, "max_times": 3, "max_mc_samples_width": 1000,
          "max_mc_parameters": 2000, "max_mc_sampled_parameters": 5000, "max_layers": 20}
MLP = {"layers": [{"type": "Dense", "out_dim": 8}, {"type": "Relu"}, {"type": "Dense", "out_dim": 1}]}


def conv(head: str) -> dict:
    return {"layers": [{"type": "Conv", "out_chan": 2, "filter_shape": [3, 3], "padding": "SAME"}, {"type": "Relu"},
                       {"type": head}, {"type": "Dense", "out_dim": 1}]}


@pytest.fixture(scope="module")
def client(start_service, start_valkey):
    with start_valkey() as server, start_service(f"{server.connection_url}/0", workers=1, rate_limit="",
                                                 **LIMITS) as svc:
        with httpx.Client(base_url=svc.url, timeout=60) as c:
            yield c


def refused(r: httpx.Response, status: int, path: str | None, value: int | str, setting: str | None) -> dict:
    """The problem of a refusal, checked: it names the path, the value, the limit and the setting."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.headers["x-request-id"]
    body = r.json()
    assert body["status"] == status and body["title"] and body["type"]
    assert str(value) in body["detail"], body
    if setting is not None:
        field = setting.removeprefix("NTK_").lower()
        limit = LIMITS[field]
        assert str(limit) in body["detail"] and setting in body["detail"], body
        assert (body["setting"], body["limit"]) == (setting, limit)
    if path is not None:
        assert [e["path"] for e in body["errors"]] == [path], body
    return body


def test_a_body_over_the_limit_is_413_declared_or_streamed(client):
    declared = client.post("/v1/kernels", content=b"{" + b" " * 30_000 + b"}",
                           headers={"Content-Type": "application/json"})
    refused(declared, 413, None, 30_002, "NTK_MAX_BODY_BYTES")
    streamed = client.post("/v1/datasets", content=iter([b" " * 8_000] * 4),  # chunked: no Content-Length
                           headers={"Content-Type": "application/json"})
    body = refused(streamed, 413, None, "passed", "NTK_MAX_BODY_BYTES")
    assert "errors" not in body


def test_points_and_features_of_a_dataset(client):
    refused(client.post("/v1/datasets", json={"x": points(51, 2).tolist()}), 422, "x", 51, "NTK_MAX_POINTS")
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((2, 3, 67)))  # 201 numbers per point
    wide = client.post("/v1/datasets", content=buffer.getvalue(), headers={"Content-Type": "application/x-npy"})
    refused(wide, 422, "x", 201, "NTK_MAX_FEATURES")
    assert client.post("/v1/datasets", json={"x": points(50, 2).tolist()}).status_code == 201


def test_points_features_and_entries_of_a_kernel(client):
    def kernel(x1, x2=None, arch=MLP):
        return client.post("/v1/kernels", json={"architecture": arch, "x1": x1.tolist(),
                                                "x2": None if x2 is None else x2.tolist()})

    refused(kernel(points(30, 2), points(21, 2)), 422, "x1", 51, "NTK_MAX_POINTS")
    refused(kernel(np.zeros((2, 201))), 422, "x1", 201, "NTK_MAX_FEATURES")
    refused(kernel(points(21, 2)), 422, "x1", 441, "NTK_MAX_KERNEL_ENTRIES")
    refused(kernel(points(20, 2), points(21, 2)), 422, "x2", 420, "NTK_MAX_KERNEL_ENTRIES")
    assert kernel(points(20, 2)).status_code == 200


def test_covariances_per_pair_of_points(client):
    def kernel(arch, shape):
        return client.post("/v1/kernels", json={"architecture": arch, "x1": np.ones(shape).tolist()})

    refused(kernel(conv("Flatten"), (2, 11, 11, 1)), 422, "x1", 121, "NTK_MAX_PAIR_COVARIANCES")
    refused(kernel(conv("GlobalAvgPool"), (2, 4, 4, 1)), 422, "x1", 256, "NTK_MAX_PAIR_COVARIANCES")
    assert kernel(conv("Flatten"), (2, 4, 4, 1)).status_code == 200  # 16 positions, no pooling


def test_monte_carlo_samples_times_width(client):
    def estimate(width):
        arch = {"layers": [{"type": "Dense", "out_dim": width}, {"type": "Relu"}, {"type": "Dense", "out_dim": 1}]}
        return client.post("/v1/kernels", json={"architecture": arch, "x1": points(3, 2).tolist(),
                                                "method": "monte_carlo", "samples": 2})

    refused(estimate(501), 422, "samples", 1002, "NTK_MAX_MC_SAMPLES_WIDTH")
    assert estimate(500).status_code == 200


def test_monte_carlo_parameters_of_the_sampled_networks(client):
    def estimate(width, samples):
        hidden = {"type": "Dense", "out_dim": width}
        arch = {"layers": [hidden, {"type": "Relu"}, hidden, {"type": "Relu"}, {"type": "Dense", "out_dim": 1}]}
        return client.post("/v1/kernels", json={"architecture": arch, "x1": points(3, 2).tolist(),
                                                "method": "monte_carlo", "samples": samples})

    # 2 × 50 + 50 × 50 + 50 weights: fan-in × fan-out, where samples × width is only 2 × 50
    refused(estimate(50, 2), 422, "architecture", 2650, "NTK_MAX_MC_PARAMETERS")
    refused(estimate(40, 3), 422, "samples", 3 * 1720, "NTK_MAX_MC_SAMPLED_PARAMETERS")
    assert estimate(40, 2).status_code == 200


def test_train_points_times_and_covariance_entries_of_a_prediction(client):
    def predict(n_train, n_test, **extra):
        return client.post("/v1/predict", json={"architecture": MLP, "x_train": points(n_train, 2).tolist(),
                                                "y_train": points(n_train, 1).tolist(),
                                                "x_test": points(n_test, 2, seed=1).tolist(),
                                                "diag_reg": 1e-3, **extra})

    refused(predict(11, 2), 422, "x_train", 11, "NTK_MAX_TRAIN_POINTS")
    refused(predict(4, 2, t=[1, 2, 3, 4]), 422, "t", 4, "NTK_MAX_TIMES")
    refused(predict(4, 21), 422, "x_test", 441, "NTK_MAX_KERNEL_ENTRIES")  # the 21 x 21 covariance
    refused(predict(4, 12, t=[1, 2, None]), 422, "x_test", 432, "NTK_MAX_KERNEL_ENTRIES")  # 3 of 12 x 12
    assert predict(4, 21, compute_cov=False).status_code == 200
    assert predict(10, 11, t=[1, 2, None]).status_code == 200


def nested_residuals(depth: int) -> dict:
    layers = [{"type": "Dense", "out_dim": 4}]
    for _ in range(depth):
        layers = [{"type": "Residual", "layers": layers}]
    return {"layers": [{"type": "Dense", "out_dim": 4}, *layers, {"type": "Relu"}, {"type": "Dense", "out_dim": 1}]}


def test_depth_is_a_setting_and_residual_nesting_the_engines(client):
    """Depth: NTK_MAX_LAYERS (20 here), counted over Residual branches, whether the refusal comes
    while parsing (one list too long) or after (the count). Nesting: the engine's own limit, 8."""
    def kernel(arch):
        return client.post("/v1/kernels", json={"architecture": arch, "x1": [[1.0, 2.0]]})

    refused(kernel({"layers": [{"type": "Dense", "out_dim": 2}] * 21}), 422, "architecture.layers", 21, "NTK_MAX_LAYERS")
    nested_count = {"layers": [{"type": "Residual", "layers": [{"type": "Dense", "out_dim": 2}] * 15},
                               *[{"type": "Dense", "out_dim": 2}] * 10]}
    refused(kernel(nested_count), 422, "architecture.layers", 26, "NTK_MAX_LAYERS")
    branch_too_long = {"layers": [{"type": "Residual", "layers": [{"type": "Dense", "out_dim": 2}] * 21}]}
    refused(kernel(branch_too_long), 422, "architecture.layers[0].layers", 21, "NTK_MAX_LAYERS")
    assert kernel({"layers": [{"type": "Dense", "out_dim": 2}] * 20}).status_code == 200
    assert kernel(nested_residuals(8)).status_code == 200
    body = refused(kernel(nested_residuals(9)), 422, "architecture.layers[1]" + ".layers[0]" * 8, 9, None)
    assert "at most 8" in body["detail"]
    # pydantic's recursion guard refuses it before our nesting check: a 422 problem, whatever its words
    deep = kernel(nested_residuals(300))
    assert deep.status_code == 422 and deep.headers["content-type"].startswith("application/problem+json")
