"""The Dramatiq actors: plan a job, compute its tiles (fanned out), and join them (assemble/solve).

    plan_job ──► compute_tile × (missing tiles) ──► finish_job
                 (the task completing the set enqueues the join)

Each job runs in its lane (ntk.core.broker: interactive ahead of batch). A tenant's batch jobs
have at most NTK_TILES_IN_FLIGHT tiles queued at a time between them, each tile done queueing the
tenant's next behind everyone else's (``queue_tiles``, ntk.worker.turns), so that tenants take
turns, and a tenant's jobs take turns within its share.

A cheap job (estimated under NTK_FAST_PATH_S) whose every block is one tile takes the fast path:
its plan task computes its tiles and joins them itself (``run_fast``), so that a small request
waits for one queue hand-off rather than three, with its Redis work batched into a few round
trips. Everything else the steps do still holds: the watch (cancel, deadline, progress), the tile
cache, single flight and quotas (decided at submission), retries and FinalFailure (it is a task).

A sweep (many architectures on one dataset, ntk.engine.sweep) is computed whole by its plan task:
its architectures share layers, and the sharing lives in one process. Its progress counts
architectures, and it stops, as a tile does, within a layer of its job's cancellation.

The join verifies that every tile it needs is still in Redis; evicted ones are re-enqueued (and,
should memory be too small to ever hold them all at once, computed by the join itself). It then
reads the tiles one at a time into matrices allocated once (``assembled``): a worker holds a
block's matrix and one tile, never all its tiles next to the matrix, and Redis may evict tiles
the join has read (to make room for the factorization, say).

The steps hold only the job's work: the workers' middleware (ntk.worker.middleware) runs a task
only while its job runs, handing it the job (``current_job``), so a cancelled job's remaining
tasks end at once; the tile in progress stops within about a layer of one block, by the worker's
watch (ntk.worker.watch: cancel, deadline, progress); and the middleware turns what a job's
inputs can cause into the job's problem. ``Tasks`` is built on a worker's context (ntk.worker.context) when the
worker starts; ``declare_actors`` binds its steps to that context's broker.
"""

from __future__ import annotations

import json
import logging
import math
import time
from contextlib import contextmanager

import dramatiq
import redis
import torch
from dramatiq.middleware import Middleware

from ntk.core import keys, table
from ntk.core.broker import FINISH, LANES, PLAN, PRIORITIES, STEPS, TILE, actor_name, enqueue
from ntk.core.job import JOBS, KernelJob, PredictJob, SweepJob
from ntk.engine import KERNELS
from ntk.engine.interrupt import Stopped
from ntk.engine.kernel import place
from ntk.engine.predict import Factorization, factorize, max_learning_rate, method_for, required_kernels
from ntk.engine.sweep import sweep
from ntk.spec.sweep_grid import expand
from ntk.worker import compute
from ntk.worker.compute import Cancelled, DeadlineExceeded
from ntk.worker.context import Context
from ntk.worker.middleware import JOB_ERRORS, current_job
from ntk.worker.plan import Block, blocks
from ntk.worker.store import factorization_arrays, factorization_from_arrays, factorization_key
from ntk.worker.turns import TenantTurns

log = logging.getLogger("ntk.worker")

# How often the join sends evicted tiles back to the queue before computing them itself: under a
# maxmemory too small for all of a job's tiles at once, re-enqueueing alone would loop forever.
REQUEUE_ROUNDS = 2
# A sweep asks Redis whether its job still runs at most this often (the engine asks before every
# layer of every block, thousands of times a second on small inputs).
STOP_CHECK_S = 0.05


def tenant_of(job: dict) -> str:
    """The tenant whose request the job computes (ntk.api.tenants)."""
    return json.loads(job["request"])["tenant"]


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


