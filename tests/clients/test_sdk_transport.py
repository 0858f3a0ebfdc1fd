"""The blocking Client against a real HTTP server (tests/clients/fake_server.py) on 127.0.0.1:
encodings, uploads, jobs, retries, errors, and a server restarted in the middle of a call."""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from fake_server import FAST, Fault, FakeServer, fake_kernels, fake_predict

from ntk_client import (
    AuthError, Client, JobCancelled, JobFailed, Kernels, NetworkError, NotFound, NTKError, Prediction,
    RateLimited, ServerError, ValidationError, dataset_id, stax,
)

ARCH = stax.serial(stax.Dense(64, w_std=1.5, b_std=0.05), stax.Relu(), stax.Dense(1, w_std=1.5, b_std=0.05))
SPEC = ARCH.to_dict()
rng = np.random.default_rng(42)
X1 = rng.normal(size=(6, 3))
X2 = rng.normal(size=(4, 3))
Y1 = rng.normal(size=(6, 2))
BIG = rng.normal(size=(80, 1700))  # 1.09 MB: over the default 1 MB threshold


def sent_json(state, path):
    """The JSON body of the last request to `path`, as the server got it."""
    return state.bodies[path]


# -- computations, inline ----------------------------------------------------------------------


def test_health(client):
    assert client.health() == {"status": "ok"}


def test_small_kernels_travel_inline_as_json(client, fake):
    k = client.kernels(ARCH, X1, X2)
    assert isinstance(k, Kernels) and set(k) == {"nngp", "ntk"}
    expected = fake_kernels(SPEC, X1, X2)
    for name in ("nngp", "ntk"):
        np.testing.assert_array_equal(k[name], expected[name])  # bit for bit through JSON
        assert k[name].dtype == np.float64
    assert k.shape == (6, 4) and k.cached is False and k.id
    body = sent_json(fake.state, "/v1/kernels")
    assert body == {"architecture": SPEC, "x1": X1.tolist(), "x2": X2.tolist(), "get": ["nngp", "ntk"],
                    "method": "analytic"}
    (post,) = fake.state.requests("POST", "/v1/kernels")
    assert post.headers["accept"] == "application/json" and post.query == {"wait": "30"}
    assert post.headers["content-type"] == "application/json"


def test_kernels_answers_only_what_was_asked(client):
    k = client.kernels(ARCH, X1, get="ntk")
    assert list(k) == ["ntk"] and k["ntk"].shape == (6, 6)


def test_float32_is_asked_for_and_returned(client, fake):
    k = client.kernels(ARCH, X1, dtype=np.float32)
    assert k["ntk"].dtype == np.float32
    assert sent_json(fake.state, "/v1/kernels")["dtype"] == "float32"


def test_monte_carlo_sends_its_parameters_and_returns_standard_errors(client, fake):
    k = client.kernels(ARCH, X1, method="monte_carlo", samples=16, seed=3)
    assert set(k) == {"nngp", "ntk", "nngp_stderr", "ntk_stderr"}
    body = sent_json(fake.state, "/v1/kernels")
    assert (body["method"], body["samples"], body["seed"]) == ("monte_carlo", 16, 3)


@pytest.mark.parametrize("arch", [SPEC, json.dumps(SPEC)], ids=["dict", "json-text"])
def test_plain_dict_and_json_architectures(client, arch):
    np.testing.assert_array_equal(client.kernels(arch, X1)["ntk"], client.kernels(ARCH, X1)["ntk"])


def test_an_architecture_of_the_wrong_type_is_refused_before_sending(client, fake):
    with pytest.raises(TypeError):
        client.kernels(42, X1)
    assert fake.state.log == []


def test_non_finite_inputs_are_refused_before_sending(client, fake):
    with pytest.raises(ValidationError) as error:
        client.kernels(ARCH, np.array([[1.0, np.inf]]))
    assert error.value.errors[0]["path"] == "x1"
    with pytest.raises(ValidationError):
        client.kernels(stax.serial(stax.Dense(1, w_std=float("nan"))), X1)
    assert fake.state.log == []


