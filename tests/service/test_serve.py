"""``ntk serve`` on its own: an embedded Valkey, workers and the API; SIGTERM stops them all."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from service_helpers import MLP

ROOT = Path(__file__).resolve().parents[2]


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def test_serve_without_redis_embeds_valkey_and_stops_every_child(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "NTK_REDIS_URL"}
    env["PYTHONPATH"] = str(ROOT)
    log = open(tmp_path / "serve.log", "w")
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "ntk.cli", "serve", "--port", str(port), "--workers", "1"],
                            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        while True:
            assert proc.poll() is None and time.monotonic() - start < 120, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        print(f"ntk serve ready in {time.monotonic() - start:.1f} s")
        r = httpx.post(f"{url}/v1/kernels", json={"architecture": MLP, "x1": [[1.0, 2.0], [3.0, 4.0]]}, timeout=60)
        assert r.status_code == 200, r.text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        deadline = time.monotonic() + 10  # the group empties as its last processes are reaped
        while group_alive(proc.pid):
            if time.monotonic() > deadline:
                survivors = subprocess.run(["ps", "-o", "pid,cmd", "-g", str(proc.pid)], capture_output=True,
                                           text=True).stdout
                raise AssertionError(f"children outlived ntk serve:\n{survivors}")
            time.sleep(0.05)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