class Tasks:
    """A job's steps, on one worker's context."""

    def __init__(self, context: Context):
        self.settings, self.broker, self.store = context.settings, context.broker, context.store
        self.jobs, self.device, self.budget = context.jobs, context.device, context.budget
        self.watch = context.watch
        self.turns = TenantTurns(self.store.redis, self.settings.tiles_in_flight)

    def running(self, job_id: str) -> bool:
        """Whether the job's tasks should still run (not cancelled, failed or done)."""
        return self.jobs.get(job_id).get("status") == "running"

    def needed_blocks(self, request: KernelJob | PredictJob) -> list[Block]:
        """The blocks the join will read: a prediction whose train factorization (and max learning
        rate) are cached needs no train-train tiles."""
        need = blocks(request)
        if request.kind == "predict" and self.store.redis.exists(
                self.factorization_cache_key(request, need), keys.max_learning_rate(need["train_train"].id)) == 2:
            del need["train_train"]
        return list(need.values())

    def factorization_cache_key(self, request: PredictJob, need: dict[str, Block]) -> str:
        return keys.factorization(factorization_key(
            need["train_train"].id, request.kernel, diag_reg=request.diag_reg,
            diag_reg_absolute_scale=request.diag_reg_absolute_scale, method=method_for(request.t),
            compute_cov=request.compute_cov, dtype=request.dtype))

    def ensure_tile(self, job: dict, request: KernelJob | PredictJob, block: Block, tile) -> dict:
        """The tile's values, computed and cached unless Redis holds them."""
        key = keys.tile(block.id, tile)
        values = self.store.get(key)
        if values is None:
            values = self.computed_tile(job, request, block, tile)
            self.store.put(key, **values)
            self.store.count("tiles_computed")
            self.store.redis.hincrby(keys.job(job["id"]), "computed", 1)
        return values

    def computed_tile(self, job: dict, request: KernelJob | PredictJob, block: Block, tile) -> dict:
        """The tile's values, computed under the worker's watch (cancel, deadline, progress)."""
        x1 = self.store.array(job["id"], block.x1, request.tenant)
        x2 = None if block.x2 is None else self.store.array(job["id"], block.x2, request.tenant)
        with self.watch.tile(job) as running:
            try:
                return compute.tile_values(request, block, tile, x1, x2, self.device, self.budget,
                                           should_stop=running.should_stop, progress=running.progress)
            except Stopped:
                if running.reason == "deadline":
                    raise DeadlineExceeded(running.worked_s + running.elapsed_s, running.deadline_s) from None
                raise Cancelled() from None

    def plan_job(self, job_id: str) -> None:
        job = current_job.get()
        request = JOBS.validate_json(job["request"])
        if request.kind == "sweep":
            return self.run_sweep(job, request)
        if self.takes_fast_path(job, request):
            return self.run_fast(job, request)
        self.store.redis.hsetnx(keys.job(job_id), "tile", self.settings.tile)
        size = int(self.store.redis.hget(keys.job(job_id), "tile"))
        wanted = [(block, tile) for block in self.needed_blocks(request) for tile in block.tiles(size)]
        tile_keys = [keys.tile(block.id, tile) for block, tile in wanted]
        present = self.store.present(tile_keys)
        self.store.set_total(job_id, len(wanted), [k for k, p in zip(tile_keys, present) if p])
        self.store.count("cache_hits", sum(present))
        self.store.count("cache_misses", len(present) - sum(present))
        self.jobs.touch(job_id)
        missing = [(block, tile) for (block, tile), p in zip(wanted, present) if not p]
        log.info("planned %d tiles of %d x %d, %d of them cached", len(wanted), size, size, len(wanted) - len(missing))
        self.queue_tiles(job, [(block.name, list(tile)) for block, tile in missing])
        if not missing:
            self.store.enqueue_finish(job_id, job.get("lane", "batch"))

    def takes_fast_path(self, job: dict, request: KernelJob | PredictJob) -> bool:
        """Whether the job is cheap (estimated under NTK_FAST_PATH_S) and each of its blocks one
        tile: then its plan task does all of its work (``run_fast``)."""
        if "tile" not in job or float(job.get("estimate_s", math.inf)) > self.settings.fast_path_s:
            return False
        size = int(job["tile"])
        return all(len(block.tiles(size)) == 1 for block in blocks(request).values())

    def run_fast(self, job: dict, request: KernelJob | PredictJob) -> None:
        """Plan, tiles and join in this one task, for a job whose every block is one tile: no
        hand-off between them, and the Redis work of each step batched: one round trip reads the
        tiles (and sets the progress total), one writes the computed tiles, the counters, the
        progress and, for kernels, the result; then the job ends (jobstate.END). What the three
        steps guarantee holds: the tile is computed under the watch (cancel, deadline), cached
        tiles are used and new ones cached, and a retried task does the same again."""
        size = int(job["tile"])
        wanted = [(block, block.tiles(size)[0]) for block in self.needed_blocks(request)]
        tile_keys = [keys.tile(block.id, tile) for block, tile in wanted]
        pipe = self.store.redis.pipeline(transaction=False)
        pipe.mget(tile_keys)
        pipe.hset(keys.job(job["id"]), "total", len(wanted))
        stored, _ = pipe.execute()
        missing = [i for i, value in enumerate(stored) if value is None]
        log.info("fast path: %d tiles of %d x %d, %d of them cached", len(wanted), size, size,
                 len(wanted) - len(missing))
        pipe = self.store.redis.pipeline(transaction=False)
        computed = {i: self.computed_tile(job, request, *wanted[i]) for i in missing}
        for i, values in computed.items():
            stored[i] = self.store.value(**values)
            pipe.set(tile_keys[i], stored[i], ex=self.store.ttl)
        if missing:
            pipe.hincrby(keys.job(job["id"]), "computed", len(missing))
            pipe.hincrby(keys.STATS, "tiles_computed", len(missing))
            pipe.hincrby(keys.STATS, "cache_misses", len(missing))
        if len(missing) < len(wanted):
            pipe.hincrby(keys.STATS, "cache_hits", len(wanted) - len(missing))
        pipe.sadd(keys.job_tiles_done(job["id"]), *tile_keys)
        if request.kind == "predict":
            pipe.execute()
            return self.finish_predict(job, request)
        (block, tile), = wanted
        self.succeed(job, self.result_of_tile(job, request, block, tile, stored[0], computed.get(0)),
                     {"id": block.id, "shape": list(block.shape)}, pipe)

    def result_of_tile(self, job: dict, request: KernelJob, block: Block, tile, value: bytes,
                       values: dict | None) -> bytes:
        """The result of a kernels job whose block is one tile, stored as ``value`` (its arrays
        ``values`` when this task computed them): that value itself when every kernel the tile
        holds was asked for (a manifest then shares the tile's chunks, as ``answered_by_its_tile``
        does), else the kernels asked for."""
        if set(request.get) == set(KERNELS):
            return value
        key = keys.tile(block.id, tile)
        values = values or self.store.decoded(key, value)
        if values is None:  # a chunk of the cached tile was evicted since it was read
            values = self.computed_tile(job, request, block, tile)
            self.store.put(key, **values)
        kept = {name: a for name, a in values.items() if name.removesuffix("_stderr") in request.get}
        return self.store.value(self.settings.job_ttl_s, **kept)

    def queue_tiles(self, job: dict, tiles: list[tuple[str, list[int]]]) -> None:
        """Queue the job's ``tiles``: all of them in the interactive lane; in the batch lane they
        wait in the job's pending list, the job in its tenant's rotation, and go to the queue as
        the tenant's turns come (ntk.worker.turns): at most NTK_TILES_IN_FLIGHT of the tenant's
        at once, each tile done queueing the tenant's next (``tile_passed``). Redis' queue being
        first in, first out, that tile goes behind every other tenant's queued tiles: tenants take
        turns a tile at a time, however many jobs each has, and one job's 10,000 tiles do not hold
        up another's 10. Re-planning replaces the pending list."""
        if job.get("lane", "batch") == "interactive":
            for block_name, tile in tiles:
                enqueue(self.broker, TILE, job["id"], block_name, tile, lane="interactive")
        else:
            self.queue_batch(self.turns.join(tenant_of(job), job["id"], tiles))

    def tile_passed(self, job: dict, block_name: str, tile: list[int]) -> None:
        """A batch tile is done, or will never be (its job ended): its turn passes to the tenant's next job."""
        if job.get("lane", "batch") == "batch":
            self.queue_batch(self.turns.passed(tenant_of(job), job["id"], block_name, tile))

    def queue_batch(self, taken: list[tuple[str, str, list[int]]]) -> None:
        for job_id, block_name, tile in taken:
            enqueue(self.broker, TILE, job_id, block_name, tile, lane="batch")

    def run_sweep(self, job: dict, request: SweepJob) -> None:
        """Every architecture's row, in one task (ntk.engine.sweep); progress: architectures done.
        The request was expanded and checked by the API; it is expanded again here, under the
        same limit, from the same arguments."""
        points = expand(**request.expand_arguments(), max_architectures=self.settings.max_sweep_architectures)
        def read(ref):
            return None if ref is None else self.store.array(job["id"], ref, request.tenant)

        self.store.set_total(job["id"], len(points), [])
        self.jobs.touch(job["id"])
        try:
            rows = sweep(points, read(request.x_train), read(request.y_train), read(request.x_val),
                         read(request.y_val), diag_reg=request.diag_reg, dtype=compute.torch_dtype(request.dtype),
                         device=self.device, budget=self.budget, max_bytes=self.settings.sweep_bytes,
                         should_stop=self.stop_check(job["id"]), progress=self.sweep_progress(job["id"]))
        except Stopped:  # the job ended meanwhile (cancelled): nothing left to report
            return
        self.succeed(job, table.as_arrays(rows), {})

    def stop_check(self, job_id: str):
        """``should_stop`` for the engine: whether the job stopped running, asked of Redis at most
        every STOP_CHECK_S. Each asking is also a sign of life for the watchdog: a sweep's rows
        (its progress) come only once the kernels of all its architectures are computed, which
        may take longer than NTK_JOB_STALL_S."""
        asked = [-math.inf, False]  # when, and the answer

        def should_stop() -> bool:
            now = time.monotonic()
            if now - asked[0] >= STOP_CHECK_S:
                pipe = self.store.redis.pipeline(transaction=False)
                pipe.hget(keys.job(job_id), "status")
                pipe.zadd(keys.ACTIVE_JOBS, {job_id: time.time()}, xx=True)
                status, _ = pipe.execute()
                asked[:] = [now, status != b"running"]
            return asked[1]
        return should_stop

    def sweep_progress(self, job_id: str):
        """``progress`` for the engine: the job's done set counts the architectures done (as it
        counts tiles), each a computation for ``cached``."""
        def progress(done: int, total: int) -> None:
            pipe = self.store.redis.pipeline(transaction=False)
            pipe.sadd(keys.job_tiles_done(job_id), done)
            pipe.hincrby(keys.job(job_id), "computed", 1)
            pipe.execute()
        return progress

    def compute_tile(self, job_id: str, block_name: str, tile: list[int]) -> None:
        job = current_job.get()
        request = JOBS.validate_json(job["request"])
        block = blocks(request)[block_name]
        self.ensure_tile(job, request, block, tuple(tile))
        self.tile_passed(job, block_name, tile)
        self.store.tile_done(job_id, keys.tile(block.id, tuple(tile)), job.get("lane", "batch"))
        self.jobs.touch(job_id)

    def requeued_evicted(self, job: dict, need: list[Block]) -> bool:
        """Send the needed tiles Redis no longer holds back to the queue, the first ``REQUEUE_ROUNDS``
        times: True when some went (the join runs again once they are done)."""
        size = int(job["tile"])
        wanted = [(block, tile) for block in need for tile in block.tiles(size)]
        tile_keys = [keys.tile(block.id, tile) for block, tile in wanted]
        missing = [i for i, present in enumerate(self.store.present(tile_keys)) if not present]
        if not missing or int(job.get("requeues", 0)) >= REQUEUE_ROUNDS:
            return False
        log.info("job %s: %d evicted tiles go back to the queue", job["id"], len(missing))
        pipe = self.store.redis.pipeline()
        pipe.hincrby(keys.job(job["id"]), "requeues", 1)
        pipe.hset(keys.job(job["id"]), "total", len(wanted))
        pipe.srem(keys.job_tiles_done(job["id"]), *[tile_keys[i] for i in missing])
        pipe.hdel(keys.job(job["id"]), "finish_enqueued")
        pipe.execute()
        self.queue_tiles(job, [(wanted[i][0].name, list(wanted[i][1])) for i in missing])
        return True

    def assembled(self, job: dict, request: KernelJob | PredictJob, block: Block, keep, dtype: torch.dtype | None = None) -> dict | None:
        """The block's matrices whose names ``keep(name)`` accepts (of ``dtype``; None: the tiles'),
        allocated once and filled tile by tile as Redis hands the tiles over; a tile evicted since
        ``requeued_evicted`` looked is computed here. None when the job stopped meanwhile."""
        n1, n2 = block.shape
        out: dict[str, torch.Tensor] = {}
        for tile in block.tiles(int(job["tile"])):
            values = self.store.get(keys.tile(block.id, tile))
            if values is None:
                if not self.running(job["id"]):
                    return None
                values = self.ensure_tile(job, request, block, tile)
            if not out:
                out = {name: torch.empty((n1, n2), dtype=dtype or compute.torch_dtype(str(a.dtype)), device=self.device)
                       for name, a in values.items() if keep(name)}
            place(out, tile, {name: torch.from_numpy(values[name]) for name in out}, symmetric=block.x2 is None)
        return out

    def finish_job(self, job_id: str) -> None:
        job = current_job.get()
        self.jobs.touch(job_id)
        request = JOBS.validate_json(job["request"])
        finish = self.finish_kernels if request.kind == "kernels" else self.finish_predict
        finish(job, request)

    def finish_kernels(self, job: dict, request: KernelJob) -> None:
        block = blocks(request)["kernel"]
        answer = {"id": block.id, "shape": list(block.shape)}
        if self.answered_by_its_tile(job, request, block):
            return self.succeed(job, None, answer)
        if self.requeued_evicted(job, [block]):
            return
        matrices = self.assembled(job, request, block, keep=lambda name: name.removesuffix("_stderr") in request.get)
        if matrices is not None:
            self.succeed(job, {name: matrix.cpu().numpy() for name, matrix in matrices.items()}, answer)

    def answered_by_its_tile(self, job: dict, request: KernelJob, block: Block) -> bool:
        """A block of one tile, asked for every kernel its tile holds, is its own answer: Redis copies
        the tile to the result, rather than 2·N² numbers going through this worker twice (for 2048
        points, 67 MB: 0.4 s of a 0.8 s job). False when the tile was evicted: the usual join then."""
        (tile, *more) = block.tiles(int(job["tile"]))
        if more or set(request.get) != set(KERNELS):
            return False
        try:
            return bool(self.store.redis.copy(keys.tile(block.id, tile), keys.job_result(job["id"]), replace=True))
        except redis.ResponseError:  # a Redis before 6.2 has no COPY (or is out of memory: the join says so)
            return False

    def finish_predict(self, job: dict, request: PredictJob) -> None:
        """The prediction from the cached factorization of the train kernel, or from one made here
        (and cached). Every matrix is float64 whatever the request's dtype (``factorize_train``)."""
        need = blocks(request)
        fact_key = self.factorization_cache_key(request, need)
        lr_key = keys.max_learning_rate(need["train_train"].id)
        cached = self.store.redis.exists(fact_key, lr_key) == 2
        read = [need["test_train"]] + ([need["test_test"]] if "test_test" in need else [])
        if self.requeued_evicted(job, read + ([] if cached else [need["train_train"]])):
            return
        tiles_s, phases = time.time() - float(job["started_at"]), Phases()
        cached_lr = self.store.redis.get(lr_key) if cached else None
        with phases("read factorization"):
            arrays = self.store.get(fact_key) if cached_lr is not None else None
        if arrays is not None:
            fact = factorization_from_arrays(arrays, device=self.device)
            lr_per_target = float(cached_lr)
        else:
            if cached and self.requeued_evicted(job, [need["train_train"]]):  # evicted since (a chunk of) it
                return
            made = self.factorize_train(job, request, need["train_train"], phases)
            if made is None:
                return
            fact, lr_per_target = made
            with phases("store factorization"):
                self.store.put(fact_key, **factorization_arrays(fact))
                self.store.redis.set(lr_key, repr(lr_per_target), ex=self.settings.cache_ttl_s)
        y, labels = compute.targets(request, self.store.array(job["id"], request.y_train, request.tenant))
        kernels = required_kernels(request.kernel, request.compute_cov)
        with phases("read test kernels"):
            test_train = self.assembled(job, request, need["test_train"], keep=kernels["test_train"].__contains__,
                                        dtype=torch.float64)
            test_test = (self.assembled(job, request, need["test_test"], keep=kernels["test_test"].__contains__,
                                        dtype=torch.float64) if "test_test" in need else None)
        if test_train is None or ("test_test" in need and test_test is None):
            return
        with phases("solve"):
            arrays = compute.prediction(request, fact, y, test_train, test_test)
        log.info("joined %d training points, %.2f s after the job started: %s", fact.n, tiles_s, phases)
        self.succeed(job, arrays, {"t": request.t, "max_learning_rate": lr_per_target * y.size, "labels": labels})

    def factorize_train(self, job: dict, request: PredictJob, block: Block,
                        phases: Phases) -> tuple[Factorization, float] | None:
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
        method = method_for(request.t)
        names = set(required_kernels(request.kernel, request.compute_cov)["train_train"]) | {"ntk"}
        with phases("read train kernel"):
            train = self.assembled(job, request, block, keep=names.__contains__, dtype=torch.float64)
        if train is None:
            return None
        with phases("max learning rate"):
            if method == "cholesky":  # the factorization overwrites the matrix: its largest eigenvalue first
                lr_per_target = max_learning_rate(train["ntk"], 1)
        with phases("factorize"):
            fact = factorize(train, request.kernel, diag_reg=request.diag_reg,
                             diag_reg_absolute_scale=request.diag_reg_absolute_scale, method=method,
                             dtype=torch.float64, device=self.device, overwrite=True)
        if method != "cholesky":
            lr_per_target = max_learning_rate(train["ntk"], 1, factorization=fact)
        return fact, lr_per_target

    def succeed(self, job: dict, result: dict | bytes | None, answer: dict, pipe=None) -> None:
        """Store the result (its arrays, or the value its key holds; None: already in place), in
        one round trip with the caller's writes in ``pipe``, then end the job: whoever sees
        "succeeded" finds the result. The answer is ``cached`` when no tile of the job was
        computed, by this task or an earlier delivery of it."""
        pipe = pipe or self.store.redis.pipeline(transaction=False)
        if result is not None:
            value = result if isinstance(result, bytes) else self.store.value(self.settings.job_ttl_s, **result)
            pipe.set(keys.job_result(job["id"]), value, ex=self.settings.job_ttl_s)
        pipe.hget(keys.job(job["id"]), "computed")
        *_, computed = pipe.execute()
        if self.jobs.end(job, "succeeded", answer={**answer, "cached": int(computed or 0) == 0}):
            log.info("succeeded")