def test_wait_goes_in_the_query(client, fake):
    client.kernels(ARCH, X1, wait=5)
    client.kernels(ARCH, X1, wait=None)
    assert [r.query for r in fake.state.requests("POST", "/v1/kernels")] == [{"wait": "5"}, {}]


def test_a_long_wait_extends_the_read_timeout():
    with Client("http://127.0.0.1:9", timeout=60) as c:
        assert c._timeout_for_wait(300).read == 330  # the server may hold it 300 s
        assert c._timeout_for_wait(1).read == 60
        assert c._timeout_for_wait(300).connect == 60
    with Client("http://127.0.0.1:9", timeout=None) as c:
        assert c._timeout_for_wait(300).read is None


# -- binary transport, datasets ----------------------------------------------------------------


def test_large_inputs_are_uploaded_once_as_npz_and_answers_come_back_as_npz(client, fake):
    big = BIG
    k = client.kernels(ARCH, big, get="ntk")
    np.testing.assert_array_equal(k["ntk"], fake_kernels(SPEC, big)["ntk"])
    expected_id = dataset_id(big)
    assert [(r.method, r.path) for r in fake.state.log] == [
        ("GET", f"/v1/datasets/{expected_id}"), ("POST", "/v1/datasets"), ("POST", "/v1/kernels")]
    upload = fake.state.requests("POST", "/v1/datasets")[0]
    assert upload.headers["content-type"] == "application/x-npz" and upload.body_size > big.nbytes
    assert sent_json(fake.state, "/v1/kernels")["x1"] == {"dataset": expected_id}
    assert fake.state.requests("POST", "/v1/kernels")[0].headers["accept"] == "application/x-npz"

    fake.state.log.clear()
    client.kernels(ARCH, big, get="ntk")  # the server has it: no second upload
    assert [(r.method, r.path) for r in fake.state.log] == [
        ("GET", f"/v1/datasets/{expected_id}"), ("POST", "/v1/kernels")]


def test_binary_threshold_is_configurable(fake):
    with Client(fake.url, binary_threshold=50, **FAST) as c:
        k = c.kernels(ARCH, X1, X2)
    np.testing.assert_array_equal(k["nngp"], fake_kernels(SPEC, X1, X2)["nngp"])
    body = sent_json(fake.state, "/v1/kernels")
    assert body["x1"] == {"dataset": dataset_id(X1)} and body["x2"] == {"dataset": dataset_id(X2)}


def test_upload_returns_the_content_hash_and_skips_known_data(client, fake):
    ds = client.upload(X1, Y1)
    assert ds == dataset_id(X1, Y1)
    assert client.upload(X1, Y1) == ds
    assert len(fake.state.requests("POST", "/v1/datasets")) == 1
    assert client.dataset(ds) == {"id": ds, "x_shape": [6, 3], "y_shape": [6, 2], "dtype": "float64",
                                  "bytes": X1.nbytes + Y1.nbytes}
    client.delete_dataset(ds)
    with pytest.raises(NotFound):
        client.dataset(ds)


def test_float32_data_keeps_its_dtype_on_upload(client, fake):
    ds = client.upload(X1.astype(np.float32))
    assert client.dataset(ds)["dtype"] == "float32"


def test_the_servers_id_wins_if_the_hashes_ever_disagree(client, fake, monkeypatch):
    import ntk_client._client as client_module

    monkeypatch.setattr(client_module, "dataset_id", lambda x, y=None: "0" * 64)
    assert client.upload(X1) == dataset_id(X1)


def test_dataset_ids_stand_in_for_arrays(client, fake):
    ds = client.upload(X1)
    k = client.kernels(ARCH, ds, X2)
    np.testing.assert_array_equal(k["ntk"], fake_kernels(SPEC, X1, X2)["ntk"])
    assert sent_json(fake.state, "/v1/kernels")["x1"] == {"dataset": ds}


# -- predict -----------------------------------------------------------------------------------


