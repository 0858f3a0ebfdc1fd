"""ntk.worker.tasks and its middleware, in-process: the actors on Dramatiq's StubBroker with the
workers' middleware, against a real Redis (or Valkey) for the job's state. What is asserted is
the job's state and result, never time."""

from __future__ import annotations

import hashlib
import json
import uuid

import dramatiq
import numpy as np
import pytest
import redis
from dramatiq.brokers.stub import StubBroker

from ntk.core import keys
from ntk.core.broker import PLAN, QUEUE, enqueue
from ntk.core.codec import pack_array
from ntk.core.job import JOBS, ArrayRef, KernelJob, PredictJob, request_key
from ntk.core.jobstate import END, SUBMIT, Jobs, end_call, submit_call
from ntk.core.settings import Settings
from ntk.worker.context import build_context
from ntk.worker.middleware import worker_middleware
from ntk.worker.plan import blocks
from ntk.worker.tasks import Tasks, declare_actors

W_STD, B_STD = 1.3, 0.2
DENSE = {"layers": [{"type": "Dense", "out_dim": 1, "w_std": W_STD, "b_std": B_STD}]}


@pytest.fixture
def context(redis_url):
    """A worker's context on a StubBroker; tiles of 2 × 2 points, so that a job of a few points
    has several tiles to plan, compute and join."""
    yield from stub_context(redis_url)


def stub_context(redis_url, **settings):
    settings = Settings(redis_url=redis_url, tile=2, device="cpu", **settings)
    client = redis.Redis.from_url(redis_url)
    broker = StubBroker(middleware=worker_middleware(settings, Jobs(client, settings.job_ttl_s)))
    broker.emit_after("process_boot")
    context = build_context(settings, broker)
    declare_actors(Tasks(context))
    yield context
    broker.close()


def submit(context, architecture: dict, x: np.ndarray, tenant: str = "default", **planned: str) -> str:
    """A kernels job of the ``tenant`` on inline points, created as the API creates it
    (jobstate.SUBMIT), with the ``planned`` fields of its estimate (ntk.core.estimate)."""
    data = pack_array(x)
    digest = hashlib.sha256(data).hexdigest()
    request = KernelJob(tenant=tenant, cache_scope=tenant, architecture=architecture, dtype="float64",
                        x1=ArrayRef(digest=digest, shape=list(x.shape)), get=["nngp", "ntk"])
    job_id = uuid.uuid4().hex
    script_keys, args = submit_call(job_id, request, request_key(request), "test", {digest: data}, 16, planned)
    context.store.redis.register_script(SUBMIT)(keys=script_keys, args=args)
    return job_id


def run(context, *job_ids: str, threads: int = 8) -> dict:
    """Queue the jobs' plans and work the queue until it is empty; the (last) job as it is then."""
    for job_id in job_ids:
        enqueue(context.broker, PLAN, job_id)
    worker = dramatiq.Worker(context.broker, worker_timeout=10, worker_threads=threads)
    worker.start()
    try:
        context.broker.join(QUEUE, fail_fast=False)
        worker.join()
    finally:
        worker.stop()
    return context.jobs.get(job_ids[-1])


def test_a_job_of_several_tiles_is_planned_computed_and_joined(context):
    x = np.random.default_rng(0).standard_normal((5, 3))
    job_id = submit(context, DENSE, x)
    job = run(context, job_id)
    assert job["status"] == "succeeded", job.get("error")
    assert int(job["total"]) == 6  # 5 points in blocks of 2: 3 row blocks, their upper triangle
    result = context.store.get(keys.job_result(job_id))
    # one Dense layer (NTK parameterization): K = Θ = w² x·x'/d + b² (Jacot et al. 2018, eq. 3)
    expected = W_STD**2 * x @ x.T / x.shape[1] + B_STD**2
    np.testing.assert_allclose(result["nngp"], expected, rtol=1e-12)
    np.testing.assert_allclose(result["ntk"], expected, rtol=1e-12)
    assert json.loads(job["answer"])["shape"] == [5, 5]


def test_the_tasks_of_a_cancelled_job_are_skipped(context):
    x = np.ones((5, 3))
    job_id = submit(context, DENSE, x)
    context.jobs.start(job_id)
    job = context.jobs.get(job_id)
    script_keys, args = end_call(job_id, job["request_key"], "cancelled", 60)
    context.store.redis.register_script(END)(keys=script_keys, args=args)
    job = run(context, job_id)
    assert job["status"] == "cancelled" and "error" not in job and "computed" not in job


