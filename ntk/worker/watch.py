"""Stop signals and progress of the tiles a worker is computing, kept by one background thread.

The engine asks ``should_stop()`` before every layer of every block and tells ``progress(done,
total)`` after it (ntk.engine.interrupt): thousands of calls a second on small blocks, so neither
may touch Redis. A ``Running`` tile answers both from memory; the worker's ``Watch`` thread, every
``poll_s`` (0.25 s), reads the status of each running tile's job in one pipeline and flags the
tiles of jobs no longer running (cancelled by DELETE, failed, ended), and writes each tile's part
done to its job's hash (``partial:<worker>``, at most every ``report_s``), which GET /v1/jobs adds
to the tiles done. A tile's deadline needs no Redis at all: the worker seconds its job may still
use (``deadline_s`` − ``worked_s``, ntk.core.estimate) are turned into a point on this process's
monotonic clock when the tile starts.

So a DELETE stops a running tile within ``poll_s`` plus one layer of one block, whatever the tile's
size; ``Running.noticed``/``Running.stopped`` record the layer step at which the stop was seen and
the one at which the engine stopped (the job's hash keeps them: tests assert on them, not on time).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from contextlib import contextmanager

import redis

from ntk.core import keys
from ntk.core.jobstate import PARTIAL

log = logging.getLogger("ntk.worker")


class Running:
    """One tile in progress: its job, its deadline, its steps, and why it should stop, if it should."""

    def __init__(self, job: dict):
        self.job_id = job["id"]
        self.deadline_s = float(job.get("deadline_s", math.inf))
        self.worked_s = float(job.get("worked_s", 0.0))
        self.started = time.monotonic()
        self.stop_at = self.started + self.deadline_s - self.worked_s
        self.done = self.total = 0
        self.reported = -1.0
        self.reason: str | None = None  # "cancelled" (the job ended meanwhile) or "deadline"
        self.noticed: int | None = None  # the step at which the reason was set

    def should_stop(self) -> bool:
        if self.reason is None and time.monotonic() > self.stop_at:
            self.stop("deadline")
        return self.reason is not None

    def progress(self, done: int, total: int) -> None:
        self.done, self.total = done, total

    def stop(self, reason: str) -> None:
        self.noticed, self.reason = self.done, reason

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started


class Watch:
    def __init__(self, client: redis.Redis, name: str, poll_s: float = 0.25, report_s: float = 0.5,
                 touch_s: float = 5.0):
        self.redis, self.field = client, f"{PARTIAL}{name}"
        self.poll_s, self.report_s, self.touch_s = poll_s, report_s, touch_s
        self.running: dict[int, Running] = {}  # by worker thread
        self.lock = threading.Lock()

    @contextmanager
    def tile(self, job: dict):
        """A tile of ``job`` (as read when its task started) being computed: its ``Running``. On
        the way out, the job's worker seconds grow by the tile's and its part done is cleared."""
        running = Running(job)
        with self.lock:
            self.running[threading.get_ident()] = running
        try:
            yield running
        finally:
            with self.lock:  # not while ``check`` runs: its report would outlive the tile
                del self.running[threading.get_ident()]
                pipe = self.redis.pipeline(transaction=False)
                pipe.hincrbyfloat(keys.job(running.job_id), "worked_s", running.elapsed_s)
                pipe.hdel(keys.job(running.job_id), self.field)
                if running.reason is not None:
                    pipe.hset(keys.job(running.job_id), mapping={"stop_noticed_step": running.noticed,
                                                                  "stopped_step": running.done})
                pipe.execute()

    def start(self, stop: threading.Event) -> threading.Thread:
        thread = threading.Thread(target=self._loop, args=(stop,), name="ntk-watch", daemon=True)
        thread.start()
        return thread

    def _loop(self, stop: threading.Event) -> None:
        last_report = last_touch = 0.0
        while not stop.wait(self.poll_s):
            now = time.monotonic()
            try:
                with self.lock:
                    if not self.running:
                        continue
                    self.check(list(self.running.values()), report=now - last_report >= self.report_s,
                               touch=now - last_touch >= self.touch_s)
            except redis.RedisError as e:  # the tile goes on; its own writes will say if Redis is gone
                log.warning("watch: %s", e)
                continue
            last_report = now if now - last_report >= self.report_s else last_report
            last_touch = now if now - last_touch >= self.touch_s else last_touch

    def check(self, running: list[Running], report: bool = True, touch: bool = False) -> None:
        """One round: flag the tiles whose jobs no longer run; report parts done; with ``touch``,
        tell the stall watchdog that these jobs progress (a tile may take NTK_TILE_TARGET_S and more)."""
        pipe = self.redis.pipeline(transaction=False)
        for r in running:
            pipe.hget(keys.job(r.job_id), "status")
        statuses = pipe.execute()
        pipe = self.redis.pipeline(transaction=False)
        for r, status in zip(running, statuses):
            if status != b"running" and r.reason is None:
                r.stop("cancelled")
            elif report and r.fraction != r.reported:
                pipe.hset(keys.job(r.job_id), self.field, repr(r.fraction))
                r.reported = r.fraction
            if touch and status == b"running":
                pipe.zadd(keys.ACTIVE_JOBS, {r.job_id: time.time()}, xx=True)
        pipe.execute()
