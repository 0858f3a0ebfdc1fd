"""Structured logs (NTK_LOG_FORMAT=json): one JSON object per line; every line written for a
request, in the API and in the workers, carries its X-Request-ID; keys and bodies are never logged."""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

import httpx
import pytest

from ntk.core import logs
from ntk.core.settings import Settings
from service_helpers import MLP

API_KEY = "s3cret-api-key"
MARKER = 0.918273645546372  # a number only the request bodies hold
HEX_ID = re.compile(r"[0-9a-f]{32}")


@pytest.fixture(scope="module")
def svc(start_service, start_valkey):
    with start_valkey() as server, start_service(f"{server.connection_url}/0", workers=1, api_keys=API_KEY,
                                                 max_body_bytes=10_000, log_format="json") as svc:
        yield svc


@pytest.fixture
def client(svc):
    with httpx.Client(base_url=svc.url, timeout=60, headers={"Authorization": f"Bearer {API_KEY}"}) as c:
        yield c


def log_lines(svc) -> list[dict]:
    """Every complete line of the service's log (processes may be writing one as we read)."""
    *complete, _ = Path(svc.log.name).read_text().split("\n")
    return [json.loads(line) for line in complete if line.strip()]


def lines_of(svc, request_id: str, until, timeout: float = 30) -> list[dict]:
    """The log lines of one request, once ``until(lines)`` holds (the workers write theirs concurrently)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in log_lines(svc) if line.get("request_id") == request_id]
        if until(lines) or time.monotonic() > deadline:
            return lines
        time.sleep(0.1)


def test_a_request_and_its_job_log_json_lines_with_its_id(svc, client):
    r = client.post("/v1/kernels", headers={"X-Request-ID": "trace-0001"},
                    json={"architecture": MLP, "x1": [[MARKER, 1.0], [2.0, 3.0]]})
    assert r.status_code == 200 and r.headers["x-request-id"] == "trace-0001"
    lines = lines_of(svc, "trace-0001", lambda lines: any(line["logger"] == "ntk.access" for line in lines))
    access = [line for line in lines if line["logger"] == "ntk.access"]
    assert len(access) == 1, lines
    line = access[0]
    assert {"ts", "level", "logger", "msg", "request_id", "job_id", "method", "path", "status", "duration_ms"} <= set(line)
    assert (line["method"], line["path"], line["status"], line["level"]) == ("POST", "/v1/kernels", 200, "INFO")
    assert isinstance(line["duration_ms"], (int, float)) and HEX_ID.fullmatch(line["job_id"])
    worker = [line for line in lines if line["logger"].startswith("ntk.worker")]
    assert worker and all(line["job_id"] == access[0]["job_id"] for line in worker), lines


def test_an_unusable_request_id_is_replaced(client):
    for sent in ("has spaces", "x" * 129, "quote\"d", ""):
        r = client.get(f"/v1/jobs/{'0' * 32}", headers={"X-Request-ID": sent})
        assert r.status_code == 404 and HEX_ID.fullmatch(r.headers["x-request-id"]), sent
    first, second = (client.get("/healthz").headers["x-request-id"] for _ in range(2))
    assert first != second


def test_refusals_carry_the_request_id(svc, client):
    too_large = client.post("/v1/kernels", headers={"X-Request-ID": "big-1", "Content-Type": "application/json"},
                            content=b" " * 20_000)
    assert too_large.status_code == 413 and too_large.headers["x-request-id"] == "big-1"
    anonymous = httpx.get(f"{svc.url}/v1/jobs/{'0' * 32}", headers={"X-Request-ID": "anon-1"})
    assert anonymous.status_code == 401 and anonymous.headers["x-request-id"] == "anon-1"
    invalid = client.post("/v1/kernels", headers={"X-Request-ID": "bad-1"}, json={"architecture": MLP, "x1": [[MARKER]], "t": 1})
    assert invalid.status_code == 422 and invalid.headers["x-request-id"] == "bad-1"
    for request_id, status in (("big-1", 413), ("anon-1", 401), ("bad-1", 422)):
        lines = lines_of(svc, request_id, lambda lines: any(line["logger"] == "ntk.access" for line in lines))
        assert [line["status"] for line in lines if line["logger"] == "ntk.access"] == [status], lines


def test_no_key_or_body_is_logged(svc, client):
    client.post("/v1/datasets", json={"x": [[MARKER, 2.0]]}, headers={"X-Request-ID": "upload-1"})
    lines_of(svc, "upload-1", lambda lines: lines)
    text = Path(svc.log.name).read_text()
    assert API_KEY not in text and str(MARKER) not in text and "9182736455" not in text
    assert all(isinstance(line, dict) for line in log_lines(svc))  # every line is a JSON object


def test_text_format_carries_the_same_context(capsys):
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.configure(Settings(log_format="text", log_level="info"))
        with logs.bound(request_id="r-1", job_id="j-1"):
            logging.getLogger("ntk.test").info("hello")
        logging.getLogger("ntk.test").debug("not shown")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
        logging.captureWarnings(False)
    err = capsys.readouterr().err
    assert "INFO ntk.test: hello [request_id=r-1 job_id=j-1]" in err and "not shown" not in err