def declare_actors(tasks: Tasks) -> None:
    """The three actors of each lane, on the context's broker (ntk.core.broker: lanes and their
    priorities); the errors a job's inputs cause are expected (``throws``: the middleware fails the
    job with their problem, Retries does not retry them)."""
    for lane, queue in LANES.items():
        for name, step in ((PLAN, tasks.plan_job), (TILE, tasks.compute_tile), (FINISH, tasks.finish_job)):
            dramatiq.actor(step, broker=tasks.broker, actor_name=actor_name(name, lane), queue_name=queue,
                           priority=PRIORITIES[lane, name], throws=JOB_ERRORS)
    tasks.broker.add_middleware(PassTurnOfLostTiles(tasks), before=type(tasks.broker.middleware[0]))


class PassTurnOfLostTiles(Middleware):
    """A tile task skipped (its job ended: cancelled, failed, done) or failed for good never
    reaches ``tile_passed``; its turn passes here, or its tenant's other jobs would wait for the
    watchdog. First of the middleware, its "after" hooks run last: once Retries has judged the
    task failed for good, and the job's failure has taken its other tiles out of the turns."""

    def __init__(self, tasks: Tasks):
        self.tasks = tasks

    def after_skip_message(self, broker, message):
        if STEPS.get(message.actor_name) == "tile":
            self.pass_turn(message)

    def after_process_message(self, broker, message, *, result=None, exception=None):
        if exception is not None and message.failed and STEPS.get(message.actor_name) == "tile":
            self.pass_turn(message)

    def pass_turn(self, message) -> None:
        job_id, block_name, tile = message.args
        job = self.tasks.jobs.get(job_id)
        if job:
            self.tasks.tile_passed(job, block_name, tile)