def test_an_architecture_the_points_do_not_fit_fails_its_job_with_422(context):
    conv = {"layers": [{"type": "Conv", "out_chan": 1, "filter_shape": [3, 3]}]}
    job = run(context, submit(context, conv, np.ones((3, 4))))
    error = json.loads(job["error"])
    assert job["status"] == "failed" and (error["status"], error["title"]) == (422, "Invalid architecture")


def test_a_block_is_named_by_what_it_computes_not_by_which_kernels_were_asked():
    def ref(digest: str, n: int) -> ArrayRef:
        return ArrayRef(digest=digest, shape=[n, 2])

    predict = PredictJob(tenant="default", cache_scope="default", architecture=DENSE, dtype="float64", x_train=ref("a", 4),
                         y_train=ref("y", 4), x_test=ref("b", 3))
    need = blocks(predict)
    assert list(need) == ["train_train", "test_train", "test_test"]
    assert need["test_train"].shape == (3, 4) and need["train_train"].x2 is None
    kernels = KernelJob(tenant="default", cache_scope="default", architecture=DENSE, dtype="float64", x1=ref("a", 4), x2=ref("a", 4),
                        get=["ntk"])
    assert blocks(kernels)["kernel"].id == blocks(kernels.model_copy(update={"get": ["nngp"]}))["kernel"].id
    assert blocks(kernels)["kernel"].id == need["train_train"].id  # x2 = x1 is K(x1, x1): the same tiles


def test_a_job_past_its_deadline_stops_and_fails_with_504(context):
    job = run(context, submit(context, DENSE, np.ones((5, 3)), deadline_s="0"))
    error = json.loads(job["error"])
    assert job["status"] == "failed" and (error["status"], error["title"]) == (504, "Deadline exceeded")
    assert error["setting"] == "NTK_MAX_JOB_SECONDS" and error["value"] >= error["limit"] == 0
    assert (job["stop_noticed_step"], job["stopped_step"]) == ("0", "0")  # stopped before its first layer
    assert "computed" not in job


def test_batch_jobs_take_turns_a_tile_at_a_time(redis_url):
    """One job's many tiles do not hold up another's few: with one tile of their tenant in flight,
    the worker (one thread: the queue's order) alternates between them."""
    for context in stub_context(redis_url, tiles_in_flight=1):
        order = []
        ensure_tile = context_tasks(context).ensure_tile

        def recording(job, *args):
            order.append(job["id"])
            return ensure_tile(job, *args)

        context_tasks(context).ensure_tile = recording
        big = submit(context, DENSE, np.arange(15.0).reshape(5, 3))   # 3 runs of rows: 6 upper tiles
        small = submit(context, DENSE, np.arange(9.0).reshape(3, 3))  # 2 runs: 3 tiles
        assert run(context, big, small, threads=1)["status"] == "succeeded"
        assert context.jobs.get(big)["status"] == "succeeded"
        assert order[:6] == [big, small] * 3 and order[6:] == [big] * 3


def recorded_order(context, on_tile=lambda job_id, order: None) -> list[str]:
    """The ids of the jobs whose tiles the context's worker computes, in order; ``on_tile`` is
    called after each tile."""
    order = []
    ensure_tile = context_tasks(context).ensure_tile

    def recording(job, *args):
        values = ensure_tile(job, *args)
        order.append(job["id"])
        on_tile(job["id"], order)
        return values

    context_tasks(context).ensure_tile = recording
    return order


def cancel(context, job_id: str) -> None:
    job = context.jobs.get(job_id)
    script_keys, args = end_call(job_id, job["request_key"], "cancelled", 60)
    context.store.redis.register_script(END)(keys=script_keys, args=args)


