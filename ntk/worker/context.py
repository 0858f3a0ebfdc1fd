"""What a worker's tasks share, built once when the worker starts (never at import): the settings,
the broker with the workers' middleware, the store, the job transitions, the device and the
engine's memory budget."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass

import dramatiq
import redis
import torch

from ntk.core.broker import build_broker
from ntk.core.jobstate import Jobs
from ntk.core.settings import Settings
from ntk.engine import Budget, resolve_device
from ntk.worker.middleware import worker_middleware
from ntk.worker.store import Store
from ntk.worker.watch import Watch


@dataclass
class Context:
    settings: Settings
    broker: dramatiq.Broker
    store: Store
    jobs: Jobs
    device: torch.device
    budget: Budget
    watch: Watch  # its thread runs in a worker process (ntk.worker.runtime), not in tests on a StubBroker
    name: str  # the worker's id, in keys.WORKERS and keys.CALIBRATIONS


def build_context(settings: Settings, broker: dramatiq.Broker | None = None) -> Context:
    """The context of a worker run with ``settings``; ``broker`` None: the Redis broker the
    settings name, with the workers' middleware (tests pass a StubBroker that has it)."""
    client = redis.Redis.from_url(settings.redis)
    jobs = Jobs(client, settings.job_ttl_s)
    if broker is None:
        broker = build_broker(settings, worker_middleware(settings, jobs))
    store = Store(client, broker, settings.cache_ttl_s, settings.value_chunk_bytes)
    name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    return Context(settings, broker, store, jobs, resolve_device(settings.device),
                   Budget(settings.block_bytes, settings.cache_bytes), Watch(client, name), name)
