#!/usr/bin/env python3
"""Sharing one worker: tiny requests while a big job runs, and what a DELETE of the big job costs.

    python3 bench/sharing.py [--tiny 20] [--points 800] [--tile-target 10]

Starts ``ntk serve --workers 1`` (embedded Valkey, unless NTK_REDIS_URL names a Redis), submits a
big kernel job (the issue's CNN on 8 × 8 images, minutes of work), and once it computes:

* sends ``--tiny`` small kernel requests one after the other (an MLP on one fresh point each, so
  none is answered from the cache) and reports their latency, p50 and p99: each is an interactive
  job, taken before the big job's next tile (ntk.core.broker: lanes), so it waits at most for the
  tile in progress (``--tile-target`` seconds by the estimate, NTK_TILE_TARGET_S);
* cancels the big job and reports, from the DELETE: when the worker recorded its tile stopped
  (``stopped_step`` in the job's hash, ntk.worker.watch), when the worker process went idle (its CPU
  under 5% over 0.2 s, from /proc), and the worker's CPU from 3 to 4 s after the cancel.

Figures on a shared machine vary with its load; the tiny requests' latency is bounded by one tile.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import redis

ROOT = Path(__file__).resolve().parent.parent
CNN = {"layers": [{"type": "Conv", "out_chan": 8, "filter_shape": [3, 3], "padding": "SAME"}, {"type": "Relu"}] * 2
       + [{"type": "GlobalAvgPool"}, {"type": "Dense", "out_dim": 1}]}
MLP = {"layers": [{"type": "Dense", "out_dim": 512, "w_std": 1.5}, {"type": "Relu"}, {"type": "Dense", "out_dim": 1}]}
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its threads, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def child_worker(parent: int) -> int:
    """The pid of ``ntk worker`` started by ``ntk serve`` (``parent``)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == parent and b"worker" in cmdline:
            return int(stat.parent.name)
    raise RuntimeError("no worker process found")


def start(tile_target_s: float) -> tuple[subprocess.Popen, str, str, Path]:
    log = Path(tempfile.mkstemp(prefix="ntk-sharing-", suffix=".log")[1])
    port = 18000 + os.getpid() % 1000
    env = {**os.environ, "NTK_RATE_LIMIT": "", "NTK_LOG_FORMAT": "text", "NTK_TILE_TARGET_S": str(tile_target_s),
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "ntk.cli", "serve", "--port", str(port), "--workers", "1"],
                            cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(1200):
        try:
            if httpx.get(f"{url}/readyz", timeout=2).json().get("workers", 0) >= 1:
                break
        except (httpx.TransportError, ValueError):
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"ntk serve exited:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    found = re.search(r"embedded Valkey at (\S+)", log.read_text())
    return proc, url, os.environ.get("NTK_REDIS_URL") or found.group(1), log


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", type=int, default=20, help="tiny requests sent while the big job runs")
    ap.add_argument("--points", type=int, default=800, help="8 × 8 images in the big job")
    ap.add_argument("--tile-target", type=float, default=10.0, help="NTK_TILE_TARGET_S of the service")
    args = ap.parse_args()
    proc, url, redis_url, log = start(args.tile_target)
    store = redis.Redis.from_url(redis_url)
    try:
        client = httpx.Client(base_url=url, timeout=300)
        rng = np.random.default_rng(0)
        big = client.post("/v1/kernels?wait=0", json={"architecture": CNN,
                                                       "x1": rng.normal(size=(args.points, 8, 8, 1)).tolist()}).json()
        assert "job" in big, big
        job = big["job"]
        print(f"big job: estimate {job['estimate_s']:.0f} s, lane {job['lane']}, "
              f"tile {store.hget('ntk:job:' + job['id'], 'tile').decode()} points a side")
        while client.get(f"/v1/jobs/{job['id']}").json()["progress"]["fraction"] == 0:
            time.sleep(0.1)
        latencies = []
        for i in range(args.tiny):
            start_s = time.perf_counter()
            r = client.post("/v1/kernels?wait=300", json={"architecture": MLP, "x1": rng.normal(size=(1, 4)).tolist()})
            latencies.append(time.perf_counter() - start_s)
            assert r.status_code == 200, r.text
        status = client.get(f"/v1/jobs/{job['id']}").json()
        print(f"{args.tiny} tiny requests while it ran ({status['status']}, {status['progress']['fraction']:.0%} "
              f"done): p50 {percentile(latencies, 50):.2f} s, p99 {percentile(latencies, 99):.2f} s, "
              f"max {max(latencies):.2f} s")

        worker = child_worker(proc.pid)
        cancelled_at = time.monotonic()
        client.delete(f"/v1/jobs/{job['id']}")
        stopped = idle = None
        cpu, at = cpu_seconds(worker), time.monotonic()
        while time.monotonic() - cancelled_at < 4:
            time.sleep(0.2)
            now, now_cpu = time.monotonic(), cpu_seconds(worker)
            if stopped is None and store.hexists(f"ntk:job:{job['id']}", "stopped_step"):
                stopped = now - cancelled_at
            if idle is None and (now_cpu - cpu) / (now - at) < 0.05:
                idle = now - cancelled_at
            if now - cancelled_at >= 3 and at - cancelled_at < 3:
                window = (now, now_cpu)
            cpu, at = now_cpu, now
        after_3s = (cpu - window[1]) / (at - window[0]) if at > window[0] else float("nan")
        fields = {k.decode(): v.decode() for k, v in store.hgetall(f"ntk:job:{job['id']}").items()}
        print(f"DELETE -> tile stopped (worker event) {stopped if stopped is None else round(stopped, 2)} s, "
              f"after {int(fields.get('stopped_step', -1)) - int(fields.get('stop_noticed_step', 0))} layer steps; "
              f"-> worker idle {idle if idle is None else round(idle, 2)} s; worker CPU 3-4 s after: {after_3s:.0%}")
    finally:
        proc.terminate()
        proc.wait(60)


if __name__ == "__main__":
    main()
