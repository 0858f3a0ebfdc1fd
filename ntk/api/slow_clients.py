"""A floor on how fast a client must send its request, enforced in uvicorn's HTTP protocol.

uvicorn has no timeout on receiving a request: its keep-alive timer runs only between requests and
is reset by every byte, and a connection that sends nothing at all is never timed out. So a client
trickling headers or a body one byte at a time (Slowloris), or one that connects and says nothing,
holds a connection, its buffers and, once the headers are in, an application task, for as long
as it likes. ASGI middleware cannot help: it runs only once the headers have been parsed.

The rule, per request (and from the moment a connection is made, for its first one): having
started sending at time s and delivered b bytes so far, a client is disconnected once

    now > s + NTK_CLIENT_TIMEOUT_S + b / NTK_CLIENT_MIN_BYTES_PER_S

before its request is complete. Headers therefore get NTK_CLIENT_TIMEOUT_S (30 s), and a body the
same grace plus the time it takes at the floor rate (64 KiB/s by default: a 256 MiB upload may
take 68 minutes, a slow line's pace, while 1 byte per second is cut off after 30 s). The clock
stops while uvicorn itself has paused reading (the application has not consumed the body yet):
that wait is ours, not the client's. Answers are not timed: a client reading slowly holds only
its own task, paced by uvicorn's flow control.

Why here rather than a reverse proxy: ``ntk serve`` is also run bare, on a laptop or behind a
load balancer that passes connections through, and a proxy in docker compose would protect only
that deployment. The alternatives considered: gunicorn's ``--timeout`` bounds a worker's silence,
not a client's pace; hypercorn's ``read_timeout`` is a per-read idle timeout, which a byte every
29 s defeats. The subclass keeps uvicorn (and httptools, which ``uvicorn[standard]`` installs).
"""

from __future__ import annotations

import asyncio
import logging

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("ntk.api.slow_clients")


def paced_protocol(timeout_s: float, min_bytes_per_s: float) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with the floor above, to pass as ``uvicorn.run(http=...)``."""

    class PacedHttpToolsProtocol(HttpToolsProtocol):
        _started: float | None = None  # when the request being received began arriving; None: none is
        _received = 0
        _timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._start()  # a connection that never sends a byte is timed too

        def data_received(self, data: bytes) -> None:
            if self._started is None:
                self._start()  # the next request on a kept-alive connection
            self._received += len(data)
            super().data_received(data)

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._stop()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop()
            super().connection_lost(exc)

        def _start(self) -> None:
            self._started, self._received = self.loop.time(), 0
            self._schedule(self._started + timeout_s)

        def _stop(self) -> None:
            self._started = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _schedule(self, when: float) -> None:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self.loop.call_at(when, self._check)

        def _check(self) -> None:
            self._timer = None
            if self._started is None or self.transport.is_closing():
                return
            if self.flow.read_paused:
                self._start()  # we stopped reading: the client gets a fresh grace once we resume
                return
            deadline = self._started + timeout_s + self._received / min_bytes_per_s
            if self.loop.time() < deadline:
                self._schedule(deadline)
                return
            log.warning("closed a connection whose request came slower than the floor "
                        "(NTK_CLIENT_TIMEOUT_S, NTK_CLIENT_MIN_BYTES_PER_S)",
                        extra={"client": "%s:%d" % self.client if self.client else None,
                               "received_bytes": self._received})
            self.transport.close()

    return PacedHttpToolsProtocol
