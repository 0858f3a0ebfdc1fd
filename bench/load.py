#!/usr/bin/env python3
"""Load on the service with locust: cached and cold kernel requests, dataset uploads as JSON and npz;
and issue 18's round of identical cold requests, repeated.

Against a running service, all scenarios at once, headless (start the service with an empty
NTK_RATE_LIMIT, or its per-client limit answers most of the load with 429s, counted as errors):

    NTK_RATE_LIMIT= ntk serve --port 8000 &
    locust -f bench/load.py --headless -u 8 -r 8 -t 30s --host http://127.0.0.1:8000

Or one scenario after another, each alone for --seconds, then a table of throughput, latency
percentiles and errors per request (without --host it starts ``ntk serve`` on a free port, with an
embedded Valkey and no rate limit, and stops it afterwards):

    python3 bench/load.py [--host URL] [--users 8] [--seconds 30] [--workers 1]

The scenarios, one locust user class each; users send their next request as soon as the last is
answered, so the figures are the most the API answers, not a given arrival rate:

* CachedKernel: one small kernel request (an MLP, 32 points of 8 features) over and over. The first
  computes; every later one is answered from the answer cache without a worker, so this measures
  the API's own path: JSON parsing and validation, content hashing, Redis round trips, encoding.
* ColdKernel: a kernel request never seen before (an FC Gelu network on 1,200 × 30 fresh points
  sent inline, about 0.8 MB of JSON, ``wait=0``), answered 202 with its job, which is then
  cancelled (``DELETE /v1/jobs/{id}``, its own line) so that the queue does not bury the worker.
  This measures the API's cold path: parsing a large body off the event loop, hashing and packing
  its points, storing them and queueing the job, while the worker computes.
* JsonUpload, NpzUpload: a fresh dataset of 256 points × 16 features and their targets (34 KB of
  float64) per request, then deleted again (the DELETE is its own line in the table).

With ``--rounds N`` it runs issue 18's round instead, N times: ``--clients`` clients (16) send the
same cold ColdKernel request at the same moment; once no job is active, the round reports its
answers by status and the jobs it made (from /metrics). Single flight holds when each round made
one job; the API holds under load when no answer is a 5xx. It exits non-zero otherwise:

    python3 bench/load.py --rounds 20 [--clients 16] [--host URL]
"""

from __future__ import annotations

import argparse
import io
import json
import re
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import gevent
import gevent.event
import numpy as np
from locust import FastHttpUser, constant, task
from locust.env import Environment

ROOT = Path(__file__).resolve().parent.parent

MLP = {"layers": [{"type": "Dense", "out_dim": 512, "w_std": 1.5, "b_std": 0.05}, {"type": "Relu"},
                  {"type": "Dense", "out_dim": 1, "w_std": 1.5, "b_std": 0.05}]}
KERNEL_REQUEST = {"architecture": MLP, "x1": np.random.default_rng(0).normal(size=(32, 8)).round(6).tolist()}
DATASET_SHAPE = (256, 16)
GELU = {"layers": [{"type": "Dense", "out_dim": 512, "w_std": 1.5, "b_std": 0.05}, {"type": "Gelu"},
                   {"type": "Dense", "out_dim": 512, "w_std": 1.5, "b_std": 0.05}, {"type": "Gelu"},
                   {"type": "Dense", "out_dim": 1}]}
COLD_SHAPE = (1200, 30)


def cold_request(rng: np.random.Generator) -> bytes:
    """A kernel request on fresh points: nothing of it is cached."""
    x = rng.normal(size=COLD_SHAPE)
    return json.dumps({"architecture": GELU, "x1": x.tolist(), "get": ["nngp"]}).encode()


class CachedKernel(FastHttpUser):
    wait_time = constant(0)

    @task
    def kernel(self):
        self.client.post("/v1/kernels", json=KERNEL_REQUEST, name="POST /v1/kernels (cached)")


class ColdKernel(FastHttpUser):
    wait_time = constant(0)
    rng = np.random.default_rng()

    @task
    def kernel(self):
        with self.client.post("/v1/kernels?wait=0", data=cold_request(self.rng), catch_response=True,
                              headers={"Content-Type": "application/json"}, name="POST /v1/kernels (cold)") as r:
            if r.status_code == 202:
                self.client.delete(f"/v1/jobs/{r.json()['job']['id']}", name="DELETE /v1/jobs/{id}")
            else:
                r.failure(f"{r.status_code}: {r.text[:200]}")


class Upload(FastHttpUser):
    """A fresh dataset per request (so each is stored, not found), deleted once uploaded."""

    abstract = True
    wait_time = constant(0)
    rng = np.random.default_rng()

    def upload(self, name: str, **request) -> None:
        with self.client.post("/v1/datasets", name=name, catch_response=True, **request) as r:
            if r.status_code == 201:
                self.client.delete(f"/v1/datasets/{r.json()['id']}", name="DELETE /v1/datasets/{id}")
            else:
                r.failure(f"{r.status_code}: {r.text[:200]}")

    def fresh(self) -> tuple[np.ndarray, np.ndarray]:
        x = self.rng.normal(size=DATASET_SHAPE)
        return x, np.sin(x[:, :1])


class JsonUpload(Upload):
    @task
    def json_upload(self):
        x, y = self.fresh()
        self.upload("POST /v1/datasets (json)", json={"x": x.tolist(), "y": y.tolist()})


class NpzUpload(Upload):
    @task
    def npz_upload(self):
        x, y = self.fresh()
        buffer = io.BytesIO()
        np.savez(buffer, x=x, y=y)
        self.upload("POST /v1/datasets (npz)", data=buffer.getvalue(),
                    headers={"Content-Type": "application/x-npz"})