def test_tenants_take_turns_however_many_jobs_each_has(redis_url):
    """A tenant with three jobs and one with one share the worker tile for tile (one tile of each
    tenant in flight), not three to one; the three jobs take turns within their tenant's share."""
    a, b = f"a-{uuid.uuid4().hex}", f"b-{uuid.uuid4().hex}"
    for context in stub_context(redis_url, tiles_in_flight=1):
        order = recorded_order(context)
        a_jobs = [submit(context, DENSE, np.arange(15.0).reshape(5, 3) + i, tenant=a) for i in range(3)]  # 6 tiles each
        b_job = submit(context, DENSE, np.arange(9.0).reshape(3, 3), tenant=b)                           # 3 tiles
        assert run(context, *a_jobs, b_job, threads=1)["status"] == "succeeded"
        assert all(context.jobs.get(j)["status"] == "succeeded" for j in a_jobs)
        tenants = ["b" if j == b_job else "a" for j in order]
        assert tenants == ["a", "b"] * 3 + ["a"] * 15
        a_order = [j for j in order if j != b_job]
        assert all(set(a_order[i:i + 3]) == set(a_jobs) for i in range(0, 18, 3))  # a round each, in turn
        assert not context.store.redis.exists(keys.tenant_turns(a), keys.tenant_tiles_in_flight(a),
                                              keys.tenant_turns(b), keys.tenant_tiles_in_flight(b))


def test_a_cancelled_job_leaves_its_tenants_turns_to_its_other_jobs(redis_url):
    """A's first job is cancelled while its tile waits in the queue: the skipped tile's turn passes
    to A's other job, the cancelled job leaves the rotation, and B keeps its turns."""
    a, b = f"a-{uuid.uuid4().hex}", f"b-{uuid.uuid4().hex}"
    for context in stub_context(redis_url, tiles_in_flight=1):
        x = np.arange(15.0).reshape(5, 3)
        cancelled, kept = submit(context, DENSE, x, tenant=a), submit(context, DENSE, x + 1, tenant=a)
        b_job = submit(context, DENSE, np.arange(9.0).reshape(3, 3), tenant=b)

        def cancel_during_bs_second_tile(job_id, order):
            if order.count(b_job) == 2:  # the queue holds the cancelled job's second tile
                cancel(context, cancelled)

        order = recorded_order(context, cancel_during_bs_second_tile)
        assert run(context, cancelled, kept, b_job, threads=1)["status"] == "succeeded"
        assert context.jobs.get(kept)["status"] == "succeeded"
        assert context.jobs.get(cancelled)["status"] == "cancelled"
        # the skipped tile's turn goes to the back of the queue, behind B's third tile
        assert order == [cancelled, b_job, kept, b_job, b_job] + [kept] * 5
        assert not context.store.redis.exists(keys.tenant_turns(a), keys.tenant_tiles_in_flight(a))


def test_a_failed_job_leaves_its_tenants_turns_to_its_other_jobs(redis_url):
    """A's first job fails at its first tile (past its deadline): the tile's turn passes to A's
    other job, which would otherwise wait for the watchdog."""
    a = f"a-{uuid.uuid4().hex}"
    for context in stub_context(redis_url, tiles_in_flight=1):
        x = np.arange(15.0).reshape(5, 3)
        failed, kept = submit(context, DENSE, x, tenant=a, deadline_s="0"), submit(context, DENSE, x + 1, tenant=a)
        assert run(context, failed, kept, threads=1)["status"] == "succeeded"
        assert context.jobs.get(failed)["status"] == "failed"
        assert not context.store.redis.exists(keys.tenant_turns(a), keys.tenant_tiles_in_flight(a))


def context_tasks(context) -> Tasks:
    """The Tasks whose steps the context's broker runs (declare_actors bound them)."""
    return context.broker.get_actor(PLAN).fn.__self__


class Enqueued(dramatiq.Middleware):
    """The actor names of the messages enqueued, in order."""

    def __init__(self):
        self.actors: list[str] = []

    def after_enqueue(self, broker, message, delay):
        self.actors.append(message.actor_name)


FAST = {"estimate_s": "0.001", "deadline_s": "60", "tile": "2048", "lane": "batch"}