def test_predict_inline(client, fake):
    p = client.predict(ARCH, X1, Y1, X2, diag_reg=1e-3)
    expected = fake_predict(SPEC, X1, Y1, X2, diag_reg=1e-3)
    assert isinstance(p, Prediction)
    np.testing.assert_array_equal(p.mean, expected["mean"])
    np.testing.assert_array_equal(p.covariance, expected["covariance"])
    np.testing.assert_array_equal(p.variance, expected["variance"])
    np.testing.assert_array_equal(p.std, np.sqrt(np.maximum(expected["variance"], 0)))
    assert p.t is None and p.max_learning_rate == expected["max_learning_rate"]
    assert sent_json(fake.state, "/v1/predict") == {
        "architecture": SPEC, "x_train": X1.tolist(), "y_train": Y1.tolist(), "x_test": X2.tolist(),
        "kernel": "ntk", "t": None, "learning_rate": 1.0, "diag_reg": 1e-3, "diag_reg_absolute_scale": False,
        "compute_cov": True,
    }


def test_predict_at_several_times_has_a_leading_time_axis(client, fake):
    p = client.predict(ARCH, X1, Y1, X2, t=np.array([0.5, 2.0, np.inf]), kernel="nngp", diag_reg=1e-2,
                       learning_rate=0.5, diag_reg_absolute_scale=True)
    assert sent_json(fake.state, "/v1/predict")["t"] == [0.5, 2.0, None]
    assert p.mean.shape == (3, 4, 2) and p.covariance.shape == (3, 4, 4) and p.std.shape == (3, 4)
    np.testing.assert_array_equal(p.t, [0.5, 2.0, np.inf])
    expected = fake_predict(SPEC, X1, Y1, X2, t=[0.5, 2.0, None], kernel="nngp", diag_reg=1e-2,
                            learning_rate=0.5, diag_reg_absolute_scale=True)
    np.testing.assert_array_equal(p.mean, expected["mean"])


def test_predict_without_covariance(client):
    p = client.predict(ARCH, X1, Y1, X2, t=1.0, compute_cov=False, diag_reg=1e-3)
    assert p.covariance is None and p.variance is None and p.std is None and p.t == 1.0


def test_predict_one_hot_labels(client, fake):
    labels = np.array([0, 2, 1, 2, 0, 1])
    p = client.predict(ARCH, X1, labels, X2, targets="one_hot", diag_reg=1e-3)
    assert sent_json(fake.state, "/v1/predict")["targets"] == "one_hot"
    np.testing.assert_array_equal(p.labels, [0, 1, 2])
    assert p.mean.shape == (4, 3)


def test_a_large_training_set_travels_as_one_dataset_with_its_targets(fake):
    x_train, y_train, x_test = BIG[:40, :40], rng.normal(size=(40, 1)), BIG[40:44, :40]
    with Client(fake.url, binary_threshold=10_000, **FAST) as c:
        p = c.predict(ARCH, x_train, y_train, x_test, diag_reg=1e-2, compute_cov=False)
    ds = dataset_id(x_train, y_train)
    body = sent_json(fake.state, "/v1/predict")
    assert body["x_train"] == {"dataset": ds} and body["y_train"] == {"dataset": ds, "field": "y"}
    assert fake.state.requests("POST", "/v1/predict")[0].headers["accept"] == "application/x-npz"
    assert sent_json(fake.state, "/v1/predict")["x_test"] == x_test.tolist()
    expected = fake_predict(SPEC, x_train, y_train, x_test, diag_reg=1e-2, compute_cov=False)
    np.testing.assert_array_equal(p.mean, expected["mean"])
    assert p.t is None  # an npz answer cannot hold t = null; the t sent stands in


def test_predict_from_a_dataset_id_with_targets_inside(client, fake):
    ds = client.upload(X1, Y1)
    p = client.predict(ARCH, ds, None, X2, diag_reg=1e-3)
    np.testing.assert_array_equal(p.mean, fake_predict(SPEC, X1, Y1, X2, diag_reg=1e-3)["mean"])
    with pytest.raises(TypeError):
        client.predict(ARCH, X1, None, X2)


