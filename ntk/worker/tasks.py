"""The Dramatiq actors: plan a job, compute its tiles (fanned out), and join them (assemble/solve).

    plan_job ──► compute_tile × (missing tiles) ──► finish_job
                 (the task completing the set enqueues the join)

The join verifies that every tile it needs is still in Redis; evicted ones are re-enqueued (and,
should memory be too small to ever hold them all at once, computed by the join itself). It then
reads the tiles one at a time into matrices allocated once (``assembled``): a worker holds a
block's matrix and one tile, never all its tiles next to the matrix, and Redis may evict tiles
the join has read (to make room for the factorization, say). Every
task checks its job first, so a cancelled job's remaining tasks end at once: workers stop within
one tile. Importing this module configures the global broker: it is what ``ntk worker`` runs.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import contextmanager

import dramatiq
import redis
import torch

from ntk.core.settings import get_settings
from ntk.worker import compute
from ntk.core import keys
from ntk.worker.broker import FINISH, PLAN, QUEUE, TILE, build_broker, enqueue
from ntk.engine import KERNELS, NonFiniteKernel, SpecError, resolve_device
from ntk.engine.kernel import place
from ntk.engine.predict import (
    Factorization, NotPositiveDefinite, PredictError, factorization_key, factorize, max_learning_rate, method_for,
    required_kernels,
)
from ntk.core.jobstate import Jobs, problem, redis_problem
from ntk.worker.plan import Block, blocks
from ntk.worker.store import MissingInput, Store

log = logging.getLogger("ntk.worker")

settings = get_settings()
broker = build_broker(settings, guard=True)
dramatiq.set_broker(broker)
store = Store(redis.Redis.from_url(settings.redis), broker, settings.cache_ttl_s, settings.value_chunk_bytes)
jobs = Jobs(store.redis, settings.job_ttl_s)
device = resolve_device(settings.device)

# How often the join sends evicted tiles back to the queue before computing them itself: under a
# maxmemory too small for all of a job's tiles at once, re-enqueueing alone would loop forever.
REQUEUE_ROUNDS = 2


@contextmanager
def failing_job(job: dict):
    """Turn what a job's inputs can cause into the job's problem. A Redis that is lost goes to
    Retries, and one that refuses a command (a value over its proto-max-bulk-len, say) to
    broker.FinalFailure, whose problem names the step and the error class but none of Redis's
    words; a Redis out of memory is the job's problem (507), as the API reports it."""
    try:
        yield
    except redis.RedisError as e:
        if not isinstance(e, redis.OutOfMemoryError):
            raise
        jobs.fail(job, redis_problem(e))
    except compute.Cancelled:
        pass
    except SpecError as e:
        jobs.fail(job, problem(422, "Invalid architecture", str(e), errors=e.errors))
    except NonFiniteKernel as e:
        jobs.fail(job, problem(422, "Non-finite kernel", str(e)))
    except NotPositiveDefinite as e:
        jobs.fail(job, problem(422, "Not positive definite", str(e)))
    except PredictError as e:
        jobs.fail(job, problem(422, "Invalid prediction", str(e)))
    except MissingInput as e:
        jobs.fail(job, problem(422, "Input deleted", str(e)))
    except Exception as e:
        log.exception("job %s failed", job["id"])
        jobs.fail(job, problem(500, "Internal error", f"{type(e).__name__}: {e}"))


class Phases:
    """Seconds a join spends in each of its phases, for its log line (bench/predict_scaling.py
    reads them)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def __str__(self) -> str:
        return ", ".join(f"{name} {seconds:.2f} s" for name, seconds in self.seconds.items())


def running_job(job_id: str) -> dict | None:
    """The job, when its tasks should still run (not cancelled, failed or done)."""
    job = jobs.get(job_id)
    return job if job.get("status") == "running" else None


def needed_blocks(request: dict) -> list[Block]:
    """The blocks the join will read: a prediction whose train factorization (and max learning
    rate) are cached needs no train-train tiles."""
    need = blocks(request)
    if request["kind"] == "predict" and store.redis.exists(factorization_cache_key(request, need),
                                                          keys.max_learning_rate(need["train_train"].id)) == 2:
        del need["train_train"]
    return list(need.values())


def factorization_cache_key(request: dict, need: dict[str, Block]) -> str:
    return keys.factorization(factorization_key(
        need["train_train"].id, request["kernel"], diag_reg=request["diag_reg"],
        diag_reg_absolute_scale=request["diag_reg_absolute_scale"], method=method_for(request["t"]),
        compute_cov=request["compute_cov"], dtype=request["dtype"]))


def ensure_tile(job: dict, request: dict, block: Block, tile) -> dict:
    """The tile's values, computed and cached unless Redis holds them."""
    key = keys.tile(block.id, tile)
    values = store.get(key)
    if values is None:
        x1 = store.array(job["id"], block.x1, request["tenant"])
        x2 = None if block.x2 is None else store.array(job["id"], block.x2, request["tenant"])
        values = compute.tile_values(request, block, tile, x1, x2, device,
                                     cancelled=lambda: running_job(job["id"]) is None)
        store.put(key, **values)
        store.count("tiles_computed")
        store.redis.hincrby(keys.job(job["id"]), "computed", 1)
    return values


