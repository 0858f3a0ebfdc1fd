"""Single flight (ntk.core.jobstate.SUBMIT) under the interleavings that made two jobs of one request:
a job ending between a request's look at the answer and its submit, and a submit sent twice
because its first reply was lost. Each runs the scripts themselves against a Valkey of its own."""

from __future__ import annotations

import uuid

import pytest
import redis

from ntk.core import keys
from ntk.core.job import ArrayRef, KernelJob
from ntk.core.jobstate import END, SUBMIT, end_call, submit_call

REQUEST_KEY = "a" * 64
INLINE = {"d" * 64: b"npy bytes of x1"}
TENANT = "t" * 64
JOB = KernelJob(tenant=TENANT, cache_scope=TENANT, architecture={"layers": [{"type": "Relu"}]}, dtype="float64",
                x1=ArrayRef(digest="d" * 64, shape=[1, 1]), get=["ntk"])


@pytest.fixture(scope="module")
def r(start_valkey):
    with start_valkey() as server:
        yield redis.Redis.from_url(f"{server.connection_url}/0")


@pytest.fixture
def scripts(r):
    r.flushdb()
    submit, end = r.register_script(SUBMIT), r.register_script(END)

    def submit_new(job_id: str | None = None) -> tuple[str, str]:
        script_keys, args = submit_call(job_id or uuid.uuid4().hex, JOB, REQUEST_KEY, "request-1", INLINE, 16)
        owner, how = submit(keys=script_keys, args=args)
        return owner.decode(), how.decode()

    def finish(job_id: str, status: str) -> None:
        if status == "succeeded":
            r.set(keys.job_result(job_id), b"npz bytes of the answer")
        script_keys, args = end_call(job_id, REQUEST_KEY, status, 3600,
                                     answer={"cached": False} if status == "succeeded" else None)
        assert end(keys=script_keys, args=args) == 1

    return submit_new, finish


def jobs(r) -> list[str]:
    return [key.decode().split(":")[2] for key in r.scan_iter(keys.job("*")) if key.count(b":") == 2]


def test_a_request_submitted_as_its_job_ends_is_answered_by_that_job(r, scripts):
    submit, finish = scripts
    first, how = submit()
    assert how == "created" and r.hgetall(keys.job_inputs(first)) == {k.encode(): v for k, v in INLINE.items()}
    assert submit() == (first, "joined")
    finish(first, "succeeded")  # inflight gone, answer set: a submit now must not make a second job
    assert submit() == (first, "answered")
    assert jobs(r) == [first]


def test_a_submit_sent_twice_finds_the_job_its_first_run_created(r, scripts):
    submit, _ = scripts
    job_id = uuid.uuid4().hex
    assert submit(job_id) == (job_id, "created")
    assert submit(job_id) == (job_id, "joined")  # the caller knows its own id: it queues the job once
    assert jobs(r) == [job_id]


@pytest.mark.parametrize("ending", ["failed", "cancelled", "succeeded, then its result evicted"])
def test_a_request_whose_job_left_no_answer_makes_a_new_one(r, scripts, ending):
    submit, finish = scripts
    first, _ = submit()
    finish(first, ending.split(",")[0])
    if ending.endswith("evicted"):
        r.delete(keys.job_result(first))
    second, how = submit()
    assert how == "created" and second != first
    assert sorted(jobs(r)) == sorted([first, second])


def test_a_tenant_at_its_most_active_jobs_is_refused_until_one_ends(r):
    """NTK_TENANT_MAX_ACTIVE_JOBS: the tenant's set of active jobs, counted by SUBMIT, left by END,
    and pruned of jobs that ended without END (here: a job hash gone) before it is counted.
    Request keys hash the tenant (ntk.core.job.request_key), so two tenants' keys differ."""
    r.flushdb()
    submit, end = r.register_script(SUBMIT), r.register_script(END)

    def new(tenant: str, request_key: str) -> tuple:
        job = JOB.model_copy(update={"tenant": tenant, "cache_scope": tenant})
        script_keys, args = submit_call(uuid.uuid4().hex, job, request_key, "request-1", {}, 2)
        owner, how = submit(keys=script_keys, args=args)
        return owner if isinstance(owner, int) else owner.decode(), how.decode()

    def active() -> set[str]:
        return {member.decode() for member in r.smembers(keys.tenant_active_jobs(TENANT))}

    first, second = (new(TENANT, key)[0] for key in ("1" * 64, "2" * 64))
    assert new(TENANT, "3" * 64) == (2, "refused") and not r.exists(keys.inflight("3" * 64))
    assert new(TENANT, "1" * 64) == (first, "joined")  # joining makes no job: never refused
    assert new("u" * 64, "5" * 64)[1] == "created"  # another tenant has a count of its own
    script_keys, args = end_call(first, "1" * 64, "cancelled", 3600)
    assert end(keys=script_keys, args=args) == 1 and active() == {second}
    third, how = new(TENANT, "3" * 64)
    assert how == "created" and r.hget(keys.job(third), "tenant").decode() == TENANT
    r.delete(keys.job(second))  # a job ended by no script: pruned when next counted
    fourth, how = new(TENANT, "4" * 64)
    assert how == "created" and active() == {third, fourth}
