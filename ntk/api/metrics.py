"""Prometheus metrics: the API's own (requests, latencies) and what the workers count in Redis.

Workers are other processes, so what they produce (tiles computed, cache hits and misses, jobs
ended) is counted in Redis (keys.STATS) and read at scrape time, with the queue depth and the
number of live workers.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ntk.core import keys
from ntk.core.broker import BROKER_NAMESPACE, LANES
from ntk.core.jobstate import ACTIVE, TERMINAL


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("ntk_http_requests", "HTTP requests answered", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("ntk_http_request_duration_seconds", "time to answer an HTTP request",
                                 ["method", "route"], registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300))
        self.answer_cache_hits = Counter("ntk_answer_cache_hits", "requests answered from a stored result",
                                         registry=self.registry)
        self.shared: dict = {}
        self.registry.register(self)

    async def scrape(self, redis, live_worker_s: float) -> bytes:
        pipe = redis.pipeline(transaction=False)
        pipe.hgetall(keys.STATS)
        for queue in LANES.values():
            pipe.llen(f"{BROKER_NAMESPACE}:{queue}")
        pipe.zrange(keys.ACTIVE_JOBS, 0, -1)
        pipe.zcount(keys.WORKERS, time.time() - live_worker_s, "+inf")
        stats, *depths, active, workers = await pipe.execute()
        depth = sum(depths)
        pipe = redis.pipeline(transaction=False)
        for job_id in active:
            pipe.hget(keys.job(job_id.decode()), "status")
        states = [status.decode() for status in await pipe.execute() if status is not None]
        self.shared = {"stats": {k.decode(): int(v) for k, v in stats.items()}, "queue_depth": depth,
                       "active": {state: states.count(state) for state in ACTIVE}, "workers": workers}
        return generate_latest(self.registry)

    def collect(self):
        """The Redis side, as read by the last scrape."""
        if not self.shared:
            return
        stats = self.shared["stats"]
        yield GaugeMetricFamily("ntk_queue_depth", "tasks waiting in the queues (both lanes)", value=self.shared["queue_depth"])
        yield GaugeMetricFamily("ntk_workers", "live workers", value=self.shared["workers"])
        active = GaugeMetricFamily("ntk_jobs_active", "jobs not yet ended, by state", labels=["state"])
        for state, count in self.shared["active"].items():
            active.add_metric([state], count)
        yield active
        finished = CounterMetricFamily("ntk_jobs_finished", "jobs ended, by final state", labels=["state"])
        for state in TERMINAL:
            finished.add_metric([state], stats.get(f"jobs_{state}", 0))
        yield finished
        yield CounterMetricFamily("ntk_tiles_computed", "kernel tiles computed by workers",
                                  value=stats.get("tiles_computed", 0))
        yield CounterMetricFamily("ntk_cache_hits", "tiles a job found in the cache", value=stats.get("cache_hits", 0))
        yield CounterMetricFamily("ntk_cache_misses", "tiles a job had to compute", value=stats.get("cache_misses", 0))


class Instrument:
    """ASGI middleware counting requests and their latency by route template (not raw path)."""

    def __init__(self, app, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = [500]

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            path = route.path if route is not None else "unmatched"
            self.metrics.requests.labels(scope["method"], path, str(status[0])).inc()
            self.metrics.latency.labels(scope["method"], path).observe(time.perf_counter() - start)
