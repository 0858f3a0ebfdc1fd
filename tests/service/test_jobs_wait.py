"""How a request waits for its job (ntk.api.jobs.wait_for, Endings): it hears the job's end on
the ended-jobs channel that END announces it on, rather than polling the job's hash. What is
asserted is how often the job was read, and in which state: never time."""

from __future__ import annotations

import asyncio
import json
import uuid

import redis
import redis.asyncio as aioredis

from ntk.api import jobs
from ntk.core import keys
from ntk.core.job import ArrayRef, KernelJob, request_key
from ntk.core.jobstate import END, SUBMIT, end_call, submit_call

REQUEST = KernelJob(tenant="default", cache_scope="default", architecture={"layers": []}, dtype="float64",
                    x1=ArrayRef(digest="d" * 64, shape=[2, 2]), get=["nngp"])


def queued_job(client: redis.Redis, request: KernelJob = REQUEST) -> str:
    job_id = uuid.uuid4().hex
    script_keys, args = submit_call(job_id, request, request_key(request), "test", {}, 16)
    client.register_script(SUBMIT)(keys=script_keys, args=args)
    return job_id


def end(client: redis.Redis, job_id: str, status: str = "succeeded") -> None:
    script_keys, args = end_call(job_id, request_key(REQUEST), status, 60, answer={"cached": False})
    assert client.register_script(END)(keys=script_keys, args=args) == 1


async def waiting(redis_url: str, act, *, queued: bool, seconds: float = 30.0) -> tuple[dict, list[str]]:
    """Wait for a job as a request does while ``act(job_id)`` runs (in a thread: the blocking client),
    once the waiter is set up (and, not ``queued``, has read the job once); the job as ``wait_for``
    answered it, and the statuses it read. The waiter's safety re-read is pushed past the wait, so
    that only the announcement can wake it."""
    client = aioredis.Redis.from_url(redis_url)
    endings = jobs.Endings(aioredis.Redis.from_url(redis_url))
    listening = asyncio.create_task(endings.listen())
    statuses: list[str] = []
    original = jobs.read

    async def read(r, job_id, **kwargs):
        job = await original(r, job_id, **kwargs)
        statuses.append(job["status"])
        return job

    jobs.read, recheck_s, jobs.RECHECK_S = read, jobs.RECHECK_S, 2 * seconds
    try:
        sync = redis.Redis.from_url(redis_url)
        job_id = queued_job(sync)
        await endings.subscribed.wait()  # (channels are server-wide: another listener's subscription says nothing)
        with endings.watching(job_id) as ended:
            waiter = asyncio.create_task(jobs.wait_for(client, ended, job_id, seconds, queued=queued, with_result=True))
            while not queued and not statuses:  # a joined job is read once before its end
                await asyncio.sleep(0.01)
            await asyncio.to_thread(act, sync, job_id)
            job = await waiter
        return job, statuses
    finally:
        jobs.read, jobs.RECHECK_S = original, recheck_s
        listening.cancel()
        await client.aclose()


def test_a_waiter_wakes_when_its_job_ends_and_reads_it_once(redis_url):
    job, statuses = asyncio.run(waiting(redis_url, end, queued=True))
    assert job["status"] == "succeeded" and statuses == ["succeeded"]  # no read before the end was heard


def test_a_waiter_that_joins_a_running_job_reads_it_then_waits_for_its_end(redis_url):
    job, statuses = asyncio.run(waiting(redis_url, end, queued=False))
    assert job["status"] == "succeeded" and statuses == ["queued", "succeeded"]


def test_a_job_that_ended_before_its_waiter_looked_is_read_ended(redis_url):
    async def ended_first():
        sync = redis.Redis.from_url(redis_url)
        job_id = queued_job(sync)
        end(sync, job_id, "cancelled")
        client = aioredis.Redis.from_url(redis_url)
        endings = jobs.Endings(client)
        with endings.watching(job_id) as ended:  # nobody will announce it again: the first read finds it
            job = await jobs.wait_for(client, ended, job_id, 60.0)
        await client.aclose()
        return job

    assert asyncio.run(ended_first())["status"] == "cancelled"


def test_a_kept_answer_is_found_with_its_result_in_one_script(redis_url):
    sync = redis.Redis.from_url(redis_url)
    job_id = queued_job(sync)
    sync.set(keys.job_result(job_id), b"PK-the-npz")
    end(sync, job_id)

    async def found():
        client = aioredis.Redis.from_url(redis_url)
        script = client.register_script(jobs.ANSWERED)
        prefix, suffix = jobs.JOB_PREFIX, jobs.RESULT_SUFFIX
        flat, value = await script(keys=[keys.answer(request_key(REQUEST))], args=[prefix, suffix])
        missing = await script(keys=[keys.answer("0" * 64)], args=[prefix, suffix])
        await client.aclose()
        return dict(zip(flat[::2], flat[1::2])), value, missing

    job, value, missing = asyncio.run(found())
    assert job[b"id"].decode() == job_id and job[b"status"] == b"succeeded" and value == b"PK-the-npz"
    assert json.loads(job[b"answer"]) == {"cached": False} and missing is None
