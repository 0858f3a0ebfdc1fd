"""POST /v1/sweeps end to end (a real ``ntk serve``), the SDK's sweep and plot helper, and
``ntk sweep`` locally and against the server.

The rows must equal the engine's ``sweep()`` run in this process, and each marginal likelihood a
direct evaluation (scipy's Gaussian log density) from that architecture's kernel fetched through
POST /v1/kernels, at the noise the row reports.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import math

import httpx
import numpy as np
import pytest
import scipy.stats
from ntk_client import AsyncClient, Client, plot_sweep, stax

from service_helpers import assert_problem, follow
from ntk.cli.main import main as ntk_main
from ntk.engine.sweep import sweep
from ntk.spec.sweep_grid import expand

BASE = {"block": [{"type": "Dense", "out_dim": 64, "b_std": 0.1}, {"type": "Relu"}],
        "readout": [{"type": "Dense", "out_dim": 2, "b_std": 0.1}]}
GRID = {"depth": [1, 2, 3], "w_std": [1.0, 1.6]}


def data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Points on a sphere and two smooth targets of them with noise: a likelihood whose fitted
    noise lies inside its search range."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = np.stack([np.sin(2 * x[:, 0]) + x[:, 1], np.cos(x[:, 2])], axis=1)
    return x, y + 0.1 * rng.normal(size=y.shape)


X, Y = data(14, 0)
XV, YV = data(6, 1)


def body(**more) -> dict:
    return {"x_train": X.tolist(), "y_train": Y.tolist(), "x_val": XV.tolist(), "y_val": YV.tolist(),
            "base": BASE, "grid": GRID, **more}


@pytest.fixture
def client(service_url):
    with httpx.Client(base_url=service_url, timeout=120) as c:
        yield c


def assert_rows_close(got: list[dict], want: list[dict]) -> None:
    assert [list(row) for row in got] == [list(row) for row in want]
    for g, w in zip(got, want):
        for name, value in w.items():
            if isinstance(value, float):
                assert math.isclose(g[name], value, rel_tol=1e-10, abs_tol=1e-12), (name, g, w)
            else:
                assert g[name] == value, (name, g, w)


def test_rows_equal_the_engine_and_the_likelihood_equals_its_kernel(client):
    r = client.post("/v1/sweeps", json=body())
    assert r.status_code == 200, r.text
    answer = r.json()
    rows = answer["rows"]
    assert answer["columns"] == list(rows[0]) and not answer["cached"]
    assert [(row["depth"], row["w_std"]) for row in rows] == [(d, w) for d in GRID["depth"] for w in GRID["w_std"]]
    assert all(row["error"] is None for row in rows)

    points = expand(BASE, GRID)
    assert_rows_close(rows, sweep(points, X, Y, XV, YV, diag_reg="fit"))

    for point, row in zip(points, rows):
        r = client.post("/v1/kernels", json={"architecture": json.loads(point.architecture.canonical_json()),
                                             "x1": X.tolist(), "get": ["nngp"]})
        k = np.asarray(r.json()["nngp"])
        a = k + row["diag_reg"] * np.mean(np.diag(k)) * np.eye(len(k))
        scale = np.trace(Y.T @ np.linalg.solve(a, Y)) / Y.size  # σ̂², the maximum-likelihood output scale
        direct = sum(scipy.stats.multivariate_normal(np.zeros(len(k)), scale * a).logpdf(column) for column in Y.T)
        assert math.isclose(row["log_marginal_likelihood"], direct, rel_tol=1e-10)
        assert math.isclose(row["output_scale"], scale, rel_tol=1e-10)

    again = client.post("/v1/sweeps", json=body()).json()
    assert again["cached"] and again["rows"] == rows


def test_csv_answer_and_a_given_noise(client):
    r = client.post("/v1/sweeps", json=body(diag_reg=1e-3), headers={"Accept": "text/csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    header, *lines = list(csv.reader(io.StringIO(r.text)))
    want = sweep(expand(BASE, GRID), X, Y, XV, YV, diag_reg=1e-3)
    assert header == list(want[0]) and len(lines) == len(want)
    for line, row in zip(lines, want):
        assert line[header.index("diag_reg")] == "0.001" and line[header.index("error")] == ""
        assert float(line[header.index("ntk_mse")]) == row["ntk_mse"]  # every digit travels


def test_a_sweep_is_one_job_with_progress_per_architecture(client):
    r = client.post("/v1/sweeps", params={"wait": 0}, json=body(diag_reg=0.02))
    assert r.status_code == 202, r.text
    job = follow(client, r.json()["job"]["id"])
    assert job["kind"] == "sweep" and job["status"] == "succeeded"
    assert job["progress"] == {"done": 6, "total": 6, "fraction": 1.0}
    rows = client.get(f"/v1/jobs/{job['id']}/result").json()["rows"]
    assert [row["diag_reg"] for row in rows] == [0.02] * 6


def test_labelled_architectures_name_their_rows(client):
    shallow, deep = (json.loads(point.architecture.canonical_json()) for point in expand(BASE, {"depth": [1, 4]}))
    r = client.post("/v1/sweeps", json={"x_train": X.tolist(), "y_train": Y.tolist(),
                                        "architectures": {"shallow": shallow, "deep": deep}, "diag_reg": 0.01})
    assert r.status_code == 200, r.text
    assert [row["architecture"] for row in r.json()["rows"]] == ["shallow", "deep"]


@pytest.mark.parametrize("change, path, setting", [
    ({"grid": {"depth": list(range(40)), "w_std": [1.0 + i / 10 for i in range(30)]}}, "grid",
     "NTK_MAX_SWEEP_ARCHITECTURES"),
    ({"grid": {"depth": [1], "nonsense": [1, 2]}}, "grid.nonsense", None),
    ({"grid": None, "base": None, "architectures": [{"layers": [{"type": "Conv", "out_chan": 4,
                                                                 "filter_shape": [3, 3]}]}]}, "architectures[0]",
     None),
    ({"x_val": XV[:, :2].tolist()}, "x_val", None),
    ({"y_val": None}, "y_val", None),
])
def test_refusals_name_the_path_and_setting(client, change, path, setting):
    problem = assert_problem(client.post("/v1/sweeps", json=body(**change)), 422, path)
    assert problem.get("setting") == setting


def test_sdk_sweep_sync_and_async_and_the_plot(service_url, tmp_path):
    base = stax.stack(stax.serial(stax.Dense(64, b_std=0.1), stax.Relu()), stax.Dense(2, b_std=0.1))
    with Client(service_url, progress=False) as c:
        followed = c.sweep(X, Y, base=base, grid=GRID, x_val=XV, y_val=YV, diag_reg=0.03, wait=0)  # 202: a job
        rows = c.sweep(X, Y, base=base, grid=GRID, x_val=XV, y_val=YV)
    assert_rows_close(followed, sweep(expand(BASE, GRID), X, Y, XV, YV, diag_reg=0.03))
    assert_rows_close(rows, sweep(expand(BASE, GRID), X, Y, XV, YV, diag_reg="fit"))

    async def asynchronously():
        async with AsyncClient(service_url, progress=False) as c:
            return await c.sweep(X, Y, base=base, grid=GRID, x_val=XV, y_val=YV)
    assert asyncio.run(asynchronously()) == rows

    figure = tmp_path / "sweep.png"
    ax = plot_sweep(rows, x="depth", y="log_marginal_likelihood", line="w_std", path=str(figure))
    assert figure.stat().st_size > 0 and len(ax.get_lines()) == len(GRID["w_std"])


@pytest.mark.parametrize("remote", [False, True])
def test_cli_sweep_writes_the_rows_as_csv(service_url, tmp_path, remote):
    np.savez(tmp_path / "train.npz", x=X, y=Y)
    np.savez(tmp_path / "val.npz", x=XV, y=YV)
    (tmp_path / "base.json").write_text(json.dumps(BASE))
    out = tmp_path / "rows.csv"
    argv = ["sweep", "--train", str(tmp_path / "train.npz"), "--val", str(tmp_path / "val.npz"),
            "--base", str(tmp_path / "base.json"), "--grid", "depth=1..3", "--grid", "w_std=1.0,1.6",
            "--diag-reg", "0.01", "--out", str(out)] + (["--url", service_url] if remote else [])
    assert ntk_main(argv) == 0
    header, *lines = list(csv.reader(io.StringIO(out.read_text())))
    want = sweep(expand(BASE, GRID), X, Y, XV, YV, diag_reg=0.01)
    assert header == list(want[0])
    for line, row in zip(lines, want, strict=True):
        assert int(line[0]) == row["depth"] and float(line[1]) == row["w_std"]
        assert math.isclose(float(line[header.index("log_marginal_likelihood")]), row["log_marginal_likelihood"],
                            rel_tol=1e-10)