def test_a_prediction_that_is_not_finite_says_to_raise_diag_reg(client):
    singular = np.ones((4, 3))
    with pytest.raises(ValidationError, match="raise diag_reg"):
        client.predict(ARCH, singular, np.ones((4, 1)), X2, diag_reg=0.0)


# -- jobs --------------------------------------------------------------------------------------


def test_a_202_is_followed_to_the_result_with_progress(client, fake):
    fake.state.job_polls = 4
    seen = []
    k = client.kernels(ARCH, X1, progress=seen.append)
    np.testing.assert_array_equal(k["ntk"], fake_kernels(SPEC, X1)["ntk"])
    assert [job.progress.done for job in seen] == [0, 1, 2, 3, 4]
    assert seen[-1].status == "succeeded" and seen[0].kind == "kernels"
    assert len(fake.state.requests("GET", "/v1/jobs/")) == 5  # 4 polls + the result


def test_wait_zero_always_hands_back_a_job(client, fake):
    p = client.predict(ARCH, X1, Y1, X2, diag_reg=1e-3, wait=0)
    np.testing.assert_array_equal(p.mean, fake_predict(SPEC, X1, Y1, X2, diag_reg=1e-3)["mean"])
    assert len(fake.state.jobs) == 1


def test_progress_bar_on_request(client, fake, capsys):
    fake.state.job_polls = 3
    client.kernels(ARCH, X1, progress=True)
    err = capsys.readouterr().err
    assert "3/3" in err and "kernels job0" in err


def test_no_progress_bar_when_stderr_is_not_a_terminal(fake, capsys):
    fake.state.job_polls = 3
    with Client(fake.url, **{**FAST, "progress": None}) as c:
        c.kernels(ARCH, X1)
    assert capsys.readouterr().err == ""


def test_a_failed_job_raises_job_failed_with_the_problem(client, fake):
    fake.state.job_polls, fake.state.job_outcome = 2, "failed"
    with pytest.raises(JobFailed) as error:
        client.kernels(ARCH, X1)
    assert error.value.status == 500 and error.value.title == "Worker failure"
    assert "crashed its worker" in str(error.value) and error.value.job.status == "failed"


def test_cancelling_a_running_job(fake):
    fake.state.job_polls = 10_000
    with Client(fake.url, **FAST) as waiting, Client(fake.url, **FAST) as other:
        with ThreadPoolExecutor(1) as pool:
            future = pool.submit(waiting.kernels, ARCH, X1)
            deadline = time.monotonic() + 10
            while not fake.state.jobs and time.monotonic() < deadline:
                time.sleep(0.01)
            (job_id,) = fake.state.jobs
            assert other.job(job_id).status in ("queued", "running")
            other.cancel(job_id)
            with pytest.raises(JobCancelled) as error:
                future.result(timeout=10)
        assert error.value.job.id == job_id and other.job(job_id).status == "cancelled"


def test_job_and_result_by_id(client, fake):
    fake.state.job_polls = 2
    client.kernels(ARCH, X1)
    client.predict(ARCH, X1, Y1, X2, diag_reg=1e-3)
    kernel_job, predict_job = sorted(fake.state.jobs)
    assert client.job(kernel_job).status == "succeeded"
    kernels = client.result(kernel_job)
    assert isinstance(kernels, Kernels)
    np.testing.assert_array_equal(kernels["ntk"], fake_kernels(SPEC, X1)["ntk"])
    prediction = client.result(predict_job)
    assert isinstance(prediction, Prediction)
    np.testing.assert_array_equal(prediction.mean, fake_predict(SPEC, X1, Y1, X2, diag_reg=1e-3)["mean"])
    with pytest.raises(NotFound):
        client.job("no-such-job")


# -- retries -----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [502, 503, 504])
def test_transient_statuses_are_retried(client, fake, status):
    fake.state.faults.append(Fault("/v1/kernels", status=status, times=2))
    k = client.kernels(ARCH, X1)
    np.testing.assert_array_equal(k["ntk"], fake_kernels(SPEC, X1)["ntk"])
    assert len(fake.state.requests("POST", "/v1/kernels")) == 3