@dramatiq.actor(actor_name=PLAN, queue_name=QUEUE, priority=0)
def plan_job(job_id: str) -> None:
    if jobs.start(job_id) != "running":
        return
    job = jobs.get(job_id)
    with failing_job(job):
        request = json.loads(job["request"])
        store.redis.hsetnx(keys.job(job_id), "tile", settings.tile)
        size = int(store.redis.hget(keys.job(job_id), "tile"))
        wanted = [(block, tile) for block in needed_blocks(request) for tile in block.tiles(size)]
        tile_keys = [keys.tile(block.id, tile) for block, tile in wanted]
        present = store.present(tile_keys)
        store.set_total(job_id, len(wanted), [k for k, p in zip(tile_keys, present) if p])
        store.count("cache_hits", sum(present))
        store.count("cache_misses", len(present) - sum(present))
        jobs.touch(job_id)
        missing = [(block, tile) for (block, tile), p in zip(wanted, present) if not p]
        log.info("planned %d tiles of %d x %d, %d of them cached", len(wanted), size, size, len(wanted) - len(missing))
        for block, tile in missing:
            enqueue(broker, TILE, job_id, block.name, list(tile))
        if not missing:
            store.enqueue_finish(job_id)


@dramatiq.actor(actor_name=TILE, queue_name=QUEUE, priority=10)
def compute_tile(job_id: str, block_name: str, tile: list[int]) -> None:
    job = running_job(job_id)
    if job is None:
        return
    with failing_job(job):
        request = json.loads(job["request"])
        block = blocks(request)[block_name]
        ensure_tile(job, request, block, tuple(tile))
        store.tile_done(job_id, keys.tile(block.id, tuple(tile)))
        jobs.touch(job_id)


def requeued_evicted(job: dict, need: list[Block]) -> bool:
    """Send the needed tiles Redis no longer holds back to the queue, the first ``REQUEUE_ROUNDS``
    times: True when some went (the join runs again once they are done)."""
    size = int(job["tile"])
    wanted = [(block, tile) for block in need for tile in block.tiles(size)]
    tile_keys = [keys.tile(block.id, tile) for block, tile in wanted]
    missing = [i for i, present in enumerate(store.present(tile_keys)) if not present]
    if not missing or int(job.get("requeues", 0)) >= REQUEUE_ROUNDS:
        return False
    log.info("job %s: %d evicted tiles go back to the queue", job["id"], len(missing))
    pipe = store.redis.pipeline()
    pipe.hincrby(keys.job(job["id"]), "requeues", 1)
    pipe.hset(keys.job(job["id"]), "total", len(wanted))
    pipe.srem(keys.job_tiles_done(job["id"]), *[tile_keys[i] for i in missing])
    pipe.hdel(keys.job(job["id"]), "finish_enqueued")
    pipe.execute()
    for i in missing:
        block, tile = wanted[i]
        enqueue(broker, TILE, job["id"], block.name, list(tile))
    return True


def assembled(job: dict, request: dict, block: Block, keep, dtype: torch.dtype | None = None) -> dict | None:
    """The block's matrices whose names ``keep(name)`` accepts (of ``dtype``; None: the tiles'),
    allocated once and filled tile by tile as Redis hands the tiles over; a tile evicted since
    ``requeued_evicted`` looked is computed here. None when the job stopped meanwhile."""
    n1, n2 = block.shape
    out: dict[str, torch.Tensor] = {}
    for tile in block.tiles(int(job["tile"])):
        values = store.get(keys.tile(block.id, tile))
        if values is None:
            if running_job(job["id"]) is None:
                return None
            values = ensure_tile(job, request, block, tile)
        if not out:
            out = {name: torch.empty((n1, n2), dtype=dtype or compute.torch_dtype(str(a.dtype)), device=device)
                   for name, a in values.items() if keep(name)}
        place(out, tile, {name: torch.from_numpy(values[name]) for name in out}, symmetric=block.x2 is None)
    return out


@dramatiq.actor(actor_name=FINISH, queue_name=QUEUE, priority=0)
def finish_job(job_id: str) -> None:
    job = running_job(job_id)
    if job is None:
        return
    jobs.touch(job_id)
    with failing_job(job):
        request = json.loads(job["request"])
        finish = finish_kernels if request["kind"] == "kernels" else finish_predict
        finish(job, request)


def finish_kernels(job: dict, request: dict) -> None:
    block = blocks(request)["kernel"]
    answer = {"id": block.id, "shape": list(block.shape)}
    if answered_by_its_tile(job, request, block):
        return succeed(job, None, answer)
    if requeued_evicted(job, [block]):
        return
    matrices = assembled(job, request, block, keep=lambda name: name.removesuffix("_stderr") in request["get"])
    if matrices is not None:
        succeed(job, {name: matrix.cpu().numpy() for name, matrix in matrices.items()}, answer)