def test_a_cheap_job_of_one_tile_is_planned_computed_and_answered_by_its_plan_task_alone(context):
    enqueued = Enqueued()
    context.broker.add_middleware(enqueued)
    x = np.random.default_rng(1).standard_normal((5, 3))
    first = run(context, submit(context, DENSE, x, **FAST))
    assert first["status"] == "succeeded", first.get("error")
    assert enqueued.actors == [PLAN]  # no tile, no join: one task did it all
    assert (first["total"], first["computed"]) == ("1", "1")
    assert context.store.redis.scard(keys.job_tiles_done(first["id"])) == 1
    expected = W_STD**2 * x @ x.T / x.shape[1] + B_STD**2
    result = context.store.get(keys.job_result(first["id"]))
    np.testing.assert_allclose(result["ntk"], expected, rtol=1e-12)
    assert json.loads(first["answer"]) == {"id": blocks(JOBS.validate_json(first["request"]))["kernel"].id,
                                           "shape": [5, 5], "cached": False}
    # the same points again (another job: its request differs in nothing but the id): from the tile cache
    hits = int(context.store.redis.hget(keys.STATS, "cache_hits") or 0)
    context.store.redis.delete(keys.answer(first["request_key"]))
    again = run(context, submit(context, DENSE, x, **FAST))
    assert again["status"] == "succeeded" and json.loads(again["answer"])["cached"] is True
    assert "computed" not in again and int(context.store.redis.hget(keys.STATS, "cache_hits")) == hits + 1
    np.testing.assert_array_equal(context.store.get(keys.job_result(again["id"]))["ntk"], result["ntk"])


def test_the_fast_path_answers_only_the_kernels_asked_for(context):
    x = np.ones((3, 2))
    job_id = submit(context, DENSE, x, **FAST)
    request = JOBS.validate_json(context.jobs.get(job_id)["request"]).model_copy(update={"get": ["nngp"]})
    context.store.redis.hset(keys.job(job_id), "request", request.model_dump_json())
    job = run(context, job_id)
    assert job["status"] == "succeeded", job.get("error")
    assert set(context.store.get(keys.job_result(job_id))) == {"nngp"}


def test_a_fast_job_past_its_deadline_fails_with_504(context):
    job = run(context, submit(context, DENSE, np.ones((4, 2)), **{**FAST, "deadline_s": "0"}))
    assert job["status"] == "failed" and json.loads(job["error"])["status"] == 504
    assert not context.store.redis.exists(keys.job_result(job["id"]))


def test_a_job_over_the_fast_path_bound_takes_the_three_steps(context):
    enqueued = Enqueued()
    context.broker.add_middleware(enqueued)
    job = run(context, submit(context, DENSE, np.ones((4, 2)), **{**FAST, "estimate_s": "1e9"}))
    assert job["status"] == "succeeded", job.get("error")
    assert [name.removesuffix("_interactive") for name in enqueued.actors] == [PLAN, "compute_tile", "finish_job"]


def submit_predict(context, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, **planned: str) -> str:
    """A prediction job on inline arrays, created as the API creates it, with ``planned`` fields."""
    inline, refs = {}, []
    for a in (x_train, y_train, x_test):
        data = pack_array(a)
        digest = hashlib.sha256(data).hexdigest()
        inline[digest] = data
        refs.append(ArrayRef(digest=digest, shape=list(a.shape), field="y" if a is y_train else "x"))
    request = PredictJob(tenant="default", cache_scope="default", architecture=DENSE, dtype="float64",
                         x_train=refs[0], y_train=refs[1], x_test=refs[2], diag_reg=1e-3)
    job_id = uuid.uuid4().hex
    # a request key of its own: the same prediction twice makes two jobs, not one answered by the other
    script_keys, args = submit_call(job_id, request, request_key(request) + job_id, "test", inline, 16, planned)
    context.store.redis.register_script(SUBMIT)(keys=script_keys, args=args)
    return job_id


def test_a_cheap_prediction_of_one_tile_per_block_is_one_task_and_predicts_as_the_three_steps(context):
    enqueued = Enqueued()
    context.broker.add_middleware(enqueued)
    rng = np.random.default_rng(2)
    x_train, y_train, x_test = rng.standard_normal((4, 3)), rng.standard_normal((4, 1)), rng.standard_normal((3, 3))
    fast = run(context, submit_predict(context, x_train, y_train, x_test, **FAST))
    assert fast["status"] == "succeeded", fast.get("error")
    assert enqueued.actors == [PLAN] and fast["total"] == "3"  # train-train, test-train, test-test
    slow = run(context, submit_predict(context, x_train, y_train, x_test, **{**FAST, "estimate_s": "1e9"}))
    assert slow["status"] == "succeeded", slow.get("error")
    fast_result, slow_result = (context.store.get(keys.job_result(job["id"])) for job in (fast, slow))
    assert set(fast_result) == set(slow_result)
    for name in fast_result:
        np.testing.assert_array_equal(fast_result[name], slow_result[name])
