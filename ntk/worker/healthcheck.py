"""``python -m ntk.worker.healthcheck``: exit 0 when a worker of this host beat recently.

The container health check of a worker: the process may be alive yet wedged, so ask Redis
whether it still reports itself (workers beat as ``host:pid:nonce`` into keys.WORKERS).
"""

from __future__ import annotations

import socket
import sys
import time

import redis

from ntk.core.settings import get_settings
from ntk.core import keys


def main() -> int:
    settings = get_settings()
    client = redis.Redis.from_url(settings.redis, socket_connect_timeout=3, socket_timeout=3)
    host = socket.gethostname()
    alive = client.zrangebyscore(keys.WORKERS, time.time() - settings.live_worker_s, "+inf")
    return 0 if any(worker.decode().split(":")[0] == host for worker in alive) else 1


if __name__ == "__main__":
    sys.exit(main())