def test_429_waits_as_long_as_retry_after_says(client, fake):
    fake.state.faults.append(Fault("/v1/kernels", status=429, headers={"Retry-After": "1"}))
    started = time.monotonic()
    client.kernels(ARCH, X1)
    assert time.monotonic() - started >= 1.0
    assert len(fake.state.requests("POST", "/v1/kernels")) == 2


def test_retries_are_bounded(client, fake):
    fake.state.faults.append(Fault("/v1/kernels", status=503, times=100))
    with pytest.raises(ServerError) as error:
        client.kernels(ARCH, X1)
    assert error.value.status == 503 and "canned 503" in str(error.value)
    assert len(fake.state.requests("POST", "/v1/kernels")) == FAST["max_retries"] + 1


def test_rate_limited_after_the_retries(fake):
    fake.state.faults.append(Fault("/healthz", status=429, times=100, headers={"Retry-After": "0"}))
    with Client(fake.url, **{**FAST, "max_retries": 1}) as c, pytest.raises(RateLimited) as error:
        c.health()
    assert error.value.retry_after == 0 and error.value.status == 429


def test_other_server_errors_are_not_retried(client, fake):
    fake.state.faults.append(Fault("/v1/kernels", status=500))
    with pytest.raises(ServerError):
        client.kernels(ARCH, X1)
    assert len(fake.state.requests("POST", "/v1/kernels")) == 1


def test_backoff_grows_exponentially_with_jitter_and_a_cap():
    c = Client("http://127.0.0.1:9", backoff=0.5, max_backoff=3.0)
    delays = [[c._backoff_delay(attempt) for _ in range(200)] for attempt in range(5)]
    for attempt, samples in enumerate(delays):
        ceiling = min(3.0, 0.5 * 2**attempt)
        assert ceiling / 2 <= min(samples) and max(samples) <= ceiling
        assert len(set(samples)) > 1  # jittered
    c.close()


def test_an_unreachable_server_raises_network_error(caplog):
    with socket_that_refuses() as url, Client(url, **FAST) as c:
        with caplog.at_level(logging.INFO, logger="ntk_client"), pytest.raises(NetworkError) as error:
            c.health()
    assert isinstance(error.value.__cause__, httpx.ConnectError)
    assert "4 attempts" in str(error.value)
    assert sum("ConnectError, retrying" in r.getMessage() for r in caplog.records) == 3


def test_a_url_without_a_scheme_fails_at_once():
    with Client("localhost:8000", **FAST) as c, pytest.raises(NetworkError) as error:
        c.health()
    assert isinstance(error.value.__cause__, httpx.UnsupportedProtocol)
    assert "after 1 attempt:" in str(error.value)


def test_timeouts_are_retried(fake):
    fake.state.faults.append(Fault("/healthz", status=0, delay=1.0))  # stalls once, then answers
    with Client(fake.url, **{**FAST, "timeout": 0.3}) as c:
        assert c.health() == {"status": "ok"}
    fake.state.faults.append(Fault("/healthz", status=0, delay=1.0, times=10))
    with Client(fake.url, **{**FAST, "timeout": 0.2, "max_retries": 1}) as c, pytest.raises(NetworkError) as error:
        c.health()
    assert isinstance(error.value.__cause__, httpx.TimeoutException)


def test_a_server_restarted_mid_call(caplog):
    """The service goes away while a job is being followed and comes back (state kept, as in
    Redis): the call rides it out on retries and returns the right answer."""
    with FakeServer() as server:
        server.state.job_polls = 30
        options = {**FAST, "max_retries": 8, "backoff": 0.05, "max_backoff": 0.5}
        with Client(server.url, **options) as c, ThreadPoolExecutor(1) as pool:
            with caplog.at_level(logging.INFO, logger="ntk_client"):
                future = pool.submit(c.kernels, ARCH, X1)
                deadline = time.monotonic() + 10
                while len(server.state.requests("GET", "/v1/jobs/")) < 3 and time.monotonic() < deadline:
                    time.sleep(0.005)
                server.stop()
                time.sleep(0.5)
                server.start()
                k = future.result(timeout=30)
        np.testing.assert_array_equal(k["ntk"], fake_kernels(SPEC, X1)["ntk"])
        assert any("retrying" in r.getMessage() and "/v1/jobs/" in r.getMessage() for r in caplog.records)
        assert server.state.jobs["job0001"].status == "succeeded"