SCENARIOS = (CachedKernel, ColdKernel, JsonUpload, NpzUpload)


def run(user_class: type, host: str, users: int, seconds: float) -> list[dict]:
    """One scenario alone for ``seconds``: a row per request name."""
    env = Environment(user_classes=[user_class], host=host)
    runner = env.create_local_runner()
    runner.start(users, spawn_rate=users)
    gevent.sleep(seconds)
    runner.quit()
    return [{"scenario": user_class.__name__, "request": entry.name, "requests": entry.num_requests,
             "rps": entry.total_rps, "p50_ms": entry.get_response_time_percentile(0.50),
             "p99_ms": entry.get_response_time_percentile(0.99), "errors": entry.num_failures}
            for entry in env.stats.entries.values()]


def report(rows: list[dict]) -> str:
    lines = [f"{'scenario':<14}{'request':<30}{'requests':>9}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"]
    lines += [f"{r['scenario']:<14}{r['request']:<30}{r['requests']:>9}{r['rps']:>9.1f}{r['p50_ms']:>9.0f}"
              f"{r['p99_ms']:>9.0f}{r['errors']:>8}" for r in rows]
    return "\n".join(lines)


def metric_sum(host: str, pattern: str, tries: int = 20) -> int:
    """The sum of a /metrics counter or gauge over its states (a scrape that fails is tried again)."""
    for attempt in range(tries):
        try:
            with urllib.request.urlopen(f"{host}/metrics", timeout=60) as r:
                text = r.read().decode()
            break
        except urllib.error.HTTPError:
            if attempt == tries - 1:
                raise
            gevent.sleep(0.5)
    return sum(int(float(v)) for v in re.findall(rf"^{pattern}\{{state=\"\w+\"\}} (\S+)$", text, re.MULTILINE))


def jobs_made(host: str) -> int:
    """Jobs the service ever created: those ended and those active, as /metrics counts them."""
    return metric_sum(host, "ntk_jobs_(?:finished_total|active)")


def post(url: str, body: bytes) -> int | str:
    """The answer's status (an error's name when none came)."""
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=300) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, ConnectionError) as e:
        return type(e).__name__


def cold_round(host: str, body: bytes, clients: int) -> tuple[dict, int, float]:
    """``clients`` identical requests at once: their statuses, the jobs they made once all ended,
    and the seconds until the last was answered."""
    before = jobs_made(host)
    start = time.perf_counter()
    go = gevent.event.Event()

    def client():
        go.wait()
        return post(f"{host}/v1/kernels?wait=0", body)

    greenlets = [gevent.spawn(client) for _ in range(clients)]
    go.set()
    gevent.joinall(greenlets)
    answered_s = time.perf_counter() - start
    while metric_sum(host, "ntk_jobs_active"):
        gevent.sleep(0.2)
    statuses: dict = {}
    for g in greenlets:
        statuses[g.value] = statuses.get(g.value, 0) + 1
    return statuses, jobs_made(host) - before, answered_s


def rounds(host: str, count: int, clients: int) -> int:
    """Issue 18's round ``count`` times; answers how many failed."""
    failed = 0
    for n in range(count):
        statuses, jobs, answered_s = cold_round(host, cold_request(np.random.default_rng([18, n])), clients)
        errors = sum(k for status, k in statuses.items() if not (isinstance(status, int) and status < 500))
        failed += errors > 0 or jobs != 1
        print(f"round {n + 1:2d}: answers {statuses}, jobs {jobs}, all answered in {answered_s:.1f} s", flush=True)
    print(f"{failed} of {count} rounds failed (a 5xx or no answer, or other than one job)")
    return failed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_service(workers: int) -> tuple[subprocess.Popen, str]:
    """``ntk serve`` with an embedded Valkey and no rate limit, once it is ready."""
    port = free_port()
    env = {**os.environ, "NTK_RATE_LIMIT": "", "PYTHONPATH": str(ROOT)}
    env.pop("NTK_REDIS_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "ntk.cli", "serve", "--port", str(port), "--workers", str(workers)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, url)
    except BaseException:
        stop(proc)
        raise
    return proc, url


def wait_ready(proc: subprocess.Popen, url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ntk serve exited with status {proc.returncode}")
        try:  # urllib, not httpx: locust's gevent patching of select breaks httpx's imports
            with urllib.request.urlopen(f"{url}/readyz", timeout=2):
                return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.2)
    raise TimeoutError(f"ntk serve not ready after {timeout:g} s")


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM: ntk serve stops its workers and Valkey before it exits."""
    proc.terminate()
    proc.wait(60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", help="a running service (default: start ntk serve here)")
    ap.add_argument("--users", type=int, default=8, help="concurrent users per scenario")
    ap.add_argument("--seconds", type=float, default=30, help="how long each scenario runs")
    ap.add_argument("--workers", type=int, default=1, help="workers of the service started here")
    ap.add_argument("--rounds", type=int, help="run issue 18's round this often instead of the scenarios")
    ap.add_argument("--clients", type=int, default=16, help="identical requests of each round")
    args = ap.parse_args()
    service = None
    host = args.host
    if host is None:
        service, host = start_service(args.workers)
    try:
        if args.rounds:
            sys.exit(1 if rounds(host, args.rounds, args.clients) else 0)
        rows = [row for scenario in SCENARIOS for row in run(scenario, host, args.users, args.seconds)]
    finally:
        if service is not None:
            stop(service)
    print(report(rows))
    if any(row["errors"] for row in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
