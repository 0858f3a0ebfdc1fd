"""A worker process: one Dramatiq worker thread, prefetch 1, a warm and calibrated device, a
heartbeat, the watch over its running tiles, a watchdog.

One thread per process (per GPU) because the engine saturates its device; prefetch 1 per queue so
a busy worker never sits on more than one task of each lane that another worker could take, and a
SIGKILLed one loses only the task it was running (Dramatiq re-delivers it once the worker's broker
heartbeat times out).
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time

import dramatiq
import redis
import torch

from ntk.core import logs
from ntk.core import keys
from ntk.core.broker import PLAN, enqueue, waiting
from ntk.core.estimate import report
from ntk.core.settings import machine_memory_bytes
from ntk.engine import kernel_fn
from ntk.engine.calibrate import calibrate
from ntk.core.problems import problem
from ntk.core.settings import Settings
from ntk.worker.allocator import keep_freed_memory
from ntk.worker.context import build_context
from ntk.worker.tasks import Tasks, declare_actors, tenant_of
from ntk.worker.turns import waits_its_turn

log = logging.getLogger("ntk.worker")

WATCHDOG_REPLANS = 3
RECALIBRATE_S = 600.0


def warm_up(device: torch.device) -> None:
    """Create the CUDA context and load kernels now, not in the first user's request."""
    kernel_fn({"layers": [{"type": "Dense", "out_dim": 1}, {"type": "Relu"}, {"type": "Dense", "out_dim": 1}]},
              torch.ones(2, 2), device=device)


def device_memory_bytes(device: torch.device) -> int:
    """What one tile may use on this worker: the GPU's memory, or the machine's (its container's)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return machine_memory_bytes()


def calibrated(client: redis.Redis, context, fastest: float = math.inf) -> float:
    """Measure seconds per unit of work on the worker's device (ntk.engine.calibrate, ~1 s, in
    float64) and report the fastest measure so far (ntk.core.estimate.report: what the API prices
    jobs with); a loaded machine only ever slows a measure down. Returns that fastest."""
    fastest = min(fastest, calibrate(context.device, torch.float64))
    try:
        client.hset(keys.CALIBRATIONS, context.name,
                    report(context.device.type, fastest, device_memory_bytes(context.device)))
    except redis.RedisError as e:
        log.warning("could not store the calibration: %s", e)
    log.info("calibrated %s: %.3g ns per unit of work", context.device, fastest * 1e9)
    return fastest


def recalibrate(client: redis.Redis, context, fastest: float, stop: threading.Event) -> None:
    """Every RECALIBRATE_S, while no tile runs, measure again (``calibrated``)."""
    while not stop.wait(RECALIBRATE_S):
        if not context.watch.running:
            fastest = calibrated(client, context, fastest)


def beat(client: redis.Redis, worker_id: str, every_s: float, stop: threading.Event) -> None:
    """Report this worker alive in a zset (no TTL, so volatile-lru never evicts a live worker)."""
    while not stop.wait(every_s):
        try:
            client.zadd(keys.WORKERS, {worker_id: time.time()})
        except redis.RedisError as e:  # Redis is down: /readyz says so; keep beating
            log.warning("heartbeat failed: %s", e)


def watchdog(client: redis.Redis, broker, jobs, stall_s: float, stop: threading.Event) -> None:
    """Re-plan jobs that made no progress for ``stall_s`` and have no task left in the broker (a
    task lost with a Redis that restarted without its AOF, an enqueue that died with its process);
    fail them after a few tries. A job whose tasks are queued behind others' (``waiting``), or
    whose tiles wait for its tenant's turn (ntk.worker.turns), is never stalled, however long it
    waits."""
    while not stop.wait(min(stall_s / 4, 60)):
        try:
            for job_id in client.zrangebyscore(keys.ACTIVE_JOBS, 0, time.time() - stall_s):
                job_id = job_id.decode()
                if not client.set(keys.watchdog_lock(job_id), 1, nx=True, ex=int(stall_s)):
                    continue  # another worker's watchdog has it
                job = jobs.get(job_id)
                if not job:
                    client.zrem(keys.ACTIVE_JOBS, job_id)
                    continue
                if waiting(broker.client, job_id) or waits_its_turn(client, broker.client, job_id, tenant_of(job)):
                    # its tasks wait their turn, or run, or its tenant's do: not stalled
                    jobs.touch(job_id)
                    continue
                replans = client.hincrby(keys.job(job_id), "replans", 1)
                with logs.bound(request_id=job.get("request_id"), job_id=job_id):  # the re-plan's tasks carry both
                    if replans > WATCHDOG_REPLANS:
                        jobs.fail(job, problem(503, "Job stalled", f"no progress for {stall_s:.0f} s, {replans - 1} times"))
                    else:
                        log.warning("stalled; re-planning")
                        jobs.touch(job_id)
                        enqueue(broker, PLAN, job_id, lane=job.get("lane", "batch"))
        except redis.RedisError as e:
            log.warning("watchdog: %s", e)


def run(settings: Settings) -> int:
    """Run one worker until SIGTERM/SIGINT; the task in progress finishes first."""
    keep_freed_memory()
    context = build_context(settings)
    declare_actors(Tasks(context))
    warm_up(context.device)
    client = context.store.redis
    stop = threading.Event()
    fastest = calibrated(client, context)
    worker = dramatiq.Worker(context.broker, worker_threads=1, worker_timeout=settings.worker_poll_ms)
    worker.queue_prefetch = 1  # Dramatiq's default is 2 per thread: one task would wait behind the other
    worker.start()
    worker_id = context.name
    context.watch.start(stop)
    threads = [threading.Thread(target=beat, args=(client, worker_id, settings.worker_beat_s, stop)),
               threading.Thread(target=watchdog, args=(client, context.broker, context.jobs, settings.job_stall_s,
                                                       stop)),
               threading.Thread(target=recalibrate, args=(client, context, fastest, stop))]
    for thread in threads:
        thread.daemon = True
        thread.start()
    client.zadd(keys.WORKERS, {worker_id: time.time()})
    log.info("worker %s ready on %s", worker_id, context.device)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    log.info("worker %s stopping", worker_id)
    worker.stop()
    try:
        client.zrem(keys.WORKERS, worker_id)
        client.hdel(keys.CALIBRATIONS, worker_id)
    except redis.RedisError:
        pass
    return 0