def answered_by_its_tile(job: dict, request: dict, block: Block) -> bool:
    """A block of one tile, asked for every kernel its tile holds, is its own answer: Redis copies
    the tile to the result, rather than 2·N² numbers going through this worker twice (for 2048
    points, 67 MB: 0.4 s of a 0.8 s job). False when the tile was evicted: the usual join then."""
    (tile, *more) = block.tiles(int(job["tile"]))
    if more or set(request["get"]) != set(KERNELS):
        return False
    try:
        return bool(store.redis.copy(keys.tile(block.id, tile), keys.job_result(job["id"]), replace=True))
    except redis.ResponseError:  # a Redis before 6.2 has no COPY (or is out of memory: the join says so)
        return False


def finish_predict(job: dict, request: dict) -> None:
    """The prediction from the cached factorization of the train kernel, or from one made here
    (and cached). Every matrix is float64 whatever the request's dtype (``factorize_train``)."""
    need = blocks(request)
    fact_key = factorization_cache_key(request, need)
    lr_key = keys.max_learning_rate(need["train_train"].id)
    cached = store.redis.exists(fact_key, lr_key) == 2
    read = [need["test_train"]] + ([need["test_test"]] if "test_test" in need else [])
    if requeued_evicted(job, read + ([] if cached else [need["train_train"]])):
        return
    tiles_s, phases = time.time() - float(job["started_at"]), Phases()
    cached_lr = store.redis.get(lr_key) if cached else None
    with phases("read factorization"):
        arrays = store.get(fact_key) if cached_lr is not None else None
    if arrays is not None:
        fact = Factorization.from_arrays(arrays, device=device)
        lr_per_target = float(cached_lr)
    else:
        if cached and requeued_evicted(job, [need["train_train"]]):  # evicted since (a chunk of) it
            return
        made = factorize_train(job, request, need["train_train"], phases)
        if made is None:
            return
        fact, lr_per_target = made
        with phases("store factorization"):
            store.put(fact_key, **fact.to_arrays())
            store.redis.set(lr_key, repr(lr_per_target), ex=settings.cache_ttl_s)
    y, labels = compute.targets(request, store.array(job["id"], request["y_train"], request["tenant"]))
    kernels = required_kernels(request["kernel"], request["compute_cov"])
    with phases("read test kernels"):
        test_train = assembled(job, request, need["test_train"], keep=kernels["test_train"].__contains__,
                               dtype=torch.float64)
        test_test = (assembled(job, request, need["test_test"], keep=kernels["test_test"].__contains__,
                               dtype=torch.float64) if "test_test" in need else None)
    if test_train is None or ("test_test" in need and test_test is None):
        return
    with phases("solve"):
        arrays = compute.prediction(request, fact, y, test_train, test_test)
    log.info("joined %d training points, %.2f s after the job started: %s", fact.n, tiles_s, phases)
    succeed(job, arrays, {"t": request["t"], "max_learning_rate": lr_per_target * y.size, "labels": labels})


def factorize_train(job: dict, request: dict, block: Block, phases: Phases) -> tuple[Factorization, float] | None:
    """The train kernel's factorization and the max learning rate per target entry (linear in
    y_train.size), from the kernels the mode needs (and the NTK, for the learning rate).

    The matrix is assembled once, in float64, and the Cholesky factor takes its place (predict
    ``factorize(overwrite=True)``): the worker's peak is one N × N matrix (8 N² bytes: 1.15 GB for
    12,000 points), two where the mode needs both kernels. float32 kernels are solved in float64
    too: a float32 Cholesky loses all digits once the kernel's condition number nears 1/ε₃₂ ≈ 10⁷,
    common for NTKs of similar points at a small diag_reg, and iterative refinement would keep the
    float64 matrix next to the float32 factor (1.5× the memory) and still fail there; float64 costs
    2× the float32 flops and nothing in memory that the limit (NTK_MAX_TRAIN_POINTS) does not
    already count on."""
    method = method_for(request["t"])
    names = set(required_kernels(request["kernel"], request["compute_cov"])["train_train"]) | {"ntk"}
    with phases("read train kernel"):
        train = assembled(job, request, block, keep=names.__contains__, dtype=torch.float64)
    if train is None:
        return None
    with phases("max learning rate"):
        if method == "cholesky":  # the factorization overwrites the matrix: its largest eigenvalue first
            lr_per_target = max_learning_rate(train["ntk"], 1)
    with phases("factorize"):
        fact = factorize(train, request["kernel"], diag_reg=request["diag_reg"],
                         diag_reg_absolute_scale=request["diag_reg_absolute_scale"], method=method,
                         dtype=torch.float64, device=device, overwrite=True)
    if method != "cholesky":
        lr_per_target = max_learning_rate(train["ntk"], 1, factorization=fact)
    return fact, lr_per_target


def succeed(job: dict, arrays: dict | None, answer: dict) -> None:
    """Store the answer's arrays (None: already in place), then end the job: whoever sees
    "succeeded" finds the result."""
    if arrays is not None:
        store.put(keys.job_result(job["id"]), ttl=settings.job_ttl_s, **arrays)
    cached = int(store.redis.hget(keys.job(job["id"]), "computed") or 0) == 0
    if jobs.end(job, "succeeded", answer={**answer, "cached": cached}):
        log.info("succeeded")
