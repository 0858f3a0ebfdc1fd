#!/usr/bin/env python3
"""The path around the engine: small requests through a running service against the same work in
this process (issue 16's goals).

    python3 bench/service_path.py --url http://127.0.0.1:8000 [--reps 50] [--sweep-reps 5]
    python3 bench/service_path.py                  # starts `ntk serve` (defaults, 1 worker) for the run

Three workloads, each against its in-process time on this machine:

* a new 20-point FC kernel (NNGP and NTK, float64, inline points, each request new points so
  that nothing is cached): POST /v1/kernels p50 and p90, goal p50 <= 15 ms;
* the same request again, answered from the cache: p50 and p90, goal p50 <= 3 ms;
* issue 16's 30-architecture FC sweep with its rows on 200 points (bench/sweep.py's grid),
  POST /v1/sweeps with new targets each time, one request after the other: median, goal <= 0.5 s.

Figures and ratios are printed with whether each goal is met; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager, nullcontext

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "clients", "python"))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from ntk.core.settings import Settings  # noqa: E402
from ntk.engine import Budget, kernel_fn, resolve_device  # noqa: E402
from ntk.engine.sweep import sweep  # noqa: E402
from ntk.spec.sweep_grid import expand  # noqa: E402
from ntk.worker.allocator import keep_freed_memory  # noqa: E402
from predict_scaling import free_port  # noqa: E402
from sweep import FC, ISSUE_GRID  # noqa: E402  (bench/sweep.py: the issue's grid)

KERNEL_POINTS, KERNEL_DIM = 20, 10
SWEEP_POINTS, SWEEP_DIM = 200, 64
FC_KERNEL = {"layers": [{"type": "Dense", "out_dim": 512, "w_std": 1.5, "b_std": 0.05}, {"type": "Relu"},
                        {"type": "Dense", "out_dim": 512, "w_std": 1.5, "b_std": 0.05}, {"type": "Relu"},
                        {"type": "Dense", "out_dim": 1, "w_std": 1.5, "b_std": 0.05}]}
GOALS = {"new kernel p50": 0.015, "cached kernel p50": 0.003, "sweep sequential": 0.5}


def quantiles(seconds: list[float]) -> tuple[float, float]:
    """p50 and p90."""
    ordered = sorted(seconds)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]


def timed(fn, reps: int) -> list[float]:
    runs = []
    for i in range(reps):
        start = time.perf_counter()
        fn(i)
        runs.append(time.perf_counter() - start)
    return runs


def kernel_body(x: np.ndarray) -> dict:
    return {"architecture": FC_KERNEL, "x1": x.tolist(), "get": ["nngp", "ntk"]}


def post(client: httpx.Client, path: str, body: dict) -> dict:
    r = client.post(path, json=body)
    if r.status_code != 200:
        raise SystemExit(f"{path} answered {r.status_code}: {r.text[:500]}")
    return r.json()


def line(name: str, seconds: float, in_process: float, goal: float | None = None, p90: float | None = None) -> None:
    spread = "" if p90 is None else f"  p90 {p90 * 1e3:8.2f} ms"
    verdict = "" if goal is None else f"  goal <= {goal * 1e3:g} ms: {'met' if seconds <= goal else 'NOT met'}"
    print(f"  {name:28s} {seconds * 1e3:8.2f} ms{spread}  {seconds / in_process:7.1f}x in-process{verdict}")


def kernels(url: str, reps: int) -> None:
    rng = np.random.default_rng(0)
    fresh = [rng.normal(size=(KERNEL_POINTS, KERNEL_DIM)) for _ in range(reps + 5)]
    in_process = statistics.median(timed(lambda i: kernel_fn(FC_KERNEL, fresh[i]), reps))
    with httpx.Client(base_url=url, timeout=60) as client:
        for i in range(5):  # warm: connections, the worker's first tile, the cache's first answer
            post(client, "/v1/kernels", kernel_body(fresh[reps + i]))
        new = timed(lambda i: post(client, "/v1/kernels", kernel_body(fresh[i])), reps)
        cached = timed(lambda i: post(client, "/v1/kernels", kernel_body(fresh[0])), reps)
    new_p50, new_p90 = quantiles(new)
    cached_p50, cached_p90 = quantiles(cached)
    print(f"a {KERNEL_POINTS}-point FC kernel (3 Dense 512, ReLU; NNGP + NTK, float64), {reps} requests each")
    print(f"  in-process kernel_fn         {in_process * 1e3:8.2f} ms")
    line("new request", new_p50, in_process, GOALS["new kernel p50"], new_p90)
    line("same request again (cached)", cached_p50, in_process, GOALS["cached kernel p50"], cached_p90)


def sweeps(url: str, reps: int) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(SWEEP_POINTS, SWEEP_DIM))
    targets = [np.sign(rng.normal(size=(SWEEP_POINTS, 1))) for _ in range(reps + 1)]
    points = expand(FC, ISSUE_GRID)
    settings = Settings()  # the sweep as a worker runs it (ntk.worker.tasks.run_sweep)
    as_a_worker = {"device": resolve_device(settings.device), "budget": Budget(settings.block_bytes, settings.cache_bytes),
                   "max_bytes": settings.sweep_bytes}
    body = lambda i: {"x_train": x.tolist(), "y_train": targets[i].tolist(), "base": FC, "grid": ISSUE_GRID}  # noqa: E731
    in_process, through = [], []
    with httpx.Client(base_url=url, timeout=300) as client:
        post(client, "/v1/sweeps", body(reps))  # warm
        for i in range(reps):  # taking turns, so that a machine's drifting load weighs on both alike
            in_process += timed(lambda _: sweep(points, x, targets[i], **as_a_worker), 1)
            through += timed(lambda _: post(client, "/v1/sweeps", body(i)), 1)
    in_process, through = statistics.median(in_process), statistics.median(through)
    print(f"issue 16's sweep: {len(points)} FC architectures with rows, {SWEEP_POINTS} points of dimension "
          f"{SWEEP_DIM}, median of {reps}, one request after the other")
    print(f"  in-process sweep             {in_process * 1e3:8.2f} ms")
    line("through the service", through, in_process, GOALS["sweep sequential"])


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def service():
    """``ntk serve`` with its defaults (an embedded Valkey, one worker), until the run ends."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "ntk.cli", "serve", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        while not ready(url):
            if proc.poll() is not None:
                raise SystemExit("ntk serve exited")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(60)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running service (default: start `ntk serve` for the run)")
    parser.add_argument("--reps", type=int, default=50, help="requests per kernel figure")
    parser.add_argument("--sweep-reps", type=int, default=5, help="sweeps through the service (and in-process)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch and BLAS threads of the in-process runs (default torch's, as a worker's; 1 "
                             "keeps a shared, loaded machine's cores from being oversubscribed)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as a worker does (ntk.worker.runtime): the in-process times are a worker's
    with threadpool_limits(args.threads), (service() if args.url is None else nullcontext(args.url)) as url:
        print(f"service {url}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        kernels(url, args.reps)
        sweeps(url, args.sweep_reps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