class socket_that_refuses:
    """A localhost URL where nothing listens (a port bound but never listened on)."""

    def __enter__(self) -> str:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def __exit__(self, *exc_info) -> None:
        self.sock.close()


# -- errors ------------------------------------------------------------------------------------


def test_validation_problems_name_the_offending_path(client):
    with pytest.raises(ValidationError) as error:
        client.kernels({"layers": []}, X1)
    e = error.value
    assert (e.status, e.title, e.type) == (422, "Invalid architecture", "about:blank")
    assert e.errors == [{"path": "architecture.layers", "message": "must be a non-empty list"}]
    assert str(e) == ("422 Invalid architecture: layers must be a non-empty list\n"
                      "  at architecture.layers: must be a non-empty list")
    assert e.problem["detail"] == "layers must be a non-empty list" and e.response.status_code == 422

    with pytest.raises(ValidationError) as error:
        client.kernels(ARCH, X1, np.ones((2, 5)))
    assert error.value.errors[0]["path"] == "x2"


def test_a_400_is_a_validation_error(client, fake):
    fake.state.faults.append(Fault("/v1/kernels", status=400, problem={
        "type": "https://ntk.example/problems/malformed", "title": "Malformed JSON", "status": 400,
        "detail": "Expecting value: line 1 column 1"}))
    with pytest.raises(ValidationError) as error:
        client.kernels(ARCH, X1)
    assert error.value.type == "https://ntk.example/problems/malformed" and error.value.errors == []


def test_api_keys(fake, monkeypatch):
    fake.state.api_keys = {"s3cret"}
    with Client(fake.url, **FAST) as anonymous, pytest.raises(AuthError) as error:
        anonymous.kernels(ARCH, X1)
    assert error.value.status == 401 and "API key" in str(error.value)
    with Client(fake.url, api_key="s3cret", **FAST) as c:
        c.kernels(ARCH, X1)
    monkeypatch.setenv("NTK_API_KEY", "s3cret")
    with Client(fake.url, **FAST) as c:
        c.kernels(ARCH, X1)
    assert fake.state.log[-1].headers["authorization"] == "Bearer s3cret"
    assert anonymous._headers.get("Authorization") is None


def test_403_is_an_auth_error(client, fake):
    fake.state.faults.append(Fault("/v1/kernels", status=403))
    with pytest.raises(AuthError):
        client.kernels(ARCH, X1)


def test_an_error_page_that_is_not_json_still_gives_a_typed_error(client, fake):
    fake.state.faults.append(Fault("/healthz", status=502, times=100, html="<h1>Bad Gateway</h1> upstream down"))
    with pytest.raises(ServerError) as error:
        client.health()
    assert error.value.status == 502 and "upstream down" in error.value.detail
    assert error.value.title == "Bad Gateway"


def test_other_4xx_are_ntk_errors(client, fake):
    fake.state.faults.append(Fault("/v1/kernels", status=413, problem={
        "title": "Payload Too Large", "status": 413, "detail": "body over NTK_MAX_BODY_BYTES"}))
    with pytest.raises(NTKError) as error:
        client.kernels(ARCH, X1)
    assert type(error.value) is NTKError and error.value.status == 413


def test_url_from_the_environment(fake, monkeypatch):
    monkeypatch.setenv("NTK_URL", fake.url)
    with Client(**FAST) as c:
        assert c.url == fake.url and c.health() == {"status": "ok"}
    monkeypatch.delenv("NTK_URL")
    assert Client().url == "http://localhost:8000"


def test_client_reuses_connections_across_threads(client, fake):
    # One Client is safe to share between threads (httpx.Client is).
    results = {}

    def work(i):
        results[i] = client.kernels(ARCH, X1 * (i + 1), get="ntk")["ntk"]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(4):
        np.testing.assert_array_equal(results[i], fake_kernels(SPEC, X1 * (i + 1))["ntk"])
